//! Containers: what a container of a deployment looks like, and the calls that manage them.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerUpdateBody, HostConfig, PortBinding, RestartPolicy as DockerRestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use conan_core::{DeploymentSpec, InstanceInfo, RestartMode, Revision, Timestamp};

use crate::error::{DockerError, DockerResult};
use crate::labels::{self, LABEL_DEPLOYMENT, LABEL_REPLICA, LABEL_REVISION};
use crate::{DEFAULT_CONTAINER_PORT, DockerOptions};

/// The Docker restart policy for a config's restart policy.
fn restart_policy(spec: &DeploymentSpec) -> DockerRestartPolicy {
    let config = &spec.config;
    match config.restart.policy {
        // `unless-stopped`, not `always`: a container Conan stopped stays stopped when the
        // daemon restarts.
        RestartMode::Always => DockerRestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        },
        RestartMode::OnFailure => DockerRestartPolicy {
            name: Some(RestartPolicyNameEnum::ON_FAILURE),
            maximum_retry_count: Some(i64::from(config.restart.max_restarts)),
        },
        RestartMode::Never => DockerRestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        },
    }
}

/// Applies the configured restart policy to a container that passed its readiness gate
/// (containers are created without one, see `Plan::body`).
pub(crate) async fn enable_restarts(
    docker: &Docker,
    spec: &DeploymentSpec,
    id: &str,
) -> DockerResult<()> {
    let policy = restart_policy(spec);
    if policy.name == Some(RestartPolicyNameEnum::NO) {
        return Ok(());
    }
    let body = ContainerUpdateBody {
        restart_policy: Some(policy),
        ..Default::default()
    };
    docker
        .update_container(id, body)
        .await
        .map_err(|e| DockerError::api(format!("set the restart policy of container {id}"), e))
}

/// One container Conan started, as far as a rollout needs to know it.
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) replica: u32,
    pub(crate) revision: Revision,
    pub(crate) host_port: Option<u16>,
    pub(crate) started_at: Option<Timestamp>,
    /// The image id the container runs.
    pub(crate) image_id: Option<String>,
}

impl Instance {
    pub(crate) fn info(&self) -> InstanceInfo {
        InstanceInfo::new(self.id.clone(), self.revision)
            .with_port(self.host_port)
            .with_started_at(self.started_at)
    }
}

/// The app's port inside the container.
pub(crate) fn container_port(spec: &DeploymentSpec) -> u16 {
    spec.config.port.unwrap_or(DEFAULT_CONTAINER_PORT)
}

/// Everything needed to create containers of one revision.
#[derive(Clone, Debug)]
pub(crate) struct Plan<'a> {
    pub(crate) spec: &'a DeploymentSpec,
    pub(crate) options: &'a DockerOptions,
    pub(crate) image: &'a str,
    /// `sh -c` command overriding the image's CMD.
    pub(crate) command: Option<&'a str>,
    pub(crate) bind_address: &'a str,
}

