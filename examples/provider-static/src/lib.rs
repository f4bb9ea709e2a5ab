//! # conan-provider-static
//!
//! A whole third-party Conan provider in one small crate, written against `conan-core`
//! alone: it serves a directory of static files over HTTP with a tiny built-in server.
//!
//! - **What it runs.** A deployment's `source` directory, served on `127.0.0.1` on the
//!   config's `port`, or on an ephemeral port when none is set. The server speaks
//!   HTTP/1.1 `GET` and `HEAD`, one request per connection, picks `Content-Type` by file
//!   extension, serves a directory's `index.html`, answers 404 for what does not exist and
//!   403 for anything that resolves outside the root (`..`, symlinks). See [`MAX_HEAD_BYTES`]
//!   and [`HEAD_TIMEOUT`] for its bounds.
//! - **Health.** The readiness gate and the liveness loop probe the server with
//!   `conan_core::probe` (the config's health check; a TCP connect without one). Nothing is
//!   special-cased: a check of `/health` passes only if the site has a `health` file, so
//!   `HealthCheck::http("/")` (the site's `index.html`) is the natural one.
//! - **Logs.** One access-log line per request plus lifecycle lines, kept in a bounded ring
//!   per deployment ([`LOG_LINES`]) and broadcast to followers.
//! - **Metrics.** Requests and bytes received and sent (`network_rx_bytes`,
//!   `network_tx_bytes`), uptime, port, and `memory_bytes`: an estimate of what the
//!   provider holds for the deployment (its log ring and open connections), since the
//!   server shares this process. [`StaticProvider::requests_served`] has the request count.
//!
//! ## Where its state lives
//!
//! The provider is stateless across instances: everything needed to find a deployment
//! again is in the [`RuntimeInfo::details`] it returns (`port`, `root`, `revision`; see
//! [`DETAIL_PORT`] and friends), which the manager persists and hands back in every
//! [`KnownDeployment`]. An instance keeps the servers it runs (and their logs) in memory;
//! dropping the instance aborts them and frees their ports. A **fresh** instance holds
//! nothing, so it answers `NotFound` for status, logs, metrics and health until
//! [`recover`](Provider::recover) (or a deploy or start) serves the deployment again:
//! `recover` re-serves each deployment the store knows as running on its recorded port,
//! reports stopped ones stopped, and answers failed (with a reason) when the directory
//! vanished or the port is taken. `start` of a stopped deployment works from the details
//! alone, too.
//!
//! ## Provider options
//!
//! `[provider_options.static]` decodes into [`StaticOptions`]:
//!
//! ```toml
//! [provider_options.static]
//! startup_delay_ms = 2000   # wait this long before accepting connections (default 0)
//! ```
//!
//! The delay makes a slow app out of a static site, for testing what happens while one
//! starts (the conformance suite's mid-deploy cancellation uses it).
//!
//! ## Use
//!
//! ```no_run
//! use std::sync::Arc;
//! use conan_core::{DeploymentConfig, DeploymentManager, HealthCheck};
//! use conan_provider_static::StaticProvider;
//!
//! # async fn demo() -> conan_core::Result<()> {
//! let manager = DeploymentManager::builder()
//!     .provider(StaticProvider::new())
//!     .build()
//!     .await?;
//! let config = DeploymentConfig::builder("docs")
//!     .source("./public")
//!     .provider("static")
//!     .health_check(HealthCheck::http("/"))
//!     .build()?;
//! let record = manager.deploy(config).await?;
//! println!("serving at {:?}", record.runtime.and_then(|r| r.url.clone()));
//! # Ok(())
//! # }
//! ```

