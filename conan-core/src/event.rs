//! Events: one typed [`Event`] enum on a broadcast channel.
//!
//! # Delivery guarantee
//!
//! Events are best-effort notifications, delivered in order to every subscriber through a
//! bounded [`tokio::sync::broadcast`] channel. A subscriber that falls more than the channel
//! capacity behind receives [`RecvError::Lagged(n)`](tokio::sync::broadcast::error::RecvError::Lagged)
//! — it learns that it missed `n` events and continues with the oldest one still buffered.
//! Nothing blocks on slow subscribers. The [`StateStore`](crate::StateStore) (deployments,
//! revisions and the audit log) is the source of truth: a subscriber that lagged re-reads it.
//!
//! Events never carry env values: configs are referred to by deployment id only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::failure::{ExitStatus, FailureReport};
use crate::id::{DeploymentId, OperationId, Revision};
use crate::provider::{ObservedStatus, RuntimeInfo};
use crate::status::{DeploymentStatus, StatusKind};
use crate::time::Timestamp;

/// What kind of operation the manager runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// First deploy of a new deployment.
    Deploy,
    /// Roll out a new revision.
    Update,
    /// Roll out an earlier revision's config as a new revision.
    Rollback,
    /// Start a stopped deployment.
    Start,
    /// Stop a running deployment.
    Stop,
    /// Stop, then start.
    Restart,
    /// Stop and delete everything.
    Remove,
    /// Change the number of replicas without a new revision.
    Scale,
}

impl OperationKind {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Deploy => "deploy",
            OperationKind::Update => "update",
            OperationKind::Rollback => "rollback",
            OperationKind::Start => "start",
            OperationKind::Stop => "stop",
            OperationKind::Restart => "restart",
            OperationKind::Remove => "remove",
            OperationKind::Scale => "scale",
        }
    }
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase of a deploy, reported as [`Event::Progress`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Preparing (resolving the start command, allocating a port).
    Preparing,
    /// Building an artifact (image build step output).
    Building,
    /// Starting instances.
    Starting,
    /// Waiting for the health check to pass.
    WaitingForHealth,
    /// Switching traffic to the new revision.
    Switching,
    /// Stopping instances.
    Stopping,
    /// Cleaning up after a failure.
    CleaningUp,
}

impl Phase {
    /// A human label (`"waiting for health"`).
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Phase::Preparing => "preparing",
            Phase::Building => "building",
            Phase::Starting => "starting",
            Phase::WaitingForHealth => "waiting for health",
            Phase::Switching => "switching",
            Phase::Stopping => "stopping",
            Phase::CleaningUp => "cleaning up",
        }
    }
}

/// How an operation ended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    /// It did what was asked.
    Succeeded,
    /// It failed (after retries, if the error was transient).
    Failed {
        /// The error, as displayed.
        error: String,
    },
    /// It was cancelled.
    Cancelled,
}

impl Outcome {
    /// Whether this is `Succeeded`.
    #[must_use]
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }
}

/// Whether an alert started or stopped ([`Event::Alert`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The rule's condition held for its `for` duration: the alert fires.
    Firing,
    /// The condition stopped holding for its resolve duration (or the deployment is gone).
    Resolved,
}

