//! Bringing a revision up: deploy, update and start, adopting a full set of containers
//! that already serves, and recording what then serves (supervision, image pruning).

use std::collections::HashMap;

use bollard::models::{ContainerSummary, NetworkCreateRequest};
use conan_core::{
    DeploymentId, DeploymentSpec, Error, EventSink, KnownDeployment, OperationContext, Phase,
    Result, RuntimeInfo,
};

use super::inventory::{ids, is_running, of_revision, one_per_replica};
use crate::container::Instance;
use crate::error::DockerError;
use crate::labels::{LABEL_MANAGED, image_tag};
use crate::rollout::{self, Artifact};
use crate::{DockerOptions, DockerProvider, image};

/// Marks a deployment busy (its containers die on purpose) until dropped, also when the
/// call is abandoned mid-way.
pub(super) struct Busy<'a> {
    provider: &'a DockerProvider,
    id: DeploymentId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.provider.state.update(&self.id, |t| t.busy = false);
    }
}

impl DockerProvider {
    pub(super) fn busy(&self, spec: &DeploymentSpec) -> Busy<'_> {
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

    /// Records that `spec` serves, supervised, with reports going to `sink`.
    pub(super) fn serve(
        &self,
        spec: &DeploymentSpec,
        sink: &EventSink,
        build_log: Vec<conan_core::LogLine>,
    ) {
        self.state.upsert(spec, |t| {
            if t.spec.revision != spec.revision {
                t.build_log.clear();
            }
            t.spec = spec.clone();
            t.stopped = false;
            t.sink = Some(sink.clone());
            t.push_build_log(build_log);
            t.served = true;
        });
    }

    async fn prune(&self, spec: &DeploymentSpec, options: &DockerOptions, in_use: &[u64]) {
        let keep = options
            .keep_images
            .unwrap_or(self.settings.keep_images)
            .max(1);
        image::prune(&self.docker, spec.name(), keep, in_use).await;
    }

    /// Containers of `spec.revision` that already run as a full set pass the gate again
    /// and are adopted: a repeated deploy or update converges on them (one per replica,
    /// those of `known` first). `None` when there is no such set.
    async fn adopt(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        containers: &[ContainerSummary],
        known: Option<&KnownDeployment>,
    ) -> Result<Option<Vec<Instance>>> {
        let wanted = spec.config.replicas.max(1) as usize;
        let preferred: Vec<String> = known
            .map(|k| k.runtime.instances.iter().map(|i| i.id.clone()).collect())
            .unwrap_or_default();
        let (running, _) = one_per_replica(
            self.running_of(containers, spec.revision).await?,
            &preferred,
        );
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

    pub(super) async fn deploy_inner(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("deploy")?;
        let options = rollout::options_of(spec)?;
        let tag = image_tag(spec);
        let existing = self.containers(&spec.id).await?;
        if let Some(instances) = self.adopt(ctx, spec, &existing, previous).await? {
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

    pub(super) async fn update_inner(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("update")?;
        if current.revision() == spec.revision {
            return self.deploy_inner(ctx, spec, Some(current)).await;
        }
        let options = rollout::options_of(spec)?;
        let existing = self.containers(&spec.id).await?;
        let old = self.running_of(&existing, current.revision()).await?;
        if old.is_empty() {
            // An interrupted update may already have replaced everything.
            if let Some(instances) = self.adopt(ctx, spec, &existing, Some(current)).await? {
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

    pub(super) async fn start_inner(
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

    /// Supervises `spec` again (after recovery).
    pub(crate) fn adopt_serving(&self, spec: &DeploymentSpec, sink: &EventSink) {
        self.serve(spec, sink, Vec::new());
    }
}
