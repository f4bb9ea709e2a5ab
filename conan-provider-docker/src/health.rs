//! Health: the readiness gate of a deploy, and [`probe_revision`], this provider's answer
//! to [`Provider::probe`](conan_core::Provider::probe) (the monitor's liveness probe, for
//! every provider alike; this provider does not probe on its own after the gate).
//!
//! HTTP and TCP probes are conan-core's shared [`conan_core::probe`], made through the
//! published port on the host, as a user's traffic would. Docker's userland proxy accepts
//! TCP connections on a published port even before the app listens (and closes them right
//! away), so a TCP probe counts only when the connection stays open briefly, and an HTTP
//! probe only when a status line comes back. A command check runs inside the container
//! (`docker exec`); Docker's own `HEALTHCHECK` verdict and exit codes are read from inspect.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use conan_core::probe::Probe;
use conan_core::{
    DeploymentSpec, ExitStatus, FailureReport, HealthCheck, HealthCheckKind, OperationContext,
    Phase,
};
use futures::StreamExt;

use crate::container::{self, Instance};
use crate::logs;

/// How long a TCP probe's connection must stay open to count (see the module docs).
const TCP_HOLD: Duration = Duration::from_millis(100);

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeResult {
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

impl ProbeResult {
    fn ok(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
        }
    }
    fn fail(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
        }
    }
}

impl From<conan_core::probe::ProbeOutcome> for ProbeResult {
    fn from(o: conan_core::probe::ProbeOutcome) -> Self {
        Self {
            ok: o.is_healthy(),
            detail: o.into_detail(),
        }
    }
}

async fn command_probe(
    docker: &Docker,
    container: &str,
    command: &str,
    timeout: Duration,
) -> ProbeResult {
    let attempt = async {
        let exec = docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(vec!["sh", "-c", command]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| e.to_string())?
        {
            while output.next().await.is_some() {}
        }
        let inspect = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(inspect.exit_code.unwrap_or(-1))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(0)) => ProbeResult::ok("command exited 0"),
        Ok(Ok(code)) => ProbeResult::fail(format!("command exited {code}")),
        Ok(Err(e)) => ProbeResult::fail(format!("command: {e}")),
        Err(_) => ProbeResult::fail(format!("command: no answer within {timeout:?}")),
    }
}

/// Runs `check` once against `instance`.
pub(crate) async fn probe(
    docker: &Docker,
    host: &str,
    check: &HealthCheck,
    instance: &Instance,
    inspect: &ContainerInspectResponse,
) -> ProbeResult {
    let port = check.port.map_or(instance.host_port, |p| {
        container::published_port(inspect, p).or(Some(p))
    });
    match check.kind {
        HealthCheckKind::Http => match port {
            Some(port) => Probe::http(host, port, check.http_path())
                .run(check.timeout)
                .await
                .into(),
            None => ProbeResult::fail("no published port"),
        },
        HealthCheckKind::Tcp => match port {
            Some(port) => Probe::tcp(host, port)
                .with_hold(TCP_HOLD)
                .run(check.timeout)
                .await
                .into(),
            None => ProbeResult::fail("no published port"),
        },
        HealthCheckKind::Process => {
            if container::is_running(inspect) {
                ProbeResult::ok("container running")
            } else {
                ProbeResult::fail("container not running")
            }
        }
        HealthCheckKind::Command => {
            let command = check.command.as_deref().unwrap_or("true");
            command_probe(docker, &instance.id, command, check.timeout).await
        }
    }
}

/// Docker's own health verdict, when the image defines a HEALTHCHECK.
fn docker_health(inspect: &ContainerInspectResponse) -> Option<HealthStatusEnum> {
    inspect
        .state
        .as_ref()?
        .health
        .as_ref()?
        .status
        .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE))
}

/// How the container ended, when it is not running any more (or was restarted since
/// the gate began, when it had `baseline` restarts then).
fn exit_of(inspect: &ContainerInspectResponse, baseline: i64) -> Option<ExitStatus> {
    let state = inspect.state.as_ref()?;
    let exited = matches!(
        state.status,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
    ) || state.restarting == Some(true)
        || inspect.restart_count.unwrap_or(0) > baseline;
    exited.then(|| {
        ExitStatus::Code(
            state
                .exit_code
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(-1),
        )
    })
}

