//! The [`Provider`] implementation: deploy, update, start, stop, remove, status, health,
//! logs and metrics.
//!
//! Every call works from what it is handed (the [`KnownDeployment`]) and from the
//! containers labelled with the deployment's id: a fresh provider instance finds
//! everything again. Calls are idempotent by (deployment, revision): the containers of a
//! revision are found by their labels, so a repeated deploy converges on them instead of
//! starting a second set.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::models::{
    ContainerSummary, ContainerSummaryStateEnum, NetworkCreateRequest, RestartPolicyNameEnum,
};
use conan_core::{
    Capabilities, Capability, DeploymentId, DeploymentSpec, Error, EventSink, ExitStatus,
    HealthReport, HealthStatus, KnownDeployment, LogQuery, LogStream, Metrics, ObservedStatus,
    OperationContext, Phase, Provider, RecoveredDeployment, RestartMode, Result, Revision,
    RuntimeInfo, Timestamp,
};

use crate::container::{self, Instance};
use crate::error::DockerError;
use crate::labels::{LABEL_MANAGED, image_tag};
use crate::rollout::{self, Artifact};
use crate::{DockerOptions, DockerProvider, PROVIDER_NAME, image, metrics};

/// Whether a listed container runs (or is being restarted by Docker).
pub(crate) fn is_running(c: &ContainerSummary) -> bool {
    matches!(
        c.state,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING)
    )
}

fn of_revision(c: &ContainerSummary, revision: Revision) -> bool {
    container::revision_of(c) == Some(revision)
}

fn ids(containers: &[&ContainerSummary]) -> Vec<String> {
    containers.iter().filter_map(|c| c.id.clone()).collect()
}

/// Marks a deployment busy (its containers die on purpose) until dropped, also when the
/// call is abandoned mid-way.
struct Busy<'a> {
    provider: &'a DockerProvider,
    id: DeploymentId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.provider.state.update(&self.id, |t| t.busy = false);
    }
}