impl Plan<'_> {
    /// The create request of replica `replica`. Holds env values: never log it.
    fn body(&self, replica: u32) -> ContainerCreateBody {
        let spec = self.spec;
        let config = &spec.config;
        let port = container_port(spec);
        let port_key = format!("{port}/tcp");
        let mut env = vec![format!("PORT={port}")];
        // Inside a container the app must listen on every interface for the published port
        // to reach it; apps that read HOST (as the local provider sets it) get that here too.
        if !config.env.contains_key("HOST") {
            env.push("HOST=0.0.0.0".to_owned());
        }
        env.extend(config.env.iter().map(|(k, v)| format!("{k}={v}")));
        // No restarts while the readiness gate runs: a crash during startup must fail the
        // deploy with its real exit code, not be restarted by Docker (which resets the code).
        // `enable_restarts` applies the configured policy once the container is ready.
        let restart_policy = DockerRestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        };
        let host_port = self.options.host_port.map(|p| p.to_string());
        let port_bindings = HashMap::from([(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: Some(self.bind_address.to_owned()),
                // Empty: the daemon picks a free port.
                host_port: Some(host_port.unwrap_or_default()),
            }]),
        )]);
        let host_config = HostConfig {
            port_bindings: Some(port_bindings),
            restart_policy: Some(restart_policy),
            init: Some(true),
            memory: config
                .resources
                .memory
                .map(|m| i64::try_from(m.0).unwrap_or(i64::MAX)),
            nano_cpus: config.resources.cpus.map(|c| (c * 1e9).round() as i64),
            binds: (!self.options.volumes.is_empty()).then(|| self.options.volumes.clone()),
            network_mode: self.options.network.clone(),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.to_owned()),
            env: Some(env),
            cmd: self
                .command
                .map(|c| vec!["sh".to_owned(), "-c".to_owned(), c.to_owned()]),
            exposed_ports: Some(vec![port_key]),
            labels: Some(labels::container_labels(spec, replica, port)),
            stop_signal: Some(config.stop.signal.as_str().to_owned()),
            stop_timeout: Some(
                i64::try_from(stop_seconds(config.stop.timeout)).unwrap_or(i64::MAX),
            ),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// Creates and starts replica `replica`; returns it with its published port. A container
    /// that was created but could not start is removed again.
    pub(crate) async fn start(&self, docker: &Docker, replica: u32) -> DockerResult<Instance> {
        let name = format!(
            "conan-{}-r{}-{}-{:04x}",
            self.spec.name(),
            self.spec.revision.0,
            replica,
            fastrand_u16()
        );
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = docker
            .create_container(Some(options), self.body(replica))
            .await
            .map_err(|e| DockerError::api(format!("create container {name}"), e))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            remove_force(docker, &created.id).await;
            return Err(DockerError::api(format!("start container {name}"), e));
        }
        let inspect = inspect(docker, &created.id).await?;
        Ok(Instance {
            id: created.id,
            name,
            replica,
            revision: self.spec.revision,
            host_port: published_port(&inspect, container_port(self.spec)),
            started_at: started_at(&inspect),
            image_id: inspect.image.clone(),
        })
    }
}

fn fastrand_u16() -> u16 {
    // Uniqueness only (a retried deploy must not collide with a container being removed).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    (nanos ^ (nanos >> 16)) as u16
}

/// Inspects a container.
pub(crate) async fn inspect(docker: &Docker, id: &str) -> DockerResult<ContainerInspectResponse> {
    docker.inspect_container(id, None).await.map_err(|e| {
        let err = DockerError::api(format!("inspect container {id}"), e);
        if err.status_code() == Some(404) {
            DockerError::Missing {
                what: "container",
                name: id.to_owned(),
            }
        } else {
            err
        }
    })
}

/// The host port `port/tcp` is published on.
pub(crate) fn published_port(inspect: &ContainerInspectResponse, port: u16) -> Option<u16> {
    inspect
        .network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&format!("{port}/tcp"))?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// When the container last started.
pub(crate) fn started_at(inspect: &ContainerInspectResponse) -> Option<Timestamp> {
    let s = inspect.state.as_ref()?.started_at.as_deref()?;
    if s.starts_with("0001-") {
        return None;
    }
    Timestamp::parse_rfc3339(s).ok()
}

/// Whether the inspected container is running.
pub(crate) fn is_running(inspect: &ContainerInspectResponse) -> bool {
    inspect
        .state
        .as_ref()
        .and_then(|s| s.status)
        .is_some_and(|s| s == ContainerStateStatusEnum::RUNNING)
}

/// Every container of a deployment, running or not.
pub(crate) async fn list_deployment(
    docker: &Docker,
    deployment: &str,
) -> DockerResult<Vec<ContainerSummary>> {
    list_by(docker, &[(LABEL_DEPLOYMENT, deployment)]).await
}

/// Every container carrying all `labels`, running or not.
pub(crate) async fn list_by(
    docker: &Docker,
    labels: &[(&str, &str)],
) -> DockerResult<Vec<ContainerSummary>> {
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&labels::label_filter(labels))
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(|e| DockerError::api("list containers", e))
}