/// Waits until `instance` is ready or `deadline` passes. On failure returns the bundle
/// (exit status, probe, last 50 log lines); the caller removes the container.
pub(crate) async fn wait_ready(
    docker: &Docker,
    host: &str,
    interval: Duration,
    ctx: &OperationContext,
    spec: &DeploymentSpec,
    instance: &Instance,
) -> Result<String, Box<FailureReport>> {
    let config = &spec.config;
    let timeout = config.update.healthy_deadline;
    let deadline = Instant::now() + timeout;
    let min_uptime = config.restart.min_uptime;
    let started = Instant::now();
    let mut last_probe: Option<String> = None;
    let mut announced = false;
    // A resumed container may have been restarted in an earlier life.
    let mut baseline: Option<i64> = None;
    let mut n: u32 = 0;
    loop {
        if ctx.is_cancelled() {
            return Err(Box::new(
                failure(
                    docker,
                    instance,
                    "cancelled while waiting for health",
                    None,
                    last_probe,
                )
                .await,
            ));
        }
        let inspect = match container::inspect(docker, &instance.id).await {
            Ok(i) => i,
            Err(e) => {
                return Err(Box::new(
                    failure(
                        docker,
                        instance,
                        &format!("container vanished: {e}"),
                        None,
                        last_probe,
                    )
                    .await,
                ));
            }
        };
        let restarts = *baseline.get_or_insert(inspect.restart_count.unwrap_or(0));
        if let Some(exit) = exit_of(&inspect, restarts) {
            let reason = format!("container {} exited during startup", instance.name);
            return Err(Box::new(
                failure(docker, instance, &reason, Some(exit), last_probe).await,
            ));
        }
        let docker_verdict = docker_health(&inspect);
        if docker_verdict == Some(HealthStatusEnum::UNHEALTHY) {
            let reason = format!(
                "container {} reported unhealthy by its HEALTHCHECK",
                instance.name
            );
            return Err(Box::new(
                failure(docker, instance, &reason, None, last_probe).await,
            ));
        }
        let probe = match &config.health_check {
            Some(check) => Some(probe(docker, host, check, instance, &inspect).await),
            None => None,
        };
        let probe_ok = match &probe {
            Some(p) => p.ok,
            // No check: the container must stay up for `min_uptime`.
            None => started.elapsed() >= min_uptime,
        };
        if let Some(p) = &probe {
            last_probe = Some(p.detail.clone());
        }
        let docker_ok = docker_verdict.is_none_or(|s| s == HealthStatusEnum::HEALTHY);
        if probe_ok && docker_ok {
            let detail = last_probe.unwrap_or_else(|| format!("up for {min_uptime:?}"));
            return Ok(detail);
        }
        if !announced {
            announced = true;
            ctx.events.progress(
                &spec.id,
                Phase::WaitingForHealth,
                format!("waiting for {} to become healthy", instance.name),
            );
        }
        if Instant::now() >= deadline {
            let reason = format!(
                "container {} did not become healthy within {}",
                instance.name,
                conan_core::time::format_duration(timeout)
            );
            return Err(Box::new(
                failure(docker, instance, &reason, None, last_probe).await,
            ));
        }
        let delay = conan_core::probe::readiness_delay(n, interval).max(MIN_READINESS_DELAY);
        n = n.saturating_add(1);
        tokio::select! {
            () = ctx.cancel.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The shortest pause between two readiness probes (each costs an inspect call).
const MIN_READINESS_DELAY: Duration = Duration::from_millis(5);

async fn failure(
    docker: &Docker,
    instance: &Instance,
    reason: &str,
    exit: Option<ExitStatus>,
    probe: Option<String>,
) -> FailureReport {
    let lines = logs::last_lines(docker, instance, FailureReport::MAX_LOG_LINES).await;
    let mut report = FailureReport::new(reason).with_logs(lines);
    if let Some(exit) = exit {
        report = report.with_exit(exit);
    }
    if let Some(p) = probe {
        report = report.with_probe(p);
    }
    report
}

/// Probes every running container of `spec.revision` once; the first failure, else the
/// first success. `None` when nothing of the revision runs (nothing to observe).
pub(crate) async fn probe_revision(
    docker: &Docker,
    host: &str,
    check: &HealthCheck,
    spec: &DeploymentSpec,
) -> Option<ProbeResult> {
    let containers = container::list_deployment(docker, spec.id.as_str())
        .await
        .ok()?;
    let mut verdict: Option<ProbeResult> = None;
    for c in containers
        .iter()
        .filter(|c| container::revision_of(c) == Some(spec.revision))
        .filter(|c| crate::provider::is_running(c))
    {
        let Ok(instance) = container::instance_of(docker, c).await else {
            continue;
        };
        let Ok(inspect) = container::inspect(docker, &instance.id).await else {
            continue;
        };
        let mut result = probe(docker, host, check, &instance, &inspect).await;
        if result.ok && docker_health(&inspect) == Some(HealthStatusEnum::UNHEALTHY) {
            result = ProbeResult::fail(format!(
                "container {} reported unhealthy by its HEALTHCHECK",
                instance.name
            ));
        }
        let failed = !result.ok;
        if failed || verdict.is_none() {
            verdict = Some(result);
        }
        if failed {
            break;
        }
    }
    verdict
}
