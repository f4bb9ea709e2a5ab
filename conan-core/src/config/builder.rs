//! [`DeploymentConfigBuilder`]: a config in code.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{
    DeploymentConfig, HealthCheck, Resources, RestartPolicy, StopConfig, UpdatePolicy,
    UpdateStrategy,
};
use crate::capability::Capability;
use crate::config::ConfigProblem;
use crate::error::{Error, Result};

/// Builds a [`DeploymentConfig`]; [`build`](Self::build) validates it.
///
/// ```
/// use std::time::Duration;
/// use conan_core::{DeploymentConfig, HealthCheck, UpdateStrategy};
///
/// let config = DeploymentConfig::builder("hello")
///     .source("examples/apps/hello")
///     .port(8080)
///     .env("NODE_ENV", "production")
///     .health_check(HealthCheck::http("/health").interval(Duration::from_secs(5)))
///     .strategy(UpdateStrategy::BlueGreen)
///     .build()?;
/// assert_eq!(config.port, Some(8080));
/// # Ok::<(), conan_core::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct DeploymentConfigBuilder {
    config: DeploymentConfig,
    problems: Vec<ConfigProblem>,
}

impl DeploymentConfigBuilder {
    /// A builder with every default.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            config: DeploymentConfig::new(name),
            problems: Vec::new(),
        }
    }

    /// The application directory.
    pub fn source(mut self, source: impl Into<PathBuf>) -> Self {
        self.config.source = source.into();
        self
    }

    /// The provider to use.
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        self.config.provider = Some(provider.into());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.env.insert(key, value);
        self
    }

    /// The port the app listens on.
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = Some(port);
        self
    }

    /// The start command.
    pub fn start_command(mut self, command: impl Into<String>) -> Self {
        self.config.start_command = Some(command.into());
        self
    }

    /// The health check.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.config.health_check = Some(check);
        self
    }

    /// The restart policy.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.config.restart = policy;
        self
    }

    /// The stop signal and timeout.
    pub fn stop(mut self, stop: StopConfig) -> Self {
        self.config.stop = stop;
        self
    }

    /// The stop timeout only.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.config.stop.timeout = timeout;
        self
    }

    /// Resource limits.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.config.resources = resources;
        self
    }

    /// A fixed number of replicas (turns autoscaling off).
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.config.replicas = replicas;
        self.config.autoscale = None;
        self
    }

    /// Replicas that follow the load within a range (`replicas = { min, max, .. }`); the
    /// first deploy starts with `min`.
    pub fn autoscale(mut self, autoscale: super::Autoscale) -> Self {
        self.config.replicas = autoscale.min;
        self.config.autoscale = Some(autoscale);
        self
    }

    /// The endpoint stanza (see [`EndpointConfig`](super::EndpointConfig)).
    pub fn endpoint(mut self, endpoint: super::EndpointConfig) -> Self {
        self.config.endpoint = endpoint;
        self
    }

    /// The endpoint's listening address (`127.0.0.1:8080`).
    pub fn listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.config.endpoint.listen = Some(addr);
        self
    }

    /// The whole update policy.
    pub fn update(mut self, update: UpdatePolicy) -> Self {
        self.config.update = update;
        self
    }

    /// The update strategy only.
    pub fn strategy(mut self, strategy: UpdateStrategy) -> Self {
        self.config.update.strategy = strategy;
        self
    }

    /// The readiness deadline of deploys and updates.
    pub fn healthy_deadline(mut self, deadline: Duration) -> Self {
        self.config.update.healthy_deadline = deadline;
        self
    }

    /// Adds a required capability.
    pub fn require(mut self, capability: Capability) -> Self {
        self.config.requirements = std::mem::take(&mut self.config.requirements).with(capability);
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the options table of `provider` from any serializable value.
    pub fn provider_options(mut self, provider: &str, options: impl Serialize) -> Self {
        match serde_json::to_value(options) {
            Ok(v) => {
                self.config.provider_options.insert(provider.to_owned(), v);
            }
            Err(e) => self.problems.push(ConfigProblem::new(
                format!("provider_options.{provider}"),
                e.to_string(),
            )),
        }
        self
    }

    /// Validates and returns the config.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with every problem.
    pub fn build(self) -> Result<DeploymentConfig> {
        let mut problems = self.problems;
        if let Err(Error::InvalidConfig { problems: more }) = self.config.validate() {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(self.config)
        } else {
            Err(Error::InvalidConfig { problems })
        }
    }

    /// Returns the config without validating it (for tests of validation itself).
    #[must_use]
    pub fn build_unchecked(self) -> DeploymentConfig {
        self.config
    }
}