impl AlertState {
    /// `"firing"` or `"resolved"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that happens to deployments, as it happens.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum Event {
    /// An operation entered the queue.
    Queued {
        /// Deployment.
        deployment: DeploymentId,
        /// The operation.
        operation: OperationId,
        /// Its kind.
        kind: OperationKind,
    },
    /// An operation left the queue and runs.
    Started {
        /// Deployment.
        deployment: DeploymentId,
        /// The operation.
        operation: OperationId,
        /// Its kind.
        kind: OperationKind,
    },
    /// A transient failure; the operation will run again after `delay`.
    Retrying {
        /// Deployment.
        deployment: DeploymentId,
        /// The operation.
        operation: OperationId,
        /// The attempt that failed (1 = the first try).
        attempt: u32,
        /// Wait before the next attempt, in milliseconds.
        delay_ms: u64,
        /// The transient error.
        error: String,
    },
    /// An operation ended.
    Finished {
        /// Deployment.
        deployment: DeploymentId,
        /// The operation.
        operation: OperationId,
        /// Its kind.
        kind: OperationKind,
        /// How it ended.
        outcome: Outcome,
    },
    /// The deployment's status changed.
    StatusChanged {
        /// Deployment.
        deployment: DeploymentId,
        /// Previous status.
        from: StatusKind,
        /// New status (a `Failed` carries its reason).
        to: DeploymentStatus,
        /// The revision serving (or being rolled out).
        revision: Revision,
    },
    /// A provider reports what it is doing.
    Progress {
        /// Deployment.
        deployment: DeploymentId,
        /// The phase.
        phase: Phase,
        /// Detail (a build step, "GET /health answered 200").
        message: String,
    },
    /// The health check passes (first time, or again after failing).
    Healthy {
        /// Deployment.
        deployment: DeploymentId,
    },
    /// The health check fails `failure_threshold` times in a row.
    Unhealthy {
        /// Deployment.
        deployment: DeploymentId,
        /// What the probe saw.
        reason: String,
    },
    /// A crashed instance is restarted by the supervisor (emitted when the restart is
    /// decided, before the backoff delay).
    Restarted {
        /// Deployment.
        deployment: DeploymentId,
        /// Restart count within the current window (1 = first restart).
        attempt: u32,
        /// How the instance ended.
        exit: ExitStatus,
        /// The backoff delay before the restart, in milliseconds.
        delay_ms: u64,
    },
    /// A monitor decided to restart a running deployment that is alive but not serving
    /// well (emitted when the restart is decided, before the backoff delay; the restart
    /// itself is a queued `restart` operation).
    MonitorRestart {
        /// Deployment.
        deployment: DeploymentId,
        /// Restart count within the current restart window (1 = first restart).
        attempt: u32,
        /// The backoff delay before the restart, in milliseconds.
        delay_ms: u64,
        /// Why, with the measured values.
        cause: RestartCause,
    },
    /// The deployment (or one revision of it) failed; the report carries reason, exit status
    /// and the last log lines.
    Failed {
        /// Deployment.
        deployment: DeploymentId,
        /// The failure bundle.
        failure: FailureReport,
    },
    /// An update failed and the previous revision kept (or took back) serving.
    RolledBack {
        /// Deployment.
        deployment: DeploymentId,
        /// The revision that failed.
        failed: Revision,
        /// The revision serving now.
        serving: Revision,
        /// Why.
        reason: String,
    },
    /// The replica count of a deployment changed without a new revision (the autoscaler,
    /// or a `scale` a user asked for).
    Scaled {
        /// Deployment.
        deployment: DeploymentId,
        /// The count before.
        from: u32,
        /// The count now.
        to: u32,
        /// Why, with the measured value (`"in-flight requests 17.2 per replica over 10s
        /// (target 8)"`), or who asked.
        reason: String,
    },
    /// A deployment started by an earlier manager process was adopted.
    Recovered {
        /// Deployment.
        deployment: DeploymentId,
        /// Its status as found.
        status: DeploymentStatus,
    },
    /// A deployment was removed.
    Removed {
        /// Deployment.
        deployment: DeploymentId,
    },
    /// An alert rule of a monitor fired or resolved for the deployment (see
    /// [`DeploymentManager::emit_alert`](crate::DeploymentManager::emit_alert)).
    Alert {
        /// Deployment.
        deployment: DeploymentId,
        /// The rule's name.
        rule: String,
        /// Firing or resolved.
        state: AlertState,
        /// The value the rule measured (seconds down, restarts in the window, error lines
        /// per minute, fraction of the memory limit).
        value: f64,
    },
}

/// Why a monitor restarts a deployment ([`Event::MonitorRestart`]).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum RestartCause {
    /// The health check failed `failures` times in a row.
    Unhealthy {
        /// Failures in a row.
        failures: u32,
        /// What the last probe saw.
        reason: String,
    },
    /// The resident memory of the instance's processes stayed above the limit.
    Memory {
        /// The last measured resident memory, in bytes.
        rss_bytes: u64,
        /// The limit (`resources.memory`), in bytes.
        limit_bytes: u64,
        /// Samples in a row above the limit.
        samples: u32,
    },
}

