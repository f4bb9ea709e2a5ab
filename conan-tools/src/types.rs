//! The tools' inputs and outputs: serde + JSON Schema, field names as the design gives them
//! (camelCase). Add fields, never rename them.
//!
//! Inputs reject unknown fields (a typo is an error, not a silent default). Outputs never
//! carry an env value: a deployment lists the *names* of its env variables only.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `deploy_application`: deploy a project directory as a new deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct DeployInput {
    /// The deployment's name: a DNS label (lowercase letters, digits and `-`, at most 63).
    pub name: String,
    /// The application directory (absolute, or relative to the server's working
    /// directory). Its `conan.toml`, when present, is read first; the fields here override it.
    pub project_path: String,
    /// Where to run it; the daemon's default (`local`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Environment variables for the app. Their values are never echoed back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The port the app listens on (`PORT` is set to it); a free one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// An HTTP path that answers 2xx when the app is ready (`/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    /// The command that starts the app (`node server.js`); detected when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    /// Any other `conan.toml` field, keyed as in the file (`restart`, `resources`,
    /// `replicas`, `update`, `labels`, `provider_options`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

impl DeployInput {
    /// A deploy of `project_path` named `name`.
    #[must_use]
    pub fn new(name: impl Into<String>, project_path: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            project_path: project_path.into(),
            ..Self::default()
        }
    }
}

/// A metric `monitor_deployment` can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// CPU use, percent of one core.
    Cpu,
    /// Resident memory and its limit.
    Memory,
    /// Bytes received and sent.
    Network,
    /// The latest health observation.
    Health,
    /// Restarts by the supervisor.
    Restarts,
    /// Requests per second (absent where no provider counts them).
    Requests,
}

/// `monitor_deployment`: a deployment's metrics and health now, with recent series.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct MonitorInput {
    /// The deployment's id or name.
    pub deployment_id: String,
    /// The metrics wanted; all of them when absent or empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricKind>,
    /// The width of one point of the recent series, in milliseconds (100 to 3,600,000;
    /// default 5,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

impl MonitorInput {
    /// Every metric of `deployment_id`.
    #[must_use]
    pub fn new(deployment_id: impl Into<String>) -> Self {
        Self {
            deployment_id: deployment_id.into(),
            ..Self::default()
        }
    }
}

/// How an update replaces the running revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Stop the old revision, then start the new one (brief downtime).
    Recreate,
    /// Replace replicas a batch at a time, each batch health-gated.
    Rolling,
    /// Start the new revision beside the old, switch when healthy, then stop the old.
    BlueGreen,
    /// Route a growing share of the requests to the new revision, judged against the old
    /// one: promoted, or rolled back (needs the proxy in front of the deployment).
    Canary,
}

/// `update_deployment`: roll out a new revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct UpdateInput {
    /// The deployment's id or name.
    pub deployment_id: String,
    /// A new application directory (its `conan.toml`, when present, becomes the new
    /// config); the current one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_path: Option<String>,
    /// Env variables to set, merged over the current ones. Never echoed back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The strategy for this rollout; the deployment's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
}

impl UpdateInput {
    /// An update of `deployment_id` that changes nothing yet.
    #[must_use]
    pub fn new(deployment_id: impl Into<String>) -> Self {
        Self {
            deployment_id: deployment_id.into(),
            ..Self::default()
        }
    }
}

/// `stop_deployment`: stop a deployment's instances (it can be started again).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct StopInput {
    /// The deployment's id or name.
    pub deployment_id: String,
}

impl StopInput {
    /// Stop `deployment_id`.
    #[must_use]
    pub fn new(deployment_id: impl Into<String>) -> Self {
        Self {
            deployment_id: deployment_id.into(),
        }
    }
}

/// `remove_deployment`: stop and delete a deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RemoveInput {
    /// The deployment's id or name.
    pub deployment_id: String,
    /// Remove it even while it runs (otherwise a running deployment must be stopped first).
    #[serde(default)]
    pub force: bool,
}

impl RemoveInput {
    /// Remove `deployment_id`; `force` also when it runs.
    #[must_use]
    pub fn new(deployment_id: impl Into<String>, force: bool) -> Self {
        Self {
            deployment_id: deployment_id.into(),
            force,
        }
    }
}

/// `list_deployments`: the deployments, optionally filtered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ListInput {
    /// Only those of this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Only those in this status (`running`, `stopped`, `failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A log severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
    /// Fatal.
    Fatal,
}

/// Which output of the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// `get_deployment_logs`: a deployment's recent log lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct LogsInput {
    /// The deployment's id or name.
    pub deployment_id: String,
    /// How many of the newest matching lines (default 100, at most 5,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
    /// Only lines from this time on: RFC 3339 (`2026-12-01T10:00:00Z`) or an age (`10m`, `2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only lines at this level or above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Only lines containing this text (case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// Only lines of this output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
}

