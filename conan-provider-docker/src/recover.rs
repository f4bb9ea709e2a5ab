//! Recovery by label: adopting containers an earlier process started.
//!
//! For each deployment the store knows, the containers labelled `conan.deployment=<id>` are
//! looked up. Running containers of the known revision (or, after an interrupted update,
//! the newest running revision) are adopted as they are — nothing restarts. Running
//! containers of other revisions are leftovers of an interrupted rollout and are removed.
//! A deployment without containers comes back `Failed` with the reason; one whose
//! containers all exited comes back `Stopped` when it was stopped on purpose (Docker keeps
//! an `unless-stopped` container down only after `docker stop`) and `Failed` otherwise.
//! `conan.managed` containers of deployments the store does not know are left alone and
//! logged.

use std::collections::BTreeSet;

use conan_core::{
    DeploymentSpec, DeploymentStatus, ExitStatus, FailureReport, OperationContext,
    RecoveredDeployment, Result, Revision, RuntimeInfo,
};

use crate::DockerProvider;
use crate::container::{self, Instance};
use crate::labels::{LABEL_DEPLOYMENT, LABEL_MANAGED};
use crate::rollout::{self, Artifact};
use crate::state::Tracked;

impl DockerProvider {
    pub(crate) async fn recover_known(
        &self,
        ctx: &OperationContext,
        known: &[DeploymentSpec],
    ) -> Result<Vec<RecoveredDeployment>> {
        let all = container::list_by(&self.docker, &[(LABEL_MANAGED, "true")]).await?;
        let known_ids: BTreeSet<&str> = known.iter().map(|s| s.id.as_str()).collect();
        let orphans: BTreeSet<&str> = all
            .iter()
            .filter_map(|c| container::label(c, LABEL_DEPLOYMENT))
            .filter(|d| !known_ids.contains(d))
            .collect();
        if !orphans.is_empty() {
            tracing::info!(deployments = ?orphans, "conan.managed containers of deployments the store does not know; left alone");
        }
        let mut out = Vec::with_capacity(known.len());
        for spec in known {
            let mine: Vec<_> = all
                .iter()
                .filter(|c| container::label(c, LABEL_DEPLOYMENT) == Some(spec.id.as_str()))
                .collect();
            if mine.is_empty() {
                let failure = FailureReport::new(
                    "its containers vanished while Conan was not running (removed outside Conan?)",
                )
                .with_exit(ExitStatus::Unknown);
                out.push(RecoveredDeployment {
                    id: spec.id.clone(),
                    revision: spec.revision,
                    status: DeploymentStatus::failed(failure.reason.clone()),
                    runtime: RuntimeInfo::default(),
                    failure: Some(failure),
                });
                continue;
            }
            let running: Vec<_> = mine
                .iter()
                .filter(|c| {
                    c.state.is_some_and(|s| {
                        matches!(
                            s,
                            bollard::models::ContainerSummaryStateEnum::RUNNING
                                | bollard::models::ContainerSummaryStateEnum::RESTARTING
                        )
                    })
                })
                .collect();
            let revisions: BTreeSet<Revision> = running
                .iter()
                .filter_map(|c| container::revision_of(c))
                .collect();
            let revision = if revisions.contains(&spec.revision) {
                Some(spec.revision)
            } else {
                revisions.iter().next_back().copied()
            };
            let Some(revision) = revision else {
                // Everything exited.
                let exit = mine
                    .iter()
                    .find_map(|c| c.status.clone())
                    .unwrap_or_default();
                let stopped_on_purpose = exit.contains("Exited (143)")
                    || exit.contains("Exited (137)")
                    || exit.contains("Exited (0)");
                let (status, failure) = if stopped_on_purpose {
                    (DeploymentStatus::Stopped, None)
                } else {
                    let f = FailureReport::new(format!("its containers are not running ({exit})"));
                    (DeploymentStatus::failed(f.reason.clone()), Some(f))
                };
                let mut tracked = self.tracked_for(spec, spec.revision);
                tracked.stopped = status == DeploymentStatus::Stopped;
                self.state.insert(tracked);
                out.push(RecoveredDeployment {
                    id: spec.id.clone(),
                    revision: spec.revision,
                    status,
                    runtime: RuntimeInfo::default(),
                    failure,
                });
                continue;
            };
            // Leftovers of an interrupted rollout.
            for c in running
                .iter()
                .filter(|c| container::revision_of(c) != Some(revision))
            {
                if let Some(id) = &c.id {
                    tracing::info!(container = %container::name_of(c), "removing a leftover of an interrupted rollout");
                    container::remove_force(&self.docker, id).await;
                }
            }
            let mut instances: Vec<Instance> = Vec::new();
            for c in running
                .iter()
                .filter(|c| container::revision_of(c) == Some(revision))
            {
                instances.push(container::instance_of(&self.docker, c).await?);
            }
            instances.sort_by_key(|i| i.replica);
            let mut tracked = self.tracked_for(spec, revision);
            tracked.sink = Some(ctx.events.clone());
            let image = tracked.image.clone();
            self.state.insert(tracked);
            out.push(RecoveredDeployment {
                id: spec.id.clone(),
                revision,
                status: DeploymentStatus::Running,
                runtime: rollout::runtime(&self.settings.bind_address, &image, &instances),
                failure: None,
            });
        }
        Ok(out)
    }

    fn tracked_for(&self, spec: &DeploymentSpec, revision: Revision) -> Tracked {
        let mut spec = spec.clone();
        spec.revision = revision;
        let options = rollout::options_of(&spec).unwrap_or_default();
        let artifact = Artifact {
            image: crate::labels::image_tag(&spec),
            command: crate::image::command_for(&spec, &options),
        };
        Tracked::new(spec, options, artifact.image, artifact.command)
    }
}
