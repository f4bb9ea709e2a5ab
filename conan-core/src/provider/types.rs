//! What providers are handed and what they answer: specs, known state, runtime info,
//! observed status, metrics, health.
//!
//! Output types are `#[non_exhaustive]`: build them with their constructors and `with_*`
//! methods (or `Default` and field assignment), so new fields do not break providers.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::DeploymentConfig;
use crate::failure::{ExitStatus, FailureReport};
use crate::id::{DeploymentId, Revision};
use crate::time::Timestamp;

/// One revision of one deployment, as handed to a provider.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentSpec {
    /// The deployment.
    pub id: DeploymentId,
    /// The revision to run.
    pub revision: Revision,
    /// Its config (validated).
    pub config: Arc<DeploymentConfig>,
}

impl DeploymentSpec {
    /// A spec.
    #[must_use]
    pub fn new(
        id: DeploymentId,
        revision: Revision,
        config: impl Into<Arc<DeploymentConfig>>,
    ) -> Self {
        Self {
            id,
            revision,
            config: config.into(),
        }
    }

    /// The deployment's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// What the manager's store knows about a deployment: the spec of its current revision and
/// the [`RuntimeInfo`] the provider last returned for it (persisted, so it survives a
/// restart of the managing process).
///
/// Every call after `deploy` receives it, so a provider can be stateless: a cloud provider
/// keeps its remote ids in [`RuntimeInfo::details`] and reads them back from here.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct KnownDeployment {
    /// The current revision (the serving one; for a stopped deployment, the one to resume).
    pub spec: DeploymentSpec,
    /// The provider's last answer for it; empty ([`RuntimeInfo::default`]) when none was
    /// persisted. After a stop, `instances` and `url` are cleared and `details` kept.
    /// (Shared with the manager's record: handing it over copies nothing.)
    pub runtime: Arc<RuntimeInfo>,
}

impl KnownDeployment {
    /// Known state made of a spec and a runtime record.
    #[must_use]
    pub fn new(spec: DeploymentSpec, runtime: impl Into<Arc<RuntimeInfo>>) -> Self {
        Self {
            spec,
            runtime: runtime.into(),
        }
    }

    /// Known state with nothing recorded yet.
    #[must_use]
    pub fn from_spec(spec: DeploymentSpec) -> Self {
        Self::new(spec, Arc::new(RuntimeInfo::default()))
    }

    /// The deployment's id.
    #[must_use]
    pub fn id(&self) -> &DeploymentId {
        &self.spec.id
    }

    /// The current revision.
    #[must_use]
    pub fn revision(&self) -> Revision {
        self.spec.revision
    }

    /// A value the provider stored in [`RuntimeInfo::details`].
    #[must_use]
    pub fn detail(&self, key: &str) -> Option<&serde_json::Value> {
        self.runtime.details.get(key)
    }
}

/// One running instance (a process, a container).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceInfo {
    /// Provider-specific id: a pid, a container id.
    pub id: String,
    /// The port it serves on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The revision it runs.
    pub revision: Revision,
}

impl InstanceInfo {
    /// An instance of `revision` with a provider-specific id.
    #[must_use]
    pub fn new(id: impl Into<String>, revision: Revision) -> Self {
        Self {
            id: id.into(),
            port: None,
            started_at: None,
            revision,
        }
    }

    /// The same instance serving on `port`.
    #[must_use]
    pub fn with_port(mut self, port: Option<u16>) -> Self {
        self.port = port;
        self
    }

    /// The same instance, started at `at`.
    #[must_use]
    pub fn with_started_at(mut self, at: Option<Timestamp>) -> Self {
        self.started_at = at;
        self
    }
}

