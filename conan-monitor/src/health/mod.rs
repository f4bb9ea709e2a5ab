//! The health monitor: liveness for every provider, and what to do about it.
//!
//! - **One scheduler.** A single task holds a delay queue of probe and restart timers for
//!   every deployment (no task or thread per deployment). Each running deployment with an
//!   `http`, `tcp` or `command` health check is probed every `interval` (measured from the
//!   end of the previous probe), through [`DeploymentManager::probe`](conan_core::DeploymentManager::probe), which asks its
//!   provider to reach the serving instance (the runtime's URL by default). At most
//!   [`MAX_IN_FLIGHT`] probes run at once.
//! - **What counts.** Failures within the check's `start_period` (from the instance's start)
//!   do not count; `failure_threshold` failures in a row make the deployment unhealthy
//!   ([`Event::Unhealthy`]), `success_threshold` passes make
//!   it healthy again ([`Event::Healthy`]). The observation is
//!   published to the manager, so `health()` and `conan status` show it.
//! - **Acting on it.** An unhealthy deployment is restarted under its restart policy: the
//!   same [`RestartTracker`] as a crash (backoff with jitter, reset after `reset_after` of
//!   uptime, at most `max_restarts` within `window`), then a queued
//!   [`Request::Heal`] restart. Past the cap, the deployment is stopped and `Failed` with a
//!   failure bundle holding the probe history and the last log lines. The monitor's
//!   restarts are counted apart from the provider's crash restarts (a crash is the
//!   provider supervisor's business).
//! - **Never during a deliberate change.** Only `Running` deployments are watched; any status
//!   change replaces the watch (a stop, an update, a restart), outcomes of a replaced watch
//!   are dropped, and a heal request applies only while the instance it was decided for
//!   still serves.
//! - **Memory.** A local deployment with `resources.memory` whose platform enforces no
//!   limit (no cgroup memory controller: its metrics show no `memory_limit_bytes`) is
//!   restarted the same way when its resident memory stays above the limit for
//!   `memory_samples` samples in a row (fed by the metrics sampler, [`crate::history`]).

#[cfg(test)]
mod tests;
mod watched;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use conan_core::probe::ProbeOutcome;
use conan_core::support::restart::{RestartDecision, RestartTracker};
use conan_core::{
    DeploymentId, DeploymentRecord, Error, Event, ExitStatus, FailureReport, HealAction,
    HealthReport, LogQuery, Metrics, Priority, ProbeRecord, Request, RestartCause, Revision,
    StatusKind, SubmitOptions, Timestamp,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

use crate::Shared;
use watched::{Identity, Verdict, Watched, check_of};

/// Probes that run at once, across all deployments.
pub const MAX_IN_FLIGHT: usize = 64;

/// How often the watch list is checked against the manager's records (events are the
/// fast path; this catches what a lagging subscription missed).
const RESYNC: Duration = Duration::from_secs(5);

/// The shortest interval between two probes of one deployment.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// What the monitor knows of one deployment's health.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HealthView {
    /// The latest verdict (what `health()` answers).
    pub report: HealthReport,
    /// The last probes, oldest first.
    pub history: Vec<ProbeRecord>,
    /// Restarts the monitor asked for (health or memory), since the monitor started.
    pub monitor_restarts: u32,
}

