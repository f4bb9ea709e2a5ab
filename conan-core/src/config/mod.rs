//! The deployment config: what to run, where, and how to keep it healthy.
//!
//! A [`DeploymentConfig`] is read from TOML (`conan.toml`) or JSON, or built in code with
//! [`DeploymentConfig::builder`]. [`DeploymentConfig::validate`] reports **every** problem
//! at once, each with its field path (`health_check.path: must start with '/'`).
//!
//! # Defaults
//!
//! Every default follows a tool people already trust:
//!
//! | field | default | anchor |
//! |---|---|---|
//! | `source` | `"."` | |
//! | `replicas` | 1 | |
//! | `replicas = { min, max, target_in_flight \| target_cpu }` | autoscaling off | |
//! | `replicas.scale_out_cooldown` / `scale_in_cooldown` | 30 s / 2 min | Kubernetes HPA: no scale-up delay, 5 min scale-down stabilization; AWS ECS: 300 s |
//! | `health_check.interval` / `timeout` | 10 s / 2 s | Kubernetes probes: 10 s period |
//! | `health_check.failure_threshold` / `success_threshold` | 3 / 1 | Kubernetes, Docker `--health-retries` |
//! | `health_check.start_period` | 0 s | Docker `--health-start-period` |
//! | `health_check.path` (HTTP) | `"/"` | |
//! | `restart.policy` | `always` | PM2, Kubernetes `restartPolicy: Always` |
//! | `restart.max_restarts` in `restart.window` | 10 in 10 min | PM2 `max_restarts` 10 |
//! | `restart.backoff_initial` → `backoff_max` | 100 ms doubling (×2) to 30 s, ±20 % jitter | PM2 `exp_backoff_restart_delay` 100 ms, capped like Kubernetes' crash-loop backoff |
//! | `restart.reset_after` | 30 s of health resets the backoff | PM2 resets after 30 s |
//! | `restart.min_uptime` | 1 s | PM2 `min_uptime` |
//! | `stop.signal` / `stop.timeout` | `SIGTERM` / 5 s | Nomad `kill_timeout` 5 s |
//! | `update.strategy` | `blue-green` | Kamal: new beside old, health-gated switch |
//! | `update.max_parallel` | 1 | Nomad `max_parallel` |
//! | `update.max_surge` / `max_unavailable` | 1 / 0 | Kubernetes' are 25 % / 25 %; 1 / 0 never drops capacity (zero downtime) |
//! | `update.min_healthy_time` | 0 s | Kamal (the health check is the gate) |
//! | `update.healthy_deadline` | 60 s | between Kamal's 30 s and Nomad's 5 min |
//! | `update.auto_rollback` | true | a failed revision never replaces a serving one |
//! | `endpoint.enabled` / `endpoint.drain_timeout` | true / 30 s | kamal-proxy: a stable proxy address, 30 s drain |
//!
//! # Maxima
//!
//! Every duration is bounded, so a value that parses but makes no sense
//! (`"18446744073709551615s"`) is an [`Error::InvalidConfig`] at validation
//! (`update.healthy_deadline: at most 24h (got 18446744073709551615s)`) instead of an
//! overflow in a provider's timer. The bounds are far above any sensible setting and are
//! in [`limits`]:
//!
//! | field | at most |
//! |---|---|
//! | `health_check.interval` | 1 h |
//! | `health_check.timeout` | 10 min |
//! | `health_check.start_period` | 1 h |
//! | `restart.window` | 24 h |
//! | `restart.backoff_initial`, `restart.backoff_max` | 1 h |
//! | `restart.reset_after` | 24 h |
//! | `restart.min_uptime` | 1 h |
//! | `stop.timeout` | 1 h |
//! | `update.min_healthy_time` | 1 h |
//! | `update.healthy_deadline` | 24 h |
//! | `endpoint.drain_timeout` | 1 h |
//! | `replicas.scale_out_cooldown`, `replicas.scale_in_cooldown` | 24 h |

mod autoscale;
mod builder;
mod canary;
pub mod limits;
mod repr;
mod units;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use autoscale::{Autoscale, ScaleTarget};
pub use builder::DeploymentConfigBuilder;
pub use canary::{CanaryPlan, CanaryStep};
pub use units::{ByteSize, StopSignal};
pub use validate::ConfigProblem;

