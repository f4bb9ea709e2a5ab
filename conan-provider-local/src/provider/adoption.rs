//! Finding the deployment a call names: what this provider holds, else what another
//! provider of this process over the same state directory supervises, else what the
//! state directory (or the persisted runtime) records, adopted by pid and start time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use conan_core::{
    DeploymentId, DeploymentSpec, EventSink, ExitStatus, FailureReport, KnownDeployment,
    ObservedStatus, RecoveredDeployment, Result, Revision, Timestamp,
};

use crate::deployment::{self, DETAIL_INSTANCE, DETAIL_STATE_DIR, Deployment};
use crate::instance::{Instance, NewInstance, Proc};
use crate::lifecycle::{Inner, provider_err};
use crate::logs::{Capture, LogStore, LogStoreSettings};
use crate::state::{PersistedDeployment, PersistedInstance};
use crate::tree::TreeRef;
use crate::{command, procfs, state, supervisor};

/// Serializes finding and adopting deployments process-wide, so two calls (or two
/// providers) never adopt the same processes twice.
static ADOPTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Inner {
    pub(super) fn dep_dir(&self, id: &DeploymentId) -> PathBuf {
        self.settings
            .state_dir
            .join("deployments")
            .join(id.as_str())
    }

    /// The deployment's state directory: the one its details name, when that is a
    /// deployment directory of this id (anything else is ignored: `remove` deletes it),
    /// else the one under this provider's state directory.
    pub(super) fn dir_of(&self, known: &KnownDeployment) -> PathBuf {
        known
            .detail(DETAIL_STATE_DIR)
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
            .filter(|p| {
                p.is_absolute()
                    && p.file_name().and_then(|n| n.to_str()) == Some(known.id().as_str())
                    && p.parent().and_then(|d| d.file_name()) == Some("deployments".as_ref())
            })
            .unwrap_or_else(|| self.dep_dir(known.id()))
    }

    pub(super) fn open_deployment(
        &self,
        spec: &DeploymentSpec,
        dir: PathBuf,
    ) -> Result<Arc<Deployment>> {
        let logs = LogStore::open(
            &dir.join("logs"),
            LogStoreSettings {
                memory_bytes: self.settings.log_memory_bytes,
                file_max_bytes: self.settings.log_file_max_bytes,
                files: self.settings.log_files,
            },
        )
        .map_err(|e| provider_err(format!("cannot open logs in {}", dir.display()), e))?;
        Ok(Arc::new(Deployment::new(spec.clone(), dir, Arc::new(logs))))
    }

    /// What this provider holds of `id` (not removed meanwhile through another provider).
    pub(super) fn held(&self, id: &DeploymentId) -> Option<Arc<Deployment>> {
        let mut map = self
            .deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dep = map.get(id)?;
        if dep.removed.load(Ordering::Acquire) {
            map.remove(id);
            return None;
        }
        Some(Arc::clone(dep))
    }

    pub(super) fn insert(&self, dep: &Arc<Deployment>) {
        deployment::register(dep);
        self.deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(dep.id.clone(), Arc::clone(dep));
    }

    pub(super) fn forget(&self, dep: &Deployment) {
        dep.removed.store(true, Ordering::Release);
        deployment::unregister(dep);
        let mut map = self
            .deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&dep.id).is_some_and(|d| std::ptr::eq(&**d, dep)) {
            map.remove(&dep.id);
        }
    }

    /// What this provider holds of `known` or can find of it (see the module docs); with
    /// `create`, a new deployment of that spec when nothing is found.
    pub(super) async fn find(
        self: &Arc<Self>,
        known: &KnownDeployment,
        sink: EventSink,
        create: Option<&DeploymentSpec>,
    ) -> Result<Option<Arc<Deployment>>> {
        if let Some(dep) = self.held(known.id()) {
            return Ok(Some(dep));
        }
        let _adopting = ADOPTING.lock().await;
        if let Some(dep) = self.held(known.id()) {
            return Ok(Some(dep));
        }
        let dir = self.dir_of(known);
        if let Some(dep) = deployment::shared_in(&dir) {
            dep.holders.fetch_add(1, Ordering::AcqRel);
            self.deployments
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(dep.id.clone(), Arc::clone(&dep));
            return Ok(Some(dep));
        }
        let saved = state::load(&dir)
            .map_err(|e| provider_err(format!("cannot read state in {}", dir.display()), e))?
            .or_else(|| from_details(known));
        if let Some(saved) = saved {
            let dep = self.adopt(known, saved, dir, sink).await?;
            return Ok(Some(dep));
        }
        let Some(spec) = create else {
            return Ok(None);
        };
        let dep = self.open_deployment(spec, dir)?;
        self.insert(&dep);
        Ok(Some(dep))
    }

    /// Takes over a deployment an earlier provider recorded in `dir`: a live instance
    /// (same pid, same start time) is supervised again; a gone one is reported failed.
    pub(super) async fn adopt(
        self: &Arc<Self>,
        known: &KnownDeployment,
        saved: PersistedDeployment,
        dir: PathBuf,
        sink: EventSink,
    ) -> Result<Arc<Deployment>> {
        let mut spec = known.spec.clone();
        spec.revision = Revision(saved.revision);
        let dep = self.open_deployment(&spec, dir)?;
        let Some(pi) = saved.instance else {
            let observed = if saved.stopped {
                ObservedStatus::Stopped
            } else {
                let reason = saved.failed.unwrap_or_else(|| "not running".to_owned());
                dep.lock().last_failure = Some(
                    FailureReport::new(reason.clone())
                        .with_logs(dep.logs.last(FailureReport::MAX_LOG_LINES)),
                );
                ObservedStatus::failed(reason)
            };
            dep.set_observed(observed);
            self.insert(&dep);
            return Ok(dep);
        };
        let inst_dir = dep.dir.join("instances").join(&pi.key);
        std::fs::create_dir_all(&inst_dir)
            .map_err(|e| provider_err(format!("cannot create {}", inst_dir.display()), e))?;
        let capture = Capture::start(&inst_dir, Arc::clone(&dep.logs))
            .map_err(|e| provider_err("cannot resume log capture", e))?;
        let inst = Arc::new(Instance::adopted(
            NewInstance {
                key: pi.key.clone(),
                revision: Revision(pi.revision),
                port: pi.port,
                dir: inst_dir,
                deployment: spec.id.as_str().to_owned(),
                capture,
                ports: Arc::clone(&self.ports),
            },
            pi.pid,
            pi.start_time,
            Timestamp::from_unix_micros(pi.started_at_micros),
        ));
        if procfs::is_alive(pi.pid, Some(pi.start_time)) {
            if let Some(p) = pi.port {
                self.ports.adopt(p);
            }
            let source = Inner::source_of(&spec);
            let launch = command::resolve(&spec.config, &source, &self.settings.node_path)?;
            dep.logs.system(format!(
                "[conan] adopted pid {} after a manager restart",
                pi.pid
            ));
            {
                let mut shared = dep.lock();
                shared.current = Some(Arc::clone(&inst));
                shared.observed = ObservedStatus::Running;
            }
            self.insert(&dep);
            supervisor::start(
                Arc::clone(self),
                Arc::clone(&dep),
                inst,
                Proc::Adopted {
                    pid: pi.pid,
                    start_time: pi.start_time,
                },
                launch,
                spec,
                source,
                sink,
            );
            dep.persist();
            return Ok(dep);
        }
        // Gone (or the pid now belongs to someone else): never adopt it; clean up whatever
        // of its tree is left and record its last output.
        inst.port_held.store(false, Ordering::Release);
        TreeRef {
            leader: None,
            marker: inst.marker(),
            since: 0,
        }
        .kill_all()
        .await;
        inst.capture.finish();
        if saved.stopped {
            // It had exited on its own (a clean exit under `on-failure`) before.
            dep.set_observed(ObservedStatus::Stopped);
        } else {
            let reason = format!("process {} exited while no manager was running", pi.pid);
            let failure = FailureReport::new(reason.clone())
                .with_exit(ExitStatus::Unknown)
                .with_logs(dep.logs.last(FailureReport::MAX_LOG_LINES));
            let mut shared = dep.lock();
            shared.observed = ObservedStatus::failed(reason);
            shared.last_failure = Some(failure);
        }
        self.insert(&dep);
        dep.persist();
        Ok(dep)
    }

    /// What `recover` answers for a deployment found.
    pub(super) fn recovered(&self, dep: &Deployment) -> RecoveredDeployment {
        let (observed, revision, failure) = {
            let s = dep.lock();
            (s.observed.clone(), s.spec.revision, s.last_failure.clone())
        };
        let runtime = dep.runtime(&self.settings.host);
        match observed {
            ObservedStatus::Running | ObservedStatus::Starting => {
                RecoveredDeployment::running(dep.id.clone(), revision, runtime)
            }
            ObservedStatus::Failed { reason } => {
                let mut found = RecoveredDeployment::failed(
                    dep.id.clone(),
                    revision,
                    failure.unwrap_or_else(|| FailureReport::new(reason)),
                );
                found.runtime = runtime.stopped();
                found
            }
            _ => RecoveredDeployment::stopped(dep.id.clone(), revision, runtime.stopped()),
        }
    }
}

/// A record to adopt from when the state file is gone but the persisted runtime names an
/// instance that is still alive (same pid, same start time). A dead one means nothing is
/// left (a removed deployment's details name its last instance too).
fn from_details(known: &KnownDeployment) -> Option<PersistedDeployment> {
    let inst: PersistedInstance =
        serde_json::from_value(known.detail(DETAIL_INSTANCE)?.clone()).ok()?;
    if !procfs::is_alive(inst.pid, Some(inst.start_time)) {
        return None;
    }
    Some(PersistedDeployment {
        id: known.id().as_str().to_owned(),
        revision: inst.revision,
        instance: Some(inst),
        stopped: known.runtime.instances.is_empty(),
        failed: None,
    })
}