/// The latest health observation of every monitored deployment, and the monitor's
/// restart counts.
#[derive(Debug)]
pub struct HealthBoard {
    state: Mutex<Board>,
    commands: mpsc::UnboundedSender<Command>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

#[derive(Debug, Default)]
struct Board {
    views: foldhash::HashMap<DeploymentId, HealthView>,
    restarts: foldhash::HashMap<DeploymentId, u32>,
    memory: foldhash::HashMap<DeploymentId, (Identity, u32)>,
}

/// A request to the scheduler from outside its task.
#[derive(Debug)]
enum Command {
    Remedy {
        id: DeploymentId,
        identity: Identity,
        cause: RestartCause,
    },
}

impl Default for HealthBoard {
    fn default() -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        Self {
            state: Mutex::new(Board::default()),
            commands,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl HealthBoard {
    fn state(&self) -> MutexGuard<'_, Board> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the monitor knows of `deployment`, if it watches it.
    #[must_use]
    pub fn get(&self, deployment: &DeploymentId) -> Option<HealthView> {
        let state = self.state();
        let mut view = state.views.get(deployment)?.clone();
        view.monitor_restarts = state.restarts.get(deployment).copied().unwrap_or(0);
        Some(view)
    }

    /// The latest verdict on `deployment`, if the monitor probed it (cheaper than
    /// [`get`](Self::get): nothing is copied).
    #[must_use]
    pub fn status(&self, deployment: &DeploymentId) -> Option<conan_core::HealthStatus> {
        self.state().views.get(deployment).map(|v| v.report.status)
    }

    /// Restarts the monitor asked for on `deployment` since it started.
    #[must_use]
    pub fn monitor_restarts(&self, deployment: &DeploymentId) -> u32 {
        self.state().restarts.get(deployment).copied().unwrap_or(0)
    }

    fn forget(&self, deployment: &DeploymentId) {
        let mut state = self.state();
        state.views.remove(deployment);
        state.memory.remove(deployment);
    }
}

/// A timer in the scheduler's queue.
#[derive(Debug)]
enum Timer {
    Probe {
        id: DeploymentId,
        generation: u64,
    },
    Restart {
        id: DeploymentId,
        identity: Identity,
    },
}

/// A probe's result, back in the scheduler.
struct Probed {
    id: DeploymentId,
    generation: u64,
    outcome: conan_core::Result<ProbeOutcome>,
}

/// A deployment's restart accounting (kept across restarts, reset by a new revision).
struct Tracked {
    revision: Revision,
    tracker: RestartTracker,
}

struct Scheduler {
    shared: Arc<Shared>,
    watches: foldhash::HashMap<DeploymentId, Watched>,
    trackers: foldhash::HashMap<DeploymentId, Tracked>,
    /// Restarts decided and waiting for their delay, with the instance they are for.
    pending: foldhash::HashMap<DeploymentId, Identity>,
    queue: DelayQueue<Timer>,
    probes: FuturesUnordered<BoxFuture<'static, Probed>>,
    chores: FuturesUnordered<BoxFuture<'static, ()>>,
    generation: u64,
    origin: Instant,
}

/// The scheduler's task (see the module docs).
pub(crate) async fn run(shared: Arc<Shared>) {
    let Some(mut commands) = shared
        .health
        .receiver
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let mut events = shared.manager.subscribe();
    let mut s = Scheduler {
        shared,
        watches: foldhash::HashMap::default(),
        trackers: foldhash::HashMap::default(),
        pending: foldhash::HashMap::default(),
        queue: DelayQueue::new(),
        probes: FuturesUnordered::new(),
        chores: FuturesUnordered::new(),
        generation: 0,
        origin: Instant::now(),
    };
    s.resync();
    let mut resync = tokio::time::interval_at(Instant::now() + RESYNC, RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(envelope) => s.on_event(&envelope.event),
                Err(broadcast::error::RecvError::Lagged(_)) => s.resync(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(expired) = s.queue.next() => s.on_timer(expired.into_inner()),
            Some(probed) = s.probes.next() => s.on_probed(probed),
            Some(command) = commands.recv() => s.on_command(command),
            Some(()) = s.chores.next() => {}
            _ = resync.tick() => s.resync(),
        }
    }
}

/// Called by the metrics sampler with each sample of a running deployment: memory-limit
/// enforcement (see the module docs).
#[allow(
    dead_code,
    reason = "called by the metrics sampler (history) once it lands"
)]
pub(crate) fn on_sample(shared: &Shared, record: &DeploymentRecord, metrics: &Metrics) {
    let board = &shared.health;
    let (Some(limit), Some(rss)) = (record.config.resources.memory, metrics.memory_bytes) else {
        board.state().memory.remove(&record.id);
        return;
    };
    if metrics.memory_limit_bytes.is_some() || record.status.kind() != StatusKind::Running {
        // The platform enforces it (a cgroup, Docker), or nothing serves to restart.
        board.state().memory.remove(&record.id);
        return;
    }
    let limit = limit.bytes();
    let identity = Identity::of(record);
    let needed = shared.settings.memory_samples.max(1);
    let over = {
        let mut state = board.state();
        let entry = state
            .memory
            .entry(record.id.clone())
            .or_insert_with(|| (identity.clone(), 0));
        if entry.0 != identity {
            *entry = (identity.clone(), 0);
        }
        if rss > limit {
            entry.1 += 1;
        } else {
            entry.1 = 0;
        }
        let over = entry.1 >= needed;
        if over {
            entry.1 = 0;
        }
        over
    };
    if over {
        tracing::info!(deployment = %record.name, rss, limit, samples = needed, "memory above the limit");
        let _ = board.commands.send(Command::Remedy {
            id: record.id.clone(),
            identity,
            cause: RestartCause::Memory {
                rss_bytes: rss,
                limit_bytes: limit,
                samples: needed,
            },
        });
    }
}

impl Scheduler {
    fn probing(&self) -> bool {
        self.shared.settings.health
    }

