//! The sampler: one task samples every running deployment on one clock.

use std::collections::HashSet;
use std::sync::Arc;

use conan_core::{DeploymentId, DeploymentRecord, Event, Metrics, Timestamp};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;

use crate::Shared;

/// The most `metrics()` calls the sampler has in flight at once.
pub const SAMPLE_CONCURRENCY: usize = 16;

/// What one call answered.
type Answer = (
    DeploymentRecord,
    Result<conan_core::Result<Metrics>, tokio::time::error::Elapsed>,
);

/// Samples every running deployment every `sample_interval`; hands each sample to
/// [`crate::health::on_sample`] too. Runs until the monitor shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.history.sample_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut events = shared.manager.subscribe();
    let mut listening = true;
    // Deployments to sample this round, not yet started (more than the concurrency).
    let mut pending: Vec<DeploymentRecord> = Vec::new();
    let mut in_flight: HashSet<DeploymentId> = HashSet::new();
    let mut calls = FuturesUnordered::new();
    let mut timed_out = 0_u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if timed_out > 0 {
                    tracing::warn!(
                        calls = timed_out,
                        timeout = ?shared.settings.sample_timeout,
                        "metrics calls timed out; their deployments miss samples"
                    );
                    timed_out = 0;
                }
                let all = shared.manager.list();
                let live: HashSet<&DeploymentId> = all.iter().map(|r| &r.id).collect();
                shared.history.retain(|id| live.contains(id));
                // A round that could not finish (everything slow) yields to the new one.
                pending = all
                    .into_iter()
                    .filter(|r| r.status.is_running() && !in_flight.contains(&r.id))
                    .collect();
                pending.reverse();
            }
            Some((record, answer)) = calls.next(), if !calls.is_empty() => {
                let (record, answer): Answer = (record, answer);
                in_flight.remove(&record.id);
                match answer {
                    Ok(Ok(metrics)) => {
                        shared.history.record(&record.id, Timestamp::now(), &metrics);
                        crate::health::on_sample(&shared, &record, &metrics);
                    }
                    Ok(Err(e)) => tracing::debug!(
                        deployment = %record.name, error = %e, "no metrics sample"
                    ),
                    Err(_) => timed_out += 1,
                }
            }
            event = events.recv(), if listening => match event {
                Ok(env) => {
                    if let Event::Removed { deployment } = &env.event {
                        shared.history.remove(deployment);
                    }
                }
                // Missed removals are pruned at the next tick.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => listening = false,
            },
        }
        while calls.len() < SAMPLE_CONCURRENCY {
            let Some(record) = pending.pop() else { break };
            in_flight.insert(record.id.clone());
            let manager = shared.manager.clone();
            let timeout = shared.settings.sample_timeout;
            calls.push(async move {
                let answer =
                    tokio::time::timeout(timeout, manager.metrics(record.id.as_str())).await;
                (record, answer)
            });
        }
    }
}
