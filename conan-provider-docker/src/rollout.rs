//! Rollouts: starting health-gated containers, and replacing one revision by another
//! (`recreate`, `blue-green`, `rolling`).

use conan_core::{
    DeploymentSpec, Error, OperationContext, Phase, Result, RuntimeInfo, UpdateStrategy,
};

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

/// The runtime info of running instances.
pub(crate) fn runtime(bind: &str, image: &str, instances: &[Instance]) -> RuntimeInfo {
    let mut details = serde_json::Map::new();
    details.insert("image".into(), image.into());
    details.insert(
        "containers".into(),
        instances
            .iter()
            .map(|i| serde_json::Value::from(i.name.clone()))
            .collect(),
    );
    let host = if bind == "0.0.0.0" { "127.0.0.1" } else { bind };
    RuntimeInfo {
        url: instances
            .iter()
            .find_map(|i| i.host_port)
            .map(|p| format!("http://{host}:{p}")),
        instances: instances.iter().map(Instance::info).collect(),
        details,
    }
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
        for (gate, instance) in gates.into_iter().zip(&instances) {
            match gate {
                Ok(detail) => ctx.events.progress(
                    &spec.id,
                    Phase::WaitingForHealth,
                    format!("{} is ready ({detail})", instance.name),
                ),
                Err(report) => {
                    failure.get_or_insert(report);
                }
            }
        }
        if let Some(report) = failure {
            self.discard(ctx, spec, &instances).await;
            if ctx.is_cancelled() {
                return Err(Error::Cancelled {
                    operation: format!("deploy of {}", spec.name()),
                });
            }
            // No `events.failed` here: for an update the old revision still serves, and the
            // bundle travels with the error.
            return Err(Error::HealthCheckFailed {
                deployment: spec.name().to_owned(),
                failure: report,
            });
        }
        let enabled = futures::future::join_all(
            instances
                .iter()
                .map(|i| container::enable_restarts(&self.docker, spec, &i.id)),
        )
        .await;
        if let Some(e) = enabled.into_iter().find_map(std::result::Result::err) {
            self.discard(ctx, spec, &instances).await;
            return Err(e.into());
        }
        Ok(instances)
    }

    /// Removes containers of a failed start.
    async fn discard(&self, ctx: &OperationContext, spec: &DeploymentSpec, instances: &[Instance]) {
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

    /// Replaces `old` (running instances of the previous revision) by `spec`'s revision.
    /// On failure the previous revision keeps (or, for `recreate`, goes back to) serving.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn roll_out(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        options: &DockerOptions,
        artifact: &Artifact,
        old: Vec<Instance>,
        previous: Option<(&DeploymentSpec, &DockerOptions, &Artifact)>,
    ) -> Result<Vec<Instance>> {
        let replicas: Vec<u32> = (0..spec.config.replicas.max(1)).collect();
        let stop_s = spec.config.stop.timeout.as_secs().max(1);
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
        match strategy {
            UpdateStrategy::BlueGreen => {
                let new = self.launch(ctx, spec, options, artifact, &replicas).await?;
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
                container::stop_and_remove(&self.docker, &old_ids, stop_s).await;
                match self.launch(ctx, spec, options, artifact, &replicas).await {
                    Ok(new) => Ok(new),
                    Err(e) => {
                        if spec.config.update.auto_rollback
                            && let Some((old_spec, old_options, old_artifact)) = previous
                        {
                            let old_replicas: Vec<u32> = old.iter().map(|i| i.replica).collect();
                            if let Err(re) = self
                                .launch(ctx, old_spec, old_options, old_artifact, &old_replicas)
                                .await
                            {
                                tracing::error!(deployment = %spec.id, error = %re, "rollback to the previous revision failed");
                            }
                        }
                        Err(e)
                    }
                }
            }
            UpdateStrategy::Rolling => {
                let batch = spec.config.update.max_parallel.max(1) as usize;
                let mut new_all: Vec<Instance> = Vec::new();
                let mut removed: Vec<u32> = Vec::new();
                for chunk in replicas.chunks(batch) {
                    match self.launch(ctx, spec, options, artifact, chunk).await {
                        Ok(new) => new_all.extend(new),
                        Err(e) => {
                            self.discard(ctx, spec, &new_all).await;
                            if spec.config.update.auto_rollback
                                && !removed.is_empty()
                                && let Some((old_spec, old_options, old_artifact)) = previous
                                && let Err(re) = self
                                    .launch(ctx, old_spec, old_options, old_artifact, &removed)
                                    .await
                            {
                                tracing::error!(deployment = %spec.id, error = %re, "rollback of replaced replicas failed");
                            }
                            return Err(e);
                        }
                    }
                    let replaced: Vec<String> = old
                        .iter()
                        .filter(|i| chunk.contains(&i.replica))
                        .map(|i| i.id.clone())
                        .collect();
                    ctx.events.progress(
                        &spec.id,
                        Phase::Switching,
                        format!("replicas {chunk:?} replaced"),
                    );
                    container::stop_and_remove(&self.docker, &replaced, stop_s).await;
                    removed.extend(chunk);
                }
                let leftover: Vec<String> = old
                    .iter()
                    .filter(|i| !replicas.contains(&i.replica))
                    .map(|i| i.id.clone())
                    .collect();
                container::stop_and_remove(&self.docker, &leftover, stop_s).await;
                Ok(new_all)
            }
        }
    }
}