mod health;
mod http;
mod logbook;
mod registry;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use conan_core::{
    Capabilities, Capability, ConfigProblem, DeploymentConfig, DeploymentId, DeploymentSpec, Error,
    FailureReport, HealthReport, HealthStatus, InstanceInfo, KnownDeployment, LogLine, LogQuery,
    LogStream, Metrics, ObservedStatus, OperationContext, OutputStream, Phase, Provider,
    RecoveredDeployment, Result, Revision, RuntimeInfo, Timestamp,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::health::{GateError, SharedReport};
use crate::http::{CONNECTION_BYTES, Site, Stats};
use crate::logbook::LogBook;
use crate::registry::BoundListener;

pub use crate::http::{HEAD_TIMEOUT, MAX_HEAD_BYTES};
pub use crate::logbook::RING_LINES as LOG_LINES;
pub use crate::registry::live_listeners;

/// The provider's name, as written in `DeploymentConfig::provider`.
pub const NAME: &str = "static";

/// [`RuntimeInfo::details`] key: the port the deployment is served on (a number).
pub const DETAIL_PORT: &str = "port";
/// [`RuntimeInfo::details`] key: the canonical directory served (a string).
pub const DETAIL_ROOT: &str = "root";
/// [`RuntimeInfo::details`] key: the revision served (a number).
pub const DETAIL_REVISION: &str = "revision";

/// How long a bind of a recorded port waits for it to be released (a dropped provider
/// instance's server closes its socket asynchronously) before answering it is taken.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Log lines quoted in a failure report.
const FAILURE_LOG_LINES: usize = 20;

/// Approximate bytes of one running server besides its connections and log (task,
/// listener, counters).
const SERVER_BYTES: u64 = 4 * 1024;

/// `[provider_options.static]` of a deployment config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StaticOptions {
    /// Milliseconds the server waits after binding its port before it accepts
    /// connections (default 0): a slow-starting app, for tests.
    #[serde(default)]
    pub startup_delay_ms: u64,
}

impl StaticOptions {
    /// The defaults (no startup delay).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same options with a startup delay.
    #[must_use]
    pub fn with_startup_delay(mut self, delay: Duration) -> Self {
        self.startup_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The startup delay.
    #[must_use]
    pub fn startup_delay(&self) -> Duration {
        Duration::from_millis(self.startup_delay_ms)
    }

    /// The options of `config` (`provider_options.static`), defaults when it has none.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the table does not decode (an unknown key, a wrong
    /// type).
    pub fn of(config: &DeploymentConfig) -> Result<Self> {
        Ok(config.provider_options_for(NAME)?.unwrap_or_default())
    }
}

/// What this provider recorded in a runtime's details.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Recorded {
    port: u16,
}

impl Recorded {
    fn of(runtime: &RuntimeInfo) -> Option<Self> {
        let port = runtime.details.get(DETAIL_PORT)?.as_u64()?;
        let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
        runtime.details.get(DETAIL_ROOT)?.as_str()?;
        Some(Self { port })
    }
}

fn instance_id(port: u16, revision: Revision) -> String {
    format!("static-{port}-r{revision}")
}

/// One running server: a listener task and, with a health check, its liveness loop.
/// Dropping it aborts both (the port is released once the runtime drops the task);
/// [`Server::shutdown`] also waits for that.
struct Server {
    revision: Revision,
    root: PathBuf,
    port: u16,
    started_at: Timestamp,
    started: Instant,
    stats: Arc<Stats>,
    health: Option<SharedReport>,
    task: Option<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
}

impl Server {
    fn runtime(&self) -> RuntimeInfo {
        RuntimeInfo::new()
            .with_instance(
                InstanceInfo::new(instance_id(self.port, self.revision), self.revision)
                    .with_port(Some(self.port))
                    .with_started_at(Some(self.started_at)),
            )
            .with_url(format!("http://127.0.0.1:{}", self.port))
            .with_detail(DETAIL_PORT, self.port)
            .with_detail(DETAIL_ROOT, self.root.display().to_string())
            .with_detail(DETAIL_REVISION, self.revision.0)
    }

