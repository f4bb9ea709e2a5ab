//! Recovery by label: adopting containers an earlier process started.
//!
//! For each deployment the store knows, the containers labelled `conan.deployment=<id>` are
//! looked up. Running containers of the known revision (or, after an interrupted update,
//! the newest running revision) are adopted as they are — nothing restarts — and
//! supervised again (death watcher). Running containers of other
//! revisions are leftovers of an interrupted rollout and are removed, and so is a second
//! container of one replica (an interrupted `replace`: the one the store lists stays, else
//! the newest), so exactly one container per replica serves. A deployment without
//! containers comes back `Failed` with the reason; one whose containers all exited comes
//! back as [`status`](conan_core::Provider::status) would observe it (`Stopped` when it
//! was stopped on purpose). `conan.managed` containers of deployments the store does not
//! know are left alone and logged.

use std::collections::BTreeSet;

use conan_core::{
    ExitStatus, FailureReport, KnownDeployment, ObservedStatus, OperationContext,
    RecoveredDeployment, Result, Revision,
};

use crate::DockerProvider;
use crate::container;
use crate::labels::{LABEL_DEPLOYMENT, LABEL_MANAGED, image_tag};
use crate::provider::{is_running, one_per_replica};
use crate::rollout;

impl DockerProvider {
    pub(crate) async fn recover_known(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        let all = container::list_by(&self.docker, &[(LABEL_MANAGED, "true")]).await?;
        let known_ids: BTreeSet<&str> = known.iter().map(|k| k.id().as_str()).collect();
        let orphans: BTreeSet<&str> = all
            .iter()
            .filter_map(|c| container::label(c, LABEL_DEPLOYMENT))
            .filter(|d| !known_ids.contains(d))
            .collect();
        if !orphans.is_empty() {
            tracing::info!(deployments = ?orphans, "conan.managed containers of deployments the store does not know; left alone");
        }
        let mut out = Vec::with_capacity(known.len());
        for k in known {
            ctx.check_cancelled("recover")?;
            let mine: Vec<_> = all
                .iter()
                .filter(|c| container::label(c, LABEL_DEPLOYMENT) == Some(k.id().as_str()))
                .cloned()
                .collect();
            if mine.is_empty() {
                let failure = FailureReport::new(
                    "its containers vanished while Conan was not running (removed outside Conan?)",
                )
                .with_exit(ExitStatus::Unknown);
                out.push(RecoveredDeployment::failed(
                    k.id().clone(),
                    k.revision(),
                    failure,
                ));
                continue;
            }
            let revisions: BTreeSet<Revision> = mine
                .iter()
                .filter(|c| is_running(c))
                .filter_map(container::revision_of)
                .collect();
            let revision = if revisions.contains(&k.revision()) {
                Some(k.revision())
            } else {
                revisions.iter().next_back().copied()
            };
            let Some(revision) = revision else {
                // Nothing runs: as `status` observes it.
                let status = self.observe_known(k, &mine).await;
                match status {
                    ObservedStatus::Failed { reason } => {
                        out.push(RecoveredDeployment::failed(
                            k.id().clone(),
                            k.revision(),
                            FailureReport::new(format!("{reason} while Conan was not running")),
                        ));
                    }
                    other => {
                        self.state.upsert(&k.spec, |t| t.stopped = true);
                        let mut r = RecoveredDeployment::stopped(
                            k.id().clone(),
                            k.revision(),
                            k.runtime.stopped(),
                        );
                        r.status = other;
                        out.push(r);
                    }
                }
                continue;
            };
            // Leftovers of an interrupted rollout.
            for c in mine
                .iter()
                .filter(|c| is_running(c) && container::revision_of(c) != Some(revision))
            {
                if let Some(id) = &c.id {
                    tracing::info!(container = %container::name_of(c), "removing a leftover of an interrupted rollout");
                    container::remove_force(&self.docker, id).await;
                }
            }
            let running = self.running_instances(&mine, revision).await?;
            // An interrupted `replace` leaves two containers of one replica: the one the
            // store knows serves stays, the other goes.
            let preferred: Vec<String> = k.runtime.instances.iter().map(|i| i.id.clone()).collect();
            let (instances, extra) = one_per_replica(running, &preferred);
            for i in &extra {
                tracing::info!(container = %i.name, "removing a second container of one replica (an interrupted restart)");
                container::remove_force(&self.docker, &i.id).await;
            }
            let mut spec = k.spec.clone();
            spec.revision = revision;
            if rollout::options_of(&spec).is_err() {
                tracing::warn!(deployment = %spec.id, "recovered a deployment whose docker options no longer decode");
            }
            self.adopt_serving(&spec, &ctx.events);
            out.push(RecoveredDeployment::running(
                spec.id.clone(),
                revision,
                rollout::runtime(&self.settings.bind_address, &image_tag(&spec), &instances),
            ));
        }
        Ok(out)
    }
}
