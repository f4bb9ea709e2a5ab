//! What the monitor does and how often: [`MonitorSettings`], read by the daemon from the
//! `[monitor]` table of `CONAN_HOME/daemon.toml` and built in code by an embedding host.

use std::time::Duration;

use conan_core::time::serde_duration;
use serde::{Deserialize, Serialize};

/// Settings of a [`Monitor`](crate::Monitor). Every field has a default, so an empty
/// `[monitor]` table (or none) gives the documented behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MonitorSettings {
    /// How often `metrics()` of every running deployment is sampled into the history
    /// (default 10 s).
    #[serde(with = "serde_duration")]
    pub sample_interval: Duration,
    /// How long the sampler waits for one deployment's `metrics()` before it gives up on
    /// that sample (default 5 s); the others are sampled meanwhile.
    #[serde(with = "serde_duration")]
    pub sample_timeout: Duration,
    /// Samples in a row above `resources.memory` that restart a local deployment
    /// (default 3).
    pub memory_samples: u32,
    /// Whether the monitor probes health and restarts unhealthy deployments (default on).
    pub health: bool,
    /// Alert rules and webhooks (the `[monitor.alerts]` table; none by default).
    pub alerts: crate::alerts::AlertSettings,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_secs(10),
            sample_timeout: Duration::from_secs(5),
            memory_samples: 3,
            health: true,
            alerts: crate::alerts::AlertSettings::default(),
        }
    }
}