    fn is_alive(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Aborts the server and its liveness loop and waits until both are gone (the port is
    /// free when this returns).
    async fn shutdown(mut self) {
        for handle in [self.task.take(), self.monitor.take()]
            .into_iter()
            .flatten()
        {
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for handle in [&self.task, &self.monitor].into_iter().flatten() {
            handle.abort();
        }
    }
}

/// What an instance holds of one deployment.
enum State {
    Running(Box<Server>),
    /// A deploy, start or recovery is bringing it up.
    Starting,
    Stopped,
    Failed(String),
}

struct Entry {
    log: Arc<LogBook>,
    state: State,
}

/// Serves directories of static files over HTTP; see the [crate documentation](crate).
///
/// Dropping it stops every server it runs.
pub struct StaticProvider {
    deployments: Mutex<HashMap<DeploymentId, Entry>>,
}

impl std::fmt::Debug for StaticProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticProvider")
            .field("deployments", &self.lock().len())
            .finish()
    }
}

impl Default for StaticProvider {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets a deployment that is still `Starting` to failed when the call bringing it up is
/// dropped before it finished (an abandoned call).
struct StartingGuard<'a> {
    provider: &'a StaticProvider,
    id: &'a DeploymentId,
    armed: bool,
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(entry) = self.provider.lock().get_mut(self.id)
            && matches!(entry.state, State::Starting)
        {
            entry.state = State::Failed("the call starting it was abandoned".to_owned());
        }
    }
}