/// What a provider reports about a deployment it runs. The manager persists it with the
/// deployment and hands it back in [`KnownDeployment::runtime`].
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// The running instances.
    #[serde(default)]
    pub instances: Vec<InstanceInfo>,
    /// Where the app answers (`http://127.0.0.1:41234`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The deployment's stable endpoint (the traffic layer's listening address), set by the
    /// manager, never by a provider: it is kept across every runtime a provider answers,
    /// for the deployment's life. `None` without a traffic layer or with
    /// `endpoint.enabled = false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<std::net::SocketAddr>,
    /// The replica count a scale set (the autoscaler's or `conan scale`'s), set by the
    /// manager, never by a provider, and kept across every runtime a provider answers
    /// until a new revision rolls out. `None`: the config's `replicas`. Providers read the
    /// count from the spec's config, where the manager puts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Provider-specific details (image id, remote service id, ...): whatever the provider
    /// needs to find the deployment again after a restart. Never secrets: it is stored
    /// and shown by `conan status --json`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Takes the shared runtime of a [`KnownDeployment`] (copying it only when it is shared).
impl From<Arc<RuntimeInfo>> for RuntimeInfo {
    fn from(shared: Arc<RuntimeInfo>) -> Self {
        Arc::unwrap_or_clone(shared)
    }
}

impl RuntimeInfo {
    /// Empty runtime info.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, with one more instance.
    #[must_use]
    pub fn with_instance(mut self, instance: InstanceInfo) -> Self {
        self.instances.push(instance);
        self
    }

    /// The same, with a URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The same, with the stable endpoint (see [`RuntimeInfo::endpoint`]).
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Option<std::net::SocketAddr>) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// The same, with the scaled replica count (see [`RuntimeInfo::replicas`]).
    #[must_use]
    pub fn with_replicas(mut self, replicas: Option<u32>) -> Self {
        self.replicas = replicas;
        self
    }

    /// The same, with a detail set.
    #[must_use]
    pub fn with_detail(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// The first instance's port.
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.instances.iter().find_map(|i| i.port)
    }

    /// What is kept of it while the deployment is stopped: the details, no instances.
    #[must_use]
    pub fn stopped(&self) -> Self {
        Self {
            instances: Vec::new(),
            url: None,
            endpoint: self.endpoint,
            replicas: self.replicas,
            details: self.details.clone(),
        }
    }
}

/// The status of a deployment as its provider observes it: narrower than the manager's
/// [`DeploymentStatus`](crate::DeploymentStatus), which it maps onto the state machine
/// (`Starting` and `Running` → running, `Restarting` → restarting, `Stopped` and `Exited` →
/// stopped, `Failed` → failed). Pending, updating, removing and the like are the manager's
/// business.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[non_exhaustive]
pub enum ObservedStatus {
    /// Being started.
    Starting,
    /// Serving.
    Running,
    /// Crashed; the provider's supervisor restarts it once the backoff delay passed.
    Restarting {
        /// The restart count within the restart window (1 = first restart).
        attempt: u32,
        /// How the crashed instance ended.
        exit: ExitStatus,
        /// The backoff delay before the restart, in milliseconds.
        delay_ms: u64,
        /// When the restart is due.
        at: Timestamp,
    },
    /// Stopped on purpose (or never started); nothing runs.
    Stopped,
    /// Ended on its own and will not be restarted (a clean exit under `on-failure`).
    Exited {
        /// How it ended.
        exit: ExitStatus,
    },
    /// Failed and will not be restarted (crash loop cap, vanished).
    Failed {
        /// Why.
        reason: String,
    },
}

impl ObservedStatus {
    /// A failure with a reason.
    #[must_use]
    pub fn failed(reason: impl Into<String>) -> Self {
        ObservedStatus::Failed {
            reason: reason.into(),
        }
    }

    /// A restart that is due `delay` from now (a delay past the end of time is due at the
    /// latest representable time).
    #[must_use]
    pub fn restarting(attempt: u32, exit: ExitStatus, delay: Duration) -> Self {
        let now = Timestamp::now().as_system_time();
        let at = now
            .checked_add(delay)
            .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
            .unwrap_or(now);
        ObservedStatus::Restarting {
            attempt,
            exit,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            at: Timestamp::from_system_time(at),
        }
    }

