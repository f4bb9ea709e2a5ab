//! [`MemoryBackend`]: the platform a [`MemoryProvider`] runs deployments on, and what it
//! holds of each deployment (state, instance, synthetic log lines).
//!
//! [`MemoryProvider`]: super::MemoryProvider

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::config::DeploymentConfig;
use crate::failure::{ExitStatus, FailureReport};
use crate::id::{DeploymentId, Revision};
use crate::log::{LogLine, OutputStream};
use crate::provider::{DeploymentSpec, InstanceInfo, ObservedStatus, RuntimeInfo};
use crate::time::Timestamp;

/// What the platform runs of one deployment.
#[derive(Clone, PartialEq, Debug)]
pub(super) enum State {
    /// Created by a deploy that has not finished (or was abandoned).
    Starting,
    Running,
    Stopped,
    Exited(ExitStatus),
    Failed(String),
}

impl State {
    pub(super) fn observed(&self) -> ObservedStatus {
        match self {
            State::Starting => ObservedStatus::Starting,
            State::Running => ObservedStatus::Running,
            State::Stopped => ObservedStatus::Stopped,
            State::Exited(exit) => ObservedStatus::Exited { exit: *exit },
            State::Failed(reason) => ObservedStatus::failed(reason.clone()),
        }
    }

    pub(super) fn is_running(&self) -> bool {
        matches!(self, State::Running | State::Starting)
    }
}

/// The most log lines the backend keeps per deployment.
const MAX_LOG_LINES: usize = 1000;

pub(super) struct Held {
    pub(super) spec: DeploymentSpec,
    pub(super) state: State,
    pub(super) port: u16,
    pub(super) instance: u32,
    pub(super) started_at: Timestamp,
    logs: Vec<Synthetic>,
    /// Created on the first follow, so deployments nobody follows cost no channel.
    pub(super) live: Option<broadcast::Sender<std::sync::Arc<LogLine>>>,
    pub(super) restarts: u32,
}

/// The parts of an instance's [`RuntimeInfo`], copied out under the backend's lock.
#[derive(Clone, Copy)]
pub(super) struct RuntimeParts {
    instance: u32,
    revision: crate::id::Revision,
    port: u16,
    started_at: Timestamp,
}

impl RuntimeParts {
    /// The runtime info.
    pub(super) fn build(self) -> RuntimeInfo {
        RuntimeInfo::new()
            .with_instance(
                InstanceInfo::new(instance_name(self.instance), self.revision)
                    .with_port(Some(self.port))
                    .with_started_at(Some(self.started_at)),
            )
            .with_url(format!("memory://127.0.0.1:{}", self.port))
    }
}

/// A synthetic log line, kept as data and rendered into a [`LogLine`] only when someone
/// reads or follows it: deployments whose logs nobody reads cost no text formatting.
#[derive(Clone)]
struct Synthetic {
    at: Timestamp,
    stream: OutputStream,
    instance: u32,
    text: Text,
}

#[derive(Clone)]
pub(super) enum Text {
    Listening {
        config: Arc<DeploymentConfig>,
        revision: Revision,
        port: u16,
    },
    Stopped,
    Crashed,
    Exited,
}

impl Synthetic {
    fn render(&self) -> LogLine {
        let message = match &self.text {
            Text::Listening {
                config,
                revision,
                port,
            } => format!(
                "{} revision {revision} listening on port {port}",
                config.name
            ),
            Text::Stopped => "stopped".to_owned(),
            Text::Crashed => "Error: crashed (injected)".to_owned(),
            Text::Exited => "exiting (injected)".to_owned(),
        };
        LogLine::at(self.at, self.stream, message).with_source(instance_name(self.instance))
    }
}

fn instance_name(instance: u32) -> String {
    format!("mem-{instance}")
}

impl Held {
    pub(super) fn log(&mut self, stream: OutputStream, text: Text) {
        let line = Synthetic {
            at: Timestamp::now(),
            stream,
            instance: self.instance,
            text,
        };
        if let Some(live) = &self.live {
            let _ = live.send(std::sync::Arc::new(line.render()));
        }
        if self.logs.len() >= MAX_LOG_LINES {
            self.logs.drain(..MAX_LOG_LINES / 2);
        }
        self.logs.push(line);
    }

    pub(super) fn rendered_logs(&self) -> Vec<LogLine> {
        self.logs.iter().map(Synthetic::render).collect()
    }