/// A label of a listed container.
pub(crate) fn label<'a>(c: &'a ContainerSummary, key: &str) -> Option<&'a str> {
    c.labels.as_ref()?.get(key).map(String::as_str)
}

/// The revision label of a listed container.
pub(crate) fn revision_of(c: &ContainerSummary) -> Option<Revision> {
    label(c, LABEL_REVISION)?.parse().ok().map(Revision)
}

/// The replica label of a listed container.
pub(crate) fn replica_of(c: &ContainerSummary) -> u32 {
    label(c, LABEL_REPLICA)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The container's name without the leading `/`.
pub(crate) fn name_of(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .or_else(|| c.id.clone())
        .unwrap_or_default()
}

/// An [`Instance`] of a listed container (inspecting it for the port).
pub(crate) async fn instance_of(docker: &Docker, c: &ContainerSummary) -> DockerResult<Instance> {
    let id = c.id.clone().unwrap_or_default();
    let inspect = inspect(docker, &id).await?;
    let port = label(c, labels::LABEL_PORT)
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_CONTAINER_PORT);
    Ok(Instance {
        name: name_of(c),
        replica: replica_of(c),
        revision: revision_of(c).unwrap_or(Revision(0)),
        host_port: published_port(&inspect, port),
        started_at: started_at(&inspect),
        image_id: inspect.image.clone(),
        id,
    })
}

/// The running containers of `revision` of a deployment as instances, by replica, with the
/// ports they are published on now.
pub(crate) async fn running_instances(
    docker: &Docker,
    deployment: &str,
    revision: Revision,
) -> DockerResult<Vec<Instance>> {
    let all = list_deployment(docker, deployment).await?;
    let mut instances = Vec::new();
    for c in all
        .iter()
        .filter(|c| revision_of(c) == Some(revision) && crate::provider::is_running(c))
    {
        instances.push(instance_of(docker, c).await?);
    }
    instances.sort_by_key(|i| i.replica);
    Ok(instances)
}

/// Stops a container gracefully (its configured signal, then SIGKILL after `timeout_s`).
/// A container that is gone or already stopped is fine.
pub(crate) async fn stop(docker: &Docker, id: &str, timeout_s: u64) -> DockerResult<()> {
    let options = StopContainerOptionsBuilder::new()
        .t(i32::try_from(timeout_s).unwrap_or(i32::MAX))
        .build();
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let err = DockerError::api(format!("stop container {id}"), e);
            // 304: already stopped; 404: gone.
            if matches!(err.status_code(), Some(304 | 404)) {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// Starts an existing (stopped) container. One that already runs is fine.
pub(crate) async fn start_existing(docker: &Docker, id: &str) -> DockerResult<()> {
    match docker.start_container(id, None).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let err = DockerError::api(format!("start container {id}"), e);
            // 304: already running.
            if err.status_code() == Some(304) {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// Docker's stop timeout (whole seconds, at least 1) of a config's `stop.timeout`.
pub(crate) fn stop_seconds(timeout: std::time::Duration) -> u64 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    secs.max(1)
}

/// Stops each container gracefully, all at once; the first error, if any.
pub(crate) async fn stop_all(docker: &Docker, ids: &[String], timeout_s: u64) -> DockerResult<()> {
    let results = futures::future::join_all(ids.iter().map(|id| stop(docker, id, timeout_s))).await;
    results
        .into_iter()
        .collect::<DockerResult<Vec<()>>>()
        .map(|_| ())
}

/// Removes a container, killing it if it runs. Best effort: failures are logged.
pub(crate) async fn remove_force(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        let err = DockerError::api(format!("remove container {id}"), e);
        if !err.is_not_found() {
            tracing::warn!(container = id, error = %err, "could not remove container");
        }
    }
}

/// Stops (gracefully) then removes each container, all at once.
pub(crate) async fn stop_and_remove(docker: &Docker, ids: &[String], timeout_s: u64) {
    futures::future::join_all(ids.iter().map(|id| async move {
        if let Err(e) = stop(docker, id, timeout_s).await {
            tracing::warn!(container = %id, error = %e, "graceful stop failed; killing");
        }
        remove_force(docker, id).await;
    }))
    .await;
}
