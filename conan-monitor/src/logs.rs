//! Log aggregation (being built): see the crate docs.

use std::sync::Arc;

use conan_core::DeploymentId;

use crate::Shared;

/// Log-derived counters per deployment and level.
#[derive(Debug, Default)]
pub struct LogCounters {}

impl LogCounters {
    /// Error (and worse) lines of a deployment in the last minute.
    #[must_use]
    pub fn errors_per_minute(&self, deployment: &DeploymentId) -> u64 {
        let _ = deployment;
        0
    }
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let _ = shared;
}
