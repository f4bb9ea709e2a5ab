//! The daemon: one [`DeploymentManager`] on SQLite in `CONAN_HOME`, the local provider and
//! (when a Docker daemon answers, at start or later) the Docker provider, served over
//! HTTP + JSON on `CONAN_HOME/conan.sock`.
//!
//! Start-up order: take the lock (a second daemon exits 1), start the log writer, raise the
//! soft fd limit to the hard one ([`fdlimit`]), open the store, connect the
//! providers, [`recover`](DeploymentManager::recover) what an earlier daemon left running,
//! then bind the socket — so the first answer already shows adopted deployments. Stopping
//! (`POST /v1/daemon/shutdown`, SIGTERM or SIGINT) refuses new operations, waits for the
//! running ones, removes the socket and exits; the deployments keep running.
//!
//! Beside the server run the monitor and the autoscaler ([`conan::autoscale`], settings
//! in `[autoscale]`): its scale changes are `scaled` events and `scale` audit entries,
//! requested by `autoscaler`.
//!
//! The daemon runs on one thread (a current-thread Tokio runtime). Nothing that may block
//! runs on it: file work (the store, the provider's state directory, the socket) goes to
//! the blocking pool or `tokio::fs`, and log lines are written by a thread of their own
//! ([`log::LogWriter`]; rate-limited, and rotated when it is `daemon.log`). The accept
//! loop backs off when descriptors run out, caps the connections and times the reading of
//! requests ([`server`]).

pub mod fdlimit;
pub mod http;
pub mod lock;
pub mod log;
pub mod metrics;
mod monitoring;
mod routes;
pub mod server;
pub mod settings;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use conan::{DeploymentManager, DeploymentRecord, StatusKind, Timestamp};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::error::{CliError, CliResult};
use crate::home::Home;
use lock::{DaemonLock, LockError};

/// How long the daemon waits for Docker to answer at start.
const DOCKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What every request handler shares.
#[allow(dead_code, reason = "the monitor's routes are being built")]
pub struct Daemon {
    manager: DeploymentManager,
    home: Home,
    started_at: Timestamp,
    /// Why Docker is not available, while it is not.
    docker_error: std::sync::Mutex<Option<String>>,
    /// How the local provider contains instances (`conan daemon status` prints it).
    containment: String,
    /// The monitor: health checks that act, metrics history, alerts.
    monitor: conan::monitor::Monitor,
    /// The settings the daemon runs with.
    settings: settings::DaemonSettings,
    /// Where `/metrics` is served (the bound address), when it is.
    metrics_addr: Option<std::net::SocketAddr>,
    /// Why `/metrics` is not served although `metrics_addr` asks for it.
    metrics_error: Option<String>,
    /// The reverse proxy in front of the deployments (their stable endpoints).
    proxy: conan::proxy::Proxy,
    shutdown: watch::Sender<bool>,
}

impl Daemon {
    fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    fn docker_error(&self) -> Option<String> {
        self.docker_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_docker_error(&self, error: Option<String>) {
        *self
            .docker_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }
}

/// The Docker provider's builder with the daemon's settings.
fn docker_builder(settings: &settings::DockerSettings) -> conan::docker::DockerProviderBuilder {
    let builder =
        conan::docker::DockerProviderBuilder::from_env().connect_timeout(DOCKER_CONNECT_TIMEOUT);
    match &settings.base_image {
        Some(image) => builder.base_image(image.clone()),
        None => builder,
    }
}

/// While Docker is unavailable, tries it again every `docker.retry`; once it answers,
/// adds the Docker provider to the running manager (which adopts the containers the store
/// says it runs) and stops.
async fn watch_for_docker(daemon: Arc<Daemon>) {
    let every = daemon.settings.docker.retry;
    loop {
        tokio::time::sleep(every).await;
        let docker = docker_builder(&daemon.settings.docker).build().await;
        match docker {
            Ok(docker) => {
                match daemon.manager.add_provider(docker).await {
                    Ok(reconciled) => {
                        tracing::info!("Docker answers now; the Docker provider is available");
                        log_recovered(&reconciled);
                    }
                    // Names are unique: a Docker provider is registered already, and the
                    // deployments stay with it.
                    Err(conan::Error::ProviderExists { .. }) => {
                        tracing::debug!("the Docker provider is registered already");
                    }
                    // The provider stays registered; the deployments it could not recover
                    // are failed with the reason, and can be started again.
                    Err(e) => tracing::warn!(
                        error = %e,
                        "Docker answers now, but recovering its deployments failed"
                    ),
                }
                daemon.set_docker_error(None);
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "Docker is still unavailable");
                daemon.set_docker_error(Some(e.to_string()));
            }
        }
    }
}

