//! Finding a deployment's containers by their labels and reading what they show: the
//! containers of a revision, their instances, and the observed status of a deployment.

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, RestartPolicyNameEnum};
use conan_core::{
    DeploymentId, Error, ExitStatus, KnownDeployment, ObservedStatus, RestartMode, Result, Revision,
};

use crate::DockerProvider;
use crate::container::{self, Instance};

/// Whether a listed container runs (or is being restarted by Docker).
pub(crate) fn is_running(c: &ContainerSummary) -> bool {
    matches!(
        c.state,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING)
    )
}

pub(super) fn of_revision(c: &ContainerSummary, revision: Revision) -> bool {
    container::revision_of(c) == Some(revision)
}

pub(super) fn ids(containers: &[&ContainerSummary]) -> Vec<String> {
    containers.iter().filter_map(|c| c.id.clone()).collect()
}

/// One instance per replica. A replica with several running containers (an interrupted
/// `replace` left a fresh one beside the old one) keeps the one `preferred` names (the
/// containers the store knows serve), else the most recently started; the others are
/// answered apart, for removal.
pub(crate) fn one_per_replica(
    instances: Vec<Instance>,
    preferred: &[String],
) -> (Vec<Instance>, Vec<Instance>) {
    let mut keep: Vec<Instance> = Vec::new();
    let mut extra = Vec::new();
    for i in instances {
        let Some(pos) = keep.iter().position(|k| k.replica == i.replica) else {
            keep.push(i);
            continue;
        };
        let rank = |x: &Instance| (preferred.contains(&x.id), x.started_at);
        if rank(&i) > rank(&keep[pos]) {
            extra.push(std::mem::replace(&mut keep[pos], i));
        } else {
            extra.push(i);
        }
    }
    keep.sort_by_key(|i| i.replica);
    (keep, extra)
}

impl DockerProvider {
    /// Every container of a deployment, running or not.
    pub(super) async fn containers(&self, id: &DeploymentId) -> Result<Vec<ContainerSummary>> {
        Ok(container::list_deployment(&self.docker, id.as_str()).await?)
    }

    /// Containers of a deployment; `NotFound` when there are none.
    pub(super) async fn containers_or_not_found(
        &self,
        id: &DeploymentId,
    ) -> Result<Vec<ContainerSummary>> {
        let containers = self.containers(id).await?;
        if containers.is_empty() {
            return Err(Error::deployment_not_found(id.as_str()));
        }
        Ok(containers)
    }

    /// Instances of listed containers, by replica.
    pub(super) async fn instances(
        &self,
        containers: &[&ContainerSummary],
    ) -> Result<Vec<Instance>> {
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
    pub(super) async fn running_of(
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

    pub(super) async fn remove_containers(&self, containers: &[&ContainerSummary]) {
        futures::future::join_all(
            ids(containers)
                .iter()
                .map(|id| container::remove_force(&self.docker, id)),
        )
        .await;
    }

    /// Whether the exited containers of `known` were stopped on purpose: this process
    /// stopped them, the manager recorded a stop (no instances in the known runtime), or
    /// Docker keeps an `unless-stopped` container down (it does so only after a stop).
    pub(super) async fn stopped_on_purpose(
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
    pub(super) async fn observe(
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

    /// The status of `known` as found on the daemon (for recovery).
    pub(crate) async fn observe_known(
        &self,
        known: &KnownDeployment,
        containers: &[ContainerSummary],
    ) -> ObservedStatus {
        self.observe(known, containers).await
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use conan_core::Timestamp;

    use super::*;

    fn instance(id: &str, replica: u32, started_s: u64) -> Instance {
        Instance {
            id: id.to_owned(),
            name: id.to_owned(),
            replica,
            revision: Revision(1),
            host_port: None,
            started_at: Some(Timestamp::from_system_time(
                SystemTime::UNIX_EPOCH + Duration::from_secs(started_s),
            )),
            image_id: None,
        }
    }

    fn ids_of(v: &[Instance]) -> Vec<&str> {
        v.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn one_container_per_replica_the_known_one_else_the_newest() {
        let all = vec![
            instance("old0", 0, 10),
            instance("new0", 0, 20),
            instance("new1", 1, 20),
            instance("old1", 1, 10),
            instance("only2", 2, 5),
        ];
        let (keep, extra) = one_per_replica(all.clone(), &["old0".into(), "old1".into()]);
        assert_eq!(ids_of(&keep), ["old0", "old1", "only2"]);
        assert_eq!(ids_of(&extra), ["new0", "new1"]);
        let (keep, extra) = one_per_replica(all, &[]);
        assert_eq!(ids_of(&keep), ["new0", "new1", "only2"]);
        assert_eq!(ids_of(&extra), ["old0", "old1"]);
    }
}
