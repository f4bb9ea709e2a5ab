//! Rollouts: starting health-gated containers, and replacing one revision by another
//! (`recreate`, `blue-green`, `rolling`).

use conan_core::{
    DeploymentSpec, Error, HealthReport, HealthStatus, OperationContext, Phase, ReportOrigin,
    Result, RuntimeInfo, Timestamp, UpdateStrategy,
};
use tokio_util::sync::CancellationToken;

use crate::container::{self, Instance, Plan};
use crate::image::PreparedImage;
use crate::{DockerOptions, DockerProvider, PROVIDER_NAME};

/// What a revision runs: the image and the command.
#[derive(Clone, Debug)]
pub(crate) struct Artifact {
    pub(crate) image: String,
    pub(crate) command: Option<String>,
}

impl From<&PreparedImage> for Artifact {
    fn from(p: &PreparedImage) -> Self {
        Self {
            image: p.tag.clone(),
            command: p.command.clone(),
        }
    }
}

/// Decodes the deployment's `provider_options.docker`.
pub(crate) fn options_of(spec: &DeploymentSpec) -> Result<DockerOptions> {
    let options: DockerOptions = spec
        .config
        .provider_options_for(PROVIDER_NAME)?
        .unwrap_or_default();
    if options.host_port.is_some() && spec.config.replicas > 1 {
        return Err(Error::InvalidConfig {
            problems: vec![conan_core::ConfigProblem::new(
                "provider_options.docker.host_port",
                "a fixed host port allows only one replica",
            )],
        });
    }
    Ok(options)
}

/// The runtime info of running instances: URL, instances and the details a fresh
/// provider finds them again by (image tag and id, container ids, published port).
pub(crate) fn runtime(bind: &str, image: &str, instances: &[Instance]) -> RuntimeInfo {
    let host = if bind == "0.0.0.0" { "127.0.0.1" } else { bind };
    let port = instances.iter().find_map(|i| i.host_port);
    let mut info = RuntimeInfo::new().with_detail("image", image).with_detail(
        "containers",
        instances
            .iter()
            .map(|i| serde_json::Value::from(i.id.clone()))
            .collect::<Vec<_>>(),
    );
    if let Some(image_id) = instances.iter().find_map(|i| i.image_id.clone()) {
        info = info.with_detail("image_id", image_id);
    }
    if let Some(port) = port {
        info = info
            .with_detail("port", port)
            .with_url(format!("http://{host}:{port}"));
    }
    for i in instances {
        info = info.with_instance(i.info());
    }
    info
}

/// A context for undoing work after `ctx` was cancelled: same sink, its own token.
fn undo_context(ctx: &OperationContext) -> OperationContext {
    OperationContext::with_cancel(ctx.events.clone(), CancellationToken::new())
}

