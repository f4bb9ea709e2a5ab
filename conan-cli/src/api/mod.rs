//! The daemon's HTTP + JSON wire format, shared by the daemon and the CLI.
//!
//! Field names here are the stable `--json` output of the CLI: add fields, never rename
//! them. No type here ever carries an env value; configs travel only towards the daemon
//! (deploy and update bodies), never back.

pub mod metrics;
pub mod query;

pub use conan::monitor::alerts::{FiringAlert, PendingNotification};

/// `GET /v1/alerts`: what fires now and what waits in the outbox.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct AlertsView {
    /// The alerts firing now, oldest first.
    pub firing: Vec<FiringAlert>,
    /// Notifications not delivered yet, oldest first (at most 100).
    pub pending: Vec<PendingNotification>,
}

use std::collections::BTreeMap;
use std::path::PathBuf;

use conan::{
    AuditEntry, DeploymentConfig, DeploymentRecord, EventEnvelope, FailureReport, HealthReport,
    Metrics, RevisionRecord, RevisionState, Timestamp, UpdateStrategy,
};
use serde::{Deserialize, Serialize};

/// The API version prefix of every path.
pub const PREFIX: &str = "/v1";

/// A deployment as `ls`, `deploy` and friends show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentView {
    /// Deployment id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Provider running it (`local`, `docker`).
    pub provider: String,
    /// Status (`pending`, `deploying`, `running`, `restarting`, `updating`, `stopping`,
    /// `stopped`, `failed`, `removing`, `removed`).
    pub status: String,
    /// Why it failed, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The restart it waits for, for `restarting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartView>,
    /// The serving revision.
    pub revision: u64,
    /// Where it answers: its stable endpoint when it has one (the proxy's address, the
    /// same across updates, restarts and rollbacks), else its instance's own URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The stable endpoint (`http://127.0.0.1:18000`), when the deployment has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The serving instance's own URL (it changes with every blue-green switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    /// The port the (first) instance listens on (its `PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The ports of every instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// The process id of the (first) instance, for the local provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The container id of the (first) instance, for Docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// When the serving instance started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The number of replicas it runs: the count a scale set (the autoscaler's or
    /// `conan scale`'s), else the configured one.
    #[serde(default = "one")]
    pub replicas: u32,
    /// The autoscaling range and target (`replicas = { min, max, .. }` in its config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<conan::Autoscale>,
    /// Every instance in service (one per replica), each with its own port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceView>,
    /// The application directory.
    pub source: PathBuf,
    /// Names of the env variables (never their values).
    pub env: Vec<String>,
    /// When it was first deployed.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The last failure bundle, if it ever failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureReport>,
}

fn one() -> u32 {
    1
}

/// One instance of a deployment (a replica).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// Provider-specific id: a pid for the local provider, a container id for Docker.
    pub id: String,
    /// The port it serves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The revision it runs.
    pub revision: u64,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
}