/// Runs the daemon in the foreground until it is told to stop.
///
/// # Errors
/// Exit 1 when another daemon holds this home, or the store, providers or socket fail.
pub fn run(home: &Home) -> CliResult {
    home.ensure()
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", home.root().display())))?;
    let _lock = match DaemonLock::acquire(&home.lock()) {
        Ok(lock) => lock,
        Err(LockError::Held(pid)) => {
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            return Err(CliError::failed(format!(
                "a Conan daemon is already running for {}{pid}",
                home.root().display()
            ))
            .hint("stop it with `conan daemon stop`"));
        }
        Err(LockError::Io(e)) => {
            return Err(CliError::failed(format!(
                "cannot lock {}: {e}",
                home.lock().display()
            )));
        }
    };
    let log = init_tracing(home)?;
    let fd_limit = fdlimit::raise().map(|limit| limit.soft);
    let limits = server::Limits::from_env(fd_limit)?;
    let settings = settings::DaemonSettings::load(&home.settings())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(serve(home, limits, settings));
    if let Err(e) = &result {
        tracing::error!(error = %e, "daemon stopped with an error");
    }
    // Supervisor tasks hold providers; end them now rather than waiting for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    if let Some(log) = log {
        log.flush(Duration::from_secs(2));
    }
    result
}

/// Logs to stderr through a [`log::LogWriter`] (rotated when stderr is `daemon.log`),
/// rate-limited by [`log::limit`]; `None` when a subscriber was installed already.
fn init_tracing(home: &Home) -> CliResult<Option<log::LogWriter>> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let limiter = Arc::new(log::limit::Limiter::new(
        log::limit::WINDOW,
        log::limit::PER_SITE,
    ));
    let writer = log::LogWriter::spawn(&home.log(), Some(Arc::clone(&limiter)))
        .map_err(|e| CliError::failed(format!("cannot start the log writer: {e}")))?;
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(log::limit::RateLimitLayer::new(limiter, writer.clone()))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer.clone())
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init();
    Ok(installed.is_ok().then_some(writer))
}

/// Logs what recovery found: one line per deployment that is not running (with why), and
/// a summary.
fn log_recovered(records: &[DeploymentRecord]) {
    let mut running = 0;
    let mut stopped = 0;
    for record in records {
        match record.status.kind() {
            StatusKind::Running => running += 1,
            StatusKind::Stopped => stopped += 1,
            _ => tracing::warn!(
                deployment = %record.name,
                provider = %record.provider,
                status = %record.status,
                "recovered, not running"
            ),
        }
    }
    tracing::info!(
        deployments = records.len(),
        running,
        stopped,
        other = records.len() - running - stopped,
        "recovered deployments"
    );
}

