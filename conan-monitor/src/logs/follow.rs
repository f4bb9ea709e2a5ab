//! Following every running deployment's logs to feed the [`LogCounters`](super::LogCounters).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use conan_core::{DeploymentId, Event, LogLine, LogQuery, LogStream, Result};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SelectAll};
use futures::{FutureExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// How often the set of running deployments is compared with the followed ones, besides
/// on every status change.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// The first wait before re-opening a stream that ended.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait before re-opening a stream.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One followed deployment.
struct Followed {
    /// Ends its stream (the deployment stopped or was removed).
    cancel: CancellationToken,
    /// Whether its stream is open (or being opened).
    open: bool,
    /// When to open it again, after it ended.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Which opening of its stream is current: the end of an older stream (stopped, then
    /// running again) must not close the current one.
    generation: u64,
}

/// An item of the merged follow: a line of a deployment, or the end of its stream (with
/// the stream's generation).
type Item = (DeploymentId, u64, Option<Result<LogLine>>);
type Opening = FuturesUnordered<BoxFuture<'static, (DeploymentId, u64, Result<LogStream>)>>;
type Followers = HashMap<DeploymentId, Followed, foldhash::fast::RandomState>;

/// Follows the logs of every running deployment in one task (one [`SelectAll`] over all
/// streams) and counts each line.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut events = shared.manager.subscribe();
    let mut followed = Followers::default();
    let mut lines: SelectAll<futures::stream::BoxStream<'static, Item>> = SelectAll::new();
    let mut opening = Opening::new();
    let mut generation = 0u64;
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some((id, epoch, line)) = lines.next() => match line {
                Some(Ok(line)) => {
                    shared.log_counters.record(&id, line.level);
                    if let Some(f) = followed.get_mut(&id) {
                        f.backoff = BACKOFF_MIN;
                    }
                }
                Some(Err(e)) => tracing::debug!(deployment = %id, error = %e, "a followed log stream failed"),
                None => {
                    if let Some(f) = followed.get_mut(&id).filter(|f| f.generation == epoch) {
                        f.open = false;
                        f.retry_at = Some(Instant::now() + f.backoff);
                        f.backoff = (f.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            },
            Some((id, epoch, opened)) = opening.next() => match (opened, followed.get(&id).filter(|f| f.generation == epoch)) {
                (Ok(stream), Some(f)) => {
                    let cancel = f.cancel.clone().cancelled_owned();
                    let tag = id.clone();
                    let end = id.clone();
                    lines.push(
                        stream
                            .take_until(cancel)
                            .map(move |line| (tag.clone(), epoch, Some(line)))
                            .chain(futures::stream::once(async move { (end, epoch, None) }))
                            .boxed(),
                    );
                }
                (Ok(_), None) => {}
                (Err(e), Some(_)) => {
                    tracing::debug!(deployment = %id, error = %e, "cannot follow the logs");
                    if let Some(f) = followed.get_mut(&id) {
                        f.open = false;
                        f.retry_at = Some(Instant::now() + f.backoff);
                        f.backoff = (f.backoff * 2).min(BACKOFF_MAX);
                    }
                }
                (Err(_), None) => {}
            },
            event = events.recv() => match event {
                Ok(envelope) => {
                    if matches!(
                        envelope.event,
                        Event::StatusChanged { .. } | Event::Removed { .. } | Event::Recovered { .. }
                    ) {
                        reconcile(&shared, &mut followed, &mut opening, &mut generation);
                    }
                }
                Err(RecvError::Lagged(_)) => reconcile(&shared, &mut followed, &mut opening, &mut generation),
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => reconcile(&shared, &mut followed, &mut opening, &mut generation),
        }
    }
}

/// Starts following running deployments that are not yet followed (or whose backoff has
/// passed), stops following those no longer running, drops the counters of removed ones.
fn reconcile(
    shared: &Arc<Shared>,
    followed: &mut Followers,
    opening: &mut Opening,
    generation: &mut u64,
) {
    let records = shared.manager.list();
    let now = Instant::now();
    let running: std::collections::HashSet<&DeploymentId> = records
        .iter()
        .filter(|r| r.status.is_running())
        .map(|r| &r.id)
        .collect();
    followed.retain(|id, f| {
        let keep = running.contains(id);
        if !keep {
            f.cancel.cancel();
        }
        keep
    });
    for id in running {
        let f = followed.entry(id.clone()).or_insert_with(|| Followed {
            cancel: shared.cancel.child_token(),
            open: false,
            retry_at: None,
            backoff: BACKOFF_MIN,
            generation: 0,
        });
        if f.open || f.retry_at.is_some_and(|at| at > now) {
            continue;
        }
        f.open = true;
        f.retry_at = None;
        *generation += 1;
        f.generation = *generation;
        let epoch = *generation;
        shared.log_counters.track(id);
        let manager = shared.manager.clone();
        let id = id.clone();
        opening.push(
            async move {
                // New lines only: the counters count what is written while followed.
                let query = LogQuery::tail(0).follow();
                let stream = manager.logs(id.as_str(), &query).await;
                (id, epoch, stream)
            }
            .boxed(),
        );
    }
    let live: std::collections::HashSet<&DeploymentId> = records.iter().map(|r| &r.id).collect();
    shared.log_counters.retain(|id| live.contains(id));
}
