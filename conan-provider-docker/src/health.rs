//! Health: the readiness gate of a deploy and one-off probes.
//!
//! Probes go through the published port on the host, as a user's traffic would. Docker's
//! userland proxy accepts TCP connections on a published port even before the app
//! listens (and closes them right away), so a TCP probe counts only when the connection
//! stays open briefly, and an HTTP probe only when a status line comes back.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use conan_core::{
    DeploymentSpec, ExitStatus, FailureReport, HealthCheck, HealthCheckKind, OperationContext,
    Phase,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::container::{self, Instance};
use crate::logs;

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

/// `GET path` on `127.0.0.1:port` with a minimal HTTP/1.1 client; the status code.
pub(crate) async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<u16, String> {
    let attempt = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: conan-health\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before a response".to_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 8192 {
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "not an HTTP response: {:?}",
                    line.lines().next().unwrap_or("")
                )
            })?;
        Ok(status)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> ProbeResult {
    let attempt = async {
        let mut stream = TcpStream::connect((host, port)).await?;
        let mut byte = [0u8; 1];
        // Docker's proxy closes at once when nothing listens behind it.
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte)).await {
            Ok(Ok(0)) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "closed at once (nothing listens in the container)",
            )),
            Ok(Err(e)) => Err(e),
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => ProbeResult::ok(format!("TCP {port} accepted")),
        Ok(Err(e)) => ProbeResult::fail(format!("TCP {port}: {e}")),
        Err(_) => ProbeResult::fail(format!("TCP {port}: no answer within {timeout:?}")),
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
        HealthCheckKind::Http => {
            let Some(port) = port else {
                return ProbeResult::fail("no published port");
            };
            let path = check.http_path();
            match http_get(host, port, path, check.timeout).await {
                Ok(status) if (200..300).contains(&status) => {
                    ProbeResult::ok(format!("GET {path} -> {status}"))
                }
                Ok(status) => ProbeResult::fail(format!("GET {path} -> {status}")),
                Err(e) => ProbeResult::fail(format!("GET {path}: {e}")),
            }
        }
        HealthCheckKind::Tcp => match port {
            Some(port) => tcp_probe(host, port, check.timeout).await,
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

/// How the container ended, when it is not running any more.
fn exit_of(inspect: &ContainerInspectResponse) -> Option<ExitStatus> {
    let state = inspect.state.as_ref()?;
    let exited = matches!(
        state.status,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
    ) || state.restarting == Some(true)
        || inspect.restart_count.unwrap_or(0) > 0;
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
        if let Some(exit) = exit_of(&inspect) {
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
        tokio::time::sleep(interval).await;
    }
}

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