impl DockerProvider {
    fn busy(&self, spec: &DeploymentSpec) -> Busy<'_> {
        self.state.upsert(spec, |t| t.busy = true);
        Busy {
            provider: self,
            id: spec.id.clone(),
        }
    }

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

    /// Every container of a deployment, running or not.
    async fn containers(&self, id: &DeploymentId) -> Result<Vec<ContainerSummary>> {
        Ok(container::list_deployment(&self.docker, id.as_str()).await?)
    }

    /// Containers of a deployment; `NotFound` when there are none.
    async fn containers_or_not_found(&self, id: &DeploymentId) -> Result<Vec<ContainerSummary>> {
        let containers = self.containers(id).await?;
        if containers.is_empty() {
            return Err(Error::deployment_not_found(id.as_str()));
        }
        Ok(containers)
    }

    /// Instances of listed containers, by replica.
    async fn instances(&self, containers: &[&ContainerSummary]) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        for c in containers {
            match container::instance_of(&self.docker, c).await {
                Ok(i) => out.push(i),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort_by_key(|i| i.replica);
        Ok(out)
    }

    /// Running instances of one revision.
    async fn running_of(
        &self,
        containers: &[ContainerSummary],
        revision: Revision,
    ) -> Result<Vec<Instance>> {
        let running: Vec<&ContainerSummary> = containers
            .iter()
            .filter(|c| is_running(c) && of_revision(c, revision))
            .collect();
        self.instances(&running).await
    }

    async fn remove_containers(&self, containers: &[&ContainerSummary]) {
        futures::future::join_all(
            ids(containers)
                .iter()
                .map(|id| container::remove_force(&self.docker, id)),
        )
        .await;
    }

    /// Records that `spec` serves, supervised, with reports going to `sink`; starts its
    /// liveness prober (replacing the one of an earlier revision).
    fn serve(&self, spec: &DeploymentSpec, sink: &EventSink, build_log: Vec<conan_core::LogLine>) {
        let token = self._supervisor.child_token();
        self.state.upsert(spec, |t| {
            if t.spec.revision != spec.revision {
                t.build_log.clear();
            }
            t.spec = spec.clone();
            t.stopped = false;
            t.sink = Some(sink.clone());
            t.push_build_log(build_log);
            t.stop_prober();
            t.prober = Some(token.clone());
        });
        crate::health::spawn_prober(
            self.docker.clone(),
            self.probe_host().to_owned(),
            std::sync::Arc::clone(&self.state),
            spec.clone(),
            sink.clone(),
            token,
        );
    }

    async fn prune(&self, spec: &DeploymentSpec, options: &DockerOptions, in_use: &[u64]) {
        let keep = options
            .keep_images
            .unwrap_or(self.settings.keep_images)
            .max(1);
        image::prune(&self.docker, spec.name(), keep, in_use).await;
    }

    /// Containers of `spec.revision` that already run as a full set pass the gate again
    /// and are adopted: a repeated deploy or update converges on them. `None` when there
    /// is no such set.
    async fn adopt(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        containers: &[ContainerSummary],
    ) -> Result<Option<Vec<Instance>>> {
        let wanted = spec.config.replicas.max(1) as usize;
        let running = self.running_of(containers, spec.revision).await?;
        if running.len() != wanted {
            return Ok(None);
        }
        match self.gate(ctx, spec, &running).await {
            Ok(()) => {}
            Err(e @ Error::Cancelled { .. }) => return Err(e),
            // Not healthy: replaced by a fresh set.
            Err(_) => return Ok(None),
        }
        self.enable_restarts(ctx, spec, &running).await?;
        Ok(Some(running))
    }

    async fn deploy_inner(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("deploy")?;
        let options = rollout::options_of(spec)?;
        let tag = image_tag(spec);
        let existing = self.containers(&spec.id).await?;
        if let Some(instances) = self.adopt(ctx, spec, &existing).await? {
            let others: Vec<&ContainerSummary> = existing
                .iter()
                .filter(|c| !instances.iter().any(|i| Some(&i.id) == c.id.as_ref()))
                .collect();
            self.remove_containers(&others).await;
            self.serve(spec, &ctx.events, Vec::new());
            ctx.events.healthy(&spec.id);
            return Ok(rollout::runtime(
                &self.settings.bind_address,
                &tag,
                &instances,
            ));
        }
        // Whatever else of the deployment exists (an earlier revision, stopped or failed;
        // leftovers of an interrupted attempt) is replaced.
        let all: Vec<&ContainerSummary> = existing.iter().collect();
        if !all.is_empty() {
            ctx.events.progress(
                &spec.id,
                Phase::CleaningUp,
                format!("removing {} earlier container(s)", all.len()),
            );
        }
        self.remove_containers(&all).await;
        ctx.events
            .progress(&spec.id, Phase::Preparing, "preparing the image");
        let prepared = match image::prepare(
            &self.docker,
            &self.settings.base_image,
            ctx,
            spec,
            &options,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, Error::Cancelled { .. }) {
                    // A build finishing as it was cancelled may have tagged its image.
                    image::remove_tag(&self.docker, &tag).await;
                }
                return Err(e);
            }
        };
        let launched = async {
            ctx.check_cancelled("deploy")?;
            self.ensure_network(&options).await?;
            let replicas: Vec<u32> = (0..spec.config.replicas.max(1)).collect();
            self.launch(ctx, spec, &options, &Artifact::from(&prepared), &replicas)
                .await
        }
        .await;
        let instances = match launched {
            Ok(i) => i,
            Err(e) => {
                // A revision that never ran leaves no image behind either.
                image::remove_tag(&self.docker, &prepared.tag).await;
                return Err(e);
            }
        };
        self.serve(spec, &ctx.events, prepared.build_log);
        self.prune(spec, &options, &[spec.revision.0]).await;
        ctx.events.healthy(&spec.id);
        Ok(rollout::runtime(
            &self.settings.bind_address,
            &prepared.tag,
            &instances,
        ))
    }

    async fn update_inner(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("update")?;
        if current.revision() == spec.revision {
            return self.deploy_inner(ctx, spec).await;
        }
        let options = rollout::options_of(spec)?;
        let existing = self.containers(&spec.id).await?;
        let old = self.running_of(&existing, current.revision()).await?;
        if old.is_empty() {
            // An interrupted update may already have replaced everything.
            if let Some(instances) = self.adopt(ctx, spec, &existing).await? {
                let others: Vec<&ContainerSummary> = existing
                    .iter()
                    .filter(|c| !instances.iter().any(|i| Some(&i.id) == c.id.as_ref()))
                    .collect();
                self.remove_containers(&others).await;
                self.serve(spec, &ctx.events, Vec::new());
                ctx.events.healthy(&spec.id);
                return Ok(rollout::runtime(
                    &self.settings.bind_address,
                    &image_tag(spec),
                    &instances,
                ));
            }
            if !existing.iter().any(|c| of_revision(c, current.revision())) {
                return Err(Error::deployment_not_found(spec.id.as_str()));
            }
        }
        // Leftovers of an interrupted attempt (this revision or any other but the serving
        // one) would only confuse the rollout.
        let leftovers: Vec<&ContainerSummary> = existing
            .iter()
            .filter(|c| !of_revision(c, current.revision()))
            .collect();
        self.remove_containers(&leftovers).await;
        let serving_tag = image_tag(&current.spec);
        let prepared = match image::prepare(
            &self.docker,
            &self.settings.base_image,
            ctx,
            spec,
            &options,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, Error::Cancelled { .. }) && image_tag(spec) != serving_tag {
                    image::remove_tag(&self.docker, &image_tag(spec)).await;
                }
                return Err(e);
            }
        };
        let rolled = async {
            ctx.check_cancelled("update")?;
            self.ensure_network(&options).await?;
            self.roll_out(
                ctx,
                spec,
                &options,
                &Artifact::from(&prepared),
                old,
                &current.spec,
            )
            .await
        }
        .await;
        let instances = match rolled {
            Ok(i) => i,
            Err(e) => {
                // The failed revision's image is not kept (unless it is the serving one).
                if prepared.tag != serving_tag {
                    image::remove_tag(&self.docker, &prepared.tag).await;
                }
                return Err(e);
            }
        };
        self.serve(spec, &ctx.events, prepared.build_log);
        self.prune(spec, &options, &[spec.revision.0, current.revision().0])
            .await;
        ctx.events.healthy(&spec.id);
        Ok(rollout::runtime(
            &self.settings.bind_address,
            &prepared.tag,
            &instances,
        ))
    }

    async fn start_inner(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("start")?;
        let spec = &known.spec;
        rollout::options_of(spec)?;
        let existing = self.containers(&spec.id).await?;
        let mine: Vec<&ContainerSummary> = existing
            .iter()
            .filter(|c| of_revision(c, spec.revision))
            .collect();
        if mine.is_empty() {
            return Err(Error::deployment_not_found(spec.id.as_str()));
        }
        let stopped: Vec<&ContainerSummary> =
            mine.iter().copied().filter(|c| !is_running(c)).collect();
        if !stopped.is_empty() {
            self.resume(ctx, spec, &ids(&stopped)).await?;
        }
        let existing = self.containers(&spec.id).await?;
        let instances = self.running_of(&existing, spec.revision).await?;
        self.serve(spec, &ctx.events, Vec::new());
        Ok(rollout::runtime(
            &self.settings.bind_address,
            &image_tag(spec),
            &instances,
        ))
    }

    /// Whether the exited containers of `known` were stopped on purpose: this process
    /// stopped them, the manager recorded a stop (no instances in the known runtime), or
    /// Docker keeps an `unless-stopped` container down (it does so only after a stop).
    async fn stopped_on_purpose(
        &self,
        known: &KnownDeployment,
        exited: &[&ContainerSummary],
    ) -> bool {
        if self
            .state
            .get(known.id())
            .is_some_and(|t| t.stopped && t.spec.revision == known.revision())
            || known.runtime.instances.is_empty()
        {
            return true;
        }
        for c in exited {
            let Some(id) = &c.id else { continue };
            let Ok(inspect) = container::inspect(&self.docker, id).await else {
                continue;
            };
            let policy = inspect
                .host_config
                .as_ref()
                .and_then(|h| h.restart_policy.as_ref())
                .and_then(|p| p.name);
            if policy == Some(RestartPolicyNameEnum::UNLESS_STOPPED) {
                return true;
            }
        }
        false
    }

    /// What the containers of `known`'s revision show, with the failure bundle of a
    /// failed deployment.
    async fn observe(
        &self,
        known: &KnownDeployment,
        containers: &[ContainerSummary],
    ) -> ObservedStatus {
        let current: Vec<&ContainerSummary> = containers
            .iter()
            .filter(|c| of_revision(c, known.revision()))
            .collect();
        if current.is_empty() {
            if self.stopped_on_purpose(known, &[]).await {
                return ObservedStatus::Stopped;
            }
            return ObservedStatus::failed(format!(
                "no container of revision {} exists (removed outside Conan?)",
                known.revision()
            ));
        }
        if current
            .iter()
            .all(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
        {
            return ObservedStatus::Running;
        }
        if current.iter().any(|c| {
            matches!(
                c.state,
                Some(ContainerSummaryStateEnum::RESTARTING | ContainerSummaryStateEnum::CREATED)
            )
        }) {
            return ObservedStatus::Starting;
        }
        let down: Vec<&ContainerSummary> =
            current.iter().copied().filter(|c| !is_running(c)).collect();
        if down.len() == current.len() && self.stopped_on_purpose(known, &down).await {
            return ObservedStatus::Stopped;
        }
        let first = down[0];
        let exit = match &first.id {
            Some(id) => container::inspect(&self.docker, id)
                .await
                .ok()
                .and_then(|i| i.state?.exit_code)
                .and_then(|c| i32::try_from(c).ok())
                .map_or(ExitStatus::Unknown, ExitStatus::Code),
            None => ExitStatus::Unknown,
        };
        if down.len() == current.len()
            && exit.success()
            && known.spec.config.restart.policy == RestartMode::OnFailure
        {
            return ObservedStatus::Exited { exit };
        }
        ObservedStatus::failed(format!(
            "container {} is {} ({exit})",
            container::name_of(first),
            first.status.clone().unwrap_or_else(|| "not running".into())
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

    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        _previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        // Whatever `previous` left (found by label) is replaced; its images stay for
        // rollback until pruned.
        let _busy = self.busy(spec);
        self.state.update(&spec.id, |t| t.stop_prober());
        let result = self.deploy_inner(ctx, spec).await;
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

    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        let _busy = self.busy(&known.spec);
        self.state.upsert(&known.spec, |t| {
            t.stopped = true;
            t.stop_prober();
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
            t.stop_prober();
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
        if tracked.as_ref().is_none_or(|t| t.prober.is_none()) {
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

impl DockerProvider {
    /// The status of `known` as found on the daemon (for recovery).
    pub(crate) async fn observe_known(
        &self,
        known: &KnownDeployment,
        containers: &[ContainerSummary],
    ) -> ObservedStatus {
        self.observe(known, containers).await
    }

    /// Supervises `spec` again (after recovery).
    pub(crate) fn adopt_serving(&self, spec: &DeploymentSpec, sink: &EventSink) {
        self.serve(spec, sink, Vec::new());
    }

    /// Running instances of `revision` (for recovery).
    pub(crate) async fn running_instances(
        &self,
        containers: &[ContainerSummary],
        revision: Revision,
    ) -> Result<Vec<Instance>> {
        self.running_of(containers, revision).await
    }
}
