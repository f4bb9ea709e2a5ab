//! A deployment as the provider tracks it: its spec, status, serving instance, health, and
//! logs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use conan_core::{
    DeploymentId, DeploymentSpec, DeploymentStatus, HealthReport, HealthStatus, InstanceInfo,
    RuntimeInfo,
};

use crate::instance::Instance;
use crate::logs::LogStore;
use crate::state::PersistedDeployment;

/// What changes as the deployment lives.
#[derive(Debug)]
pub(crate) struct Shared {
    pub spec: DeploymentSpec,
    pub status: DeploymentStatus,
    pub current: Option<Arc<Instance>>,
    pub health: HealthReport,
    pub restarts: u32,
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
    pub sys: Mutex<Option<sysinfo::System>>,
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
                status: DeploymentStatus::Pending,
                current: None,
                health: HealthReport::new(HealthStatus::Unknown),
                restarts: 0,
            }),
            sys: Mutex::new(None),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn current(&self) -> Option<Arc<Instance>> {
        self.lock().current.clone()
    }

    pub fn set_status(&self, status: DeploymentStatus) {
        self.lock().status = status;
    }

    /// The runtime info of the serving instance.
    pub fn runtime(&self, host: &str) -> RuntimeInfo {
        let shared = self.lock();
        let mut info = RuntimeInfo::default();
        if let Some(inst) = &shared.current {
            info.instances.push(InstanceInfo {
                id: inst
                    .pid
                    .load(std::sync::atomic::Ordering::Acquire)
                    .to_string(),
                port: inst.port,
                started_at: Some(inst.started_at().0),
                revision: inst.revision,
            });
            if let Some(p) = inst.port {
                info.url = Some(format!("http://{host}:{p}"));
            }
        }
        info.details.insert(
            "log_file".into(),
            self.dir.join("logs/app.log").display().to_string().into(),
        );
        info.details.insert(
            "log_lines_dropped_from_memory".into(),
            self.logs.dropped_from_memory().into(),
        );
        info
    }

    /// Persists what a later manager needs to adopt the deployment.
    pub fn persist(&self) {
        let shared = self.lock();
        let state = PersistedDeployment {
            id: self.id.as_str().to_owned(),
            revision: shared.spec.revision.0,
            instance: shared.current.as_ref().map(|i| i.persisted()),
            stopped: matches!(shared.status, DeploymentStatus::Stopped),
        };
        drop(shared);
        if let Err(e) = crate::state::save(&self.dir, &state) {
            tracing::warn!(deployment = %self.id, error = %e, "persisting deployment state failed");
        }
    }
}