impl std::fmt::Display for RestartCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartCause::Unhealthy { failures, reason } => {
                write!(f, "health check failed {failures} times in a row: {reason}")
            }
            RestartCause::Memory {
                rss_bytes,
                limit_bytes,
                samples,
            } => write!(
                f,
                "memory {:.1} MiB above the limit of {:.1} MiB for {samples} samples",
                *rss_bytes as f64 / 1_048_576.0,
                *limit_bytes as f64 / 1_048_576.0
            ),
        }
    }
}

impl Event {
    /// The deployment the event is about.
    #[must_use]
    pub fn deployment(&self) -> &DeploymentId {
        match self {
            Event::Queued { deployment, .. }
            | Event::Started { deployment, .. }
            | Event::Retrying { deployment, .. }
            | Event::Finished { deployment, .. }
            | Event::StatusChanged { deployment, .. }
            | Event::Progress { deployment, .. }
            | Event::Healthy { deployment }
            | Event::Unhealthy { deployment, .. }
            | Event::Restarted { deployment, .. }
            | Event::MonitorRestart { deployment, .. }
            | Event::Failed { deployment, .. }
            | Event::RolledBack { deployment, .. }
            | Event::Scaled { deployment, .. }
            | Event::Recovered { deployment, .. }
            | Event::Removed { deployment }
            | Event::Alert { deployment, .. } => deployment,
        }
    }
}

/// An [`Event`] with its sequence number and time.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Increases by one per event of a bus (gaps mean lag).
    pub seq: u64,
    /// When it was emitted.
    pub at: Timestamp,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// The broadcast channel events travel on.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<EventEnvelope>,
    shared: Arc<BusShared>,
}

#[derive(Debug, Default)]
struct BusShared {
    seq: AtomicU64,
    /// Set by the first `subscribe`. Until then emitting skips the channel entirely:
    /// asking the channel for its receiver count takes a lock that every operation of
    /// every deployment would otherwise contend on.
    ever_subscribed: AtomicBool,
}

impl EventBus {
    /// Default number of events buffered per subscriber before it lags.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A bus buffering `capacity` events.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            shared: Arc::default(),
        }
    }

    /// Whether anyone is subscribed (events emitted without subscribers are dropped).
    #[must_use]
    pub fn has_subscribers(&self) -> bool {
        self.shared.ever_subscribed.load(Ordering::Acquire) && self.tx.receiver_count() > 0
    }

    /// Emits the event `make` builds, building it only when someone is subscribed.
    pub fn emit_with(&self, make: impl FnOnce() -> Event) {
        if self.has_subscribers() {
            self.emit(make());
        }
    }

    /// Emits an event to every current subscriber (a no-op without subscribers).
    pub fn emit(&self, event: Event) {
        if !self.has_subscribers() {
            return;
        }
        let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.tx.send(EventEnvelope {
            seq,
            at: Timestamp::now(),
            event,
        });
    }

    /// A new subscriber; it sees events emitted from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<EventEnvelope> {
        let rx = self.tx.subscribe();
        self.shared.ever_subscribed.store(true, Ordering::Release);
        rx
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

/// A status change a provider observed on its own (an instance crashed and waits to be
/// restarted, was restarted with a new runtime, exited for good, a crash loop gave up, an
/// adopted process vanished). The manager applies it through the state machine and the
/// store, as a job in the deployment's queue.
///
/// # Stale reports
///
/// A report can reach the manager after an operation changed what runs (a supervisor's
/// report queued behind a `restart` or an `update`). A report that names its
/// [`origin`](Self::origin) is applied only while that origin still serves: its revision
/// is the deployment's revision and its instance is one of the instances in the runtime the
/// manager holds. Anything else is dropped (logged at debug level). A report without an
/// origin is applied as it is.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub struct StatusReport {
    /// Deployment.
    pub deployment: DeploymentId,
    /// The instance the report is about, when the provider says.
    pub origin: Option<ReportOrigin>,
    /// The status the provider observed.
    pub status: ObservedStatus,
    /// The failure bundle, for a `Failed` status.
    pub failure: Option<FailureReport>,
    /// The deployment's runtime now (after a restart: the new pid and start time). The
    /// manager stores it in place of the record's runtime.
    pub runtime: Option<RuntimeInfo>,
}

