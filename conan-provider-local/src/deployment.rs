//! A deployment as the provider tracks it: its spec, what it observes of it, its serving
//! instance, health, and logs.
//!
//! The provider keeps no status machine of its own: [`Shared::observed`] is what it last
//! saw (starting, running, stopped, exited, failed), which is what
//! [`Provider::status`](conan_core::Provider::status) answers. The manager decides the
//! deployment's status from that and from the call results.
//!
//! Deployments are also registered process-wide by their state directory, so a fresh
//! [`LocalProvider`](crate::LocalProvider) over the same state directory in the same
//! process shares the supervised deployment instead of adopting (and supervising) its
//! processes a second time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use conan_core::{
    DeploymentId, DeploymentSpec, FailureReport, HealthReport, HealthStatus, InstanceInfo,
    ObservedStatus, RuntimeInfo,
};
use tokio::task::JoinHandle;

use crate::instance::Instance;
use crate::logs::LogStore;
use crate::state::PersistedDeployment;

/// `RuntimeInfo::details` key: the deployment's state directory.
pub(crate) const DETAIL_STATE_DIR: &str = "state_dir";
/// `RuntimeInfo::details` key: the serving instance as persisted (key, pid, start time).
pub(crate) const DETAIL_INSTANCE: &str = "instance";
/// `RuntimeInfo::details` key: every serving instance as persisted, when more than one.
pub(crate) const DETAIL_REPLICAS: &str = "replicas";

/// What changes as the deployment lives.
#[derive(Debug)]
pub(crate) struct Shared {
    pub spec: DeploymentSpec,
    /// What the provider last observed.
    pub observed: ObservedStatus,
    /// The serving instances, one per replica (empty when nothing serves). During a
    /// rolling update they may be of two revisions; `spec` stays the old one until the
    /// update completes.
    pub serving: Vec<Arc<Instance>>,
    /// Instances being replaced (the old revision of a blue-green switch): kept here
    /// until their stop completed, so an abandoned call never leaves one running.
    pub retiring: Vec<(Arc<Instance>, DeploymentSpec)>,
    pub health: HealthReport,
    pub restarts: u32,
    /// Why it last failed (for `recover`).
    pub last_failure: Option<FailureReport>,
}

/// One deployment.
#[derive(Debug)]
pub(crate) struct Deployment {
    pub id: DeploymentId,
    pub dir: PathBuf,
    pub logs: Arc<LogStore>,
    /// Serializes operations (deploy, update, stop, ...) on this deployment.
    pub op: tokio::sync::Mutex<()>,
    pub shared: Mutex<Shared>,
    /// The last CPU reading of its tree (CPU use is a difference of two).
    pub cpu: Mutex<crate::metrics::CpuBaseline>,
    /// Providers holding it (a fresh provider in the same process shares it).
    pub holders: AtomicUsize,
    /// Set by `remove`: providers still holding it treat it as gone.
    pub removed: AtomicBool,
    /// Clean-ups of abandoned launches still killing their processes; operations await
    /// them first.
    pub cleanups: Mutex<Vec<JoinHandle<()>>>,
    /// The spec last written to `spec.json` (written again only when it changes).
    spec_saved: Mutex<Option<DeploymentSpec>>,
}

static LIVE: LazyLock<Mutex<HashMap<PathBuf, Weak<Deployment>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn live() -> MutexGuard<'static, HashMap<PathBuf, Weak<Deployment>>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The deployment some provider of this process supervises in `dir`, if any.
pub(crate) fn shared_in(dir: &Path) -> Option<Arc<Deployment>> {
    let dep = live().get(dir)?.upgrade()?;
    (dep.holders.load(Ordering::Acquire) > 0 && !dep.removed.load(Ordering::Acquire)).then_some(dep)
}

/// Registers `dep` process-wide.
pub(crate) fn register(dep: &Arc<Deployment>) {
    let mut map = live();
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(dep.dir.clone(), Arc::downgrade(dep));
}

/// Forgets `dep` process-wide.
pub(crate) fn unregister(dep: &Deployment) {
    let mut map = live();
    if map
        .get(&dep.dir)
        .is_some_and(|w| std::ptr::eq(w.as_ptr(), dep))
    {
        map.remove(&dep.dir);
    }
}

