//! The [`Provider`] implementation (contract v2).
//!
//! Every call works from the [`KnownDeployment`] it is handed: what this provider holds in
//! memory, else what another provider of this process over the same state directory
//! supervises, else what the state directory (named in `RuntimeInfo::details`, falling
//! back to `<state_dir>/deployments/<id>`) records, adopted by pid and start time.

mod adoption;
mod canary;
mod discovery;
mod reconcile;
mod rolling;
mod scale;
mod serving;

pub(crate) use reconcile::Markers;

use async_trait::async_trait;
use conan_core::{
    Capabilities, Capability, DeploymentSpec, Error, EventSink, FailureReport, HealthReport,
    HealthStatus, KnownDeployment, LogQuery, LogStream, Metrics, ObservedStatus, OperationContext,
    Phase, Provider, RecoveredDeployment, Result, RuntimeInfo, UpdateStrategy,
};

use self::serving::{alive, replicas_of};
use crate::LocalProvider;
use crate::lifecycle::{Inner, PortChoice};

pub(crate) const NAME: &str = "local";

/// Rejects a fixed port for several replicas (they would all bind it; the manager refuses
/// it before this, for callers that use the provider directly) and says which resource
/// limits are enforced (by a cgroup) and which are not.
fn check_supported(
    ctx: &OperationContext,
    spec: &DeploymentSpec,
    settings: &crate::LocalSettings,
) -> Result<()> {
    if let (Some(port), n @ 2..) = (spec.config.port, spec.config.max_replicas()) {
        return Err(Error::InvalidConfig {
            problems: vec![conan_core::ConfigProblem::new(
                "port",
                format!(
                    "a fixed port ({port}) allows only one replica (replicas = {n}): remove `port` and each replica gets its own PORT"
                ),
            )],
        });
    }
    if let Some(notice) =
        crate::cgroup::containment(settings.cgroups).limits_notice(&spec.config.resources)
    {
        ctx.events.progress(&spec.id, Phase::Preparing, notice);
    }
    Ok(())
}

