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

use super::reconcile;
use crate::deployment::{self, DETAIL_INSTANCE, DETAIL_REPLICAS, DETAIL_STATE_DIR, Deployment};
use crate::instance::{Instance, NewInstance, Proc};
use crate::lifecycle::{Inner, provider_err};
use crate::logs::{Capture, LogStore, LogStoreSettings};
use crate::state::{Loaded, PersistedDeployment, PersistedInstance};
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
    /// `create`, a new deployment of that spec when nothing is found. A deployment found
    /// on disk is [reconciled](super::reconcile) first.
    pub(super) async fn find(
        self: &Arc<Self>,
        known: &KnownDeployment,
        sink: EventSink,
        create: Option<&DeploymentSpec>,
    ) -> Result<Option<Arc<Deployment>>> {
        self.find_with(known, sink, create, None).await
    }

    /// [`find`](Self::find), reconciling against a snapshot of the marked processes
    /// (taken once for a batch of recoveries) instead of a fresh scan.
    pub(super) async fn find_with(
        self: &Arc<Self>,
        known: &KnownDeployment,
        sink: EventSink,
        create: Option<&DeploymentSpec>,
        snapshot: Option<&reconcile::Markers>,
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
        let (saved, damaged) = match state::load(&dir) {
            Loaded::Found(s) => (Some(s), None),
            Loaded::Missing => (None, None),
            Loaded::Damaged(why) => {
                tracing::warn!(deployment = %known.id(), %why, "the deployment's state file is damaged");
                (None, Some(why))
            }
        };
        // Without a readable state file, the runtime the caller persisted names the
        // serving instance.
        let saved = saved.or_else(|| from_details(known));
        if saved.is_some() || damaged.is_some() || dir.join("instances").is_dir() {
            let dep = self
                .adopt(known, saved, damaged, dir, sink, snapshot)
                .await?;
            return Ok(Some(dep));
        }
        let Some(spec) = create else {
            return Ok(None);
        };
        let dep = self.open_deployment(spec, dir)?;
        self.insert(&dep);
        Ok(Some(dep))
    }

    /// Takes over a deployment an earlier provider left in `dir`: reconciles its instances
    /// (see [`super::reconcile`]), supervises the one adopted again (same pid, same start
    /// time), and reports the deployment failed when nothing is adopted and it was not
    /// stopped on purpose. `damaged` is why its state file could not be read.
    pub(super) async fn adopt(
        self: &Arc<Self>,
        known: &KnownDeployment,
        saved: Option<PersistedDeployment>,
        damaged: Option<String>,
        dir: PathBuf,
        sink: EventSink,
        snapshot: Option<&reconcile::Markers>,
    ) -> Result<Arc<Deployment>> {
        let id = known.id().as_str().to_owned();
        let found = reconcile::scan(&dir, &id, snapshot);
        let serving = saved
            .as_ref()
            .map(PersistedDeployment::serving)
            .unwrap_or_default();
        let wanted = known.spec.config.replicas.max(1) as usize;
        let mut choice = reconcile::choose(
            &serving,
            saved.as_ref().map(|s| s.revision),
            &found,
            known.revision().0,
            wanted,
        );
        if damaged.is_some() && wanted == 1 && choice.by_readiness && choice.candidates > 1 {
            // Without a state file, several ready instances leave no way to tell which
            // one served: none is adopted.
            choice.adopt.clear();
        }
        let revision = match (choice.adopt.first(), &saved) {
            (Some(a), _) => a.revision,
            (None, Some(s)) => s.revision,
            (None, None) => known.revision().0,
        };
        let spec = spec_of(known, &dir, revision);
        let dep = self.open_deployment(&spec, dir)?;
        let keep: Vec<&str> = choice.adopt.iter().map(|a| a.key.as_str()).collect();
        let serving_keys: Vec<&str> = serving.iter().map(|s| s.key.as_str()).collect();
        let killed = self
            .settle_instances(&id, &found, &keep, &serving_keys, Some(&dep.logs))
            .await;
        for what in &killed {
            dep.logs.system(format!(
                "[conan] stopped {what}: left by an interrupted operation of a manager that stopped"
            ));
        }
        let interrupted = (!killed.is_empty()).then(|| {
            format!(
                "interrupted by a manager restart: stopped {}",
                killed.join("; ")
            )
        });
        if choice.adopt.is_empty() {
            let reason = match (&damaged, &saved, interrupted) {
                (Some(why), _, more) => Some(format!(
                    "state file damaged: {why}{}",
                    more.map(|m| format!("; {m}")).unwrap_or_default()
                )),
                (None, _, Some(more)) => Some(more),
                (None, Some(s), None) if s.stopped => None,
                (None, Some(s), None) => match s.serving().first() {
                    Some(pi) => {
                        return self.adopt_gone(dep, pi).await;
                    }
                    None => Some(s.failed.clone().unwrap_or_else(|| "not running".to_owned())),
                },
                (None, None, None) => Some(
                    "its launch was interrupted by a manager restart (nothing of it was left running)"
                        .to_owned(),
                ),
            };
            let observed = match reason {
                None => ObservedStatus::Stopped,
                Some(reason) => {
                    dep.lock().last_failure = Some(
                        FailureReport::new(reason.clone())
                            .with_logs(dep.logs.last(FailureReport::MAX_LOG_LINES)),
                    );
                    ObservedStatus::failed(reason)
                }
            };
            dep.set_observed(observed);
            self.insert(&dep);
            dep.persist();
            return Ok(dep);
        };
        let source = Inner::source_of(&spec);
        let launch = match command::resolve(&spec.config, &source, &self.settings.node_path) {
            Ok(l) => l,
            Err(e) => {
                // They cannot be restarted, so they are not supervised: nothing may stay.
                for pi in &choice.adopt {
                    let inst = self.adopted_instance(&dep, &id, pi)?;
                    inst.tree().kill_all().await;
                    inst.capture.finish();
                    inst.release_port();
                }
                return Err(e);
            }
        };
        let mut adopted = Vec::with_capacity(choice.adopt.len());
        for pi in &choice.adopt {
            adopted.push((self.adopted_instance(&dep, &id, pi)?, pi));
        }
        for (_, pi) in &adopted {
            dep.logs.system(format!(
                "[conan] adopted pid {} after a manager restart",
                pi.pid
            ));
        }
        if choice.by_readiness || damaged.is_some() {
            let why = damaged
                .as_ref()
                .map_or_else(String::new, |w| format!("state file damaged: {w}; "));
            let which: Vec<String> = adopted
                .iter()
                .map(|(_, pi)| format!("{} (revision {}, pid {})", pi.key, pi.revision, pi.pid))
                .collect();
            let note = format!(
                "{why}adopted instance {}, the live one(s) that passed the readiness gate",
                which.join(", ")
            );
            dep.logs.system(format!("[conan] {note}"));
            if damaged.is_some() {
                dep.lock().last_failure = Some(FailureReport::new(note));
            }
        }
        {
            let mut shared = dep.lock();
            shared.serving = adopted.iter().map(|(i, _)| Arc::clone(i)).collect();
            shared.observed = ObservedStatus::Running;
        }
        for (inst, _) in &adopted {
            inst.save_record();
        }
        self.insert(&dep);
        for (inst, pi) in adopted {
            supervisor::start(
                Arc::clone(self),
                Arc::clone(&dep),
                inst,
                Proc::Adopted {
                    pid: pi.pid,
                    start_time: pi.start_time,
                },
                launch.clone(),
                spec.clone(),
                source.clone(),
                sink.clone(),
            );
        }
        dep.persist();
        let missing = wanted.saturating_sub(dep.lock().serving.len());
        if missing > 0 && spec.config.replicas as usize == wanted {
            self.refill(&dep, &spec, missing, sink);
        }
        Ok(dep)
    }

    /// An instance for the adopted process `pi` (its port reserved again).
    fn adopted_instance(
        &self,
        dep: &Deployment,
        id: &str,
        pi: &PersistedInstance,
    ) -> Result<Arc<Instance>> {
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
                deployment: id.to_owned(),
                capture,
                ports: Arc::clone(&self.ports),
            },
            pi.pid,
            pi.start_time,
            Timestamp::from_unix_micros(pi.started_at_micros),
        ));
        if let Some(p) = pi.port {
            self.ports.adopt(p);
        }
        Ok(inst)
    }

    /// Starts `missing` replicas of `spec` again after an adoption found fewer alive than
    /// configured (they died while no manager ran), in the background under the
    /// deployment's operation lock; each joins the serving set once ready, and the manager
    /// learns the new runtime through `sink`.
    fn refill(
        self: &Arc<Self>,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
        missing: usize,
        sink: EventSink,
    ) {
        let (inner, dep, spec) = (Arc::clone(self), Arc::clone(dep), spec.clone());
        dep.logs.system(format!(
            "[conan] {missing} replica(s) died while no manager was running; starting them again"
        ));
        tokio::spawn(async move {
            let _op = dep.op.lock().await;
            if dep.removed.load(Ordering::Acquire)
                || !dep.observed().is_running()
                || dep.lock().spec != spec
            {
                return;
            }
            let ctx = conan_core::OperationContext::new(sink.clone());
            match inner
                .launch_many(
                    &ctx,
                    &dep,
                    &spec,
                    missing,
                    crate::lifecycle::PortChoice::Fresh,
                )
                .await
            {
                Ok(insts) => {
                    let origin = conan_core::ReportOrigin::new(spec.revision, String::new());
                    dep.lock().serving.extend(insts);
                    dep.persist();
                    sink.runtime_changed(&dep.id, origin, dep.runtime(&inner.settings.host));
                }
                Err(e) => {
                    tracing::warn!(deployment = %dep.id, error = %e, "cannot start the missing replicas again");
                    dep.logs
                        .system(format!("[conan] the missing replicas did not start: {e}"));
                }
            }
        });
    }

    /// The serving instance `pi` is gone (or its pid belongs to someone else now): never
    /// adopt it; clean up whatever of its tree is left and record its last output.
    async fn adopt_gone(
        &self,
        dep: Arc<Deployment>,
        pi: &PersistedInstance,
    ) -> Result<Arc<Deployment>> {
        // What was left of its tree was killed with the other instances.
        let inst_dir = dep.dir.join("instances").join(&pi.key);
        reconcile::reclaim_instance_dir(&inst_dir, Some(&dep.logs));
        let reason = format!("process {} exited while no manager was running", pi.pid);
        let failure = FailureReport::new(reason.clone())
            .with_exit(ExitStatus::Unknown)
            .with_logs(dep.logs.last(FailureReport::MAX_LOG_LINES));
        {
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
            ObservedStatus::Running
            | ObservedStatus::Starting
            | ObservedStatus::Restarting { .. } => {
                // A note on how it was recovered (a damaged state file), if any.
                let mut found = RecoveredDeployment::running(dep.id.clone(), revision, runtime);
                found.failure = failure;
                found
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

/// The spec of `revision`: the one `spec.json` holds when it is of that revision, else the
/// caller's config at that revision.
fn spec_of(known: &KnownDeployment, dir: &std::path::Path, revision: u64) -> DeploymentSpec {
    match state::load_spec(dir) {
        Loaded::Found(s) if s.id == *known.id() && s.revision == revision => s.into_spec(),
        _ => {
            let mut spec = known.spec.clone();
            spec.revision = Revision(revision);
            spec
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
    let replicas: Vec<PersistedInstance> = known
        .detail(DETAIL_REPLICAS)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    Some(PersistedDeployment {
        id: known.id().as_str().to_owned(),
        revision: inst.revision,
        instance: Some(inst),
        replicas,
        stopped: known.runtime.instances.is_empty(),
        failed: None,
    })
}