impl Deployment {
    pub fn new(spec: DeploymentSpec, dir: PathBuf, logs: Arc<LogStore>) -> Self {
        Self {
            id: spec.id.clone(),
            dir,
            logs,
            op: tokio::sync::Mutex::new(()),
            shared: Mutex::new(Shared {
                spec,
                observed: ObservedStatus::Stopped,
                serving: Vec::new(),
                retiring: Vec::new(),
                health: HealthReport::new(HealthStatus::Unknown),
                restarts: 0,
                last_failure: None,
            }),
            cpu: Mutex::new(crate::metrics::CpuBaseline::default()),
            holders: AtomicUsize::new(1),
            removed: AtomicBool::new(false),
            cleanups: Mutex::new(Vec::new()),
            spec_saved: Mutex::new(None),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The serving instances.
    pub fn serving(&self) -> Vec<Arc<Instance>> {
        self.lock().serving.clone()
    }

    pub fn observed(&self) -> ObservedStatus {
        self.lock().observed.clone()
    }

    pub fn set_observed(&self, status: ObservedStatus) {
        self.lock().observed = status;
    }

    /// Waits for the clean-ups of abandoned launches.
    pub async fn settle(&self) {
        let pending: Vec<_> =
            std::mem::take(&mut *self.cleanups.lock().unwrap_or_else(PoisonError::into_inner));
        for h in pending {
            let _ = h.await;
        }
    }

    /// The runtime info of the serving instance, with what a fresh provider needs to find
    /// the deployment again in its details.
    pub fn runtime(&self, host: &str) -> RuntimeInfo {
        let shared = self.lock();
        let mut info = RuntimeInfo::default();
        for inst in shared
            .serving
            .iter()
            .filter(|i| !i.down.load(Ordering::Acquire))
        {
            info = info.with_instance(
                InstanceInfo::new(inst.pid.load(Ordering::Acquire).to_string(), inst.revision)
                    .with_port(inst.port)
                    .with_started_at(Some(inst.started_at().0)),
            );
        }
        if let Some(inst) = shared
            .serving
            .iter()
            .find(|i| !i.down.load(Ordering::Acquire))
            .or(shared.serving.first())
        {
            if let Some(p) = inst.port {
                info = info.with_url(format!("http://{host}:{p}"));
            }
            if let Ok(v) = serde_json::to_value(inst.persisted()) {
                info = info.with_detail(DETAIL_INSTANCE, v);
            }
        }
        if shared.serving.len() > 1 {
            let all: Vec<_> = shared
                .serving
                .iter()
                .filter_map(|i| serde_json::to_value(i.persisted()).ok())
                .collect();
            info = info.with_detail(DETAIL_REPLICAS, all);
        }
        drop(shared);
        info.with_detail(DETAIL_STATE_DIR, self.dir.display().to_string())
            .with_detail(
                "log_file",
                self.dir.join("logs/app.log").display().to_string(),
            )
            .with_detail(
                "log_lines_dropped_from_memory",
                self.logs.dropped_from_memory(),
            )
            .with_detail("log_lines_dropped_volume_full", self.logs.unwritten())
    }

    /// Persists what a later manager needs to adopt the deployment (small files written
    /// atomically): `state.json`, and `spec.json` when the spec changed.
    pub fn persist(&self) {
        let shared = self.lock();
        let spec = shared.spec.clone();
        let state = PersistedDeployment {
            id: self.id.as_str().to_owned(),
            revision: shared.spec.revision.0,
            instance: shared.serving.first().map(|i| i.persisted()),
            replicas: if shared.serving.len() > 1 {
                shared.serving.iter().map(|i| i.persisted()).collect()
            } else {
                Vec::new()
            },
            stopped: matches!(
                shared.observed,
                ObservedStatus::Stopped | ObservedStatus::Exited { .. }
            ),
            failed: match &shared.observed {
                ObservedStatus::Failed { reason } => Some(reason.clone()),
                _ => None,
            },
        };
        drop(shared);
        if self.removed.load(Ordering::Acquire) {
            return;
        }
        self.persist_spec(&spec);
        if let Err(e) = crate::state::save(&self.dir, &state) {
            tracing::warn!(deployment = %self.id, error = %e, "persisting deployment state failed");
        }
    }

    /// Writes `spec.json` unless it already holds `spec`.
    fn persist_spec(&self, spec: &DeploymentSpec) {
        let mut saved = self
            .spec_saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let same = saved.as_ref().is_some_and(|s| {
            s.revision == spec.revision
                && (Arc::ptr_eq(&s.config, &spec.config) || s.config == spec.config)
        });
        if same {
            return;
        }
        match crate::state::save_spec(&self.dir, &crate::state::PersistedSpec::of(spec)) {
            Ok(()) => *saved = Some(spec.clone()),
            Err(e) => {
                tracing::warn!(deployment = %self.id, error = %e, "persisting the deployment's spec failed");
            }
        }
    }
}