use crate::capability::Capabilities;
use crate::error::{Error, Result};
use crate::secret::Env;
use crate::time::serde_duration;

/// Everything Conan needs to know to deploy one application and keep it healthy.
///
/// `Debug` never shows env values (see [`Env`]). Serialized as in `conan.toml`; `replicas`
/// is an integer, or a table when [`autoscale`](Self::autoscale) is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "repr::ConfigRepr", into = "repr::ConfigRepr")]
pub struct DeploymentConfig {
    /// The deployment's name: a DNS label (1–63 characters of `a-z`, `0-9`, `-`, not starting
    /// or ending with `-`). Unique among live deployments of a manager.
    pub name: String,
    /// The application's directory (default `"."`).
    pub source: PathBuf,
    /// The provider to deploy with; when absent the manager picks one (see
    /// [`ProviderRegistry`](crate::ProviderRegistry)).
    pub provider: Option<String>,
    /// Environment variables for the application. Values are secrets.
    pub env: Env,
    /// The port the application listens on; when absent the provider assigns one.
    pub port: Option<u16>,
    /// The command that starts the application (run by `sh -c`); when absent the provider
    /// derives it (for Node.js: `package.json`'s `scripts.start`, then `main`, then
    /// `server.js` / `index.js` / `app.js`).
    pub start_command: Option<String>,
    /// How readiness and liveness are judged; absent means "the app accepts TCP on its
    /// port, or the process stays up for `restart.min_uptime`, whichever comes first"
    /// (providers that know no port judge by uptime alone).
    pub health_check: Option<HealthCheck>,
    /// When and how fast crashed instances are restarted.
    pub restart: RestartPolicy,
    /// How instances are stopped.
    pub stop: StopConfig,
    /// Memory and CPU limits.
    pub resources: Resources,
    /// How many instances to run (default 1). With [`autoscale`](Self::autoscale) this is
    /// its `min`, the count a first deploy starts with; the count set later (by the
    /// autoscaler or `conan scale`) is kept in the deployment's runtime
    /// ([`RuntimeInfo::replicas`](crate::RuntimeInfo::replicas)) and handed to providers as
    /// this field of the spec's config.
    pub replicas: u32,
    /// The replica range and target when the replica count follows the load
    /// (`replicas = { min, max, target_in_flight | target_cpu }`); `None` for a fixed count.
    pub autoscale: Option<Autoscale>,
    /// How a new revision replaces the running one.
    pub update: UpdatePolicy,
    /// The deployment's stable endpoint (a reverse proxy in front of its instances, when
    /// the manager has a traffic layer: see [`crate::traffic`]).
    pub endpoint: EndpointConfig,
    /// Capabilities the chosen provider must have.
    pub requirements: Capabilities,
    /// Free-form labels, copied onto what the provider creates (container labels, ...).
    pub labels: BTreeMap<String, String>,
    /// Options for one provider each, keyed by provider name. Conan core never reads them;
    /// each provider decodes its own table into its own typed struct with
    /// [`DeploymentConfig::provider_options_for`].
    pub provider_options: BTreeMap<String, serde_json::Value>,
}

pub(super) fn default_source() -> PathBuf {
    PathBuf::from(".")
}