impl StatusReport {
    /// A report of `status` with no origin, failure or runtime.
    #[must_use]
    pub fn new(deployment: DeploymentId, status: ObservedStatus) -> Self {
        Self {
            deployment,
            origin: None,
            status,
            failure: None,
            runtime: None,
        }
    }

    /// The same report, about `origin` (checked against what serves, see the type's docs).
    #[must_use]
    pub fn from_origin(mut self, origin: ReportOrigin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The same report, with a failure bundle.
    #[must_use]
    pub fn with_failure(mut self, failure: FailureReport) -> Self {
        self.failure = Some(failure);
        self
    }

    /// The same report, with the deployment's new runtime.
    #[must_use]
    pub fn with_runtime(mut self, runtime: RuntimeInfo) -> Self {
        self.runtime = Some(runtime);
        self
    }
}

/// Which instance a [`StatusReport`] is about: the revision it runs and its id as the
/// manager holds it ([`InstanceInfo::id`](crate::InstanceInfo::id): a pid, a container id).
/// For a restart, the instance is the one that ended: the report replaces it.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct ReportOrigin {
    /// The revision the instance runs.
    pub revision: Revision,
    /// Its id in the runtime the manager holds.
    pub instance: String,
}

impl ReportOrigin {
    /// The instance `instance` of `revision`.
    #[must_use]
    pub fn new(revision: Revision, instance: impl Into<String>) -> Self {
        Self {
            revision,
            instance: instance.into(),
        }
    }
}

/// What a provider uses to report progress and observations. Cheap to clone; a provider
/// keeps a clone for its supervisors, which outlive the operation that started them.
///
/// It can only say what a provider observes: progress, health probe results, restarts and
/// the runtime they produce, and that a deployment exited or failed for good. Status
/// changes, rollbacks, failures of operations and queue events are the manager's alone, so
/// a sink has no way to emit them.
#[derive(Clone, Debug)]
pub struct EventSink {
    // One shared allocation: every operation clones the sink, and cloning the channel
    // senders themselves would touch their shared counters each time.
    inner: Arc<SinkInner>,
}

#[derive(Debug)]
struct SinkInner {
    bus: EventBus,
    reports: Option<mpsc::UnboundedSender<StatusReport>>,
}

impl EventSink {
    /// A sink that emits on `bus` and sends status reports to `reports`.
    #[must_use]
    pub fn new(bus: EventBus, reports: Option<mpsc::UnboundedSender<StatusReport>>) -> Self {
        Self {
            inner: Arc::new(SinkInner { bus, reports }),
        }
    }

    /// A sink connected to nothing (events are dropped); for using a provider standalone.
    #[must_use]
    pub fn detached() -> Self {
        Self::new(EventBus::new(256), None)
    }