impl DeploymentView {
    /// The view of a record (env values dropped).
    #[must_use]
    pub fn from_record(record: &DeploymentRecord) -> Self {
        let runtime = record.runtime.as_deref();
        let endpoint = runtime
            .and_then(|r| r.endpoint)
            .map(|a| format!("http://{a}"));
        let first = runtime.and_then(|r| r.instances.first());
        let (pid, container) = match first {
            Some(i) if &*record.provider == "local" => (i.id.parse().ok(), None),
            Some(i) => (None, Some(i.id.clone())),
            None => (None, None),
        };
        let reason = match &record.status {
            conan::DeploymentStatus::Failed { reason } => Some(reason.clone()),
            _ => None,
        };
        let restart = match &record.status {
            conan::DeploymentStatus::Restarting { attempt, exit, at } => Some(RestartView {
                attempt: *attempt,
                exit: *exit,
                at: *at,
            }),
            _ => None,
        };
        Self {
            id: record.id.to_string(),
            name: record.name.to_string(),
            provider: record.provider.to_string(),
            status: record.status.kind().as_str().to_owned(),
            reason,
            restart,
            revision: record.revision.0,
            url: endpoint
                .clone()
                .or_else(|| runtime.and_then(|r| r.url.clone())),
            endpoint,
            instance_url: runtime.and_then(|r| r.url.clone()),
            port: runtime.and_then(conan::RuntimeInfo::port),
            ports: runtime
                .map(|r| r.instances.iter().filter_map(|i| i.port).collect())
                .unwrap_or_default(),
            pid,
            container,
            started_at: first.and_then(|i| i.started_at),
            replicas: conan::DeploymentManager::replicas_of(record),
            autoscale: record.config.autoscale.clone(),
            instances: runtime
                .map(|r| {
                    r.instances
                        .iter()
                        .map(|i| InstanceView {
                            id: i.id.clone(),
                            port: i.port,
                            revision: i.revision.0,
                            started_at: i.started_at,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            source: record.config.source.clone(),
            env: record.config.env.keys().map(str::to_owned).collect(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            last_failure: record.last_failure.as_deref().cloned(),
        }
    }
}

/// The restart a `restarting` deployment waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartView {
    /// The restart count within the restart window (1 = first restart).
    pub attempt: u32,
    /// How the crashed instance ended.
    pub exit: conan::ExitStatus,
    /// When the restart is due.
    pub at: Timestamp,
}

/// `status NAME`: the deployment plus live health and metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The deployment.
    #[serde(flatten)]
    pub deployment: DeploymentView,
    /// The latest health observation (absent when the provider could not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// Resource usage (absent when nothing runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// The endpoint's counters per revision (absent without an endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<conan::traffic::TrafficStats>,
}

/// `POST /deployments/{name}/pause`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PauseBody {
    /// How long each held request waits before a 503 (default 30 s), like `"30s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `POST /deployments/{name}/maintenance`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceBody {
    /// On or off.
    pub on: bool,
    /// The body of the 503 answers (default: a short plain-text notice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// One revision in `history NAME`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionView {
    /// Revision number.
    pub revision: u64,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What created it: `deploy`, `update` or `rollback`.
    pub cause: String,
    /// For a rollback: the revision whose config it reuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<u64>,
    /// Whether this revision serves now.
    pub serving: bool,
    /// The application directory of this revision.
    pub source: PathBuf,
    /// When it was created.
    pub created_at: Timestamp,
}

impl RevisionView {
    /// The view of a revision record; `serving` is the deployment's current revision.
    #[must_use]
    pub fn from_record(record: &RevisionRecord, serving: u64) -> Self {
        let (state, reason) = match &record.state {
            RevisionState::Pending => ("pending", None),
            RevisionState::Succeeded => ("succeeded", None),
            RevisionState::Failed { reason } => ("failed", Some(reason.clone())),
        };
        Self {
            revision: record.revision.0,
            state: state.to_owned(),
            reason,
            cause: record.cause.as_str().to_owned(),
            source_revision: record.source_revision.map(|r| r.0),
            serving: record.revision.0 == serving,
            source: record.config.source.clone(),
            created_at: record.created_at,
        }
    }
}

/// What `GET /v1/daemon` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The daemon's process id.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// Its `CONAN_HOME`.
    pub home: PathBuf,
    /// Registered providers.
    pub providers: Vec<String>,
    /// Why Docker is not available, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_error: Option<String>,
    /// How the local provider contains each instance's processes and whether resource
    /// limits are enforced (`cgroup v2 (...)`, `process markers (no cgroup: ...)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment: Option<String>,
    /// Where Prometheus metrics are served (`GET /metrics`), when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Why `/metrics` is not served although the settings ask for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
    /// When the daemon started.
    pub started_at: Timestamp,
    /// Number of deployments it knows.
    pub deployments: usize,
    /// Damage the state database showed (a restore from its backup at start, rows that
    /// could not be read and are not managed), and its backup.
    #[serde(default)]
    pub state: conan::store::StoreHealth,
    /// State writes the store refused (a full disk) and that are being retried.
    #[serde(default)]
    pub unsaved: conan::manager::UnsavedState,
    /// The effective daemon settings (`CONAN_HOME/daemon.toml`, the environment at start)
    /// and where each came from.
    #[serde(default)]
    pub settings: Vec<crate::daemon::settings::SettingView>,
}

/// An error answer: one line, an optional hint, and the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// A machine-readable code (`not_found`, `invalid_config`, `deploy_failed`, ...).
    pub code: String,
    /// One clear line, ending with the underlying causes (`local: cannot start
    /// /usr/bin/node: Too many open files (os error 24)`).
    pub message: String,
    /// The underlying errors the message ends with, outermost first (the OS error last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// For `invalid_config`: every problem, with its field path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<conan::ConfigProblem>,
    /// For a failed deploy or update: the failure bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReport>,
    /// The deployment the error concerns, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentView>,
}

impl ApiError {
    /// An error with a code and a message.
    #[must_use]
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            causes: Vec::new(),
            hint: None,
            problems: Vec::new(),
            failure: None,
            deployment: None,
        }
    }

    /// The same error with a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// One line of an operation's progress stream (`?progress=1`, `application/x-ndjson`):
/// events about the deployment, then exactly one `result` or `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per NDJSON line, decoded and dropped at once"
)]
pub enum ProgressLine {
    /// An event about the deployment.
    Event(EventEnvelope),
    /// The operation succeeded; the deployment after it.
    Result(DeploymentView),
    /// The operation failed.
    Error(ApiError),
}

/// Body of `POST /v1/deployments/{name}/update`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateBody {
    /// A whole new config (from the project's `conan.toml`); absent keeps the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<DeploymentConfig>,
    /// A new application directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Env variables to set (merged over the current ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The update strategy for this rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<UpdateStrategy>,
}

/// Body of `POST /v1/deployments/{name}/scale`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleBody {
    /// The number of replicas to run (within `replicas.min..=max` when autoscaled).
    pub replicas: u32,
}

/// Body of `POST /v1/deployments/{name}/rollback`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RollbackBody {
    /// The revision whose config to roll out (default: the last good one before the
    /// serving one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// The audit log as `events` shows it.
pub type AuditList = Vec<AuditEntry>;
