//! What the provider remembers about the deployments it runs. The containers themselves
//! (found by label) are the truth about what runs; this table adds what Docker cannot tell:
//! the spec, whether a stop was asked for, the build output and the last health observation.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use conan_core::{DeploymentId, DeploymentSpec, EventSink, HealthReport, HealthStatus, LogLine};

use crate::DockerOptions;

/// Build output lines kept per deployment (served by `logs` as the `system` stream).
const BUILD_LOG_LINES: usize = 500;

/// One deployment this provider runs.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub(crate) spec: DeploymentSpec,
    pub(crate) options: DockerOptions,
    /// The image the current revision runs.
    pub(crate) image: String,
    /// The `sh -c` command the containers run, when not the image's CMD.
    pub(crate) command: Option<String>,
    /// The revision before the current one (spec, image, command), for rollback.
    pub(crate) previous: Option<(DeploymentSpec, String, Option<String>)>,
    /// Stopped on purpose.
    pub(crate) stopped: bool,
    /// An operation of this provider is changing its containers (deaths are expected).
    pub(crate) busy: bool,
    /// Where supervision events go (the sink of the operation that started it).
    pub(crate) sink: Option<EventSink>,
    pub(crate) build_log: Vec<LogLine>,
    pub(crate) health: HealthReport,
}

impl Tracked {
    pub(crate) fn new(
        spec: DeploymentSpec,
        options: DockerOptions,
        image: String,
        command: Option<String>,
    ) -> Self {
        Self {
            spec,
            options,
            image,
            command,
            previous: None,
            stopped: false,
            busy: false,
            sink: None,
            build_log: Vec::new(),
            health: HealthReport::new(HealthStatus::Unknown),
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

    pub(crate) fn insert(&self, tracked: Tracked) {
        self.lock().insert(tracked.spec.id.clone(), tracked);
    }

    pub(crate) fn remove(&self, id: &DeploymentId) -> Option<Tracked> {
        self.lock().remove(id)
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