    /// Whether it serves (or is about to again): `Running`, `Starting` or `Restarting`.
    #[must_use]
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            ObservedStatus::Running | ObservedStatus::Starting | ObservedStatus::Restarting { .. }
        )
    }
}

impl std::fmt::Display for ObservedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObservedStatus::Starting => f.write_str("starting"),
            ObservedStatus::Running => f.write_str("running"),
            ObservedStatus::Restarting { attempt, exit, .. } => {
                write!(f, "restarting (attempt {attempt}, {exit})")
            }
            ObservedStatus::Stopped => f.write_str("stopped"),
            ObservedStatus::Exited { exit } => write!(f, "exited ({exit})"),
            ObservedStatus::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// Resource usage of a deployment (all instances together).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metrics {
    /// CPU use in percent of one core (200 = two cores busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Resident memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The memory limit, if one is enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Time since the current instance started (JSON: `uptime_ms`, a number).
    #[serde(
        rename = "uptime_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::serde_opt_millis"
    )]
    pub uptime: Option<Duration>,
    /// Restarts by the supervisor since the deploy.
    pub restarts: u32,
    /// The serving port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_rx_bytes: Option<u64>,
    /// Bytes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_tx_bytes: Option<u64>,
    /// Number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

impl Metrics {
    /// Empty metrics (everything unknown, no restarts); set the fields you measure.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

/// Health of a deployment.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// The check passes.
    Healthy,
    /// The check fails.
    Unhealthy,
    /// Not yet decided (start period, first probe pending).
    Starting,
    /// No check configured or nothing running.
    Unknown,
}

impl HealthStatus {
    /// The lowercase name (as serialized).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
            HealthStatus::Starting => "starting",
            HealthStatus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The latest health observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// When the last probe ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Timestamp>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// What the last probe saw (`"GET /health -> 200"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HealthReport {
    /// A report with only a verdict.
    #[must_use]
    pub fn new(status: HealthStatus) -> Self {
        Self {
            status,
            checked_at: None,
            consecutive_failures: 0,
            detail: None,
        }
    }

    /// The same report, checked at `at`.
    #[must_use]
    pub fn checked_at(mut self, at: Timestamp) -> Self {
        self.checked_at = Some(at);
        self
    }

    /// The same report with what the probe saw.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The same report with a count of failures in a row.
    #[must_use]
    pub fn with_failures(mut self, consecutive: u32) -> Self {
        self.consecutive_failures = consecutive;
        self
    }
}

/// One deployment as [`Provider::recover`](crate::Provider::recover) found it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RecoveredDeployment {
    /// The deployment.
    pub id: DeploymentId,
    /// The revision found (running, or stopped at).
    pub revision: Revision,
    /// What the provider found.
    pub status: ObservedStatus,
    /// Its instances and details.
    pub runtime: RuntimeInfo,
    /// Why it is not running, when it is not.
    pub failure: Option<FailureReport>,
}

impl RecoveredDeployment {
    /// Found running (and now supervised again) with `runtime`.
    #[must_use]
    pub fn running(id: DeploymentId, revision: Revision, runtime: impl Into<RuntimeInfo>) -> Self {
        Self {
            id,
            revision,
            status: ObservedStatus::Running,
            runtime: runtime.into(),
            failure: None,
        }
    }

    /// Found stopped; `runtime` holds the details kept for a later start.
    #[must_use]
    pub fn stopped(id: DeploymentId, revision: Revision, runtime: impl Into<RuntimeInfo>) -> Self {
        Self {
            id,
            revision,
            status: ObservedStatus::Stopped,
            runtime: runtime.into(),
            failure: None,
        }
    }

    /// Found gone or broken: `failure` says why.
    #[must_use]
    pub fn failed(id: DeploymentId, revision: Revision, failure: FailureReport) -> Self {
        Self {
            id,
            revision,
            status: ObservedStatus::failed(failure.reason.clone()),
            runtime: RuntimeInfo::default(),
            failure: Some(failure),
        }
    }
}
