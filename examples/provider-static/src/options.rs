//! `[provider_options.static]`: what a deployment config can ask of this provider.

use std::time::Duration;

#[cfg(doc)]
use conan_core::Error;
use conan_core::{DeploymentConfig, Result};
use serde::{Deserialize, Serialize};

use crate::NAME;

/// `[provider_options.static]` of a deployment config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StaticOptions {
    /// Milliseconds the server waits after binding its port before it accepts
    /// connections (default 0): a slow-starting app, for tests.
    #[serde(default)]
    pub startup_delay_ms: u64,
}

impl StaticOptions {
    /// The defaults (no startup delay).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same options with a startup delay.
    #[must_use]
    pub fn with_startup_delay(mut self, delay: Duration) -> Self {
        self.startup_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The startup delay.
    #[must_use]
    pub fn startup_delay(&self) -> Duration {
        Duration::from_millis(self.startup_delay_ms)
    }

    /// The options of `config` (`provider_options.static`), defaults when it has none.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the table does not decode (an unknown key, a wrong
    /// type).
    pub fn of(config: &DeploymentConfig) -> Result<Self> {
        Ok(config.provider_options_for(NAME)?.unwrap_or_default())
    }
}