impl DeploymentConfig {
    /// A config with every default and the given name.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source: default_source(),
            provider: None,
            env: Env::new(),
            port: None,
            start_command: None,
            health_check: None,
            restart: RestartPolicy::default(),
            stop: StopConfig::default(),
            resources: Resources::default(),
            replicas: 1,
            autoscale: None,
            update: UpdatePolicy::default(),
            endpoint: EndpointConfig::default(),
            requirements: Capabilities::none(),
            labels: BTreeMap::new(),
            provider_options: BTreeMap::new(),
        }
    }

    /// A builder starting from [`DeploymentConfig::new`].
    pub fn builder(name: impl Into<String>) -> DeploymentConfigBuilder {
        DeploymentConfigBuilder::new(name)
    }

    /// Parses TOML and validates the result.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] listing the syntax error, or every validation problem.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::InvalidConfig {
            problems: vec![ConfigProblem::new("", e.message().trim().to_owned())],
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses JSON and validates the result.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] listing the syntax error, or every validation problem.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| Error::InvalidConfig {
            problems: vec![ConfigProblem::new("", e.to_string())],
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Renders the config as TOML (env values included: this is for writing config files).
    ///
    /// # Errors
    /// Fails only if a provider option cannot be represented in TOML (e.g. a JSON `null`).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::InvalidConfig {
            problems: vec![ConfigProblem::new("", e.to_string())],
        })
    }

    /// Checks every rule and returns all problems at once.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with one [`ConfigProblem`] per broken rule.
    pub fn validate(&self) -> Result<()> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig { problems })
        }
    }

    /// Decodes the options table of `provider` into the provider's own type.
    /// Returns `Ok(None)` when the config has no table for that provider.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with the path `provider_options.<provider>` and serde's message.
    pub fn provider_options_for<T: DeserializeOwned>(&self, provider: &str) -> Result<Option<T>> {
        match self.provider_options.get(provider) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|e| Error::InvalidConfig {
                    problems: vec![ConfigProblem::new(
                        format!("provider_options.{provider}"),
                        e.to_string(),
                    )],
                }),
        }
    }

    /// The most replicas this config may run: `autoscale.max`, else `replicas`.
    #[must_use]
    pub fn max_replicas(&self) -> u32 {
        self.autoscale
            .as_ref()
            .map_or(self.replicas, |a| a.max.max(self.replicas))
    }

    /// The effective health-check interval, if a check is configured.
    #[must_use]
    pub fn health_interval(&self) -> Option<Duration> {
        self.health_check.as_ref().map(|h| h.interval)
    }
}

/// How a health check probes the application.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthCheckKind {
    /// `GET` the path on the app's port; any 2xx status is healthy.
    #[default]
    Http,
    /// A TCP connection to the app's port succeeds.
    Tcp,
    /// The process (or container) is alive.
    Process,
    /// A command (run by `sh -c` in the app's directory) exits 0.
    Command,
}

/// Readiness and liveness probing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The kind of probe (default `http`).
    #[serde(rename = "type", default)]
    pub kind: HealthCheckKind,
    /// HTTP path to `GET` (default `"/"`); must start with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port to probe when it differs from the app's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The command of a `command` check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Time between probes once running (default 10 s).
    #[serde(default = "HealthCheck::default_interval", with = "serde_duration")]
    pub interval: Duration,
    /// How long one probe may take (default 2 s).
    #[serde(default = "HealthCheck::default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    /// Consecutive failures that make a running app unhealthy (default 3).
    #[serde(default = "HealthCheck::default_failure_threshold")]
    pub failure_threshold: u32,
    /// Consecutive successes that make it healthy again (default 1).
    #[serde(default = "HealthCheck::default_success_threshold")]
    pub success_threshold: u32,
    /// Grace period after start during which failures do not count (default 0 s).
    #[serde(default, with = "serde_duration")]
    pub start_period: Duration,
}

impl HealthCheck {
    fn default_interval() -> Duration {
        Duration::from_secs(10)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_failure_threshold() -> u32 {
        3
    }
    fn default_success_threshold() -> u32 {
        1
    }

    fn with_kind(kind: HealthCheckKind) -> Self {
        Self {
            kind,
            path: None,
            port: None,
            command: None,
            interval: Self::default_interval(),
            timeout: Self::default_timeout(),
            failure_threshold: Self::default_failure_threshold(),
            success_threshold: Self::default_success_threshold(),
            start_period: Duration::ZERO,
        }
    }

    /// An HTTP check of `path` with default timings.
    #[must_use]
    pub fn http(path: impl Into<String>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::with_kind(HealthCheckKind::Http)
        }
    }

    /// A TCP connect check with default timings.
    #[must_use]
    pub fn tcp() -> Self {
        Self::with_kind(HealthCheckKind::Tcp)
    }

    /// A "process is alive" check.
    #[must_use]
    pub fn process() -> Self {
        Self::with_kind(HealthCheckKind::Process)
    }

    /// A command check.
    #[must_use]
    pub fn command(command: impl Into<String>) -> Self {
        Self {
            command: Some(command.into()),
            ..Self::with_kind(HealthCheckKind::Command)
        }
    }