    /// Brings the watch list in line with the manager's records.
    fn resync(&mut self) {
        let records = self.shared.manager.list();
        let live: foldhash::HashSet<&DeploymentId> = records.iter().map(|r| &r.id).collect();
        let gone: Vec<DeploymentId> = self
            .watches
            .keys()
            .filter(|id| !live.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.drop_watch(&id);
        }
        self.trackers.retain(|id, _| live.contains(id));
        for record in &records {
            self.refresh(record);
        }
    }

    /// Starts, keeps or ends the watch of `record`.
    fn refresh(&mut self, record: &DeploymentRecord) {
        let check = (record.status.kind() == StatusKind::Running)
            .then(|| check_of(record))
            .flatten()
            .filter(|_| self.probing());
        let Some(check) = check else {
            self.drop_watch(&record.id);
            return;
        };
        let identity = Identity::of(record);
        if self
            .watches
            .get(&record.id)
            .is_some_and(|w| w.identity == identity && w.check == *check)
        {
            return;
        }
        self.generation += 1;
        let watch = Watched::new(record, check.clone(), self.generation, Instant::now());
        let first = check.interval.max(MIN_INTERVAL);
        self.queue.insert(
            Timer::Probe {
                id: record.id.clone(),
                generation: watch.generation,
            },
            first,
        );
        self.watches.insert(record.id.clone(), watch);
    }

    fn drop_watch(&mut self, id: &DeploymentId) {
        if self.watches.remove(id).is_some() {
            self.shared.health.forget(id);
        }
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::StatusChanged { deployment, .. } | Event::Recovered { deployment, .. } => {
                match self.shared.manager.get(deployment.as_str()) {
                    Ok(record) => self.refresh(&record),
                    Err(_) => self.drop_watch(deployment),
                }
            }
            Event::Removed { deployment } => {
                self.drop_watch(deployment);
                self.trackers.remove(deployment);
                self.pending.remove(deployment);
                self.shared.health.state().restarts.remove(deployment);
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Probe { id, generation } => {
                let Some(watch) = self.watches.get_mut(&id) else {
                    return;
                };
                if watch.generation != generation || watch.in_flight {
                    return;
                }
                if self.probes.len() >= MAX_IN_FLIGHT {
                    self.queue
                        .insert(Timer::Probe { id, generation }, Duration::from_millis(100));
                    return;
                }
                watch.in_flight = true;
                let manager = self.shared.manager.clone();
                self.probes.push(Box::pin(async move {
                    let outcome = manager.probe(id.as_str()).await;
                    Probed {
                        id,
                        generation,
                        outcome,
                    }
                }));
            }
            Timer::Restart { id, identity } => {
                if self.pending.get(&id) != Some(&identity) {
                    return;
                }
                self.pending.remove(&id);
                // Healthy again while the backoff ran: nothing to do.
                if self
                    .watches
                    .get(&id)
                    .is_some_and(|w| w.identity == identity && w.healthy)
                    && !self.shared.health.state().memory.contains_key(&id)
                {
                    return;
                }
                self.heal(&id, &identity, HealAction::Restart);
            }
        }
    }