impl DockerProvider {
    /// Starts `replicas` of a revision and waits until each is ready. On any failure every
    /// container it started is removed and the error (with the failure bundle) returned.
    pub(crate) async fn launch(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        options: &DockerOptions,
        artifact: &Artifact,
        replicas: &[u32],
    ) -> Result<Vec<Instance>> {
        let plan = Plan {
            spec,
            options,
            image: &artifact.image,
            command: artifact.command.as_deref(),
            bind_address: &self.settings.bind_address,
        };
        ctx.check_cancelled("deploy")?;
        ctx.events.progress(
            &spec.id,
            Phase::Starting,
            format!(
                "starting {} container(s) of {}",
                replicas.len(),
                artifact.image
            ),
        );
        let started =
            futures::future::join_all(replicas.iter().map(|r| plan.start(&self.docker, *r))).await;
        let mut instances = Vec::new();
        let mut first_error = None;
        for result in started {
            match result {
                Ok(i) => instances.push(i),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            self.discard(ctx, spec, &instances).await;
            return Err(e.into());
        }
        if let Err(e) = self.gate(ctx, spec, &instances).await {
            self.discard(ctx, spec, &instances).await;
            return Err(e);
        }
        if let Err(e) = self.enable_restarts(ctx, spec, &instances).await {
            self.discard(ctx, spec, &instances).await;
            return Err(e);
        }
        Ok(instances)
    }

    /// Applies the configured restart policy to containers that passed their gate.
    pub(crate) async fn enable_restarts(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        instances: &[Instance],
    ) -> Result<()> {
        ctx.check_cancelled("deploy")?;
        let enabled = futures::future::join_all(
            instances
                .iter()
                .map(|i| container::enable_restarts(&self.docker, spec, &i.id)),
        )
        .await;
        match enabled.into_iter().find_map(std::result::Result::err) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Waits until every instance is ready. [`Error::Cancelled`] when `ctx` is cancelled
    /// meanwhile, [`Error::HealthCheckFailed`] with the bundle otherwise. Removes nothing.
    pub(crate) async fn gate(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        instances: &[Instance],
    ) -> Result<()> {
        let host = self.probe_host();
        let gates = futures::future::join_all(instances.iter().map(|i| {
            crate::health::wait_ready(
                &self.docker,
                host,
                self.settings.probe_interval,
                ctx,
                spec,
                i,
            )
        }))
        .await;
        let mut failure = None;
        let mut passed = Vec::new();
        for (gate, instance) in gates.into_iter().zip(instances) {
            match gate {
                Ok(detail) => {
                    ctx.events.progress(
                        &spec.id,
                        Phase::WaitingForHealth,
                        format!("{} is ready ({detail})", instance.name),
                    );
                    passed.push(detail);
                }
                Err(report) => {
                    failure.get_or_insert(report);
                }
            }
        }
        if ctx.is_cancelled() {
            return Err(Error::Cancelled {
                operation: format!("deploy of {}", spec.name()),
            });
        }
        if let Some(report) = failure {
            // No `events.failed` here: for an update the old revision still serves, and the
            // bundle travels with the error.
            return Err(Error::HealthCheckFailed {
                deployment: spec.name().to_owned(),
                failure: report,
            });
        }
        let detail = passed.into_iter().next().unwrap_or_default();
        self.state.upsert(spec, |t| {
            t.health = HealthReport::new(HealthStatus::Healthy)
                .checked_at(Timestamp::now())
                .with_detail(detail);
        });
        Ok(())
    }

    /// Starts existing (stopped) containers again and waits until they are ready; on
    /// failure they are stopped again and the error returned.
    pub(crate) async fn resume(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        ids: &[String],
    ) -> Result<Vec<Instance>> {
        ctx.check_cancelled("start")?;
        ctx.events.progress(
            &spec.id,
            Phase::Starting,
            format!("starting {} stopped container(s)", ids.len()),
        );
        let stop_s = container::stop_seconds(spec.config.stop.timeout);
        let started = futures::future::join_all(
            ids.iter()
                .map(|id| container::start_existing(&self.docker, id)),
        )
        .await;
        let result: Result<Vec<Instance>> = async {
            for r in started {
                r?;
            }
            let mut instances = Vec::new();
            for c in container::list_deployment(&self.docker, spec.id.as_str()).await? {
                if c.id.as_ref().is_some_and(|id| ids.contains(id)) {
                    instances.push(container::instance_of(&self.docker, &c).await?);
                }
            }
            instances.sort_by_key(|i| i.replica);
            self.gate(ctx, spec, &instances).await?;
            Ok(instances)
        }
        .await;
        if result.is_err()
            && let Err(e) = container::stop_all(&self.docker, ids, stop_s).await
        {
            tracing::warn!(deployment = %spec.id, error = %e, "could not stop containers after a failed start");
        }
        result
    }

    /// Removes containers of a failed start.
    pub(crate) async fn discard(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        instances: &[Instance],
    ) {
        if instances.is_empty() {
            return;
        }
        ctx.events.progress(
            &spec.id,
            Phase::CleaningUp,
            format!(
                "removing {} container(s) of revision {}",
                instances.len(),
                spec.revision
            ),
        );
        futures::future::join_all(
            instances
                .iter()
                .map(|i| container::remove_force(&self.docker, &i.id)),
        )
        .await;
    }

    /// The address probes connect to.
    pub(crate) fn probe_host(&self) -> &str {
        match self.settings.bind_address.as_str() {
            "0.0.0.0" | "" => "127.0.0.1",
            other => other,
        }
    }

    /// Puts stopped containers of the previous revision back (after a failed update), and
    /// reports the runtime they serve with: Docker publishes a restarted container on a
    /// new host port, and the manager (which keeps the previous runtime after a failed
    /// update) and its proxy must route there.
    async fn restore(&self, ctx: &OperationContext, previous: &DeploymentSpec, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let undo = undo_context(ctx);
        if let Err(e) = self.resume(&undo, previous, ids).await {
            tracing::error!(deployment = %previous.id, error = %e, "putting the previous revision back failed");
            return;
        }
        let serving =
            container::running_instances(&self.docker, previous.id.as_str(), previous.revision)
                .await;
        match serving {
            Ok(instances) if !instances.is_empty() => {
                let origin = ReportOrigin::new(previous.revision, instances[0].id.clone());
                let info = runtime(
                    &self.settings.bind_address,
                    &crate::labels::image_tag(previous),
                    &instances,
                );
                ctx.events.runtime_changed(&previous.id, origin, info);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(deployment = %previous.id, error = %e, "could not read the restored containers' ports");
            }
        }
    }

    /// Replaces `old` (running instances of the `previous` revision) by `spec`'s revision.
    /// Old containers are stopped, not removed, until the new revision serves: on failure
    /// they keep (or, for `recreate` and `rolling`, go back to) serving when
    /// `auto_rollback` is set.
    pub(crate) async fn roll_out(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        options: &DockerOptions,
        artifact: &Artifact,
        old: Vec<Instance>,
        previous: &DeploymentSpec,
    ) -> Result<Vec<Instance>> {
        let replicas: Vec<u32> = (0..spec.config.replicas.max(1)).collect();
        let stop_s = container::stop_seconds(previous.config.stop.timeout);
        let mut strategy = spec.config.update.strategy;
        if options.host_port.is_some() && strategy != UpdateStrategy::Recreate {
            ctx.events.progress(
                &spec.id,
                Phase::Preparing,
                "a fixed host port cannot be shared: updating with recreate",
            );
            strategy = UpdateStrategy::Recreate;
        }
        if old.is_empty() {
            return self.launch(ctx, spec, options, artifact, &replicas).await;
        }
        let old_ids: Vec<String> = old.iter().map(|i| i.id.clone()).collect();
        let rollback = spec.config.update.auto_rollback;
        match strategy {
            UpdateStrategy::Canary => Err(Error::NotSupported {
                operation: "canary updates (the local provider runs them)".into(),
                provider: PROVIDER_NAME.into(),
            }),
            UpdateStrategy::BlueGreen => {
                let new = self.launch(ctx, spec, options, artifact, &replicas).await?;
                // Behind an endpoint: route to the new containers, let the old ones drain.
                ctx.cutover(&runtime(&self.settings.bind_address, &artifact.image, &new))
                    .await;
                ctx.events.progress(
                    &spec.id,
                    Phase::Switching,
                    "new revision healthy; removing the old one",
                );
                container::stop_and_remove(&self.docker, &old_ids, stop_s).await;
                Ok(new)
            }
            UpdateStrategy::Recreate => {
                ctx.events
                    .progress(&spec.id, Phase::Stopping, "stopping the old revision");
                container::stop_all(&self.docker, &old_ids, stop_s).await?;
                match self.launch(ctx, spec, options, artifact, &replicas).await {
                    Ok(new) => {
                        container::stop_and_remove(&self.docker, &old_ids, stop_s).await;
                        Ok(new)
                    }
                    Err(e) => {
                        if rollback {
                            self.restore(ctx, previous, &old_ids).await;
                        }
                        Err(e)
                    }
                }
            }
            UpdateStrategy::Rolling => {
                let batch = spec.config.update.max_parallel.max(1) as usize;
                // Behind an endpoint a replaced replica only leaves the rotation (drained)
                // and keeps running until the rollout succeeded: on failure the old set
                // serves again on the very ports the manager knows (Docker gives a
                // restarted container a new published port).
                let behind_endpoint = ctx.traffic.is_some();
                let mut new_all: Vec<Instance> = Vec::new();
                let mut replaced_all: Vec<String> = Vec::new();
                let mut stopped: Vec<String> = Vec::new();
                for chunk in replicas.chunks(batch) {
                    match self.launch(ctx, spec, options, artifact, chunk).await {
                        Ok(new) => new_all.extend(new),
                        Err(e) => {
                            if behind_endpoint && !new_all.is_empty() {
                                // Back to the whole old set; the new replicas drain.
                                ctx.cutover(&runtime(
                                    &self.settings.bind_address,
                                    &artifact.image,
                                    &old,
                                ))
                                .await;
                            }
                            self.discard(ctx, spec, &new_all).await;
                            if rollback {
                                self.restore(ctx, previous, &stopped).await;
                            }
                            return Err(e);
                        }
                    }
                    let replaced: Vec<String> = old
                        .iter()
                        .filter(|i| chunk.contains(&i.replica))
                        .map(|i| i.id.clone())
                        .collect();
                    replaced_all.extend(replaced.iter().cloned());
                    // Behind an endpoint: the new replicas join, the replaced ones drain.
                    let mut routed = new_all.clone();
                    routed.extend(
                        old.iter()
                            .filter(|i| !replaced_all.contains(&i.id))
                            .cloned(),
                    );
                    ctx.cutover(&runtime(
                        &self.settings.bind_address,
                        &artifact.image,
                        &routed,
                    ))
                    .await;
                    ctx.events.progress(
                        &spec.id,
                        Phase::Switching,
                        format!("replicas {chunk:?} replaced"),
                    );
                    if behind_endpoint {
                        continue;
                    }
                    if let Err(e) = container::stop_all(&self.docker, &replaced, stop_s).await {
                        tracing::warn!(deployment = %spec.id, error = %e, "could not stop a replaced replica");
                    }
                    stopped.extend(replaced);
                }
                container::stop_and_remove(&self.docker, &old_ids, stop_s).await;
                Ok(new_all)
            }
        }
    }
}
