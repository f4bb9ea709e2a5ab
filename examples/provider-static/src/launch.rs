//! Bringing a deployment's server up: resolving its directory, binding its port, spawning
//! the server and gating it on its health check.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conan_core::{
    ConfigProblem, DeploymentConfig, DeploymentSpec, Error, FailureReport, LogLine,
    OperationContext, OutputStream, Phase, Result, RuntimeInfo, Timestamp,
};
use tokio::time::Instant;

use crate::health::{self, GateError, SharedReport};
use crate::http::{self, Site, Stats};
use crate::logbook::LogBook;
use crate::registry::BoundListener;
use crate::server::{Server, instance_id};
use crate::state::State;
use crate::{NAME, StaticOptions, StaticProvider};

/// How long a bind of a recorded port waits for it to be released (a dropped provider
/// instance's server closes its socket asynchronously) before answering it is taken.
pub(crate) const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Log lines quoted in a failure report.
pub(crate) const FAILURE_LOG_LINES: usize = 20;

impl StaticProvider {
    /// Binds, spawns and health-gates a server of `spec` on `port` (0: ephemeral). On
    /// failure or cancellation nothing of it is left (the server is shut down before the
    /// error returns; if the future is dropped, the server is dropped, and aborted, too).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn launch(
        &self,
        ctx: &OperationContext,
        operation: &str,
        spec: &DeploymentSpec,
        root: PathBuf,
        port: u16,
        log: &Arc<LogBook>,
        options: &StaticOptions,
        port_wait: Duration,
    ) -> Result<Server> {
        ctx.check_cancelled(operation)?;
        ctx.events.progress(
            &spec.id,
            Phase::Starting,
            format!("serving {} (revision {})", root.display(), spec.revision),
        );
        let bound = bind(ctx, operation, spec, port, port_wait).await?;
        let port = bound.port();
        let stats = Arc::new(Stats::default());
        let site = Arc::new(Site {
            root: root.clone(),
            log: log.clone(),
            stats: stats.clone(),
            instance: instance_id(port, spec.revision),
        });
        log.push(system_line(format!(
            "serving {} on http://127.0.0.1:{port} (revision {})",
            root.display(),
            spec.revision
        )));
        let task = tokio::spawn(http::serve(bound, site, options.startup_delay()));
        let mut server = Server {
            revision: spec.revision,
            root,
            port,
            started_at: Timestamp::now(),
            started: Instant::now(),
            stats,
            health: None,
            task: Some(task),
            monitor: None,
        };
        let check = spec.config.health_check.as_ref();
        let probe = health::probe_for(check, port, &server.root);
        ctx.events.progress(
            &spec.id,
            Phase::WaitingForHealth,
            format!("waiting for {probe}"),
        );
        let deadline = spec.config.update.healthy_deadline;
        match health::wait_ready(ctx, check, &probe, deadline).await {
            Ok(detail) => {
                ctx.events
                    .progress(&spec.id, Phase::WaitingForHealth, detail.clone());
                if let Some(check) = check {
                    let report: SharedReport = Arc::new(Mutex::new(health::passed(detail)));
                    server.monitor = Some(tokio::spawn(health::liveness(
                        ctx.events.clone(),
                        spec.id.clone(),
                        check.clone(),
                        probe,
                        report.clone(),
                    )));
                    server.health = Some(report);
                    ctx.events.healthy(&spec.id);
                }
                Ok(server)
            }
            Err(GateError::Cancelled) => {
                ctx.events.progress(
                    &spec.id,
                    Phase::CleaningUp,
                    format!("cancelled: stopping the server on port {port}"),
                );
                server.shutdown().await;
                log.push(system_line(format!(
                    "{operation} cancelled: stopped serving on port {port}"
                )));
                Err(Error::Cancelled {
                    operation: operation.to_owned(),
                })
            }
            Err(GateError::NeverReady(detail)) => {
                ctx.events.progress(
                    &spec.id,
                    Phase::CleaningUp,
                    format!("never ready: stopping the server on port {port}"),
                );
                server.shutdown().await;
                let reason = format!(
                    "revision {} never became ready within {}",
                    spec.revision,
                    conan_core::time::format_duration(deadline)
                );
                log.push(system_line(format!("{reason}: {detail}")));
                Err(Error::HealthCheckFailed {
                    deployment: spec.name().to_owned(),
                    failure: Box::new(
                        FailureReport::new(reason)
                            .with_probe(detail)
                            .with_logs(log.last(FAILURE_LOG_LINES)),
                    ),
                })
            }
        }
    }

    /// Brings `spec` up with nothing of it serving (deploy, start, recover).
    pub(crate) async fn bring_up(
        &self,
        ctx: &OperationContext,
        operation: &str,
        spec: &DeploymentSpec,
        ports: &[u16],
        port_wait: Duration,
    ) -> Result<RuntimeInfo> {
        let mut guard = self.starting(&spec.id);
        let (log, old) = self.replace(&spec.id, State::Starting);
        if let Some(old) = old {
            ctx.events.progress(
                &spec.id,
                Phase::Stopping,
                format!("replacing revision {} on port {}", old.revision, old.port),
            );
            old.shutdown().await;
        }
        let result = async {
            let options = StaticOptions::of(&spec.config)?;
            let root = resolve_root(&spec.config).await?;
            let mut last = None;
            for &port in ports {
                match self
                    .launch(
                        ctx,
                        operation,
                        spec,
                        root.clone(),
                        port,
                        &log,
                        &options,
                        port_wait,
                    )
                    .await
                {
                    Err(e @ Error::PortInUse { .. }) => last = Some(e),
                    other => return other,
                }
            }
            Err(last.unwrap_or_else(|| Error::provider(NAME, "no port to serve on", false)))
        }
        .await;
        self.settle(&mut guard, result)
    }
}

pub(crate) fn system_line(message: String) -> LogLine {
    LogLine::new(OutputStream::System, message).with_source(NAME)
}

/// Binds `127.0.0.1:port`, waiting up to `wait` for a port that is in use to be released
/// (raced against cancellation).
async fn bind(
    ctx: &OperationContext,
    operation: &str,
    spec: &DeploymentSpec,
    port: u16,
    wait: Duration,
) -> Result<BoundListener> {
    let until = Instant::now() + wait;
    loop {
        match BoundListener::bind(port, &spec.id, spec.revision) {
            Ok(bound) => return Ok(bound),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if Instant::now() >= until {
                    return Err(Error::PortInUse { port, holder: None });
                }
                tokio::select! {
                    () = ctx.cancel.cancelled() => return Err(Error::Cancelled { operation: operation.to_owned() }),
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            Err(e) => {
                return Err(Error::provider(
                    NAME,
                    format!("cannot listen on 127.0.0.1:{port}: {e}"),
                    false,
                ));
            }
        }
    }
}

/// The canonical directory a config serves.
pub(crate) async fn resolve_root(config: &DeploymentConfig) -> Result<PathBuf> {
    let problem = |message: String| Error::InvalidConfig {
        problems: vec![ConfigProblem::new("source", message)],
    };
    let root = tokio::fs::canonicalize(&config.source)
        .await
        .map_err(|e| problem(format!("{}: {e}", config.source.display())))?;
    let meta = tokio::fs::metadata(&root)
        .await
        .map_err(|e| problem(format!("{}: {e}", root.display())))?;
    if meta.is_dir() {
        Ok(root)
    } else {
        Err(problem(format!("{} is not a directory", root.display())))
    }
}

pub(crate) async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}
