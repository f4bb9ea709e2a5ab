//! The [`Provider`] implementation (contract v2).
//!
//! Every call works from the [`KnownDeployment`] it is handed: what this provider holds in
//! memory, else what another provider of this process over the same state directory
//! supervises, else what the state directory (named in `RuntimeInfo::details`, falling
//! back to `<state_dir>/deployments/<id>`) records, adopted by pid and start time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use conan_core::{
    Capabilities, Capability, DeploymentId, DeploymentSpec, Error, EventSink, ExitStatus,
    FailureReport, HealthReport, HealthStatus, KnownDeployment, LogQuery, LogStream, Metrics,
    ObservedStatus, OperationContext, Phase, Provider, RecoveredDeployment, Result, Revision,
    RuntimeInfo, Timestamp, UpdateStrategy,
};

use crate::deployment::{self, DETAIL_INSTANCE, DETAIL_STATE_DIR, Deployment};
use crate::instance::{Instance, NewInstance, Proc};
use crate::lifecycle::{Inner, PortChoice, provider_err};
use crate::logs::{Capture, LogStore, LogStoreSettings};
use crate::state::{PersistedDeployment, PersistedInstance};
use crate::tree::TreeRef;
use crate::{LocalProvider, command, procfs, state, supervisor};

const NAME: &str = "local";

/// Serializes finding and adopting deployments process-wide, so two calls (or two
/// providers) never adopt the same processes twice.
static ADOPTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Rejects what this provider cannot do (more than one replica) and warns about what it
/// ignores (resource limits).
fn check_supported(ctx: &OperationContext, spec: &DeploymentSpec) -> Result<()> {
    if spec.config.replicas > 1 {
        return Err(Error::NotSupported {
            operation: format!(
                "{} replicas (one instance per deployment)",
                spec.config.replicas
            ),
            provider: NAME.into(),
        });
    }
    if !spec.config.resources.is_unlimited() {
        ctx.events.progress(
            &spec.id,
            Phase::Preparing,
            "resource limits are not enforced by the local provider",
        );
    }
    Ok(())
}

/// Marks a deployment whose launch was abandoned (the future dropped before it was ready
/// or failed) as failed, so it never stays `Starting` with nothing running.
struct StartingGuard<'a> {
    dep: &'a Deployment,
    done: bool,
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut shared = self.dep.lock();
            if shared.current.is_none() && shared.observed == ObservedStatus::Starting {
                shared.observed =
                    ObservedStatus::failed("the deploy was abandoned before it was ready");
                shared.health = HealthReport::new(HealthStatus::Unknown);
            }
        }
        self.dep.persist();
    }
}

impl Inner {
    fn dep_dir(&self, id: &DeploymentId) -> PathBuf {
        self.settings
            .state_dir
            .join("deployments")
            .join(id.as_str())
    }

    /// The deployment's state directory: the one its details name, when that is a
    /// deployment directory of this id (anything else is ignored: `remove` deletes it),
    /// else the one under this provider's state directory.
    fn dir_of(&self, known: &KnownDeployment) -> PathBuf {
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

    /// Remembers the sink of a call, for supervisors started outside calls that have one.
    fn remember(&self, ctx: &OperationContext) {
        *self
            .sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ctx.events.clone());
    }

    fn last_sink(&self) -> EventSink {
        self.sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(EventSink::detached)
    }