    /// A subscription to what this sink emits (for tests and standalone use of a provider).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<EventEnvelope> {
        self.inner.bus.subscribe()
    }

    /// Reports progress.
    pub fn progress(&self, deployment: &DeploymentId, phase: Phase, message: impl Into<String>) {
        self.inner.bus.emit_with(|| Event::Progress {
            deployment: deployment.clone(),
            phase,
            message: message.into(),
        });
    }

    /// Reports that the health check passes.
    pub fn healthy(&self, deployment: &DeploymentId) {
        self.inner.bus.emit_with(|| Event::Healthy {
            deployment: deployment.clone(),
        });
    }

    /// Reports that the health check fails.
    pub fn unhealthy(&self, deployment: &DeploymentId, reason: impl Into<String>) {
        self.inner.bus.emit_with(|| Event::Unhealthy {
            deployment: deployment.clone(),
            reason: reason.into(),
        });
    }

    /// Emits [`Event::Restarted`] only: no status report, no audit entry. Providers whose
    /// supervisor waits before restarting report [`restarting`](Self::restarting) instead.
    pub fn restarted(
        &self,
        deployment: &DeploymentId,
        attempt: u32,
        exit: ExitStatus,
        delay: Duration,
    ) {
        self.inner.bus.emit_with(|| Event::Restarted {
            deployment: deployment.clone(),
            attempt,
            exit,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// Reports that instance `origin` of `deployment` ended and will be restarted after
    /// `delay`: emits [`Event::Restarted`], and the manager moves the deployment to
    /// `Restarting` and writes the restart (attempt, exit, delay) to the audit log. Once
    /// the restarted instance runs, report it with [`runtime_changed`](Self::runtime_changed).
    pub fn restarting(
        &self,
        deployment: &DeploymentId,
        origin: ReportOrigin,
        attempt: u32,
        exit: ExitStatus,
        delay: Duration,
    ) {
        self.restarted(deployment, attempt, exit, delay);
        self.report(
            StatusReport::new(
                deployment.clone(),
                ObservedStatus::restarting(attempt, exit, delay),
            )
            .from_origin(origin),
        );
    }

    /// Reports that instance `origin` of `deployment` was replaced and the deployment runs
    /// with `runtime` now (a supervised restart: new pid, new start time). The manager stores
    /// `runtime` in the record (so `status` shows the new pid, and a later manager hands it
    /// back in [`KnownDeployment::runtime`](crate::KnownDeployment::runtime)) and moves a
    /// `Restarting` deployment back to `Running`.
    pub fn runtime_changed(
        &self,
        deployment: &DeploymentId,
        origin: ReportOrigin,
        runtime: RuntimeInfo,
    ) {
        self.report(
            StatusReport::new(deployment.clone(), ObservedStatus::Running)
                .from_origin(origin)
                .with_runtime(runtime),
        );
    }

    /// Emits [`Event::MonitorRestart`]: a monitor decided to restart `deployment` after
    /// `delay` because of `cause` (it then submits [`Request::Heal`](crate::Request::Heal)).
    pub fn monitor_restart(
        &self,
        deployment: &DeploymentId,
        attempt: u32,
        delay: Duration,
        cause: RestartCause,
    ) {
        self.inner.bus.emit_with(|| Event::MonitorRestart {
            deployment: deployment.clone(),
            attempt,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            cause,
        });
    }

    /// Reports that a running deployment failed on its own and will not be restarted
    /// (crash loop cap, vanished). The manager moves it to `Failed` and emits
    /// [`Event::Failed`] with `failure`.
    pub fn failed(&self, deployment: &DeploymentId, failure: FailureReport) {
        let status = ObservedStatus::failed(failure.reason.clone());
        self.report(StatusReport::new(deployment.clone(), status).with_failure(failure));
    }

    /// Reports that a deployment's instances ended and will not be restarted (a clean exit
    /// under `restart.policy = "on-failure"`): the manager moves it to `Stopped`.
    pub fn exited(&self, deployment: &DeploymentId, exit: ExitStatus) {
        self.report(StatusReport::new(
            deployment.clone(),
            ObservedStatus::Exited { exit },
        ));
    }

    /// Sends a status report as built (with an origin, for the checks described at
    /// [`StatusReport`]); the convenience methods above build the common ones.
    pub fn report(&self, report: StatusReport) {
        if let Some(tx) = &self.inner.reports {
            let _ = tx.send(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_in_order_and_lag_is_reported() {
        let bus = EventBus::new(2);
        let mut rx = bus.subscribe();
        let id = DeploymentId::new("dep-1");
        for _ in 0..5 {
            bus.emit(Event::Healthy {
                deployment: id.clone(),
            });
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 3),
            other => panic!("expected lag, got {other:?}"),
        }
        let next = rx.recv().await.unwrap();
        assert_eq!(next.seq, 4);
    }

    #[test]
    fn events_serialize_with_a_type_tag() {
        let e = Event::StatusChanged {
            deployment: DeploymentId::new("dep-1"),
            from: StatusKind::Deploying,
            to: DeploymentStatus::Running,
            revision: Revision(2),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "status_changed");
        assert_eq!(json["to"]["state"], "running");
    }
}
