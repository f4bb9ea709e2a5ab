//! Metrics history (being built): see the crate docs.

use std::sync::Arc;

use conan_core::{DeploymentId, Metrics, Timestamp};

use crate::{MonitorSettings, Shared};

/// Bounded per-deployment metrics series.
#[derive(Debug)]
pub struct MetricsHistory {}

impl MetricsHistory {
    pub(crate) fn new(settings: &MonitorSettings) -> Self {
        let _ = settings;
        Self {}
    }

    /// The latest sample of a deployment, if one was taken.
    #[must_use]
    pub fn latest(&self, deployment: &DeploymentId) -> Option<(Timestamp, Metrics)> {
        let _ = deployment;
        None
    }
}

/// Samples every running deployment every `sample_interval`; hands each sample to
/// [`crate::health::on_sample`] too.
pub(crate) async fn run(shared: Arc<Shared>) {
    let _ = shared;
}
