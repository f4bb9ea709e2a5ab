//! The health monitor (being built): see the crate docs.

use std::sync::Arc;

use conan_core::{DeploymentRecord, Metrics};

use crate::Shared;

/// The latest health observation of every monitored deployment.
#[derive(Debug, Default)]
pub struct HealthBoard {}

pub(crate) async fn run(shared: Arc<Shared>) {
    let _ = shared;
}

/// Called by the metrics sampler ([`crate::history`]) with each sample of a running
/// deployment: memory-limit enforcement looks at it.
#[allow(dead_code, reason = "called by the sampler once it is built")]
pub(crate) fn on_sample(shared: &Shared, record: &DeploymentRecord, metrics: &Metrics) {
    let _ = (shared, record, metrics);
}
