//! The Prometheus exposition (being built): see the crate docs.

use std::time::Duration;

/// The monitor's own instruments (health checks, operations), rendered with the rest.
#[derive(Debug, Default)]
pub struct Instruments {}

impl Instruments {
    /// Records one health probe of `deployment` (its name): healthy or not, how long it took.
    pub fn health_check(&self, deployment: &str, healthy: bool, duration: Duration) {
        let _ = (deployment, healthy, duration);
    }
}
