//! The [`Provider`] implementation.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use conan_core::{
    Capabilities, Capability, DeploymentId, DeploymentSpec, DeploymentStatus, Error, Event,
    ExitStatus, FailureReport, HealthReport, HealthStatus, LogQuery, LogStream, Metrics,
    OperationContext, Phase, Provider, RecoveredDeployment, Result, Revision, RuntimeInfo,
    Timestamp, UpdateStrategy,
};
use tokio::time::Instant;

use crate::deployment::Deployment;
use crate::instance::{Instance, Proc};
use crate::lifecycle::{Inner, PortChoice, provider_err};
use crate::logs::{Capture, LogStore, LogStoreSettings};
use crate::tree::TreeRef;
use crate::{LocalProvider, command, procfs, state, supervisor};

const NAME: &str = "local";

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

impl Inner {
    fn dep_dir(&self, id: &DeploymentId) -> std::path::PathBuf {
        self.settings
            .state_dir
            .join("deployments")
            .join(id.as_str())
    }

    fn open_deployment(&self, spec: &DeploymentSpec) -> Result<Arc<Deployment>> {
        let dir = self.dep_dir(&spec.id);
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

    fn get_or_open(&self, spec: &DeploymentSpec) -> Result<Arc<Deployment>> {
        if let Ok(d) = self.deployment(&spec.id) {
            return Ok(d);
        }
        let dep = self.open_deployment(spec)?;
        let mut map = self
            .deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Arc::clone(map.entry(spec.id.clone()).or_insert(dep)))
    }

    /// Stops a stale (exited) instance left as current, if any.
    async fn clear(&self, dep: &Deployment) {
        let (inst, spec) = {
            let mut shared = dep.lock();
            (shared.current.take(), shared.spec.clone())
        };
        if let Some(inst) = inst {
            self.stop_instance(dep, &inst, &spec).await;
        }
    }

    /// Launches `spec` as the deployment's serving instance.
    async fn run_new(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        {
            let mut shared = dep.lock();
            shared.spec = spec.clone();
            shared.status = DeploymentStatus::Deploying;
            shared.health = HealthReport::new(HealthStatus::Starting);
            shared.restarts = 0;
        }
        match self.launch(ctx, dep, spec, PortChoice::FromConfig).await {
            Ok(inst) => Ok(self.serve(ctx, dep, spec, inst)),
            Err(e) => {
                {
                    let mut shared = dep.lock();
                    shared.status = DeploymentStatus::failed(e.to_string());
                    shared.health = HealthReport::new(HealthStatus::Unknown);
                }
                dep.persist();
                Err(e)
            }
        }
    }

    fn serve(
        &self,
        ctx: &OperationContext,
        dep: &Deployment,
        spec: &DeploymentSpec,
        inst: Arc<Instance>,
    ) -> RuntimeInfo {
        {
            let mut shared = dep.lock();
            shared.spec = spec.clone();
            shared.current = Some(inst);
            shared.status = DeploymentStatus::Running;
            // The gate just passed: healthy until the monitor says otherwise.
            shared.health = supervisor::after_gate(spec.config.health_check.is_some());
        }
        dep.persist();
        ctx.events.healthy(&spec.id);
        dep.runtime(&self.settings.host)
    }
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

    async fn deploy(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        check_supported(ctx, spec)?;
        let dep = self.inner.get_or_open(spec)?;
        let _op = dep.op.lock().await;
        if dep.current().is_some() && dep.lock().status.is_running() {
            return Err(Error::AlreadyExists {
                name: spec.config.name.clone(),
            });
        }
        self.inner.clear(&dep).await;
        self.inner.run_new(ctx, &dep, spec).await
    }