    fn on_probed(&mut self, probed: Probed) {
        let Probed {
            id,
            generation,
            outcome,
        } = probed;
        let Some(watch) = self.watches.get_mut(&id) else {
            return;
        };
        if watch.generation != generation {
            return;
        }
        watch.in_flight = false;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(Error::NotFound { .. }) => {
                self.drop_watch(&id);
                return;
            }
            Err(e) => ProbeOutcome::unhealthy(e.to_string()),
        };
        // The record must still show the watched instance running: a stop or an update
        // that began while the probe ran is not a failure of the app.
        let current = self.shared.manager.get(id.as_str()).ok();
        let Some(record) = current.filter(|r| {
            r.status.kind() == StatusKind::Running && Identity::of(r) == watch.identity
        }) else {
            if let Ok(record) = self.shared.manager.get(id.as_str()) {
                self.refresh(&record);
            } else {
                self.drop_watch(&id);
            }
            return;
        };
        let verdict = watch.apply(&outcome, Instant::now(), Timestamp::now());
        self.shared
            .instruments
            .health_check(&watch.name, outcome.is_healthy(), outcome.duration());
        let report = watch.report();
        self.shared
            .manager
            .publish_health(&id, watch.identity.revision, report.clone());
        {
            let mut state = self.shared.health.state();
            state.views.insert(
                id.clone(),
                HealthView {
                    report,
                    history: watch.history(),
                    monitor_restarts: 0,
                },
            );
        }
        let next = watch.check.interval.max(MIN_INTERVAL);
        let (identity, failures) = (watch.identity.clone(), watch.failures);
        self.queue.insert(
            Timer::Probe {
                id: id.clone(),
                generation,
            },
            next,
        );
        let sink = self.shared.manager.event_sink();
        match verdict {
            Verdict::Same => {}
            Verdict::Healthy => {
                tracing::info!(deployment = %record.name, "healthy again");
                sink.healthy(&id);
            }
            Verdict::Unhealthy { failures, reason } => {
                tracing::warn!(deployment = %record.name, failures, %reason, "unhealthy");
                sink.unhealthy(&id, reason.clone());
                self.remedy(&id, identity, RestartCause::Unhealthy { failures, reason });
            }
            Verdict::StillUnhealthy => {
                if !self.pending.contains_key(&id) {
                    let reason = outcome.detail().to_owned();
                    self.remedy(&id, identity, RestartCause::Unhealthy { failures, reason });
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Remedy {
                id,
                identity,
                cause,
            } => self.remedy(&id, identity, cause),
        }
    }

    /// Decides what to do about `id` not serving well (`cause`): a restart after the
    /// policy's backoff, nothing (`restart.policy = "never"`), or giving up.
    fn remedy(&mut self, id: &DeploymentId, identity: Identity, cause: RestartCause) {
        if self.pending.get(id) == Some(&identity) {
            return;
        }
        let Ok(record) = self.shared.manager.get(id.as_str()) else {
            return;
        };
        if record.status.kind() != StatusKind::Running || Identity::of(&record) != identity {
            return;
        }
        let tracked = self.trackers.entry(id.clone()).or_insert_with(|| Tracked {
            revision: record.revision,
            tracker: RestartTracker::new(record.config.restart.clone()),
        });
        if tracked.revision != record.revision {
            *tracked = Tracked {
                revision: record.revision,
                tracker: RestartTracker::new(record.config.restart.clone()),
            };
        }
        let uptime = identity.started_at.map_or(Duration::ZERO, |t| t.elapsed());
        let decision = tracked.tracker.on_exit(
            self.origin.elapsed(),
            uptime,
            ExitStatus::Unknown,
            fastrand::f64(),
        );
        match decision {
            RestartDecision::Restart { delay, attempt } => {
                tracing::info!(deployment = %record.name, attempt, ?delay, %cause, "restarting");
                *self
                    .shared
                    .health
                    .state()
                    .restarts
                    .entry(id.clone())
                    .or_insert(0) += 1;
                self.shared
                    .manager
                    .event_sink()
                    .monitor_restart(id, attempt, delay, cause);
                self.pending.insert(id.clone(), identity.clone());
                self.queue.insert(
                    Timer::Restart {
                        id: id.clone(),
                        identity,
                    },
                    delay,
                );
            }
            RestartDecision::Stay => {
                tracing::debug!(deployment = %record.name, %cause, "not restarting: the restart policy says never");
            }
            RestartDecision::GiveUp { restarts } => {
                let window = conan_core::time::format_duration(record.config.restart.window);
                let reason = format!(
                    "{cause}; gave up after {restarts} restarts within {window} (crash loop)"
                );
                tracing::warn!(deployment = %record.name, %reason, "giving up");
                let mut failure = FailureReport::new(reason);
                if let Some(watch) = self.watches.get(id) {
                    if let Some(last) = &watch.last {
                        failure = failure.with_probe(last.detail.clone());
                    }
                    failure = failure.with_probe_history(watch.history());
                }
                self.pending.insert(id.clone(), identity.clone());
                let manager = self.shared.manager.clone();
                let id = id.clone();
                self.chores.push(Box::pin(async move {
                    let mut query = LogQuery::all();
                    query.tail = Some(FailureReport::MAX_LOG_LINES);
                    if let Ok(stream) = manager.logs(id.as_str(), &query).await {
                        let lines: Vec<_> =
                            stream.filter_map(|l| async move { l.ok() }).collect().await;
                        failure = failure.with_logs(lines);
                    }
                    submit_heal(&manager, &id, &identity, HealAction::Fail(failure));
                }));
            }
        }
    }

    fn heal(&self, id: &DeploymentId, identity: &Identity, action: HealAction) {
        submit_heal(&self.shared.manager, id, identity, action);
    }
}

/// Queues a heal request for the instance `identity` of `id` (its outcome is followed
/// through events, like any operation).
fn submit_heal(
    manager: &conan_core::DeploymentManager,
    id: &DeploymentId,
    identity: &Identity,
    action: HealAction,
) {
    let request = Request::Heal {
        target: id.as_str().to_owned(),
        origin: identity.origin(),
        action,
    };
    if let Err(e) = manager.submit(request, SubmitOptions::priority(Priority::High)) {
        tracing::warn!(deployment = %id, error = %e, "cannot queue the monitor's request");
    }
}
