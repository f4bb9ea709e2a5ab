//! What the provider caches about the deployments it runs. The containers themselves
//! (found by label) and the [`KnownDeployment`](conan_core::KnownDeployment) each call is
//! handed are the truth; this table only adds what neither can tell: the build output, the
//! latest health observation, where supervision reports go, and whether this process is
//! changing the containers right now. A fresh provider starts with an empty table and
//! works all the same.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use conan_core::{DeploymentId, DeploymentSpec, EventSink, HealthReport, HealthStatus, LogLine};

/// Build output lines kept per deployment (served by `logs` as the `system` stream).
const BUILD_LOG_LINES: usize = 500;

/// One deployment this provider has worked on.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    /// The revision that serves (or, stopped, the one to resume).
    pub(crate) spec: DeploymentSpec,
    /// Stopped on purpose by this process.
    pub(crate) stopped: bool,
    /// An operation of this provider is changing its containers (deaths are expected).
    pub(crate) busy: bool,
    /// Where supervision reports go (the sink of the operation that started it).
    pub(crate) sink: Option<EventSink>,
    pub(crate) build_log: Vec<LogLine>,
    /// The latest health observation (of the readiness gate; liveness is the monitor's).
    pub(crate) health: HealthReport,
    /// Recorded as serving by this process ([`serve`](crate::DockerProvider)): supervised.
    pub(crate) served: bool,
}

impl Tracked {
    pub(crate) fn new(spec: DeploymentSpec) -> Self {
        Self {
            spec,
            stopped: false,
            busy: false,
            sink: None,
            build_log: Vec::new(),
            health: HealthReport::new(HealthStatus::Unknown),
            served: false,
        }
    }

    /// Appends build output, keeping the newest lines.
    pub(crate) fn push_build_log(&mut self, lines: Vec<LogLine>) {
        self.build_log.extend(lines);
        if self.build_log.len() > BUILD_LOG_LINES {
            let drop = self.build_log.len() - BUILD_LOG_LINES;
            self.build_log.drain(..drop);
        }
    }

    /// Forgets that it serves (stopped or replaced).
    pub(crate) fn unserve(&mut self) {
        self.served = false;
    }
}

/// The table of tracked deployments.
#[derive(Debug, Default)]
pub(crate) struct StateTable {
    inner: Mutex<HashMap<DeploymentId, Tracked>>,
}

impl StateTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<DeploymentId, Tracked>> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, id: &DeploymentId) -> Option<Tracked> {
        self.lock().get(id).cloned()
    }

    /// Applies `f` to the entry of `id`, creating it from `spec` when missing.
    pub(crate) fn upsert<R>(&self, spec: &DeploymentSpec, f: impl FnOnce(&mut Tracked) -> R) -> R {
        let mut table = self.lock();
        let entry = table
            .entry(spec.id.clone())
            .or_insert_with(|| Tracked::new(spec.clone()));
        f(entry)
    }

    pub(crate) fn remove(&self, id: &DeploymentId) -> Option<Tracked> {
        let mut removed = self.lock().remove(id);
        if let Some(t) = &mut removed {
            t.unserve();
        }
        removed
    }

    /// Applies `f` to the entry of `id`, if any.
    pub(crate) fn update<R>(
        &self,
        id: &DeploymentId,
        f: impl FnOnce(&mut Tracked) -> R,
    ) -> Option<R> {
        self.lock().get_mut(id).map(f)
    }
}