/// How long one `/proc` snapshot of the instance markers serves `recover` calls.
const MARKERS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl Inner {
    /// The instance markers of every process, from a snapshot at most [`MARKERS_TTL`] old.
    fn recent_markers(&self) -> std::sync::Arc<reconcile::Markers> {
        let mut cached = self
            .markers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, m)) = cached.as_ref()
            && at.elapsed() < MARKERS_TTL
        {
            return std::sync::Arc::clone(m);
        }
        let fresh = std::sync::Arc::new(reconcile::markers());
        *cached = Some((std::time::Instant::now(), std::sync::Arc::clone(&fresh)));
        fresh
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
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with(Capability::BlueGreen)
            .with(Capability::RollingUpdate)
            .with(Capability::Replicas)
            .with(Capability::HealthChecks)
            .with(Capability::Metrics)
            .with(Capability::LogFollow)
            .with(Capability::Recovery)
            .with(Capability::Supervision)
            .with(Capability::LocalNetwork)
            .with(Capability::Scale)
    }

    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        check_supported(ctx, spec, &self.inner.settings)?;
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
        check_supported(ctx, spec, &self.inner.settings)?;
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
            let old: Vec<_> = shared
                .serving
                .iter()
                .filter(|i| running && alive(i))
                .cloned()
                .collect();
            (old, shared.spec.clone())
        };
        if old.is_empty() {
            inner.clear(&dep).await;
            return inner.run_new(ctx, &dep, spec).await;
        }
        let keeps_port =
            spec.config.port.is_some() && old.iter().any(|o| spec.config.port == o.port);
        match spec.config.update.strategy {
            UpdateStrategy::Canary if !keeps_port => {
                return inner.canary(ctx, &dep, spec, &old_spec, old).await;
            }
            UpdateStrategy::Rolling if !keeps_port => {
                return inner.rolling(ctx, &dep, spec, &old_spec, old).await;
            }
            UpdateStrategy::BlueGreen | UpdateStrategy::Rolling if !keeps_port => {
                let choice = if spec.config.port.is_some() {
                    PortChoice::FromConfig
                } else {
                    PortChoice::Fresh
                };
                // On failure the new instances are gone and the old ones serve untouched.
                let new = inner
                    .launch_many(ctx, &dep, spec, replicas_of(spec), choice)
                    .await?;
                ctx.events.progress(
                    &spec.id,
                    Phase::Switching,
                    format!("revision {} ready", spec.revision),
                );
                let replaced = old.into_iter().map(|o| (o, old_spec.clone())).collect();
                let info = inner.serve(ctx, &dep, spec, new, replaced);
                // Behind an endpoint: route to the new instances, let the old ones drain.
                ctx.cutover(&info).await;
                ctx.events
                    .progress(&spec.id, Phase::Stopping, "stopping the previous revision");
                inner.retire(&dep).await;
                return Ok(info);
            }
            _ => {}
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
        check_supported(ctx, &known.spec, &self.inner.settings)?;
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
            shared.observed.is_running()
                && !shared.serving.is_empty()
                && shared.serving.iter().all(|i| alive(i))
        };
        if runs {
            return Ok(dep.runtime(&inner.settings.host));
        }
        ctx.check_cancelled("start")?;
        inner.clear(&dep).await;
        inner.run_new(ctx, &dep, &known.spec).await
    }

    async fn replace(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
    ) -> Result<RuntimeInfo> {
        let spec = &known.spec;
        check_supported(ctx, spec, &self.inner.settings)?;
        let side_by_side = || Error::NotSupported {
            operation: format!(
                "replacing '{}' side by side (a fixed port, or nothing running)",
                spec.name()
            ),
            provider: NAME.to_owned(),
        };
        if spec.config.port.is_some() {
            return Err(side_by_side());
        }
        let inner = &self.inner;
        inner.remember(ctx);
        let dep = inner
            .find(known, ctx.events.clone(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(spec.id.as_str()))?;
        let _op = dep.op.lock().await;
        dep.settle().await;
        inner.retire(&dep).await;
        ctx.check_cancelled("restart")?;
        let (old, old_spec) = {
            let shared = dep.lock();
            let running = shared.observed.is_running();
            let old: Vec<_> = shared
                .serving
                .iter()
                .filter(|i| running && alive(i))
                .cloned()
                .collect();
            (old, shared.spec.clone())
        };
        if old.is_empty() {
            return Err(side_by_side());
        }
        if old.len() > 1 {
            // Several replicas: replaced one step at a time, like a rolling update.
            return inner.rolling(ctx, &dep, spec, &old_spec, old).await;
        }
        // On failure the new instance is gone and the old one serves untouched.
        let new = inner
            .launch_many(ctx, &dep, spec, 1, PortChoice::Fresh)
            .await?;
        ctx.events.progress(
            &spec.id,
            Phase::Switching,
            format!("a fresh instance of revision {} is ready", spec.revision),
        );
        let replaced = old.into_iter().map(|o| (o, old_spec.clone())).collect();
        let info = inner.serve(ctx, &dep, spec, new, replaced);
        ctx.cutover(&info).await;
        ctx.events
            .progress(&spec.id, Phase::Stopping, "stopping the replaced instance");
        inner.retire(&dep).await;
        Ok(info)
    }

    async fn scale(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
        replicas: u32,
    ) -> Result<RuntimeInfo> {
        let mut spec = known.spec.clone();
        std::sync::Arc::make_mut(&mut spec.config).replicas = replicas.max(1);
        check_supported(ctx, &spec, &self.inner.settings)?;
        let inner = &self.inner;
        inner.remember(ctx);
        let dep = inner
            .find(known, ctx.events.clone(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(spec.id.as_str()))?;
        let _op = dep.op.lock().await;
        dep.settle().await;
        inner.retire(&dep).await;
        ctx.check_cancelled("scale")?;
        inner.scale(ctx, &dep, &spec).await
    }

    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        let inner = &self.inner;
        inner.remember(ctx);
        let Some(dep) = inner.find(known, ctx.events.clone(), None).await? else {
            inner.sweep(known.id().as_str(), &inner.dir_of(known)).await;
            return Ok(());
        };
        let _op = dep.op.lock().await;
        ctx.check_cancelled("stop")?;
        dep.settle().await;
        let busy = {
            let s = dep.lock();
            !s.serving.is_empty() || !s.retiring.is_empty()
        };
        if busy {
            ctx.events.progress(known.id(), Phase::Stopping, "stopping");
        }
        inner.clear(&dep).await;
        let strays = inner.sweep(known.id().as_str(), &dep.dir).await;
        if !strays.is_empty() {
            dep.logs.system(format!(
                "[conan] stopped processes no tracked instance accounted for: {}",
                strays.join("; ")
            ));
        }
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
        inner.sweep(known.id().as_str(), &dir).await;
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
        for inst in dep.serving() {
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

    /// With several replicas, the deployment is healthy while any replica in service
    /// passes `check` (each replica's own liveness is its supervisor's: a failing one
    /// leaves the serving set and is restarted alone, see [`crate::supervisor`]), so the
    /// monitor restarts the whole deployment only when none passes.
    async fn probe(
        &self,
        known: &KnownDeployment,
        check: &conan_core::HealthCheck,
    ) -> Result<conan_core::probe::ProbeOutcome> {
        if known.spec.config.replicas <= 1 {
            return Ok(conan_core::probe::probe_runtime(known, check).await);
        }
        let inner = &self.inner;
        let dep = inner
            .find(known, inner.last_sink(), None)
            .await?
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        let ports: Vec<u16> = dep
            .serving()
            .iter()
            .filter(|i| !i.down.load(std::sync::atomic::Ordering::Acquire))
            .filter_map(|i| i.port)
            .collect();
        let mut last = None;
        for port in ports {
            let one = KnownDeployment::new(
                known.spec.clone(),
                RuntimeInfo::new().with_url(format!("http://{}:{port}", inner.settings.host)),
            );
            let outcome = conan_core::probe::probe_runtime(&one, check).await;
            if outcome.healthy {
                return Ok(outcome);
            }
            last = Some(outcome);
        }
        Ok(last.unwrap_or_else(|| {
            conan_core::probe::ProbeOutcome::unhealthy("no replica is in service")
        }))
    }

    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        let inner = &self.inner;
        inner.remember(ctx);
        let mut out = Vec::with_capacity(known.len());
        // One read of `/proc` for the whole batch (taken before anything is adopted:
        // what this provider starts afterwards is tracked anyway), shared for a moment
        // with the batches right after it: the manager recovers one deployment per call,
        // and a scan per deployment made recovery quadratic. A process of a deployment is
        // only started by this provider after that deployment's own recovery.
        let snapshot = (!known.is_empty()).then(|| inner.recent_markers());
        for k in known {
            if k.spec.config.provider.as_deref().is_some_and(|p| p != NAME) {
                continue;
            }
            // One deployment that cannot be recovered never stops the others.
            match inner
                .find_with(k, ctx.events.clone(), None, snapshot.as_deref())
                .await
            {
                Ok(Some(dep)) => out.push(inner.recovered(&dep)),
                Ok(None) => out.push(RecoveredDeployment::failed(
                    k.id().clone(),
                    k.revision(),
                    FailureReport::new(format!(
                        "nothing of it was found in {}",
                        inner.dir_of(k).display()
                    )),
                )),
                Err(e) => {
                    tracing::warn!(deployment = %k.id(), error = %e, "cannot recover the deployment");
                    out.push(RecoveredDeployment::failed(
                        k.id().clone(),
                        k.revision(),
                        FailureReport::new(format!("recovery failed: {e}")),
                    ));
                }
            }
        }
        Ok(out)
    }
}
