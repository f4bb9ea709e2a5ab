//! [`MemoryProvider`]: the in-memory reference provider, with fault injection.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::capability::{Capabilities, Capability};
use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::event::{EventSink, Phase};
use crate::failure::{ExitStatus, FailureReport};
use crate::id::{DeploymentId, Revision};
use crate::log::{LogLine, LogQuery, LogStream, OutputStream};
use crate::provider::{
    DeploymentSpec, HealthReport, HealthStatus, InstanceInfo, Metrics, OperationContext, Provider,
    RecoveredDeployment, RuntimeInfo,
};
use crate::status::DeploymentStatus;
use crate::time::Timestamp;

/// The provider calls faults can target.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ProviderOp {
    /// `deploy`.
    Deploy,
    /// `update`.
    Update,
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `remove`.
    Remove,
}

impl ProviderOp {
    fn as_str(self) -> &'static str {
        match self {
            ProviderOp::Deploy => "deploy",
            ProviderOp::Update => "update",
            ProviderOp::Start => "start",
            ProviderOp::Stop => "stop",
            ProviderOp::Remove => "remove",
        }
    }

    const ALL: [ProviderOp; 5] = [
        ProviderOp::Deploy,
        ProviderOp::Update,
        ProviderOp::Start,
        ProviderOp::Stop,
        ProviderOp::Remove,
    ];
}

/// A fault to inject into one kind of call.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Fault {
    /// The next `n` calls fail with a transient error.
    Transient(u32),
    /// Every call fails with a permanent error.
    Permanent,
    /// Each call fails transiently with this probability (seeded, see
    /// [`MemoryProvider::seed`]).
    RandomTransient(f64),
    /// Every call panics (a provider bug), to test that callers contain it.
    Panic,
}

#[derive(Default)]
struct Faults {
    per_op: foldhash::HashMap<ProviderOp, Fault>,
    delay: Option<Duration>,
    crash_after_deploy: Option<Duration>,
    rng: Option<fastrand::Rng>,
}

struct Deployment {
    spec: DeploymentSpec,
    status: DeploymentStatus,
    port: u16,
    instance: u32,
    started_at: Timestamp,
    logs: Vec<Synthetic>,
    /// Created on the first follow, so deployments nobody follows cost no channel.
    live: Option<broadcast::Sender<LogLine>>,
    restarts: u32,
}

/// A synthetic log line, kept as data and rendered into a [`LogLine`] only when someone
/// reads or follows it: deployments whose logs nobody reads cost no text formatting.
#[derive(Clone)]
struct Synthetic {
    at: Timestamp,
    stream: OutputStream,
    instance: u32,
    text: Text,
}

#[derive(Clone)]
enum Text {
    Listening {
        config: Arc<DeploymentConfig>,
        revision: Revision,
        port: u16,
    },
    Started(Revision),
    Stopped,
    Crashed,
}

impl Synthetic {
    fn render(&self) -> LogLine {
        let message = match &self.text {
            Text::Listening {
                config,
                revision,
                port,
            } => format!(
                "{} revision {revision} listening on port {port}",
                config.name
            ),
            Text::Started(revision) => format!("started revision {revision}"),
            Text::Stopped => "stopped".to_owned(),
            Text::Crashed => "Error: crashed (injected)".to_owned(),
        };
        LogLine::at(self.at, self.stream, message).with_source(format!("mem-{}", self.instance))
    }
}

impl Deployment {
    fn log(&mut self, stream: OutputStream, text: Text) {
        let line = Synthetic {
            at: Timestamp::now(),
            stream,
            instance: self.instance,
            text,
        };
        if let Some(live) = &self.live {
            let _ = live.send(line.render());
        }
        self.logs.push(line);
    }

    fn rendered_logs(&self) -> Vec<LogLine> {
        self.logs.iter().map(Synthetic::render).collect()
    }