    fn open_deployment(&self, spec: &DeploymentSpec, dir: PathBuf) -> Result<Arc<Deployment>> {
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
    fn held(&self, id: &DeploymentId) -> Option<Arc<Deployment>> {
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

    fn insert(&self, dep: &Arc<Deployment>) {
        deployment::register(dep);
        self.deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(dep.id.clone(), Arc::clone(dep));
    }

    fn forget(&self, dep: &Deployment) {
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
    async fn find(
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

    /// Stops every instance of the deployment that is being replaced (its retiring list).
    /// Each leaves the list only once it is gone, so an abandoned call leaves the rest to
    /// the next one.
    async fn retire(&self, dep: &Deployment) {
        loop {
            let next = dep.lock().retiring.first().cloned();
            let Some((inst, spec)) = next else { return };
            self.stop_instance(dep, &inst, &spec).await;
            dep.lock().retiring.retain(|(i, _)| !Arc::ptr_eq(i, &inst));
        }
    }

    /// Stops the serving instance, if any (and whatever is being replaced).
    async fn clear(&self, dep: &Deployment) {
        {
            let mut shared = dep.lock();
            if let Some(inst) = shared.current.take() {
                let spec = shared.spec.clone();
                shared.retiring.push((inst, spec));
            }
        }
        self.retire(dep).await;
    }

    /// The runtime of `spec` when exactly that spec already serves (an idempotent repeat).
    fn serving(&self, dep: &Deployment, spec: &DeploymentSpec) -> Option<RuntimeInfo> {
        let serves = {
            let shared = dep.lock();
            shared.spec == *spec
                && shared.observed.is_running()
                && shared.current.as_ref().is_some_and(|i| alive(i))
        };
        serves.then(|| dep.runtime(&self.settings.host))
    }

    /// Launches `spec` as the deployment's serving instance (nothing else serves).
    async fn run_new(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        {
            let mut shared = dep.lock();
            shared.spec = spec.clone();
            shared.observed = ObservedStatus::Starting;
            shared.health = HealthReport::new(HealthStatus::Starting);
            shared.restarts = 0;
            shared.last_failure = None;
        }
        let mut guard = StartingGuard { dep, done: false };
        let result = match self.launch(ctx, dep, spec, PortChoice::FromConfig).await {
            Ok(inst) => Ok(self.serve(ctx, dep, spec, inst, None)),
            Err(e) => {
                {
                    let mut shared = dep.lock();
                    shared.observed = ObservedStatus::failed(e.to_string());
                    shared.health = HealthReport::new(HealthStatus::Unknown);
                    shared.last_failure = Some(
                        e.failure()
                            .cloned()
                            .unwrap_or_else(|| FailureReport::new(e.to_string())),
                    );
                }
                dep.persist();
                Err(e)
            }
        };
        guard.done = true;
        result
    }

    /// Makes `inst` (of `spec`, past its readiness gate) the serving instance; `replaced`
    /// moves to the retiring list in the same step.
    fn serve(
        &self,
        ctx: &OperationContext,
        dep: &Deployment,
        spec: &DeploymentSpec,
        inst: Arc<Instance>,
        replaced: Option<(Arc<Instance>, DeploymentSpec)>,
    ) -> RuntimeInfo {
        {
            let mut shared = dep.lock();
            shared.spec = spec.clone();
            shared.current = Some(inst);
            shared.retiring.extend(replaced);
            shared.observed = ObservedStatus::Running;
            shared.last_failure = None;
            // The gate just passed: healthy until the monitor says otherwise.
            shared.health = supervisor::after_gate(spec.config.health_check.is_some());
        }
        dep.persist();
        ctx.events.healthy(&spec.id);
        dep.runtime(&self.settings.host)
    }

    /// Takes over a deployment an earlier provider recorded in `dir`: a live instance
    /// (same pid, same start time) is supervised again; a gone one is reported failed.
    async fn adopt(
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
    fn recovered(&self, dep: &Deployment) -> RecoveredDeployment {
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

/// Whether the instance's current process is alive (same pid, same start time).
fn alive(inst: &Instance) -> bool {
    procfs::is_alive(
        inst.pid.load(Ordering::Acquire),
        Some(inst.start_time.load(Ordering::Acquire)),
    )
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

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with(Capability::BlueGreen)
            .with(Capability::HealthChecks)
            .with(Capability::Metrics)
            .with(Capability::LogFollow)
            .with(Capability::Recovery)
            .with(Capability::Supervision)
            .with(Capability::LocalNetwork)
    }

    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        check_supported(ctx, spec)?;
        let inner = &self.inner;
        inner.remember(ctx);
        let known = previous
            .cloned()
            .unwrap_or_else(|| KnownDeployment::from_spec(spec.clone()));
        let Some(dep) = inner.find(&known, ctx.events.clone(), Some(spec)).await? else {
            return Err(Error::deployment_not_found(spec.id.as_str()));
        };
        let _op = dep.op.lock().await;
        dep.settle().await;
        inner.retire(&dep).await;
        if let Some(info) = inner.serving(&dep, spec) {
            return Ok(info);
        }
        ctx.check_cancelled("deploy")?;
        // Whatever is held of the deployment (a stopped, failed or other revision) is
        // replaced.
        inner.clear(&dep).await;
        inner.run_new(ctx, &dep, spec).await
    }

    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        check_supported(ctx, spec)?;
        let inner = &self.inner;
        inner.remember(ctx);
        let dep = inner
            .find(current, ctx.events.clone(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(spec.id.as_str()))?;
        let _op = dep.op.lock().await;
        dep.settle().await;
        inner.retire(&dep).await;
        if let Some(info) = inner.serving(&dep, spec) {
            return Ok(info);
        }
        ctx.check_cancelled("update")?;
        let (old, old_spec) = {
            let shared = dep.lock();
            let running = shared.observed.is_running();
            (
                shared.current.clone().filter(|i| running && alive(i)),
                shared.spec.clone(),
            )
        };
        let Some(old) = old else {
            inner.clear(&dep).await;
            return inner.run_new(ctx, &dep, spec).await;
        };
        let keeps_port = spec.config.port.is_some() && spec.config.port == old.port;
        let blue_green = spec.config.update.strategy != UpdateStrategy::Recreate && !keeps_port;
        if blue_green {
            let choice = if spec.config.port.is_some() {
                PortChoice::FromConfig
            } else {
                PortChoice::Fresh
            };
            // On failure the new instance is gone and the old one serves untouched.
            let new = inner.launch(ctx, &dep, spec, choice).await?;
            ctx.events.progress(
                &spec.id,
                Phase::Switching,
                format!("revision {} ready", spec.revision),
            );
            let info = inner.serve(ctx, &dep, spec, new, Some((old, old_spec)));
            ctx.events
                .progress(&spec.id, Phase::Stopping, "stopping the previous revision");
            inner.retire(&dep).await;
            return Ok(info);
        }
        ctx.events.progress(
            &spec.id,
            Phase::Stopping,
            "recreate: stopping the running revision",
        );
        inner.clear(&dep).await;
        match inner.run_new(ctx, &dep, spec).await {
            Ok(info) => Ok(info),
            Err(e) => {
                // The old revision is started again; the manager learns it serves from
                // `status` and reports the rollback.
                if spec.config.update.auto_rollback && !ctx.is_cancelled() {
                    ctx.events.progress(
                        &spec.id,
                        Phase::Starting,
                        format!("starting revision {} again", old_spec.revision),
                    );
                    if let Err(again) = inner.run_new(ctx, &dep, &old_spec).await {
                        tracing::warn!(deployment = %spec.id, error = %again, "the previous revision did not come back");
                    }
                }
                Err(e)
            }
        }
    }

    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        check_supported(ctx, &known.spec)?;
        let inner = &self.inner;
        inner.remember(ctx);
        let dep = inner
            .find(known, ctx.events.clone(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        let _op = dep.op.lock().await;
        dep.settle().await;
        inner.retire(&dep).await;
        let runs = {
            let shared = dep.lock();
            shared.observed.is_running() && shared.current.as_ref().is_some_and(|i| alive(i))
        };
        if runs {
            return Ok(dep.runtime(&inner.settings.host));
        }
        ctx.check_cancelled("start")?;
        inner.clear(&dep).await;
        inner.run_new(ctx, &dep, &known.spec).await
    }

    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        let inner = &self.inner;
        inner.remember(ctx);
        let Some(dep) = inner.find(known, ctx.events.clone(), None).await? else {
            return Ok(());
        };
        let _op = dep.op.lock().await;
        ctx.check_cancelled("stop")?;
        dep.settle().await;
        let busy = {
            let s = dep.lock();
            s.current.is_some() || !s.retiring.is_empty()
        };
        if busy {
            ctx.events.progress(known.id(), Phase::Stopping, "stopping");
        }
        inner.clear(&dep).await;
        {
            let mut shared = dep.lock();
            shared.observed = ObservedStatus::Stopped;
            shared.health = HealthReport::new(HealthStatus::Unknown);
        }
        dep.persist();
        Ok(())
    }

    async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        let inner = &self.inner;
        inner.remember(ctx);
        let dir = match inner.find(known, ctx.events.clone(), None).await? {
            Some(dep) => {
                let _op = dep.op.lock().await;
                dep.settle().await;
                ctx.events.progress(known.id(), Phase::Stopping, "removing");
                inner.clear(&dep).await;
                inner.forget(&dep);
                dep.dir.clone()
            }
            None => inner.dir_of(known),
        };
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err((dir, e)),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err((dir, e))) = removed {
            tracing::warn!(deployment = %known.id(), dir = %dir.display(), error = %e, "cannot delete the deployment's state directory");
        }
        Ok(())
    }

    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
        let inner = &self.inner;
        let dep = inner
            .find(known, inner.last_sink(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(dep.observed())
    }

    async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
        let inner = &self.inner;
        let dep = inner
            .find(known, inner.last_sink(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        if let Some(inst) = dep.current() {
            inst.capture.poll();
        }
        Ok(dep.logs.query(query))
    }

    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
        let inner = &self.inner;
        let dep = inner
            .find(known, inner.last_sink(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(crate::metrics::collect(&dep).await)
    }

    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
        let inner = &self.inner;
        let dep = inner
            .find(known, inner.last_sink(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(dep.lock().health.clone())
    }

    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        let inner = &self.inner;
        inner.remember(ctx);
        let mut out = Vec::with_capacity(known.len());
        for k in known {
            if k.spec.config.provider.as_deref().is_some_and(|p| p != NAME) {
                continue;
            }
            match inner.find(k, ctx.events.clone(), None).await? {
                Some(dep) => out.push(inner.recovered(&dep)),
                None => out.push(RecoveredDeployment::failed(
                    k.id().clone(),
                    k.revision(),
                    FailureReport::new(format!(
                        "nothing of it was found in {}",
                        inner.dir_of(k).display()
                    )),
                )),
            }
        }
        Ok(out)
    }
}