    /// Starts a new instance of `spec` (a new process), keeping the log history.
    pub(super) fn start_instance(
        &mut self,
        backend: &MemoryBackend,
        spec: &DeploymentSpec,
        state: State,
    ) {
        let (instance, port) = backend.allocate(spec);
        self.spec = spec.clone();
        self.state = state;
        self.instance = instance;
        self.port = port;
        self.started_at = Timestamp::now();
        self.log(
            OutputStream::Stdout,
            Text::Listening {
                config: spec.config.clone(),
                revision: spec.revision,
                port,
            },
        );
    }

    pub(super) fn runtime(&self) -> RuntimeInfo {
        self.runtime_parts().build()
    }

    /// What its runtime info is made of, to build it after the backend's lock is released.
    pub(super) fn runtime_parts(&self) -> RuntimeParts {
        RuntimeParts {
            instance: self.instance,
            revision: self.spec.revision,
            port: self.port,
            started_at: self.started_at,
        }
    }

    pub(super) fn failure(&self, reason: &str) -> FailureReport {
        let report = FailureReport::new(reason).with_logs(self.rendered_logs());
        match &self.state {
            State::Failed(_) => report.with_exit(ExitStatus::Code(1)),
            State::Exited(exit) => report.with_exit(*exit),
            _ => report,
        }
    }
}

#[derive(Default)]
struct BackendInner {
    deployments: Mutex<foldhash::HashMap<DeploymentId, Held>>,
    /// Instances ever started (the last instance number).
    started: AtomicU32,
}

/// The platform a [`MemoryProvider`] runs deployments on: which deployments have
/// instances, at which revision, running or stopped, and their log lines.
///
/// Cheap to clone (shared). Providers built over the same backend
/// ([`MemoryProvider::with_backend`]) see the same deployments, as a daemon restarted on
/// the same machine sees the processes its predecessor started.
///
/// [`MemoryProvider`]: super::MemoryProvider
/// [`MemoryProvider::with_backend`]: super::MemoryProvider::with_backend
#[derive(Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<BackendInner>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("deployments", &self.len())
            .field("instances_started", &self.instances_started())
            .finish()
    }
}

impl MemoryBackend {
    /// An empty platform.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, foldhash::HashMap<DeploymentId, Held>> {
        self.inner
            .deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new instance number and the port it serves on.
    fn allocate(&self, spec: &DeploymentSpec) -> (u32, u16) {
        let instance = self.inner.started.fetch_add(1, Ordering::Relaxed) + 1;
        let port = spec
            .config
            .port
            .unwrap_or_else(|| 20_000 + u16::try_from(instance % 40_000).unwrap_or(0));
        (instance, port)
    }

    pub(super) fn new_held(&self, spec: &DeploymentSpec, state: State) -> Held {
        let mut held = Held {
            spec: spec.clone(),
            state: State::Stopped,
            port: 0,
            instance: 0,
            started_at: Timestamp::now(),
            logs: Vec::new(),
            live: None,
            restarts: 0,
        };
        held.start_instance(self, spec, state);
        held
    }

    /// Number of deployments it holds anything of (any state).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it holds anything of `id`.
    #[must_use]
    pub fn contains(&self, id: &DeploymentId) -> bool {
        self.lock().contains_key(id)
    }

    /// The state of `id` on the platform, if it holds anything of it.
    #[must_use]
    pub fn status(&self, id: &DeploymentId) -> Option<ObservedStatus> {
        self.lock().get(id).map(|h| h.state.observed())
    }

    /// The revision it holds of `id`.
    #[must_use]
    pub fn revision(&self, id: &DeploymentId) -> Option<Revision> {
        self.lock().get(id).map(|h| h.spec.revision)
    }

    /// The current instance of `id` (`"mem-7"`), as in its runtime's instance ids.
    #[must_use]
    pub fn instance(&self, id: &DeploymentId) -> Option<String> {
        self.lock().get(id).map(|h| instance_name(h.instance))
    }

    /// Number of deployments with an instance running (or starting).
    #[must_use]
    pub fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|h| h.state.is_running())
            .count()
    }

    /// Instances started since the backend was created (every deploy, update and start
    /// that got as far as starting one): for checking that nothing was started twice.
    #[must_use]
    pub fn instances_started(&self) -> u32 {
        self.inner.started.load(Ordering::Relaxed)
    }

    /// The log lines it keeps of `id`, oldest first.
    #[must_use]
    pub fn log_lines(&self, id: &DeploymentId) -> Option<Vec<LogLine>> {
        self.lock().get(id).map(Held::rendered_logs)
    }

    /// Deletes everything of `id`, as if it vanished behind the provider's back.
    pub fn vanish(&self, id: &DeploymentId) {
        self.lock().remove(id);
    }
}