    /// The same check with another interval.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The same check with another timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same check with another failure threshold.
    #[must_use]
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// The HTTP path, defaulting to `/`.
    #[must_use]
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

/// When crashed instances are restarted.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Restart whenever the app exits, whatever its status (PM2's and Kubernetes' default).
    #[default]
    Always,
    /// Restart only when the app exits non-zero or is killed by a signal.
    OnFailure,
    /// Never restart.
    Never,
}

/// Restart policy: which exits restart, how fast, and when to give up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Which exits trigger a restart (default `always`).
    #[serde(default)]
    pub policy: RestartMode,
    /// Restarts allowed within `window` before the deployment is marked Failed (default 10).
    #[serde(default = "RestartPolicy::default_max_restarts")]
    pub max_restarts: u32,
    /// The sliding window `max_restarts` is counted in (default 10 min).
    #[serde(default = "RestartPolicy::default_window", with = "serde_duration")]
    pub window: Duration,
    /// Delay before the first restart (default 100 ms).
    #[serde(
        default = "RestartPolicy::default_backoff_initial",
        with = "serde_duration"
    )]
    pub backoff_initial: Duration,
    /// Largest delay between restarts (default 30 s).
    #[serde(
        default = "RestartPolicy::default_backoff_max",
        with = "serde_duration"
    )]
    pub backoff_max: Duration,
    /// Factor the delay grows by per consecutive crash (default 2.0).
    #[serde(default = "RestartPolicy::default_backoff_multiplier")]
    pub backoff_multiplier: f64,
    /// Random spread applied to each delay, as a fraction (default 0.2 = ±20 %).
    #[serde(default = "RestartPolicy::default_jitter")]
    pub jitter: f64,
    /// Time healthy after which the backoff starts again from `backoff_initial` (default 30 s).
    #[serde(
        default = "RestartPolicy::default_reset_after",
        with = "serde_duration"
    )]
    pub reset_after: Duration,
    /// With no health check, the time a process must stay up to count as started, unless it
    /// accepts TCP on its port sooner (default 1 s).
    #[serde(default = "RestartPolicy::default_min_uptime", with = "serde_duration")]
    pub min_uptime: Duration,
}

impl RestartPolicy {
    fn default_max_restarts() -> u32 {
        10
    }
    fn default_window() -> Duration {
        Duration::from_secs(600)
    }
    fn default_backoff_initial() -> Duration {
        Duration::from_millis(100)
    }
    fn default_backoff_max() -> Duration {
        Duration::from_secs(30)
    }
    fn default_backoff_multiplier() -> f64 {
        2.0
    }
    fn default_jitter() -> f64 {
        0.2
    }
    fn default_reset_after() -> Duration {
        Duration::from_secs(30)
    }
    fn default_min_uptime() -> Duration {
        Duration::from_secs(1)
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            policy: RestartMode::Always,
            max_restarts: Self::default_max_restarts(),
            window: Self::default_window(),
            backoff_initial: Self::default_backoff_initial(),
            backoff_max: Self::default_backoff_max(),
            backoff_multiplier: Self::default_backoff_multiplier(),
            jitter: Self::default_jitter(),
            reset_after: Self::default_reset_after(),
            min_uptime: Self::default_min_uptime(),
        }
    }
}

/// How instances are stopped: the signal, then `SIGKILL` after the timeout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopConfig {
    /// The signal sent first (default `SIGTERM`).
    #[serde(default)]
    pub signal: StopSignal,
    /// How long to wait after the signal before killing (default 5 s, Nomad's `kill_timeout`).
    #[serde(default = "StopConfig::default_timeout", with = "serde_duration")]
    pub timeout: Duration,
}

impl StopConfig {
    fn default_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

impl Default for StopConfig {
    fn default() -> Self {
        Self {
            signal: StopSignal::Term,
            timeout: Self::default_timeout(),
        }
    }
}

/// Resource limits; absent means unlimited.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit (`"512MiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// CPU limit in cores (`1.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

impl Resources {
    /// Whether no limit is set.
    #[must_use]
    pub fn is_unlimited(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none()
    }
}

/// How a new revision replaces the running one.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStrategy {
    /// Stop the old revision, then start the new one (brief downtime).
    Recreate,
    /// Replace replicas a few at a time, each new one health-gated before an old one is
    /// stopped: at most `update.max_surge` above and `update.max_unavailable` below
    /// `replicas` at any moment (local provider; Docker replaces `max_parallel` at a time).
    Rolling,
    /// Start the new revision beside the old, switch when healthy, then stop the old.
    #[default]
    BlueGreen,
    /// Start the new revision beside the old and route a growing share of the requests to
    /// it (`update.canary`), judged from the proxy's counters against the old revision:
    /// promoted, or rolled back. Needs the proxy in front of the deployment.
    Canary,
}

