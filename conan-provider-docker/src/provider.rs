//! The [`Provider`] implementation: deploy, update, start, stop, remove, status, health,
//! logs and metrics.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, NetworkCreateRequest};
use conan_core::{
    Capabilities, Capability, DeploymentId, DeploymentSpec, DeploymentStatus, Error, HealthReport,
    HealthStatus, LogQuery, LogStream, Metrics, OperationContext, Phase, Provider,
    RecoveredDeployment, Result, RuntimeInfo, Timestamp,
};

use crate::container::{self, Instance};
use crate::error::DockerError;
use crate::labels::LABEL_MANAGED;
use crate::rollout::{self, Artifact};
use crate::state::Tracked;
use crate::{DockerOptions, DockerProvider, PROVIDER_NAME, image, metrics};

fn is_running(c: &ContainerSummary) -> bool {
    matches!(
        c.state,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING)
    )
}

impl DockerProvider {
    /// Creates the deployment's network when it is missing.
    async fn ensure_network(&self, options: &DockerOptions) -> Result<()> {
        let Some(network) = &options.network else {
            return Ok(());
        };
        if self.docker.inspect_network(network, None).await.is_ok() {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: network.clone(),
            labels: Some(HashMap::from([(
                LABEL_MANAGED.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else.
            Err(e) => {
                let err = DockerError::api(format!("create network {network}"), e);
                if err.status_code() == Some(409) {
                    Ok(())
                } else {
                    Err(err.into())
                }
            }
        }
    }

    /// Containers of a deployment; `NotFound` when there are none and it is not tracked.
    async fn containers_or_not_found(
        &self,
        id: &DeploymentId,
    ) -> Result<(Option<Tracked>, Vec<ContainerSummary>)> {
        let tracked = self.state.get(id);
        let containers = container::list_deployment(&self.docker, id.as_str()).await?;
        if tracked.is_none() && containers.is_empty() {
            return Err(Error::deployment_not_found(id.as_str()));
        }
        Ok((tracked, containers))
    }

    /// Running instances of a deployment.
    async fn running_instances(&self, containers: &[ContainerSummary]) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        for c in containers.iter().filter(|c| is_running(c)) {
            match container::instance_of(&self.docker, c).await {
                Ok(i) => out.push(i),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort_by_key(|i| i.replica);
        Ok(out)
    }

    async fn record_and_prune(&self, tracked: Tracked) {
        let name = tracked.spec.name().to_owned();
        let keep = tracked
            .options
            .keep_images
            .unwrap_or(self.settings.keep_images)
            .max(1);
        let mut in_use = vec![tracked.spec.revision.0];
        if let Some((prev, _, _)) = &tracked.previous {
            in_use.push(prev.revision.0);
        }
        // An existing image is only tagged: its tags need pruning all the same.
        self.state.insert(tracked);
        image::prune(&self.docker, &name, keep, &in_use).await;
    }
}

impl DockerProvider {
    async fn update_inner(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("update")?;
        let (tracked, containers) = self.containers_or_not_found(&spec.id).await?;
        let options = rollout::options_of(spec)?;
        let old = self.running_instances(&containers).await?;
        let prepared =
            image::prepare(&self.docker, &self.settings.base_image, ctx, spec, &options).await?;
        ctx.check_cancelled("update")?;
        self.ensure_network(&options).await?;
        let artifact = Artifact::from(&prepared);
        let previous = tracked.as_ref().map(|t| {
            (
                t.spec.clone(),
                t.options.clone(),
                Artifact {
                    image: t.image.clone(),
                    command: t.command.clone(),
                },
            )
        });
        let instances = self
            .roll_out(
                ctx,
                spec,
                &options,
                &artifact,
                old,
                previous.as_ref().map(|(s, o, a)| (s, o, a)),
            )
            .await;
        let instances = match instances {
            Ok(i) => i,
            Err(e) => {
                // The failed revision's image is not kept (unless it is the serving one).
                if tracked.as_ref().is_none_or(|t| t.image != prepared.tag) {
                    image::remove_tag(&self.docker, &prepared.tag).await;
                }
                return Err(e);
            }
        };
        let mut next = Tracked::new(
            spec.clone(),
            options,
            prepared.tag.clone(),
            prepared.command,
        );
        if let Some(t) = tracked {
            next.build_log = t.build_log;
            next.previous = Some((t.spec, t.image, t.command));
        }
        next.push_build_log(prepared.build_log);
        next.sink = Some(ctx.events.clone());
        self.record_and_prune(next).await;
        ctx.events.healthy(&spec.id);
        Ok(rollout::runtime(
            &self.settings.bind_address,
            &prepared.tag,
            &instances,
        ))
    }
}

impl DockerProvider {
    async fn start_inner(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("start")?;
        let options = rollout::options_of(spec)?;
        let containers = container::list_deployment(&self.docker, spec.id.as_str()).await?;
        let tracked = self.state.get(&spec.id);
        let running = self.running_instances(&containers).await?;
        if !running.is_empty() && running.iter().all(|i| i.revision == spec.revision) {
            // Already running: starting is idempotent.
            self.state.update(&spec.id, |t| t.stopped = false);
            let image = tracked.map(|t| t.image).unwrap_or_default();
            return Ok(rollout::runtime(
                &self.settings.bind_address,
                &image,
                &running,
            ));
        }
        // Containers of a stop are removed and recreated: the config may have changed
        // (env, limits) and a fresh container is what a deploy would make.
        let ids: Vec<String> = containers.iter().filter_map(|c| c.id.clone()).collect();
        futures::future::join_all(
            ids.iter()
                .map(|id| container::remove_force(&self.docker, id)),
        )
        .await;
        let tag = crate::labels::image_tag(spec);
        let artifact = match &tracked {
            Some(t)
                if t.spec.revision == spec.revision
                    && self.docker.inspect_image(&tag).await.is_ok() =>
            {
                Artifact {
                    image: t.image.clone(),
                    command: t.command.clone(),
                }
            }
            _ => {
                let prepared =
                    image::prepare(&self.docker, &self.settings.base_image, ctx, spec, &options)
                        .await?;
                Artifact::from(&prepared)
            }
        };
        self.ensure_network(&options).await?;
        let replicas: Vec<u32> = (0..spec.config.replicas.max(1)).collect();
        let instances = self
            .launch(ctx, spec, &options, &artifact, &replicas)
            .await?;
        let mut next = Tracked::new(
            spec.clone(),
            options,
            artifact.image.clone(),
            artifact.command.clone(),
        );
        if let Some(t) = tracked {
            next.build_log = t.build_log;
            next.previous = t.previous;
        }
        next.sink = Some(ctx.events.clone());
        self.state.insert(next);
        Ok(rollout::runtime(
            &self.settings.bind_address,
            &artifact.image,
            &instances,
        ))
    }
}

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

    async fn deploy(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        ctx.check_cancelled("deploy")?;
        let options = rollout::options_of(spec)?;
        let existing = container::list_deployment(&self.docker, spec.id.as_str()).await?;
        if existing.iter().any(is_running) {
            return Err(Error::AlreadyExists {
                name: spec.name().to_owned(),
            });
        }
        // Leftovers of an interrupted attempt (created, exited) would only confuse status.
        for c in &existing {
            if let Some(cid) = &c.id {
                container::remove_force(&self.docker, cid).await;
            }
        }
        ctx.events
            .progress(&spec.id, Phase::Preparing, "preparing the image");
        let prepared =
            image::prepare(&self.docker, &self.settings.base_image, ctx, spec, &options).await?;
        ctx.check_cancelled("deploy")?;
        self.ensure_network(&options).await?;
        let artifact = Artifact::from(&prepared);
        let replicas: Vec<u32> = (0..spec.config.replicas.max(1)).collect();
        let instances = match self.launch(ctx, spec, &options, &artifact, &replicas).await {
            Ok(i) => i,
            Err(e) => {
                // A revision that never ran leaves no image behind either.
                image::remove_tag(&self.docker, &prepared.tag).await;
                return Err(e);
            }
        };
        let mut tracked = Tracked::new(
            spec.clone(),
            options,
            prepared.tag.clone(),
            prepared.command,
        );
        tracked.push_build_log(prepared.build_log);
        tracked.sink = Some(ctx.events.clone());
        tracked.health = HealthReport {
            status: HealthStatus::Healthy,
            checked_at: Some(Timestamp::now()),
            consecutive_failures: 0,
            detail: None,
        };
        self.record_and_prune(tracked).await;
        ctx.events.healthy(&spec.id);
        Ok(rollout::runtime(
            &self.settings.bind_address,
            &prepared.tag,
            &instances,
        ))
    }

    async fn update(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        // Containers die on purpose during a rollout: the supervisor looks away meanwhile.
        self.state.update(&spec.id, |t| t.busy = true);
        let result = self.update_inner(ctx, spec).await;
        self.state.update(&spec.id, |t| t.busy = false);
        result
    }

    async fn start(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        self.state.update(&spec.id, |t| t.busy = true);
        let result = self.start_inner(ctx, spec).await;
        self.state.update(&spec.id, |t| t.busy = false);
        result
    }

    async fn stop(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()> {
        let (tracked, containers) = self.containers_or_not_found(id).await?;
        self.state.update(id, |t| t.stopped = true);
        let timeout = tracked
            .as_ref()
            .map_or(5, |t| t.spec.config.stop.timeout.as_secs().max(1));
        let running: Vec<String> = containers
            .iter()
            .filter(|c| is_running(c))
            .filter_map(|c| c.id.clone())
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        ctx.events.progress(
            id,
            Phase::Stopping,
            format!("stopping {} container(s)", running.len()),
        );
        let results = futures::future::join_all(
            running
                .iter()
                .map(|cid| container::stop(&self.docker, cid, timeout)),
        )
        .await;
        for r in results {
            r?;
        }
        Ok(())
    }

    async fn remove(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()> {
        let (tracked, containers) = self.containers_or_not_found(id).await?;
        self.state.update(id, |t| {
            t.stopped = true;
            t.busy = true;
        });
        let timeout = tracked
            .as_ref()
            .map_or(5, |t| t.spec.config.stop.timeout.as_secs().max(1));
        let ids: Vec<String> = containers.iter().filter_map(|c| c.id.clone()).collect();
        ctx.events.progress(
            id,
            Phase::Stopping,
            format!("removing {} container(s)", ids.len()),
        );
        container::stop_and_remove(&self.docker, &ids, timeout).await;
        let name = tracked
            .as_ref()
            .map(|t| t.spec.name().to_owned())
            .or_else(|| {
                containers
                    .iter()
                    .find_map(|c| container::label(c, crate::LABEL_NAME).map(str::to_owned))
            });
        let keep = tracked
            .as_ref()
            .is_some_and(|t| t.options.keep_images_on_remove);
        if let Some(name) = name
            && !keep
        {
            image::remove_all(&self.docker, &name).await;
        }
        self.state.remove(id);
        Ok(())
    }

    async fn status(&self, id: &DeploymentId) -> Result<DeploymentStatus> {
        let (tracked, containers) = self.containers_or_not_found(id).await?;
        let revision = tracked
            .as_ref()
            .map(|t| t.spec.revision)
            .or_else(|| containers.iter().filter_map(container::revision_of).max());
        let current: Vec<&ContainerSummary> = containers
            .iter()
            .filter(|c| revision.is_none() || container::revision_of(c) == revision)
            .collect();
        let stopped = tracked.as_ref().is_some_and(|t| t.stopped);
        if current.is_empty() {
            return Ok(if stopped {
                DeploymentStatus::Stopped
            } else {
                DeploymentStatus::failed("its containers are gone (removed outside Conan?)")
            });
        }
        if current.iter().all(|c| is_running(c)) {
            return Ok(DeploymentStatus::Running);
        }
        if stopped && !current.iter().any(|c| is_running(c)) {
            return Ok(DeploymentStatus::Stopped);
        }
        let down = current
            .iter()
            .find(|c| !is_running(c))
            .map_or_else(String::new, |c| {
                format!(
                    "container {} is {}",
                    container::name_of(c),
                    c.status.clone().unwrap_or_default()
                )
            });
        Ok(DeploymentStatus::failed(down))
    }

    async fn logs(&self, id: &DeploymentId, query: &LogQuery) -> Result<LogStream> {
        let (tracked, mut containers) = self.containers_or_not_found(id).await?;
        containers.sort_by_key(|c| c.created.unwrap_or(0));
        let pairs: Vec<(String, String)> = containers
            .iter()
            .filter_map(|c| Some((c.id.clone()?, container::name_of(c))))
            .collect();
        let build_log = tracked.map(|t| t.build_log).unwrap_or_default();
        crate::logs::query(&self.docker, &pairs, &build_log, query).await
    }

    async fn metrics(&self, id: &DeploymentId) -> Result<Metrics> {
        let (_, containers) = self.containers_or_not_found(id).await?;
        let running = self.running_instances(&containers).await?;
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
        Ok(Metrics {
            cpu_percent: total.cpu_percent,
            memory_bytes: total.memory_bytes,
            memory_limit_bytes: total.memory_limit_bytes,
            uptime: running
                .iter()
                .filter_map(|i| i.started_at)
                .min()
                .map(|t| t.elapsed()),
            restarts,
            port: running.iter().find_map(|i| i.host_port),
            network_rx_bytes: total.rx_bytes,
            network_tx_bytes: total.tx_bytes,
            pids: total.pids,
        })
    }

    async fn health(&self, id: &DeploymentId) -> Result<HealthReport> {
        let (tracked, containers) = self.containers_or_not_found(id).await?;
        let running = self.running_instances(&containers).await?;
        if running.is_empty() {
            return Ok(HealthReport::new(HealthStatus::Unknown));
        }
        let check = tracked
            .as_ref()
            .and_then(|t| t.spec.config.health_check.clone())
            .unwrap_or_else(conan_core::HealthCheck::process);
        let mut verdict = None;
        for i in &running {
            let inspect = container::inspect(&self.docker, &i.id).await?;
            let probe =
                crate::health::probe(&self.docker, self.probe_host(), &check, i, &inspect).await;
            if !probe.ok || verdict.is_none() {
                verdict = Some(probe.clone());
            }
            if !probe.ok {
                break;
            }
        }
        let probe = verdict.unwrap_or_else(unreachable_probe);
        let previous = tracked.map(|t| t.health.consecutive_failures).unwrap_or(0);
        let report = HealthReport {
            status: if probe.ok {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            },
            checked_at: Some(Timestamp::now()),
            consecutive_failures: if probe.ok { 0 } else { previous + 1 },
            detail: Some(probe.detail),
        };
        self.state.update(id, |t| t.health = report.clone());
        Ok(report)
    }

    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[DeploymentSpec],
    ) -> Result<Vec<RecoveredDeployment>> {
        self.recover_known(ctx, known).await
    }
}

fn unreachable_probe() -> crate::health::ProbeResult {
    crate::health::ProbeResult {
        ok: false,
        detail: "no instance probed".to_owned(),
    }
}