impl LogsInput {
    /// The last 100 lines of `deployment_id`.
    #[must_use]
    pub fn new(deployment_id: impl Into<String>) -> Self {
        Self {
            deployment_id: deployment_id.into(),
            ..Self::default()
        }
    }
}

/// A deployment as the tools answer it (no env values: only the names). Exhaustive: a
/// backend over another transport builds it from its own view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Its id (`deploymentId` of the other tools takes it, or the name).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The provider running it.
    pub provider: String,
    /// `pending`, `deploying`, `running`, `restarting`, `updating`, `stopping`, `stopped`,
    /// `failed`, `removing` or `removed`.
    pub status: String,
    /// Why it failed, when `failed`.
    pub reason: Option<String>,
    /// Where it answers.
    pub url: Option<String>,
    /// When the serving instance started (RFC 3339).
    pub start_time: Option<String>,
    /// The process id of the (first) instance, for the local provider.
    pub pid: Option<u32>,
    /// The container id of the (first) instance, for Docker.
    pub container: Option<String>,
    /// The port it listens on.
    pub port: Option<u16>,
    /// The serving revision.
    pub revision: u64,
    /// The application directory.
    pub project_path: String,
    /// The names of its env variables (never their values).
    pub env: Vec<String>,
}

/// The answer of `deploy_application`, `update_deployment`, `stop_deployment` and
/// `remove_deployment`: the deployment after the operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct OperationOutput {
    /// Always `true` (a failure answers [`ToolFailure`](crate::ToolFailure)).
    pub success: bool,
    /// The deployment after the operation.
    pub deployment: Deployment,
    /// One line saying what happened.
    pub message: String,
}

/// The answer of `list_deployments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ListOutput {
    /// Always `true`.
    pub success: bool,
    /// The deployments, oldest first.
    pub deployments: Vec<Deployment>,
    /// How many.
    pub count: usize,
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LogEntry {
    /// When it was captured (RFC 3339).
    pub timestamp: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Its detected level.
    pub level: String,
    /// The text.
    pub message: String,
}

/// The answer of `get_deployment_logs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LogsOutput {
    /// Always `true`.
    pub success: bool,
    /// The deployment's id.
    pub deployment_id: String,
    /// The lines, oldest first.
    pub logs: Vec<LogEntry>,
    /// How many.
    pub count: usize,
}

/// One point of a recent series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SeriesPoint {
    /// The start of the point (RFC 3339).
    pub time: String,
    /// Smallest sample.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Largest sample.
    pub max: f64,
}

/// CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CpuMetric {
    /// Percent of one core now (200 = two cores busy); null when not measured.
    pub usage: Option<f64>,
    /// The recent series, one point per interval.
    pub series: Vec<SeriesPoint>,
}

/// Memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct MemoryMetric {
    /// Resident bytes now; null when not measured.
    pub usage: Option<u64>,
    /// The enforced limit in bytes; null when unlimited.
    pub limit: Option<u64>,
    /// The recent series (bytes), one point per interval.
    pub series: Vec<SeriesPoint>,
}

/// Network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct NetworkMetric {
    /// Bytes received so far.
    pub rx_bytes: Option<u64>,
    /// Bytes sent so far.
    pub tx_bytes: Option<u64>,
    /// Received per second, recently.
    pub rx_bytes_per_second: Option<f64>,
    /// Sent per second, recently.
    pub tx_bytes_per_second: Option<f64>,
}

/// Health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HealthMetric {
    /// `healthy`, `unhealthy`, `starting` or `unknown`.
    pub status: String,
    /// When the last probe ran (RFC 3339).
    pub last_check: Option<String>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// What the last probe saw.
    pub detail: Option<String>,
}

/// Restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RestartsMetric {
    /// By the supervisor since the deploy.
    pub total: u32,
    /// Within the series' window.
    pub in_window: u64,
}

/// Requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RequestsMetric {
    /// Requests per second; null where no provider counts them (none does yet).
    pub per_second: Option<f64>,
}

/// The metrics asked; those not asked (or not measurable now) are absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Metrics {
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuMetric>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryMetric>,
    /// Network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMetric>,
    /// Health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthMetric>,
    /// Restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<RestartsMetric>,
    /// Requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestsMetric>,
}

/// What `monitor_deployment` saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Monitoring {
    /// The deployment's id.
    pub deployment_id: String,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: String,
    /// When the values were measured (RFC 3339); null when nothing runs.
    pub sampled_at: Option<String>,
    /// The metrics asked.
    pub metrics: Metrics,
    /// The interval of the series, in milliseconds.
    pub interval: u64,
}

/// The answer of `monitor_deployment`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct MonitorOutput {
    /// Always `true`.
    pub success: bool,
    /// What was seen.
    pub monitoring: Monitoring,
}