    async fn update(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        check_supported(ctx, spec)?;
        let dep = self.inner.deployment(&spec.id)?;
        let _op = dep.op.lock().await;
        let (old, old_spec, running) = {
            let shared = dep.lock();
            (
                shared.current.clone(),
                shared.spec.clone(),
                shared.status.is_running(),
            )
        };
        let Some(old) = old.filter(|_| running) else {
            self.inner.clear(&dep).await;
            return self.inner.run_new(ctx, &dep, spec).await;
        };
        let keeps_port = spec.config.port.is_some() && spec.config.port == old.port;
        let blue_green = spec.config.update.strategy != UpdateStrategy::Recreate && !keeps_port;
        if blue_green {
            let choice = if spec.config.port.is_some() {
                PortChoice::FromConfig
            } else {
                PortChoice::Fresh
            };
            return match self.inner.launch(ctx, &dep, spec, choice).await {
                Ok(new) => {
                    ctx.events.progress(
                        &spec.id,
                        Phase::Switching,
                        format!("revision {} ready", spec.revision),
                    );
                    let info = self.inner.serve(ctx, &dep, spec, new);
                    ctx.events.progress(
                        &spec.id,
                        Phase::Stopping,
                        "stopping the previous revision",
                    );
                    self.inner.stop_instance(&dep, &old, &old_spec).await;
                    Ok(info)
                }
                Err(e) => {
                    ctx.events.emit(Event::RolledBack {
                        deployment: spec.id.clone(),
                        failed: spec.revision,
                        serving: old.revision,
                        reason: e.to_string(),
                    });
                    Err(e)
                }
            };
        }
        ctx.events.progress(
            &spec.id,
            Phase::Stopping,
            "recreate: stopping the running revision",
        );
        dep.set_status(DeploymentStatus::Stopping);
        self.inner.clear(&dep).await;
        match self.inner.run_new(ctx, &dep, spec).await {
            Ok(info) => Ok(info),
            Err(e) => {
                if spec.config.update.auto_rollback
                    && self.inner.run_new(ctx, &dep, &old_spec).await.is_ok()
                {
                    {
                        ctx.events.emit(Event::RolledBack {
                            deployment: spec.id.clone(),
                            failed: spec.revision,
                            serving: old_spec.revision,
                            reason: e.to_string(),
                        });
                    }
                }
                Err(e)
            }
        }
    }

    async fn start(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        check_supported(ctx, spec)?;
        let dep = self.inner.get_or_open(spec)?;
        let _op = dep.op.lock().await;
        let alive = dep.current().is_some_and(|i| {
            procfs::is_alive(
                i.pid.load(Ordering::Acquire),
                Some(i.start_time.load(Ordering::Acquire)),
            )
        });
        if alive && dep.lock().status.is_running() {
            return Ok(dep.runtime(&self.inner.settings.host));
        }
        self.inner.clear(&dep).await;
        self.inner.run_new(ctx, &dep, spec).await
    }

