//! Supervision: Docker restarts crashed containers by itself (the restart policy is
//! Docker's); this watcher follows the daemon's event stream so the manager hears about it.
//!
//! For a container of a deployment's serving revision that dies while no operation of
//! this provider is working on the deployment (deploy, update, start, stop, remove):
//!
//! - Docker restarts it → [`EventSink::restarted`](conan_core::EventSink::restarted), with the
//!   container's restart count as the attempt, then, once it runs again,
//!   [`runtime_changed`](conan_core::EventSink::runtime_changed) with the deployment's
//!   runtime: Docker publishes a restarted container on a **new** host port, and the manager
//!   (and the proxy routing to that port) must learn it;
//! - Docker leaves it down and nothing of the revision runs any more → a clean exit under
//!   `on-failure` is [`exited`](conan_core::EventSink::exited) (the manager moves it to
//!   Stopped), anything else [`failed`](conan_core::EventSink::failed) with the bundle.
//!
//! The watcher runs while any clone of the provider lives and reconnects when the event
//! stream breaks (it notices deaths again from the next event on).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use conan_core::{DeploymentId, ExitStatus, FailureReport, ReportOrigin, RestartMode, RuntimeInfo};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::container::{self, Instance};
use crate::labels::{LABEL_DEPLOYMENT, LABEL_MANAGED, LABEL_REVISION};
use crate::state::{StateTable, Tracked};

/// Stops the watcher when the last provider clone is dropped.
#[derive(Debug)]
pub(crate) struct Supervisor {
    cancel: CancellationToken,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts the watcher (needs a Tokio runtime). `bind_address` is where containers publish
/// their ports (for the runtime of a restarted container).
pub(crate) fn spawn(docker: Docker, state: Arc<StateTable>, bind_address: String) -> Supervisor {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        loop {
            let filters = HashMap::from([
                ("type", vec!["container".to_owned()]),
                ("event", vec!["die".to_owned()]),
                ("label", vec![format!("{LABEL_MANAGED}=true")]),
            ]);
            let options = EventsOptionsBuilder::new().filters(&filters).build();
            let mut events = docker.events(Some(options));
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    item = events.next() => match item {
                        Some(Ok(message)) => {
                            let (docker, state, bind) =
                                (docker.clone(), Arc::clone(&state), bind_address.clone());
                            // Off the stream: judging a death waits a moment for Docker's restart.
                            tokio::spawn(async move { on_die(&docker, &state, &bind, message).await });
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "docker event stream broke; reconnecting");
                            break;
                        }
                        None => break,
                    },
                }
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    Supervisor { cancel }
}

async fn on_die(docker: &Docker, state: &StateTable, bind: &str, message: EventMessage) {
    let Some(actor) = message.actor else { return };
    let (Some(container_id), Some(attrs)) = (actor.id, actor.attributes) else {
        return;
    };
    let Some(deployment) = attrs
        .get(LABEL_DEPLOYMENT)
        .map(|d| DeploymentId::from(d.as_str()))
    else {
        return;
    };
    let revision: Option<u64> = attrs.get(LABEL_REVISION).and_then(|r| r.parse().ok());
    let exit = attrs
        .get("exitCode")
        .and_then(|c| c.parse::<i32>().ok())
        .map_or(ExitStatus::Unknown, ExitStatus::Code);
    let watched = |state: &StateTable| {
        state.get(&deployment).filter(|t| {
            !t.stopped && !t.busy && t.sink.is_some() && Some(t.spec.revision.0) == revision
        })
    };
    if watched(state).is_none() {
        return;
    }
    // Docker schedules the restart right after the event; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Some(tracked) = watched(state) else {
        return;
    };
    let Some(sink) = tracked.sink.clone() else {
        return;
    };
    let Ok(inspect) = container::inspect(docker, &container_id).await else {
        return; // Removed meanwhile: not a crash.
    };
    let restarting = inspect
        .state
        .as_ref()
        .is_some_and(|s| s.restarting == Some(true) || s.running == Some(true));
    if restarting {
        let attempt = u32::try_from(inspect.restart_count.unwrap_or(0))
            .unwrap_or(u32::MAX)
            .max(1);
        tracing::info!(deployment = %deployment, container = %container_id, %exit, attempt, "container restarted by Docker");
        sink.restarted(&deployment, attempt, exit, Duration::ZERO);
        if let Some(runtime) = runtime_after_restart(docker, &tracked, &container_id, bind).await {
            let origin = ReportOrigin::new(tracked.spec.revision, container_id.clone());
            sink.runtime_changed(&deployment, origin, runtime);
        }
        return;
    }
    // Down for good: report once nothing of the revision runs.
    let Ok(all) = container::list_deployment(docker, deployment.as_str()).await else {
        return;
    };
    let serving = all.iter().any(|c| {
        container::revision_of(c).map(|r| r.0) == revision
            && matches!(
                c.state,
                Some(
                    bollard::models::ContainerSummaryStateEnum::RUNNING
                        | bollard::models::ContainerSummaryStateEnum::RESTARTING
                )
            )
    });
    if serving {
        return;
    }
    if exit.success() && tracked.spec.config.restart.policy == RestartMode::OnFailure {
        sink.exited(&deployment, exit);
        return;
    }
    let name = inspect
        .name
        .as_deref()
        .unwrap_or(&container_id)
        .trim_start_matches('/')
        .to_owned();
    let instance = Instance {
        id: container_id.clone(),
        name: name.clone(),
        replica: 0,
        revision: tracked.spec.revision,
        host_port: None,
        started_at: None,
        image_id: None,
    };
    let lines = crate::logs::last_lines(docker, &instance, FailureReport::MAX_LOG_LINES).await;
    let failure = FailureReport::new(format!(
        "container {name} exited and Docker will not restart it"
    ))
    .with_exit(exit)
    .with_logs(lines);
    tracing::warn!(deployment = %deployment, container = %name, %exit, "deployment failed on its own");
    sink.failed(&deployment, failure);
}

/// The deployment's runtime once the restarted container `id` runs again (Docker's backoff
/// is short for a first restart; a container that keeps crashing is judged by its next
/// death instead): every running container of the serving revision, with its published
/// port now. `None` when it does not run again within a few seconds, or the listing fails.
async fn runtime_after_restart(
    docker: &Docker,
    tracked: &Tracked,
    id: &str,
    bind: &str,
) -> Option<RuntimeInfo> {
    let revision = tracked.spec.revision;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let inspect = container::inspect(docker, id).await.ok()?;
        if container::is_running(&inspect)
            && container::published_port(&inspect, container::container_port(&tracked.spec))
                .is_some()
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let instances = container::running_instances(docker, tracked.spec.id.as_str(), revision)
        .await
        .ok()?;
    Some(crate::rollout::runtime(
        bind,
        &crate::labels::image_tag(&tracked.spec),
        &instances,
    ))
}
