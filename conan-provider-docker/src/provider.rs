//! The [`Provider`] implementation: deploy, update, start, replace, stop, remove, status,
//! health, logs and metrics.
//!
//! Every call works from what it is handed (the [`KnownDeployment`]) and from the
//! containers labelled with the deployment's id: a fresh provider instance finds
//! everything again. Calls are idempotent by (deployment, revision): the containers of a
//! revision are found by their labels, so a repeated deploy converges on them instead of
//! starting a second set.

mod deploy;
mod inventory;
mod replace;

use async_trait::async_trait;
use bollard::models::ContainerSummary;
use conan_core::{
    Capabilities, Capability, DeploymentSpec, Error, EventSink, HealthReport, HealthStatus,
    KnownDeployment, LogQuery, LogStream, Metrics, ObservedStatus, OperationContext, Phase,
    Provider, RecoveredDeployment, Result, RuntimeInfo, Timestamp,
};

use self::inventory::{ids, of_revision};
use crate::{DockerProvider, PROVIDER_NAME, container, image, metrics, rollout};

pub(crate) use self::inventory::{is_running, one_per_replica};

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> Capabilities {
        let caps = Capabilities::none()
            .with(Capability::RollingUpdate)
            .with(Capability::BlueGreen)
            .with(Capability::HealthChecks)
            .with(Capability::Metrics)
            .with(Capability::LogFollow)
            .with(Capability::Recovery)
            .with(Capability::Replicas)
            .with(Capability::Build)
            .with(Capability::ResourceLimits)
            .with(Capability::Supervision);
        if self.settings.local {
            caps.with(Capability::LocalNetwork)
        } else {
            caps
        }
    }

    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        // Whatever `previous` left (found by label) is replaced; its images stay for
        // rollback until pruned.
        let _busy = self.busy(spec);
        self.state.update(&spec.id, |t| t.unserve());
        let result = self.deploy_inner(ctx, spec, previous).await;
        if result.is_err() {
            // Nothing of it is left: the provider holds nothing for it any more.
            self.state.remove(&spec.id);
        }
        result
    }

    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        // Containers die on purpose during a rollout: the supervisor looks away meanwhile.
        let _busy = self.busy(&current.spec);
        self.update_inner(ctx, current, spec).await
    }

    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        let _busy = self.busy(&known.spec);
        self.start_inner(ctx, known).await
    }

    async fn replace(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
    ) -> Result<RuntimeInfo> {
        // The replaced containers die on purpose: the supervisor looks away meanwhile.
        let _busy = self.busy(&known.spec);
        self.replace_inner(ctx, known).await
    }

    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        let _busy = self.busy(&known.spec);
        self.state.upsert(&known.spec, |t| {
            t.stopped = true;
            t.unserve();
            t.health = HealthReport::new(HealthStatus::Unknown);
        });
        let containers = self.containers(known.id()).await?;
        let running: Vec<&ContainerSummary> = containers.iter().filter(|c| is_running(c)).collect();
        if running.is_empty() {
            return Ok(());
        }
        ctx.events.progress(
            known.id(),
            Phase::Stopping,
            format!("stopping {} container(s)", running.len()),
        );
        let timeout = container::stop_seconds(known.spec.config.stop.timeout);
        let running = ids(&running);
        tokio::select! {
            () = ctx.cancel.cancelled() => Err(Error::Cancelled { operation: format!("stop of {}", known.spec.name()) }),
            r = container::stop_all(&self.docker, &running, timeout) => Ok(r?),
        }
    }

    async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        let _busy = self.busy(&known.spec);
        self.state.upsert(&known.spec, |t| {
            t.stopped = true;
            t.unserve();
        });
        let containers = self.containers(known.id()).await?;
        let timeout = container::stop_seconds(known.spec.config.stop.timeout);
        if !containers.is_empty() {
            ctx.events.progress(
                known.id(),
                Phase::Stopping,
                format!("removing {} container(s)", containers.len()),
            );
        }
        let all: Vec<&ContainerSummary> = containers.iter().collect();
        let all = ids(&all);
        tokio::select! {
            () = ctx.cancel.cancelled() => return Err(Error::Cancelled { operation: format!("remove of {}", known.spec.name()) }),
            () = container::stop_and_remove(&self.docker, &all, timeout) => {}
        }
        let keep = rollout::options_of(&known.spec).is_ok_and(|o| o.keep_images_on_remove);
        if !keep {
            let mut names = vec![known.spec.name().to_owned()];
            for c in &containers {
                if let Some(n) = container::label(c, crate::LABEL_NAME)
                    && !names.iter().any(|x| x == n)
                {
                    names.push(n.to_owned());
                }
            }
            for name in names {
                image::remove_all(&self.docker, &name).await;
            }
        }
        self.state.remove(known.id());
        Ok(())
    }

    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
        let containers = self.containers(known.id()).await?;
        if containers.is_empty() {
            let tracked = self.state.get(known.id());
            return match tracked {
                // Served by this process, and nobody here removed it.
                Some(t) if t.sink.is_some() && !t.stopped && !t.busy => Ok(ObservedStatus::failed(
                    "its containers are gone (removed outside Conan?)",
                )),
                _ => Err(Error::deployment_not_found(known.id().as_str())),
            };
        }
        Ok(self.observe(known, &containers).await)
    }

    async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
        let mut containers = self.containers_or_not_found(known.id()).await?;
        containers.sort_by_key(|c| c.created.unwrap_or(0));
        let pairs: Vec<(String, String)> = containers
            .iter()
            .filter_map(|c| Some((c.id.clone()?, container::name_of(c))))
            .collect();
        let build_log = self
            .state
            .get(known.id())
            .map(|t| t.build_log)
            .unwrap_or_default();
        crate::logs::query(&self.docker, &pairs, &build_log, query).await
    }

    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
        let containers = self.containers_or_not_found(known.id()).await?;
        let all_running: Vec<&ContainerSummary> =
            containers.iter().filter(|c| is_running(c)).collect();
        let running = self.instances(&all_running).await?;
        let samples =
            futures::future::join_all(running.iter().map(|i| metrics::sample(&self.docker, &i.id)))
                .await;
        let mut ok = Vec::new();
        for s in samples {
            match s {
                Ok(s) => ok.push(s),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let total = metrics::sum(&ok);
        let mut restarts = 0u32;
        for i in &running {
            if let Ok(inspect) = container::inspect(&self.docker, &i.id).await {
                restarts += u32::try_from(inspect.restart_count.unwrap_or(0)).unwrap_or(0);
            }
        }
        let mut m = Metrics::new();
        m.cpu_percent = total.cpu_percent;
        m.memory_bytes = total.memory_bytes;
        m.memory_limit_bytes = total.memory_limit_bytes;
        m.uptime = running
            .iter()
            .filter_map(|i| i.started_at)
            .min()
            .map(|t| t.elapsed());
        m.restarts = restarts;
        m.port = running.iter().find_map(|i| i.host_port);
        m.network_rx_bytes = total.rx_bytes;
        m.network_tx_bytes = total.tx_bytes;
        m.pids = total.pids;
        Ok(m)
    }

    async fn probe(
        &self,
        known: &KnownDeployment,
        check: &conan_core::HealthCheck,
    ) -> Result<conan_core::probe::ProbeOutcome> {
        use conan_core::probe::ProbeOutcome;
        let started = std::time::Instant::now();
        let verdict =
            crate::health::probe_revision(&self.docker, self.probe_host(), check, &known.spec)
                .await;
        let outcome = match verdict {
            Some(v) if v.ok => ProbeOutcome::healthy(v.detail),
            Some(v) => ProbeOutcome::unhealthy(v.detail),
            None => ProbeOutcome::unhealthy(format!(
                "no running container of revision {}",
                known.revision().0
            )),
        };
        Ok(outcome.with_duration(started.elapsed()))
    }

    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
        let containers = self.containers_or_not_found(known.id()).await?;
        let running: Vec<&ContainerSummary> = containers
            .iter()
            .filter(|c| is_running(c) && of_revision(c, known.revision()))
            .collect();
        if running.is_empty() {
            return Ok(HealthReport::new(HealthStatus::Unknown));
        }
        let tracked = self.state.get(known.id());
        if let Some(t) = &tracked
            && t.spec.revision == known.revision()
            && !t.stopped
            && t.health.status != HealthStatus::Unknown
        {
            return Ok(t.health.clone());
        }
        // Nothing observed yet by this process (a fresh instance): start observing, and
        // answer what Docker's own HEALTHCHECK saw, if the image has one.
        if tracked.as_ref().is_none_or(|t| !t.served) {
            let sink = tracked
                .and_then(|t| t.sink)
                .unwrap_or_else(EventSink::detached);
            self.serve(&known.spec, &sink, Vec::new());
        }
        let mut report = HealthReport::new(HealthStatus::Starting);
        if let Some(id) = &running[0].id
            && let Ok(inspect) = container::inspect(&self.docker, id).await
            && let Some(h) = inspect.state.and_then(|s| s.health)
        {
            use bollard::models::HealthStatusEnum as H;
            let status = match h.status {
                Some(H::HEALTHY) => HealthStatus::Healthy,
                Some(H::UNHEALTHY) => HealthStatus::Unhealthy,
                _ => HealthStatus::Starting,
            };
            report = HealthReport::new(status)
                .with_failures(u32::try_from(h.failing_streak.unwrap_or(0)).unwrap_or(0))
                .with_detail("Docker HEALTHCHECK");
            if let Some(at) = h
                .log
                .as_ref()
                .and_then(|l| l.last())
                .and_then(|l| l.end.as_deref())
                .and_then(|e| Timestamp::parse_rfc3339(e).ok())
            {
                report = report.checked_at(at);
            }
        }
        Ok(report)
    }

    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        self.recover_known(ctx, known).await
    }
}