    async fn stop(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()> {
        let dep = self.inner.deployment(id)?;
        let _op = dep.op.lock().await;
        if dep.current().is_some() {
            ctx.events.progress(id, Phase::Stopping, "stopping");
            dep.set_status(DeploymentStatus::Stopping);
            self.inner.clear(&dep).await;
        }
        {
            let mut shared = dep.lock();
            shared.status = DeploymentStatus::Stopped;
            shared.health = HealthReport::new(HealthStatus::Unknown);
        }
        dep.persist();
        Ok(())
    }

    async fn remove(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()> {
        let dep = self.inner.deployment(id)?;
        {
            let _op = dep.op.lock().await;
            if dep.current().is_some() {
                ctx.events.progress(id, Phase::Stopping, "removing");
                self.inner.clear(&dep).await;
            }
            dep.set_status(DeploymentStatus::Removed);
        }
        self.inner
            .deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        if let Err(e) = std::fs::remove_dir_all(&dep.dir) {
            tracing::warn!(deployment = %id, error = %e, "cannot delete the deployment's state directory");
        }
        Ok(())
    }

    async fn status(&self, id: &DeploymentId) -> Result<DeploymentStatus> {
        Ok(self.inner.deployment(id)?.lock().status.clone())
    }

    async fn logs(&self, id: &DeploymentId, query: &LogQuery) -> Result<LogStream> {
        let dep = self.inner.deployment(id)?;
        if let Some(inst) = dep.current() {
            inst.capture.poll();
        }
        Ok(dep.logs.query(query))
    }

    async fn metrics(&self, id: &DeploymentId) -> Result<Metrics> {
        let dep = self.inner.deployment(id)?;
        Ok(crate::metrics::collect(&dep).await)
    }

    async fn health(&self, id: &DeploymentId) -> Result<HealthReport> {
        Ok(self.inner.deployment(id)?.lock().health.clone())
    }

    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[DeploymentSpec],
    ) -> Result<Vec<RecoveredDeployment>> {
        let mut out = Vec::new();
        for spec in known {
            if spec.config.provider.as_deref().is_some_and(|p| p != NAME) {
                continue;
            }
            if let Ok(dep) = self.inner.deployment(&spec.id) {
                let (status, revision) = {
                    let s = dep.lock();
                    (s.status.clone(), s.spec.revision)
                };
                out.push(RecoveredDeployment {
                    id: spec.id.clone(),
                    revision,
                    status,
                    runtime: dep.runtime(&self.inner.settings.host),
                    failure: None,
                });
                continue;
            }
            let dir = self.inner.dep_dir(&spec.id);
            let Some(saved) = state::load(&dir)
                .map_err(|e| provider_err(format!("cannot read state in {}", dir.display()), e))?
            else {
                continue;
            };
            if let Some(found) = self.adopt(ctx, spec, saved).await? {
                out.push(found);
            }
        }
        Ok(out)
    }
}

impl LocalProvider {
    async fn adopt(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        saved: state::PersistedDeployment,
    ) -> Result<Option<RecoveredDeployment>> {
        let inner = &self.inner;
        let mut spec = spec.clone();
        spec.revision = Revision(saved.revision);
        let dep = inner.open_deployment(&spec)?;
        inner
            .deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(spec.id.clone(), Arc::clone(&dep));
        let Some(pi) = saved.instance else {
            let status = if saved.stopped {
                DeploymentStatus::Stopped
            } else {
                DeploymentStatus::failed("not running")
            };
            dep.set_status(status.clone());
            return Ok(Some(RecoveredDeployment {
                id: spec.id.clone(),
                revision: spec.revision,
                status,
                runtime: RuntimeInfo::default(),
                failure: None,
            }));
        };
        let inst_dir = dep.dir.join("instances").join(&pi.key);
        std::fs::create_dir_all(&inst_dir)
            .map_err(|e| provider_err(format!("cannot create {}", inst_dir.display()), e))?;
        let capture = Capture::start(&inst_dir, Arc::clone(&dep.logs))
            .map_err(|e| provider_err("cannot resume log capture", e))?;
        let started = Timestamp::from_unix_micros(pi.started_at_micros);
        let inst = Arc::new(Instance {
            key: pi.key.clone(),
            revision: Revision(pi.revision),
            port: pi.port,
            dir: inst_dir,
            deployment: spec.id.as_str().to_owned(),
            pid: pi.pid.into(),
            start_time: pi.start_time.into(),
            first_start_time: pi.start_time.into(),
            started_at: std::sync::Mutex::new((
                started,
                Instant::now()
                    .checked_sub(started.elapsed())
                    .unwrap_or_else(Instant::now),
            )),
            stopping: false.into(),
            capture,
            supervisor: std::sync::Mutex::new(None),
            cancel: tokio_util::sync::CancellationToken::new(),
        });
        if procfs::is_alive(pi.pid, Some(pi.start_time)) {
            if let Some(p) = pi.port {
                inner.ports.adopt(p);
            }
            let source = Inner::source_of(&spec);
            let launch = command::resolve(&spec.config, &source, &inner.settings.node_path)?;
            dep.logs.system(format!(
                "[conan] adopted pid {} after a manager restart",
                pi.pid
            ));
            {
                let mut shared = dep.lock();
                shared.current = Some(Arc::clone(&inst));
                shared.status = DeploymentStatus::Running;
            }
            supervisor::start(
                Arc::clone(inner),
                Arc::clone(&dep),
                inst,
                Proc::Adopted {
                    pid: pi.pid,
                    start_time: pi.start_time,
                },
                launch,
                spec.clone(),
                source,
                ctx.events.clone(),
            );
            dep.persist();
            return Ok(Some(RecoveredDeployment {
                id: spec.id.clone(),
                revision: spec.revision,
                status: DeploymentStatus::Running,
                runtime: dep.runtime(&inner.settings.host),
                failure: None,
            }));
        }
        // Gone (or the pid now belongs to someone else): never adopt it; clean up whatever
        // of its tree is left, record its last output, and report it failed.
        TreeRef {
            leader: None,
            marker: inst.marker(),
            since: 0,
        }
        .kill_all()
        .await;
        inst.capture.finish();
        let reason = format!("process {} exited while no manager was running", pi.pid);
        let failure = FailureReport::new(reason.clone())
            .with_exit(ExitStatus::Unknown)
            .with_logs(dep.logs.last(FailureReport::MAX_LOG_LINES));
        let status = DeploymentStatus::failed(reason);
        dep.set_status(status.clone());
        dep.persist();
        Ok(Some(RecoveredDeployment {
            id: spec.id.clone(),
            revision: spec.revision,
            status,
            runtime: RuntimeInfo::default(),
            failure: Some(failure),
        }))
    }
}