/// The manager, why Docker is unavailable (when it is) and the local provider's
/// containment line.
async fn build_manager(
    home: &Home,
    proxy: &conan::proxy::Proxy,
    settings: &settings::DaemonSettings,
) -> CliResult<(DeploymentManager, Option<String>, String)> {
    let fail = |what: &str, e: conan::Error| CliError::failed(format!("{what}: {e}"));
    let mut local = conan::local::LocalProvider::builder().state_dir(home.local_state());
    if let Some(range) = settings.local.port_range.clone() {
        local = local.port_range(range);
    }
    if !settings.local.cgroups {
        local = local.cgroups(false);
    }
    let database = home.database();
    // Both create and read files: on the blocking pool, not on the runtime's thread.
    let (local, store) = crate::blocking::run(move || {
        let local = local
            .build()
            .map_err(|e| fail("cannot start the local provider", e))?;
        let store = conan::store::SqliteStore::open(&database)
            .map_err(|e| fail("cannot open the state database", e))?;
        Ok((local, store))
    })
    .await?;
    let containment = local.containment().to_string();
    tracing::info!(%containment, "local provider");
    let docker = docker_builder(&settings.docker).build().await;
    let mut builder = DeploymentManager::builder()
        .provider(local)
        .default_provider("local")
        .traffic(proxy.clone())
        .store(store);
    let docker_error = match docker {
        Ok(docker) => {
            tracing::info!("connected to Docker");
            builder = builder.provider(docker);
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "Docker is not available; only the local provider runs");
            Some(e.to_string())
        }
    };
    let manager = builder.build().await.map_err(|e| match e {
        conan::Error::ProviderExists { .. } => fail("cannot register the providers", e),
        e => fail("cannot load the deployments", e),
    })?;
    Ok((manager, docker_error, containment))
}

async fn serve(
    home: &Home,
    limits: server::Limits,
    settings: settings::DaemonSettings,
) -> CliResult {
    let proxy = conan::proxy::Proxy::new(settings.proxy.clone())
        .map_err(|e| CliError::usage(format!("daemon.toml [proxy]: {e}")))?;
    let _ = http::DOCKER_RETRY.set(settings.docker.retry);
    let (manager, docker_error, containment) = build_manager(home, &proxy, &settings).await?;
    match manager.recover().await {
        Ok(reconciled) => log_recovered(&reconciled),
        // Each deployment is recovered on its own; this is the first error when none was.
        Err(e) => tracing::warn!(error = %e, "recovery failed"),
    }
    let socket = home.socket();
    match tokio::fs::remove_file(&socket).await {
        Ok(()) => tracing::debug!("removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CliError::failed(format!(
                "cannot remove the stale socket {}: {e}",
                socket.display()
            )));
        }
    }
    let listener = UnixListener::bind(&socket)
        .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", socket.display())))?;
    tokio::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .await
        .map_err(|e| CliError::failed(format!("cannot restrict {}: {e}", socket.display())))?;
    let (shutdown, mut stopping) = watch::channel(false);
    let monitor = conan::monitor::Monitor::builder(manager.clone())
        .settings(settings.monitor.clone())
        .build();
    // The proxy is always on in the daemon: it counts the requests autoscaling follows.
    let autoscaler = conan::autoscale::Autoscaler::new(manager.clone())
        .settings(conan::autoscale::AutoscalerSettings::new(
            settings.autoscale.interval,
            settings.autoscale.window,
        ))
        .spawn();
    let (metrics_listener, metrics_error) = match settings.metrics_addr {
        Some(addr) => match metrics::bind(addr).await {
            Ok(listener) => (Some(listener), None),
            Err(e) => {
                tracing::error!(error = %e, "the Prometheus endpoint is off");
                (None, Some(e))
            }
        },
        None => (None, None),
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_task = metrics_listener.map(|listener| {
        tracing::info!(addr = ?metrics_addr, "serving Prometheus metrics on /metrics");
        tokio::spawn(metrics::serve(listener, monitor.clone(), limits))
    });
    let daemon = Arc::new(Daemon {
        monitor: monitor.clone(),
        settings,
        metrics_addr,
        metrics_error,
        proxy,
        manager: manager.clone(),
        home: home.clone(),
        started_at: Timestamp::now(),
        docker_error: std::sync::Mutex::new(docker_error),
        containment,
        shutdown,
    });
    if daemon.docker_error().is_some() {
        tokio::spawn(watch_for_docker(Arc::clone(&daemon)));
    }
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "listening");
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let stop = async {
        tokio::select! {
            _ = stopping.changed() => {}
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    };
    server::serve(&listener, &daemon, limits, stop).await;
    drop(listener);
    if let Some(task) = metrics_task {
        task.abort();
    }
    let _ = tokio::fs::remove_file(&socket).await;
    tracing::info!("stopping: waiting for running operations; deployments keep running");
    autoscaler.shutdown().await;
    monitor.shutdown().await;
    manager.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> CliResult<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| CliError::failed(format!("cannot install a signal handler: {e}")))
}