impl StaticProvider {
    /// A provider holding nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            deployments: Mutex::new(HashMap::new()),
        }
    }

    /// Requests the current server of `deployment` answered, if this instance serves it.
    #[must_use]
    pub fn requests_served(&self, deployment: &DeploymentId) -> Option<u64> {
        match &self.lock().get(deployment)?.state {
            State::Running(server) => Some(server.stats.requests.load(Ordering::Relaxed)),
            _ => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DeploymentId, Entry>> {
        self.deployments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The runtime of the server of `id`, if one runs (at `revision`, when given).
    fn running(&self, id: &DeploymentId, revision: Option<Revision>) -> Option<RuntimeInfo> {
        match &self.lock().get(id)?.state {
            State::Running(s) if s.is_alive() && revision.is_none_or(|r| r == s.revision) => {
                Some(s.runtime())
            }
            _ => None,
        }
    }

    /// Puts the deployment into `state` (creating its entry), answering its log and the
    /// server it ran before, if any.
    fn replace(&self, id: &DeploymentId, state: State) -> (Arc<LogBook>, Option<Box<Server>>) {
        let mut map = self.lock();
        let entry = map.entry(id.clone()).or_insert_with(|| Entry {
            log: Arc::new(LogBook::new()),
            state: State::Stopped,
        });
        let old = std::mem::replace(&mut entry.state, state);
        let server = match old {
            State::Running(s) => Some(s),
            _ => None,
        };
        (entry.log.clone(), server)
    }

    fn starting<'a>(&'a self, id: &'a DeploymentId) -> StartingGuard<'a> {
        StartingGuard {
            provider: self,
            id,
            armed: true,
        }
    }

    /// Records the outcome of bringing a deployment up: its server, or why it failed.
    fn settle(&self, guard: &mut StartingGuard<'_>, result: Result<Server>) -> Result<RuntimeInfo> {
        guard.armed = false;
        let mut map = self.lock();
        let entry = map.get_mut(guard.id);
        match (result, entry) {
            (Ok(server), Some(entry)) => {
                let runtime = server.runtime();
                entry.state = State::Running(Box::new(server));
                Ok(runtime)
            }
            // Removed meanwhile (only a caller breaking the one-call-at-a-time rule):
            // the server is dropped, and stops.
            (Ok(_), None) => Err(Error::deployment_not_found(guard.id.as_str())),
            (Err(e), Some(entry)) => {
                entry.state = State::Failed(e.to_string());
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Stops what runs of `id` (its entry stays, `Stopped`), waiting until its port is
    /// free; answers whether something ran.
    async fn stop_server(&self, ctx: &OperationContext, id: &DeploymentId) -> bool {
        let old = {
            let mut map = self.lock();
            match map.get_mut(id) {
                Some(entry) => {
                    let log = entry.log.clone();
                    match std::mem::replace(&mut entry.state, State::Stopped) {
                        State::Running(s) => Some((s, log)),
                        _ => None,
                    }
                }
                None => None,
            }
        };
        match old {
            Some((server, log)) => {
                ctx.events.progress(
                    id,
                    Phase::Stopping,
                    format!("stopping the server on port {}", server.port),
                );
                let port = server.port;
                server.shutdown().await;
                log.push(system_line(format!("stopped serving on port {port}")));
                true
            }
            None => false,
        }
    }

    /// Binds, spawns and health-gates a server of `spec` on `port` (0: ephemeral). On
    /// failure or cancellation nothing of it is left (the server is shut down before the
    /// error returns; if the future is dropped, the server is dropped, and aborted, too).
    #[allow(clippy::too_many_arguments)]
    async fn launch(
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
    async fn bring_up(
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

fn system_line(message: String) -> LogLine {
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
async fn resolve_root(config: &DeploymentConfig) -> Result<PathBuf> {
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

async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

#[async_trait]
impl Provider for StaticProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with(Capability::HealthChecks)
            .with(Capability::Recovery)
            .with(Capability::LogFollow)
            .with(Capability::Metrics)
            .with(Capability::LocalNetwork)
    }

    /// Serves `spec` on its port (or an ephemeral one); whatever this instance held of the
    /// deployment (a stopped or failed entry, another revision) is replaced. Idempotent:
    /// if `spec.revision` already runs, its runtime is returned.
    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        _previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("deploy")?;
        if let Some(runtime) = self.running(&spec.id, Some(spec.revision)) {
            return Ok(runtime);
        }
        ctx.events.progress(
            &spec.id,
            Phase::Preparing,
            format!("serving {}", spec.config.source.display()),
        );
        let port = spec.config.port.unwrap_or(0);
        self.bring_up(ctx, "deploy", spec, &[port], Duration::ZERO)
            .await
    }

    /// Starts the new revision on a new port (or, when the config fixes the port the old
    /// revision serves on, on that port after stopping the old one), gates it, then
    /// switches: the old server stops. On failure the old revision keeps serving (with a
    /// fixed port it is started again, when `auto_rollback` is set).
    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("update")?;
        let held = {
            let map = self.lock();
            let Some(entry) = map.get(&spec.id) else {
                return Err(Error::deployment_not_found(spec.id.as_str()));
            };
            match &entry.state {
                State::Running(s) if s.is_alive() => {
                    if s.revision == spec.revision {
                        return Ok(s.runtime());
                    }
                    Some((s.port, s.root.clone(), s.revision, entry.log.clone()))
                }
                _ => None,
            }
        };
        // Nothing serves: the new revision is deployed in place.
        let Some((old_port, old_root, old_revision, log)) = held else {
            return self.deploy(ctx, spec, Some(current)).await;
        };
        ctx.events.progress(
            &spec.id,
            Phase::Preparing,
            format!(
                "revision {} replaces {old_revision} (serving {})",
                spec.revision,
                spec.config.source.display()
            ),
        );
        let options = StaticOptions::of(&spec.config)?;
        let root = resolve_root(&spec.config).await?;
        let port = spec.config.port.unwrap_or(0);
        if port == 0 || port != old_port {
            let server = self
                .launch(
                    ctx,
                    "update",
                    spec,
                    root,
                    port,
                    &log,
                    &options,
                    Duration::ZERO,
                )
                .await?;
            ctx.events.progress(
                &spec.id,
                Phase::Switching,
                format!(
                    "revision {} serves on port {}; revision {old_revision} stops",
                    spec.revision, server.port
                ),
            );
            let runtime = server.runtime();
            let (_, old) = self.replace(&spec.id, State::Running(Box::new(server)));
            if let Some(old) = old {
                old.shutdown().await;
                log.push(system_line(format!(
                    "revision {old_revision} stopped serving on port {old_port}"
                )));
            }
            return Ok(runtime);
        }
        // The same fixed port: the old revision must free it first.
        let mut guard = self.starting(&spec.id);
        let (_, old) = self.replace(&spec.id, State::Starting);
        ctx.events.progress(
            &spec.id,
            Phase::Stopping,
            format!("revision {old_revision} stops to free port {port}"),
        );
        if let Some(old) = old {
            old.shutdown().await;
        }
        let result = self
            .launch(
                ctx,
                "update",
                spec,
                root,
                port,
                &log,
                &options,
                PORT_RELEASE_WAIT,
            )
            .await;
        let Err(error) = result else {
            return self.settle(&mut guard, result);
        };
        if !spec.config.update.auto_rollback {
            return self.settle(&mut guard, Err(error));
        }
        ctx.events.progress(
            &spec.id,
            Phase::CleaningUp,
            format!("restoring revision {old_revision} on port {port}"),
        );
        let old_spec =
            DeploymentSpec::new(spec.id.clone(), old_revision, current.spec.config.clone());
        // The restore must not inherit this call's cancellation.
        let restore_ctx = OperationContext::new(ctx.events.clone());
        let old_options = StaticOptions::of(&old_spec.config).unwrap_or_default();
        let restored = self
            .launch(
                &restore_ctx,
                "update",
                &old_spec,
                old_root,
                port,
                &log,
                &old_options,
                PORT_RELEASE_WAIT,
            )
            .await;
        match restored {
            Ok(server) => {
                let _ = self.settle(&mut guard, Ok(server));
                Err(error)
            }
            Err(e) => self.settle(
                &mut guard,
                Err(Error::provider(
                    NAME,
                    format!("{error}; revision {old_revision} could not be restored: {e}"),
                    false,
                )),
            ),
        }
    }

    /// Serves `known.spec` again: on its config's port, else on the port recorded in the
    /// details (an ephemeral one when that is taken). Works from the details alone on a
    /// fresh instance. Idempotent: a running deployment's runtime is returned.
    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        ctx.check_cancelled("start")?;
        let held = {
            let map = self.lock();
            match map.get(known.id()) {
                Some(Entry {
                    state: State::Running(s),
                    ..
                }) if s.is_alive() => return Ok(s.runtime()),
                Some(_) => true,
                None => false,
            }
        };
        let recorded = Recorded::of(&known.runtime);
        if !held && recorded.is_none() {
            return Err(Error::deployment_not_found(known.id().as_str()));
        }
        let ports: Vec<u16> = match (known.spec.config.port, recorded) {
            (Some(port), _) => vec![port],
            (None, Some(r)) => vec![r.port, 0],
            (None, None) => vec![0],
        };
        self.bring_up(ctx, "start", &known.spec, &ports, Duration::ZERO)
            .await
    }

    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        ctx.check_cancelled("stop")?;
        self.stop_server(ctx, known.id()).await;
        Ok(())
    }

    async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        ctx.check_cancelled("remove")?;
        self.stop_server(ctx, known.id()).await;
        self.lock().remove(known.id());
        Ok(())
    }

    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
        let map = self.lock();
        let entry = map
            .get(known.id())
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(match &entry.state {
            State::Running(s) if s.is_alive() => ObservedStatus::Running,
            State::Running(_) => ObservedStatus::failed("its server task ended"),
            State::Starting => ObservedStatus::Starting,
            State::Stopped => ObservedStatus::Stopped,
            State::Failed(reason) => ObservedStatus::failed(reason.clone()),
        })
    }

    async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
        let log = self
            .lock()
            .get(known.id())
            .map(|e| e.log.clone())
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(log.stream(query))
    }

    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
        let map = self.lock();
        let entry = map
            .get(known.id())
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        let log_bytes = entry.log.bytes() as u64;
        let mut metrics = Metrics::new();
        metrics.memory_bytes = Some(log_bytes);
        if let State::Running(s) = &entry.state {
            let open = s.stats.open.load(Ordering::Relaxed);
            metrics.memory_bytes = Some(log_bytes + SERVER_BYTES + open * CONNECTION_BYTES);
            metrics.uptime = Some(s.started.elapsed());
            metrics.port = Some(s.port);
            metrics.network_rx_bytes = Some(s.stats.rx_bytes.load(Ordering::Relaxed));
            metrics.network_tx_bytes = Some(s.stats.tx_bytes.load(Ordering::Relaxed));
        }
        Ok(metrics)
    }

    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
        let map = self.lock();
        let entry = map
            .get(known.id())
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(match &entry.state {
            State::Running(s) if s.is_alive() => match &s.health {
                Some(report) => health::read(report),
                None => HealthReport::new(HealthStatus::Unknown)
                    .with_detail("no health check configured"),
            },
            _ => HealthReport::new(HealthStatus::Unknown).with_detail("nothing runs"),
        })
    }

    /// Re-serves, on its recorded port, each deployment the store knows as running
    /// (its server ended with the process or instance that ran it); reports stopped ones
    /// stopped; answers failed when the directory vanished, the port is taken or nothing
    /// was recorded. What this instance already serves is adopted as it is.
    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        let mut found = Vec::with_capacity(known.len());
        let mut started: Vec<&DeploymentId> = Vec::new();
        for k in known {
            if ctx.is_cancelled() {
                for id in started {
                    self.stop_server(ctx, id).await;
                    self.lock().remove(id);
                }
                return Err(Error::Cancelled {
                    operation: "recover".to_owned(),
                });
            }
            let (id, revision) = (k.id().clone(), k.revision());
            let held = self.lock().get(&id).map(|e| match &e.state {
                State::Running(s) if s.is_alive() => {
                    RecoveredDeployment::running(id.clone(), s.revision, s.runtime())
                }
                State::Running(_) => RecoveredDeployment::failed(
                    id.clone(),
                    revision,
                    FailureReport::new("its server task ended"),
                ),
                State::Starting => {
                    let mut r =
                        RecoveredDeployment::stopped(id.clone(), revision, k.runtime.stopped());
                    r.status = ObservedStatus::Starting;
                    r
                }
                State::Stopped => {
                    RecoveredDeployment::stopped(id.clone(), revision, k.runtime.stopped())
                }
                State::Failed(reason) => RecoveredDeployment::failed(
                    id.clone(),
                    revision,
                    FailureReport::new(reason.clone()).with_logs(e.log.last(FAILURE_LOG_LINES)),
                ),
            });
            if let Some(answer) = held {
                found.push(answer);
                continue;
            }
            let Some(recorded) = Recorded::of(&k.runtime) else {
                found.push(RecoveredDeployment::failed(
                    id,
                    revision,
                    FailureReport::new("no static server was recorded for it (it never came up)"),
                ));
                continue;
            };
            if k.runtime.instances.is_empty() {
                // Stopped on purpose: what start needs is in the details.
                self.replace(&id, State::Stopped);
                found.push(RecoveredDeployment::stopped(
                    id,
                    revision,
                    (*k.runtime).clone(),
                ));
                continue;
            }
            if !is_dir(&k.spec.config.source).await {
                found.push(RecoveredDeployment::failed(
                    id,
                    revision,
                    FailureReport::new(format!(
                        "its source directory {} vanished",
                        k.spec.config.source.display()
                    )),
                ));
                continue;
            }
            match self
                .bring_up(ctx, "recover", &k.spec, &[recorded.port], PORT_RELEASE_WAIT)
                .await
            {
                Ok(runtime) => {
                    started.push(k.id());
                    found.push(RecoveredDeployment::running(id, revision, runtime));
                }
                Err(Error::Cancelled { .. }) => {
                    self.lock().remove(&id);
                    for id in started {
                        self.stop_server(ctx, id).await;
                        self.lock().remove(id);
                    }
                    return Err(Error::Cancelled {
                        operation: "recover".to_owned(),
                    });
                }
                Err(Error::PortInUse { port, .. }) => {
                    found.push(RecoveredDeployment::failed(
                        id,
                        revision,
                        FailureReport::new(format!("its port {port} is taken by another process")),
                    ));
                }
                Err(e) => {
                    let failure = e
                        .failure()
                        .cloned()
                        .unwrap_or_else(|| FailureReport::new(e.to_string()));
                    found.push(RecoveredDeployment::failed(id, revision, failure));
                }
            }
        }
        Ok(found)
    }
}