    fn runtime(&self) -> RuntimeInfo {
        RuntimeInfo {
            instances: vec![InstanceInfo {
                id: format!("mem-{}", self.instance),
                port: Some(self.port),
                started_at: Some(self.started_at),
                revision: self.spec.revision,
            }],
            url: Some(format!("memory://127.0.0.1:{}", self.port)),
            details: serde_json::Map::new(),
        }
    }
}

/// An in-memory provider: deployments are entries in a map, logs are synthetic lines.
/// It implements the whole [`Provider`] contract and passes the conformance suite, which
/// makes it the reference for provider authors and the workhorse for testing the manager.
///
/// A config with the label [`MemoryProvider::FAIL_LABEL`] fails its health gate
/// (deploy, update or start), like an app that never becomes healthy.
///
/// Cloning shares the state, so two managers can share one provider to test recovery.
#[derive(Clone)]
pub struct MemoryProvider {
    name: Arc<str>,
    deployments: Arc<Mutex<foldhash::HashMap<DeploymentId, Deployment>>>,
    faults: Arc<Mutex<Faults>>,
    calls: Arc<[AtomicU32; ProviderOp::ALL.len()]>,
    next_instance: Arc<AtomicU32>,
}

impl std::fmt::Debug for MemoryProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProvider")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryProvider {
    /// The label that makes a config fail its health gate.
    pub const FAIL_LABEL: &'static str = "conan.test/fail";

    /// A provider named `memory`.
    #[must_use]
    pub fn new() -> Self {
        Self::named("memory")
    }

    /// A provider with another name (to register several).
    #[must_use]
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            deployments: Arc::default(),
            faults: Arc::default(),
            calls: Arc::new(std::array::from_fn(|_| AtomicU32::new(0))),
            next_instance: Arc::new(AtomicU32::new(1)),
        }
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn deployments(&self) -> MutexGuard<'_, foldhash::HashMap<DeploymentId, Deployment>> {
        self.deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Injects `fault` into calls of `op` (replacing an earlier fault of `op`).
    pub fn inject(&self, op: ProviderOp, fault: Fault) {
        self.faults().per_op.insert(op, fault);
    }

    /// Removes every fault, delay and crash.
    pub fn clear_faults(&self) {
        let mut f = self.faults();
        f.per_op.clear();
        f.delay = None;
        f.crash_after_deploy = None;
    }

    /// Makes every mutating call take `delay` (cancellable through the context).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.faults().delay = delay;
    }

    /// Makes every deployment crash (Failed, reported through the event sink) `after` its
    /// deploy succeeded.
    pub fn crash_after_deploy(&self, after: Option<Duration>) {
        self.faults().crash_after_deploy = after;
    }

    /// Seeds the random number generator of [`Fault::RandomTransient`].
    pub fn seed(&self, seed: u64) {
        self.faults().rng = Some(fastrand::Rng::with_seed(seed));
    }

    /// How many times `op` was called (including failed calls).
    #[must_use]
    pub fn calls(&self, op: ProviderOp) -> u32 {
        self.calls[op as usize].load(Ordering::Relaxed)
    }

    /// Number of deployments it holds (any status).
    #[must_use]
    pub fn len(&self) -> usize {
        self.deployments().len()
    }

    /// Whether it holds no deployment.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets a deployment as if it vanished behind the manager's back.
    pub fn vanish(&self, id: &DeploymentId) {
        self.deployments().remove(id);
    }

    async fn enter(&self, ctx: &OperationContext, op: ProviderOp) -> Result<()> {
        self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
        // One lock when there is no delay (the common case).
        let delay = {
            let mut faults = self.faults();
            match faults.delay {
                Some(delay) => delay,
                None => {
                    ctx.check_cancelled(op.as_str())?;
                    return self.injected(&mut faults, op);
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.cancel.cancelled() => {}
        }
        ctx.check_cancelled(op.as_str())?;
        self.injected(&mut self.faults(), op)
    }

    /// The fault injected into this call of `op`, if any.
    fn injected(&self, faults: &mut Faults, op: ProviderOp) -> Result<()> {
        let fail = match faults.per_op.get_mut(&op) {
            None => None,
            // The faults lock is poisoned by this; `faults()` recovers from that.
            Some(Fault::Panic) => panic!("injected panic in {op:?}"),
            Some(Fault::Permanent) => Some(false),
            Some(Fault::Transient(0)) => None,
            Some(Fault::Transient(n)) => {
                *n -= 1;
                Some(true)
            }
            Some(Fault::RandomTransient(p)) => {
                let roll = faults.rng.get_or_insert_with(fastrand::Rng::new).f64();
                (roll < *p).then_some(true)
            }
        };
        match fail {
            None => Ok(()),
            Some(transient) => Err(Error::provider(
                self.name.to_string(),
                format!(
                    "injected {} fault in {op:?}",
                    if transient { "transient" } else { "permanent" }
                ),
                transient,
            )),
        }
    }

    fn health_gate(&self, spec: &DeploymentSpec) -> Result<()> {
        if spec.config.labels.contains_key(Self::FAIL_LABEL) {
            let logs = vec![LogLine::new(
                OutputStream::Stderr,
                "Error: cannot start (injected failure)",
            )];
            return Err(Error::HealthCheckFailed {
                deployment: spec.config.name.clone(),
                failure: Box::new(
                    FailureReport::new(format!("revision {} never became healthy", spec.revision))
                        .with_exit(ExitStatus::Code(1))
                        .with_probe("connection refused")
                        .with_logs(logs),
                ),
            });
        }
        Ok(())
    }

    fn new_deployment(&self, spec: &DeploymentSpec) -> Deployment {
        let instance = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let port = spec
            .config
            .port
            .unwrap_or_else(|| 20_000 + u16::try_from(instance % 40_000).unwrap_or(0));
        let mut d = Deployment {
            spec: spec.clone(),
            status: DeploymentStatus::Running,
            port,
            instance,
            started_at: Timestamp::now(),
            logs: Vec::new(),
            live: None,
            restarts: 0,
        };
        d.log(
            OutputStream::Stdout,
            Text::Listening {
                config: spec.config.clone(),
                revision: spec.revision,
                port,
            },
        );
        d
    }

    fn schedule_crash(&self, sink: &EventSink, id: &DeploymentId, instance: u32) {
        let Some(after) = self.faults().crash_after_deploy else {
            return;
        };
        let me = self.clone();
        let sink = sink.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let report = {
                let mut all = me.deployments();
                let Some(d) = all.get_mut(&id) else { return };
                if d.instance != instance || !d.status.is_running() {
                    return;
                }
                d.log(OutputStream::Stderr, Text::Crashed);
                d.status = DeploymentStatus::failed("crashed with exit code 1");
                FailureReport::new("crashed with exit code 1")
                    .with_exit(ExitStatus::Code(1))
                    .with_logs(d.rendered_logs())
            };
            sink.failed(&id, report);
        });
    }

    fn not_found(id: &DeploymentId) -> Error {
        Error::deployment_not_found(id.as_str())
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        [
            Capability::RollingUpdate,
            Capability::BlueGreen,
            Capability::HealthChecks,
            Capability::Metrics,
            Capability::LogFollow,
            Capability::Recovery,
            Capability::Replicas,
            Capability::Supervision,
        ]
        .into_iter()
        .collect()
    }

    async fn deploy(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        self.enter(ctx, ProviderOp::Deploy).await?;
        ctx.events
            .progress(&spec.id, Phase::Starting, "starting in memory");
        if self.deployments().contains_key(&spec.id) {
            return Err(Error::AlreadyExists {
                name: spec.config.name.clone(),
            });
        }
        self.health_gate(spec)?;
        let d = self.new_deployment(spec);
        let (runtime, instance) = (d.runtime(), d.instance);
        self.deployments().insert(spec.id.clone(), d);
        ctx.events.healthy(&spec.id);
        self.schedule_crash(&ctx.events, &spec.id, instance);
        Ok(runtime)
    }

    async fn update(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        self.enter(ctx, ProviderOp::Update).await?;
        if !self.deployments().contains_key(&spec.id) {
            return Err(Self::not_found(&spec.id));
        }
        // A failing revision leaves the old one untouched (automatic rollback).
        self.health_gate(spec)?;
        let mut all = self.deployments();
        let d = all
            .get_mut(&spec.id)
            .ok_or_else(|| Self::not_found(&spec.id))?;
        let logs = std::mem::take(&mut d.logs);
        *d = Deployment {
            logs,
            restarts: d.restarts,
            ..self.new_deployment(spec)
        };
        Ok(d.runtime())
    }

    async fn start(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        self.enter(ctx, ProviderOp::Start).await?;
        self.health_gate(spec)?;
        let mut all = self.deployments();
        let d = all
            .get_mut(&spec.id)
            .ok_or_else(|| Self::not_found(&spec.id))?;
        d.spec = spec.clone();
        d.status = DeploymentStatus::Running;
        d.started_at = Timestamp::now();
        d.log(OutputStream::Stdout, Text::Started(spec.revision));
        Ok(d.runtime())
    }

    async fn stop(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()> {
        self.enter(ctx, ProviderOp::Stop).await?;
        let mut all = self.deployments();
        let d = all.get_mut(id).ok_or_else(|| Self::not_found(id))?;
        if d.status.is_running() {
            d.log(OutputStream::System, Text::Stopped);
        }
        d.status = DeploymentStatus::Stopped;
        Ok(())
    }

    async fn remove(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()> {
        self.enter(ctx, ProviderOp::Remove).await?;
        self.deployments()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| Self::not_found(id))
    }

    async fn status(&self, id: &DeploymentId) -> Result<DeploymentStatus> {
        self.deployments()
            .get(id)
            .map(|d| d.status.clone())
            .ok_or_else(|| Self::not_found(id))
    }

    async fn logs(&self, id: &DeploymentId, query: &LogQuery) -> Result<LogStream> {
        let mut all = self.deployments();
        let d = all.get_mut(id).ok_or_else(|| Self::not_found(id))?;
        let history = query.apply(&d.rendered_logs());
        let live = query.follow.then(|| {
            d.live
                .get_or_insert_with(|| broadcast::channel(1024).0)
                .subscribe()
        });
        Ok(query.clone().into_stream(history, live))
    }

    async fn metrics(&self, id: &DeploymentId) -> Result<Metrics> {
        let all = self.deployments();
        let d = all.get(id).ok_or_else(|| Self::not_found(id))?;
        let running = d.status.is_running();
        Ok(Metrics {
            cpu_percent: running.then_some(0.0),
            memory_bytes: running.then_some(1 << 20),
            uptime: running.then(|| d.started_at.elapsed()),
            restarts: d.restarts,
            port: running.then_some(d.port),
            pids: Some(u64::from(running)),
            ..Metrics::default()
        })
    }

    async fn health(&self, id: &DeploymentId) -> Result<HealthReport> {
        let all = self.deployments();
        let d = all.get(id).ok_or_else(|| Self::not_found(id))?;
        Ok(HealthReport {
            checked_at: Some(Timestamp::now()),
            ..HealthReport::new(if d.status.is_running() {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unknown
            })
        })
    }

    async fn recover(
        &self,
        _ctx: &OperationContext,
        known: &[DeploymentSpec],
    ) -> Result<Vec<RecoveredDeployment>> {
        let all = self.deployments();
        Ok(known
            .iter()
            .map(|spec| match all.get(&spec.id) {
                Some(d) => RecoveredDeployment {
                    id: spec.id.clone(),
                    revision: d.spec.revision,
                    status: d.status.clone(),
                    runtime: d.runtime(),
                    failure: None,
                },
                None => RecoveredDeployment {
                    id: spec.id.clone(),
                    revision: spec.revision,
                    status: DeploymentStatus::failed("vanished while no manager was running"),
                    runtime: RuntimeInfo::default(),
                    failure: Some(FailureReport::new("vanished while no manager was running")),
                },
            })
            .collect())
    }
}