impl UpdateStrategy {
    /// The kebab-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStrategy::Recreate => "recreate",
            UpdateStrategy::Rolling => "rolling",
            UpdateStrategy::BlueGreen => "blue-green",
            UpdateStrategy::Canary => "canary",
        }
    }
}

/// The update stanza (after Nomad's `update` block).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Strategy (default `blue-green`).
    #[serde(default)]
    pub strategy: UpdateStrategy,
    /// Replicas replaced at once by `rolling` (default 1).
    #[serde(default = "UpdatePolicy::default_max_parallel")]
    pub max_parallel: u32,
    /// `rolling`: how many instances may run above `replicas` during the update
    /// (default 1: a new replica starts before an old one stops).
    #[serde(default = "UpdatePolicy::default_max_surge")]
    pub max_surge: u32,
    /// `rolling`: how many of `replicas` may be out of service during the update
    /// (default 0: capacity never drops). `max_surge` and `max_unavailable` cannot both
    /// be 0.
    #[serde(default)]
    pub max_unavailable: u32,
    /// Time a new instance must stay healthy before it counts (default 0 s).
    #[serde(default, with = "serde_duration")]
    pub min_healthy_time: Duration,
    /// Deadline for a new revision to become healthy (default 60 s); also the readiness
    /// deadline of a first deploy.
    #[serde(
        default = "UpdatePolicy::default_healthy_deadline",
        with = "serde_duration"
    )]
    pub healthy_deadline: Duration,
    /// Keep (or go back to) the previous revision when the new one fails (default true).
    #[serde(default = "UpdatePolicy::default_auto_rollback")]
    pub auto_rollback: bool,
    /// The plan of a `canary` update (steps, thresholds); defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryPlan>,
}

impl UpdatePolicy {
    fn default_max_parallel() -> u32 {
        1
    }
    fn default_max_surge() -> u32 {
        1
    }
    fn default_healthy_deadline() -> Duration {
        Duration::from_secs(60)
    }
    fn default_auto_rollback() -> bool {
        true
    }
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            strategy: UpdateStrategy::BlueGreen,
            max_parallel: Self::default_max_parallel(),
            max_surge: Self::default_max_surge(),
            max_unavailable: 0,
            min_healthy_time: Duration::ZERO,
            healthy_deadline: Self::default_healthy_deadline(),
            auto_rollback: true,
            canary: None,
        }
    }
}

/// The `endpoint` stanza: the stable address clients use, in front of whichever instances
/// serve (see [`crate::traffic`]).
///
/// ```toml
/// [endpoint]
/// listen = "127.0.0.1:8080"   # default: one assigned from the traffic layer's range, kept
/// drain_timeout = "30s"       # in-flight requests of a replaced instance get this long
/// # enabled = false           # no proxy: clients talk to the instance's own port
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Whether the deployment gets an endpoint (default true). With `false` clients reach
    /// the instances on their own ports, which change on every blue-green update.
    #[serde(default = "EndpointConfig::default_enabled")]
    pub enabled: bool,
    /// The address to listen on; when absent the traffic layer assigns one from its range
    /// and the deployment keeps it for its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
    /// How long requests in flight to a replaced (or stopped) instance may take before it
    /// is stopped anyway (default 30 s, like kamal-proxy).
    #[serde(
        default = "EndpointConfig::default_drain_timeout",
        with = "serde_duration"
    )]
    pub drain_timeout: Duration,
}

impl EndpointConfig {
    fn default_enabled() -> bool {
        true
    }
    fn default_drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    /// Whether every field has its default (then it is not serialized).
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            drain_timeout: Self::default_drain_timeout(),
        }
    }
}

#[cfg(test)]
mod tests;
