//! [`MemoryProvider`]: the in-memory reference provider of contract v2, with fault
//! injection; [`MemoryBackend`]: the "platform" it runs deployments on.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::capability::{Capabilities, Capability};
use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::event::{EventSink, Phase};
use crate::failure::{ExitStatus, FailureReport};
use crate::id::{DeploymentId, Revision};
use crate::log::{LogLine, LogQuery, LogStream, OutputStream};
use crate::provider::{
    DeploymentSpec, HealthReport, HealthStatus, InstanceInfo, KnownDeployment, Metrics,
    ObservedStatus, OperationContext, Provider, RecoveredDeployment, RuntimeInfo,
};
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
    /// `recover`.
    Recover,
    /// `status` (delays do not apply to it; the other faults do).
    Status,
}

impl ProviderOp {
    fn as_str(self) -> &'static str {
        match self {
            ProviderOp::Deploy => "deploy",
            ProviderOp::Update => "update",
            ProviderOp::Start => "start",
            ProviderOp::Stop => "stop",
            ProviderOp::Remove => "remove",
            ProviderOp::Recover => "recover",
            ProviderOp::Status => "status",
        }
    }

    /// Every op, in declaration order (the index of the call counters).
    pub const ALL: [ProviderOp; 7] = [
        ProviderOp::Deploy,
        ProviderOp::Update,
        ProviderOp::Start,
        ProviderOp::Stop,
        ProviderOp::Remove,
        ProviderOp::Recover,
        ProviderOp::Status,
    ];
}

/// A fault to inject into one kind of call.
///
/// Errors and panics happen when the call begins, before it changes anything on the
/// platform (like an unreachable API). `Delay` and `Hang` happen at the call's wait
/// point: for `deploy` after the new instance was created (it shows as `Starting` in the
/// backend), for `update` before the switch (the old revision serves), for the others
/// before they act.
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
    /// Every call takes this long (racing cancellation), instead of the global
    /// [`MemoryProvider::set_delay`].
    Delay(Duration),
    /// Every call waits forever, ignoring cancellation: only dropping its future ends it
    /// (what the manager does when it abandons a call).
    Hang,
}

/// What happens to a deployment some time after an instance of it came up.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Ending {
    /// Crashes with exit code 1: `Failed`, reported through the sink's `failed`.
    Crash,
    /// Exits cleanly: `Exited`, reported through the sink's `exited`.
    Exit,
}

#[derive(Default)]
struct Faults {
    per_op: foldhash::HashMap<ProviderOp, Fault>,
    delay: Option<Duration>,
    ending: Option<(Ending, Duration)>,
    rng: Option<fastrand::Rng>,
    /// Whether calls in flight are counted ([`MemoryProvider::track_concurrency`]).
    track: bool,
    /// Mutating calls in flight per deployment: (now, highest seen).
    in_flight: foldhash::HashMap<DeploymentId, (u32, u32)>,
}

/// What [`Faults::decide`] makes of one call.
enum Decision {
    Proceed,
    Fail { transient: bool },
    Panic,
}

impl Faults {
    fn decide(&mut self, op: ProviderOp) -> (Decision, Wait) {
        let mut wait = match self.delay {
            Some(d) if op != ProviderOp::Status => Wait::Delay(d),
            _ => Wait::None,
        };
        let decision = match self.per_op.get_mut(&op) {
            None | Some(Fault::Transient(0)) => Decision::Proceed,
            Some(Fault::Panic) => Decision::Panic,
            Some(Fault::Permanent) => Decision::Fail { transient: false },
            Some(Fault::Transient(n)) => {
                *n -= 1;
                Decision::Fail { transient: true }
            }
            Some(Fault::RandomTransient(p)) => {
                let p = *p;
                let roll = self.rng.get_or_insert_with(fastrand::Rng::new).f64();
                if roll < p {
                    Decision::Fail { transient: true }
                } else {
                    Decision::Proceed
                }
            }
            Some(Fault::Delay(d)) => {
                wait = Wait::Delay(*d);
                Decision::Proceed
            }
            Some(Fault::Hang) => {
                wait = Wait::Hang;
                Decision::Proceed
            }
        };
        (decision, wait)
    }
}

/// How a call waits at its wait point.
#[derive(Clone, Copy)]
enum Wait {
    None,
    Delay(Duration),
    Hang,
}

/// The deployments a call is about, for counting calls in flight.
#[derive(Clone, Copy)]
enum Ids<'a> {
    None,
    One(&'a DeploymentId),
    Known(&'a [KnownDeployment]),
}

impl Ids<'_> {
    fn for_each(self, mut f: impl FnMut(&DeploymentId)) {
        match self {
            Ids::None => {}
            Ids::One(id) => f(id),
            Ids::Known(known) => known.iter().for_each(|k| f(k.id())),
        }
    }
}

/// One call in progress: counted in flight until dropped (also by a panic or when the
/// caller abandons the call's future).
struct Call<'a> {
    provider: &'a MemoryProvider,
    ids: Ids<'a>,
    wait: Wait,
    op: ProviderOp,
}

impl Call<'_> {
    /// The call's wait point: the configured delay racing cancellation, or a hang.
    async fn wait(&self, ctx: &OperationContext) -> Result<()> {
        match self.wait {
            Wait::None => {}
            Wait::Delay(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = ctx.cancel.cancelled() => {}
                }
            }
            Wait::Hang => std::future::pending::<()>().await,
        }
        ctx.check_cancelled(self.op.as_str())
    }
}

impl Call<'_> {
    /// Makes the call wait as long as a [`MemoryProvider::SLOW_LABEL`] asks (unless it
    /// hangs anyway).
    fn slow_down(&mut self, spec: &DeploymentSpec) {
        let labels = &spec.config.labels;
        if labels.is_empty() || matches!(self.wait, Wait::Hang) {
            return;
        }
        if let Some(ms) = labels.get(MemoryProvider::SLOW_LABEL) {
            let ms = ms.parse().unwrap_or(2000);
            self.wait = Wait::Delay(Duration::from_millis(ms));
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if matches!(self.ids, Ids::None) {
            return;
        }
        let mut faults = self.provider.faults();
        self.ids.for_each(|id| {
            if let Some((now, _)) = faults.in_flight.get_mut(id) {
                *now = now.saturating_sub(1);
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// The backend: the platform.
// ---------------------------------------------------------------------------------------

/// What the platform runs of one deployment.
#[derive(Clone, PartialEq, Debug)]
enum State {
    /// Created by a deploy that has not finished (or was abandoned).
    Starting,
    Running,
    Stopped,
    Exited(ExitStatus),
    Failed(String),
}

impl State {
    fn observed(&self) -> ObservedStatus {
        match self {
            State::Starting => ObservedStatus::Starting,
            State::Running => ObservedStatus::Running,
            State::Stopped => ObservedStatus::Stopped,
            State::Exited(exit) => ObservedStatus::Exited { exit: *exit },
            State::Failed(reason) => ObservedStatus::failed(reason.clone()),
        }
    }

    fn is_running(&self) -> bool {
        matches!(self, State::Running | State::Starting)
    }
}

/// The most log lines the backend keeps per deployment.
const MAX_LOG_LINES: usize = 1000;

struct Held {
    spec: DeploymentSpec,
    state: State,
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
    Stopped,
    Crashed,
    Exited,
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
            Text::Stopped => "stopped".to_owned(),
            Text::Crashed => "Error: crashed (injected)".to_owned(),
            Text::Exited => "exiting (injected)".to_owned(),
        };
        LogLine::at(self.at, self.stream, message).with_source(instance_name(self.instance))
    }
}

fn instance_name(instance: u32) -> String {
    format!("mem-{instance}")
}

impl Held {
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
        if self.logs.len() >= MAX_LOG_LINES {
            self.logs.drain(..MAX_LOG_LINES / 2);
        }
        self.logs.push(line);
    }

    fn rendered_logs(&self) -> Vec<LogLine> {
        self.logs.iter().map(Synthetic::render).collect()
    }

    /// Starts a new instance of `spec` (a new process), keeping the log history.
    fn start_instance(&mut self, backend: &MemoryBackend, spec: &DeploymentSpec, state: State) {
        let (instance, port) = backend.allocate(spec);
        self.spec = spec.clone();
        self.state = state;
        self.instance = instance;
        self.port = port;
        self.started_at = Timestamp::now();
        self.log(
            OutputStream::Stdout,
            Text::Listening {
                config: spec.config.clone(),
                revision: spec.revision,
                port,
            },
        );
    }

    fn runtime(&self) -> RuntimeInfo {
        let name = instance_name(self.instance);
        RuntimeInfo::new()
            .with_instance(
                InstanceInfo::new(name, self.spec.revision)
                    .with_port(Some(self.port))
                    .with_started_at(Some(self.started_at)),
            )
            .with_url(format!("memory://127.0.0.1:{}", self.port))
    }

    fn failure(&self, reason: &str) -> FailureReport {
        let report = FailureReport::new(reason).with_logs(self.rendered_logs());
        match &self.state {
            State::Failed(_) => report.with_exit(ExitStatus::Code(1)),
            State::Exited(exit) => report.with_exit(*exit),
            _ => report,
        }
    }
}

#[derive(Default)]
struct BackendInner {
    deployments: Mutex<foldhash::HashMap<DeploymentId, Held>>,
    /// Instances ever started (the last instance number).
    started: AtomicU32,
}

/// The platform a [`MemoryProvider`] runs deployments on: which deployments have
/// instances, at which revision, running or stopped, and their log lines.
///
/// Cheap to clone (shared). Providers built over the same backend
/// ([`MemoryProvider::with_backend`]) see the same deployments, as a daemon restarted on
/// the same machine sees the processes its predecessor started.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<BackendInner>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("deployments", &self.len())
            .field("instances_started", &self.instances_started())
            .finish()
    }
}

impl MemoryBackend {
    /// An empty platform.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, foldhash::HashMap<DeploymentId, Held>> {
        self.inner
            .deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new instance number and the port it serves on.
    fn allocate(&self, spec: &DeploymentSpec) -> (u32, u16) {
        let instance = self.inner.started.fetch_add(1, Ordering::Relaxed) + 1;
        let port = spec
            .config
            .port
            .unwrap_or_else(|| 20_000 + u16::try_from(instance % 40_000).unwrap_or(0));
        (instance, port)
    }

    fn new_held(&self, spec: &DeploymentSpec, state: State) -> Held {
        let mut held = Held {
            spec: spec.clone(),
            state: State::Stopped,
            port: 0,
            instance: 0,
            started_at: Timestamp::now(),
            logs: Vec::new(),
            live: None,
            restarts: 0,
        };
        held.start_instance(self, spec, state);
        held
    }

    /// Number of deployments it holds anything of (any state).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it holds anything of `id`.
    #[must_use]
    pub fn contains(&self, id: &DeploymentId) -> bool {
        self.lock().contains_key(id)
    }

    /// The state of `id` on the platform, if it holds anything of it.
    #[must_use]
    pub fn status(&self, id: &DeploymentId) -> Option<ObservedStatus> {
        self.lock().get(id).map(|h| h.state.observed())
    }

    /// The revision it holds of `id`.
    #[must_use]
    pub fn revision(&self, id: &DeploymentId) -> Option<Revision> {
        self.lock().get(id).map(|h| h.spec.revision)
    }

    /// The current instance of `id` (`"mem-7"`), as in its runtime's instance ids.
    #[must_use]
    pub fn instance(&self, id: &DeploymentId) -> Option<String> {
        self.lock().get(id).map(|h| instance_name(h.instance))
    }

    /// Number of deployments with an instance running (or starting).
    #[must_use]
    pub fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|h| h.state.is_running())
            .count()
    }

    /// Instances started since the backend was created (every deploy, update and start
    /// that got as far as starting one): for checking that nothing was started twice.
    #[must_use]
    pub fn instances_started(&self) -> u32 {
        self.inner.started.load(Ordering::Relaxed)
    }

    /// The log lines it keeps of `id`, oldest first.
    #[must_use]
    pub fn log_lines(&self, id: &DeploymentId) -> Option<Vec<LogLine>> {
        self.lock().get(id).map(Held::rendered_logs)
    }

    /// Deletes everything of `id`, as if it vanished behind the provider's back.
    pub fn vanish(&self, id: &DeploymentId) {
        self.lock().remove(id);
    }
}

// ---------------------------------------------------------------------------------------
// The provider.
// ---------------------------------------------------------------------------------------

/// What one provider instance (and its clones) owns: its name, faults, call counters and
/// supervision. Dropping the last clone ends its supervisors (crash timers), as a daemon's
/// exit ends its watchers; the platform's state stays in the backend.
struct Instance {
    name: Arc<str>,
    faults: Mutex<Faults>,
    calls: [AtomicU32; ProviderOp::ALL.len()],
    supervision: CancellationToken,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.supervision.cancel();
    }
}

/// An in-memory provider: deployments live in a [`MemoryBackend`], logs are synthetic
/// lines. It implements the whole [`Provider`] contract (v2) and passes the conformance
/// suite, which makes it the reference for provider authors and the workhorse for testing
/// the manager.
///
/// - **Stateless but for supervision.** Everything about deployments lives in the
///   backend; a fresh provider over the same backend ([`MemoryProvider::with_backend`])
///   recovers every deployment from what it is handed and what the backend shows (it
///   needs no [`RuntimeInfo::details`]: the backend is keyed by deployment id, and keeping
///   the details map empty keeps the manager's throughput benchmark honest about the
///   manager).
/// - **Idempotent by (deployment, revision).** `deploy` and `update` of a revision that
///   already runs answer its runtime; `deploy` replaces whatever else the backend holds of
///   the deployment; `stop` and `remove` of nothing succeed.
/// - **Health gate.** A config with the label [`MemoryProvider::FAIL_LABEL`] fails it
///   (deploy, update or start), like an app that never becomes healthy: a failed deploy
///   leaves nothing in the backend, a failed update leaves the old revision serving
///   (unless `update.auto_rollback` is off: then the deployment is left failed).
/// - **Faults.** See [`Fault`], [`MemoryProvider::set_delay`],
///   [`MemoryProvider::crash_after_deploy`], [`MemoryProvider::exit_after_deploy`],
///   [`MemoryProvider::calls`] and [`MemoryProvider::max_concurrent_calls`].
///
/// Cloning shares everything (faults, counters, backend): register a clone and keep one
/// to inject faults.
#[derive(Clone)]
pub struct MemoryProvider {
    instance: Arc<Instance>,
    backend: MemoryBackend,
}

impl std::fmt::Debug for MemoryProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProvider")
            .field("name", &self.instance.name)
            .field("backend", &self.backend)
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

    /// The label that makes a config slow to become ready: deploy, update and start of it
    /// wait the label's value in milliseconds (2000 when it is not a number) at their wait
    /// point, racing cancellation, like an app with a slow start.
    pub const SLOW_LABEL: &'static str = "conan.test/slow";

    /// A provider named `memory` on a backend of its own.
    #[must_use]
    pub fn new() -> Self {
        Self::named("memory")
    }

    /// A provider with another name (to register several), on a backend of its own.
    #[must_use]
    pub fn named(name: &str) -> Self {
        Self::named_with_backend(name, MemoryBackend::new())
    }

    /// A fresh provider named `memory` over `backend`: no faults, counters at zero, no
    /// supervision; what a restarted daemon would construct.
    #[must_use]
    pub fn with_backend(backend: MemoryBackend) -> Self {
        Self::named_with_backend("memory", backend)
    }

    /// A fresh provider named `name` over `backend`.
    #[must_use]
    pub fn named_with_backend(name: &str, backend: MemoryBackend) -> Self {
        Self {
            instance: Arc::new(Instance {
                name: name.into(),
                faults: Mutex::default(),
                calls: std::array::from_fn(|_| AtomicU32::new(0)),
                supervision: CancellationToken::new(),
            }),
            backend,
        }
    }

    /// The platform it runs on (shared): hand it to
    /// [`with_backend`](Self::with_backend) to build a fresh instance over it.
    #[must_use]
    pub fn backend(&self) -> MemoryBackend {
        self.backend.clone()
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.instance
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Injects `fault` into calls of `op` (replacing an earlier fault of `op`).
    pub fn inject(&self, op: ProviderOp, fault: Fault) {
        self.faults().per_op.insert(op, fault);
    }

    /// Removes every fault, delay, crash and exit.
    pub fn clear_faults(&self) {
        let mut f = self.faults();
        f.per_op.clear();
        f.delay = None;
        f.ending = None;
    }

    /// Makes every mutating call (all but `status` and the read-only ones) take `delay`
    /// at its wait point, racing cancellation.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.faults().delay = delay;
    }

    /// Makes every instance this provider starts (deploy, update, start) crash `after` it
    /// came up: the backend shows it failed and the provider reports it through the
    /// sink's [`failed`](EventSink::failed). Replaces [`exit_after_deploy`](Self::exit_after_deploy).
    pub fn crash_after_deploy(&self, after: Option<Duration>) {
        self.faults().ending = after.map(|a| (Ending::Crash, a));
    }

    /// Makes every instance this provider starts exit cleanly (code 0) `after` it came up:
    /// the backend shows it exited and the provider reports it through the sink's
    /// [`exited`](EventSink::exited). Replaces [`crash_after_deploy`](Self::crash_after_deploy).
    pub fn exit_after_deploy(&self, after: Option<Duration>) {
        self.faults().ending = after.map(|a| (Ending::Exit, a));
    }

    /// Seeds the random number generator of [`Fault::RandomTransient`].
    pub fn seed(&self, seed: u64) {
        self.faults().rng = Some(fastrand::Rng::with_seed(seed));
    }

    /// How many times `op` was called on this provider instance (and its clones),
    /// including failed calls.
    #[must_use]
    pub fn calls(&self, op: ProviderOp) -> u32 {
        self.instance.calls[op as usize].load(Ordering::Relaxed)
    }

    /// Starts (or stops) counting mutating calls in flight per deployment, for
    /// [`max_concurrent_calls`](Self::max_concurrent_calls). Off by default: it costs a
    /// lock per call, and the manager's throughput benchmark runs on this provider.
    pub fn track_concurrency(&self, on: bool) {
        self.faults().track = on;
    }

    /// The most mutating calls (`deploy`, `update`, `start`, `stop`, `remove`, `recover`)
    /// about `id` that were ever in flight at once on this provider instance while
    /// [`track_concurrency`](Self::track_concurrency) was on. The contract promises 1 (0
    /// if none was made); a call counts from its start until it returns or its future is
    /// dropped.
    #[must_use]
    pub fn max_concurrent_calls(&self, id: &DeploymentId) -> u32 {
        self.faults().in_flight.get(id).map_or(0, |&(_, max)| max)
    }

    /// [`max_concurrent_calls`](Self::max_concurrent_calls) over every deployment.
    #[must_use]
    pub fn max_concurrent_calls_any(&self) -> u32 {
        self.faults()
            .in_flight
            .values()
            .map(|&(_, max)| max)
            .max()
            .unwrap_or(0)
    }

    /// Number of deployments the backend holds (any state).
    #[must_use]
    pub fn len(&self) -> usize {
        self.backend.len()
    }

    /// Whether the backend holds no deployment.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.backend.is_empty()
    }

    /// Deletes a deployment from the backend as if it vanished behind the manager's back.
    pub fn vanish(&self, id: &DeploymentId) {
        self.backend.vanish(id);
    }

    /// Begins a call: counts it, checks cancellation and injected faults (one lock).
    fn enter<'a>(
        &'a self,
        ctx: Option<&OperationContext>,
        op: ProviderOp,
        mut ids: Ids<'a>,
    ) -> Result<Call<'a>> {
        self.instance.calls[op as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(ctx) = ctx {
            ctx.check_cancelled(op.as_str())?;
        }
        let (decision, wait) = {
            let mut faults = self.faults();
            let faults = &mut *faults;
            if !faults.track {
                ids = Ids::None;
            }
            ids.for_each(|id| {
                let (now, max) = faults.in_flight.entry(id.clone()).or_default();
                *now += 1;
                *max = (*max).max(*now);
            });
            faults.decide(op)
        };
        // From here the call is counted in flight until `call` drops (also when unwinding).
        let call = Call {
            provider: self,
            ids,
            wait,
            op,
        };
        match decision {
            Decision::Proceed => Ok(call),
            Decision::Panic => panic!("injected panic in {op:?}"),
            Decision::Fail { transient } => Err(Error::provider(
                self.instance.name.to_string(),
                format!(
                    "injected {} fault in {op:?}",
                    if transient { "transient" } else { "permanent" }
                ),
                transient,
            )),
        }
    }

    fn health_gate(spec: &DeploymentSpec) -> Result<()> {
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

    /// Arms the injected crash or exit of `instance`, if one is configured. The timer is
    /// this provider instance's supervision: it ends with the instance.
    fn supervise(&self, sink: &EventSink, id: &DeploymentId, instance: u32) {
        let Some((ending, after)) = self.faults().ending else {
            return;
        };
        let backend = self.backend.clone();
        let stop = self.instance.supervision.clone();
        let sink = sink.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(after) => {}
                () = stop.cancelled() => return,
            }
            let report = {
                let mut all = backend.lock();
                let Some(held) = all.get_mut(&id) else { return };
                if held.instance != instance || !held.state.is_running() {
                    return;
                }
                match ending {
                    Ending::Crash => {
                        held.log(OutputStream::Stderr, Text::Crashed);
                        held.state = State::Failed("crashed with exit code 1".to_owned());
                        Some(held.failure("crashed with exit code 1"))
                    }
                    Ending::Exit => {
                        held.log(OutputStream::Stdout, Text::Exited);
                        held.state = State::Exited(ExitStatus::Code(0));
                        None
                    }
                }
            };
            match report {
                Some(report) => sink.failed(&id, report),
                None => sink.exited(&id, ExitStatus::Code(0)),
            }
        });
    }

    fn not_found(id: &DeploymentId) -> Error {
        Error::deployment_not_found(id.as_str())
    }

    /// Reads the held state of `id`.
    fn read<T>(&self, id: &DeploymentId, f: impl FnOnce(&mut Held) -> T) -> Result<T> {
        self.backend
            .lock()
            .get_mut(id)
            .map(f)
            .ok_or_else(|| Self::not_found(id))
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &str {
        &self.instance.name
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

    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        _previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        let mut call = self.enter(Some(ctx), ProviderOp::Deploy, Ids::One(&spec.id))?;
        call.slow_down(spec);
        ctx.events
            .progress(&spec.id, Phase::Starting, "starting in memory");
        let instance = {
            let mut all = self.backend.lock();
            // The revision already runs (an earlier call got there): converge on it.
            if let Some(held) = all.get(&spec.id)
                && held.spec.revision == spec.revision
                && held.state == State::Running
            {
                return Ok(held.runtime());
            }
            // Anything else held (`previous`, or what an abandoned call left) is replaced.
            let state = if Self::health_gate(spec).is_err() {
                State::Starting
            } else if matches!(call.wait, Wait::None) {
                State::Running
            } else {
                State::Starting
            };
            let held = match all.entry(spec.id.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let held = e.into_mut();
                    held.restarts = 0;
                    held.start_instance(&self.backend, spec, state);
                    held
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.backend.new_held(spec, state))
                }
            };
            if held.state == State::Running {
                let runtime = held.runtime();
                let instance = held.instance;
                drop(all);
                drop(call);
                ctx.events.healthy(&spec.id);
                self.supervise(&ctx.events, &spec.id, instance);
                return Ok(runtime);
            }
            held.instance
        };
        // Slow path: a delay, a hang or a failing health gate.
        let outcome = match call.wait(ctx).await {
            Ok(()) => Self::health_gate(spec),
            Err(e) => Err(e),
        };
        let mut all = self.backend.lock();
        let Some(held) = all.get_mut(&spec.id).filter(|h| h.instance == instance) else {
            return Err(Self::not_found(&spec.id));
        };
        if let Err(e) = outcome {
            // Leave nothing behind: neither this attempt nor what it replaced.
            all.remove(&spec.id);
            return Err(e);
        }
        held.state = State::Running;
        let runtime = held.runtime();
        drop(all);
        drop(call);
        ctx.events.healthy(&spec.id);
        self.supervise(&ctx.events, &spec.id, instance);
        Ok(runtime)
    }

    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        let mut call = self.enter(Some(ctx), ProviderOp::Update, Ids::One(&spec.id))?;
        call.slow_down(spec);
        let done = self.read(current.id(), |held| {
            (held.spec.revision == spec.revision && held.state == State::Running)
                .then(|| held.runtime())
        })?;
        if let Some(runtime) = done {
            return Ok(runtime);
        }
        ctx.events.progress(
            &spec.id,
            Phase::Starting,
            "starting the new revision in memory",
        );
        // The new revision comes up beside the old one, which serves until the switch.
        call.wait(ctx).await?;
        if let Err(e) = Self::health_gate(spec) {
            if !spec.config.update.auto_rollback {
                self.read(current.id(), |held| {
                    held.state = State::Failed(format!("revision {} failed", spec.revision));
                })?;
            }
            return Err(e);
        }
        let (runtime, instance) = self.read(current.id(), |held| {
            held.start_instance(&self.backend, spec, State::Running);
            (held.runtime(), held.instance)
        })?;
        drop(call);
        ctx.events.healthy(&spec.id);
        self.supervise(&ctx.events, &spec.id, instance);
        Ok(runtime)
    }

    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        let mut call = self.enter(Some(ctx), ProviderOp::Start, Ids::One(known.id()))?;
        call.slow_down(&known.spec);
        let done = self.read(known.id(), |held| {
            (held.spec.revision == known.revision() && held.state == State::Running)
                .then(|| held.runtime())
        })?;
        if let Some(runtime) = done {
            return Ok(runtime);
        }
        ctx.events
            .progress(known.id(), Phase::Starting, "starting in memory");
        call.wait(ctx).await?;
        Self::health_gate(&known.spec)?;
        let (runtime, instance) = self.read(known.id(), |held| {
            held.start_instance(&self.backend, &known.spec, State::Running);
            (held.runtime(), held.instance)
        })?;
        drop(call);
        ctx.events.healthy(known.id());
        self.supervise(&ctx.events, known.id(), instance);
        Ok(runtime)
    }

    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        let call = self.enter(Some(ctx), ProviderOp::Stop, Ids::One(known.id()))?;
        call.wait(ctx).await?;
        if let Some(held) = self.backend.lock().get_mut(known.id())
            && held.state.is_running()
        {
            held.log(OutputStream::System, Text::Stopped);
            held.state = State::Stopped;
        }
        Ok(())
    }

    async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        let call = self.enter(Some(ctx), ProviderOp::Remove, Ids::One(known.id()))?;
        call.wait(ctx).await?;
        let removed = self.backend.lock().remove(known.id());
        drop(removed);
        Ok(())
    }

    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
        let call = self.enter(None, ProviderOp::Status, Ids::None)?;
        if matches!(call.wait, Wait::Hang) {
            std::future::pending::<()>().await;
        }
        self.read(known.id(), |held| held.state.observed())
    }

    async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
        let (history, live) = self.read(known.id(), |held| {
            let history = query.apply(&held.rendered_logs());
            let live = query.follow.then(|| {
                held.live
                    .get_or_insert_with(|| broadcast::channel(1024).0)
                    .subscribe()
            });
            (history, live)
        })?;
        Ok(query.clone().into_stream(history, live))
    }

    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
        self.read(known.id(), |held| {
            let running = held.state == State::Running;
            let mut m = Metrics::new();
            m.cpu_percent = running.then_some(0.0);
            m.memory_bytes = running.then_some(1 << 20);
            m.uptime = running.then(|| held.started_at.elapsed());
            m.restarts = held.restarts;
            m.port = running.then_some(held.port);
            m.pids = Some(u64::from(held.state.is_running()));
            m
        })
    }

    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
        self.read(known.id(), |held| {
            let status = match held.state {
                State::Running => HealthStatus::Healthy,
                State::Starting => HealthStatus::Starting,
                _ => HealthStatus::Unknown,
            };
            HealthReport::new(status).checked_at(Timestamp::now())
        })
    }

    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        let call = self.enter(Some(ctx), ProviderOp::Recover, Ids::Known(known))?;
        call.wait(ctx).await?;
        let mut adopted = Vec::new();
        let found = {
            let all = self.backend.lock();
            known
                .iter()
                .map(|k| {
                    let id = k.id().clone();
                    let Some(held) = all.get(&id) else {
                        return RecoveredDeployment::failed(
                            id,
                            k.revision(),
                            FailureReport::new("vanished while no manager was running")
                                .with_exit(ExitStatus::Unknown),
                        );
                    };
                    let revision = held.spec.revision;
                    match &held.state {
                        State::Running => {
                            adopted.push((id.clone(), held.instance));
                            RecoveredDeployment::running(id, revision, held.runtime())
                        }
                        // An instance a call abandoned before it came up: not serving.
                        State::Starting => RecoveredDeployment::failed(
                            id,
                            revision,
                            held.failure("interrupted before it became ready"),
                        ),
                        State::Stopped => {
                            RecoveredDeployment::stopped(id, revision, held.runtime().stopped())
                        }
                        State::Exited(exit) => {
                            let mut r = RecoveredDeployment::stopped(
                                id,
                                revision,
                                held.runtime().stopped(),
                            );
                            r.status = ObservedStatus::Exited { exit: *exit };
                            r
                        }
                        State::Failed(reason) => {
                            RecoveredDeployment::failed(id, revision, held.failure(reason))
                        }
                    }
                })
                .collect()
        };
        drop(call);
        // Supervise what was adopted, as this instance would have after starting it.
        for (id, instance) in adopted {
            self.supervise(&ctx.events, &id, instance);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderExt;

    fn spec(name: &str, revision: u64) -> DeploymentSpec {
        DeploymentSpec::new(
            DeploymentId::new(format!("dep-{name}")),
            Revision(revision),
            DeploymentConfig::builder(name).build_unchecked(),
        )
    }

    fn failing(name: &str, revision: u64) -> DeploymentSpec {
        DeploymentSpec::new(
            DeploymentId::new(format!("dep-{name}")),
            Revision(revision),
            DeploymentConfig::builder(name)
                .label(MemoryProvider::FAIL_LABEL, "yes")
                .build_unchecked(),
        )
    }

    fn ctx() -> OperationContext {
        OperationContext::detached()
    }

    #[tokio::test]
    async fn deploy_is_idempotent_and_replaces_what_is_held() {
        let p = MemoryProvider::new();
        let s = spec("idem", 1);
        let a = p.deploy(&ctx(), &s, None).await.unwrap();
        let b = p.deploy(&ctx(), &s, None).await.unwrap();
        assert_eq!(a, b, "the same revision converges on one instance");
        assert_eq!(p.backend().instances_started(), 1);
        let known = KnownDeployment::new(s.clone(), a.clone());
        p.stop(&ctx(), &known).await.unwrap();
        let s2 = spec("idem", 2);
        let c = p.deploy(&ctx(), &s2, Some(&known)).await.unwrap();
        assert_ne!(c.instances[0].id, a.instances[0].id);
        assert_eq!(p.backend().revision(&s.id), Some(Revision(2)));
        assert_eq!(p.len(), 1);
        // A failed deploy leaves nothing, including what it replaced.
        let known = KnownDeployment::new(s2, c);
        p.stop(&ctx(), &known).await.unwrap();
        assert!(
            p.deploy(&ctx(), &failing("idem", 3), Some(&known))
                .await
                .is_err()
        );
        assert!(p.is_empty());
    }

    #[tokio::test]
    async fn nothing_held_answers_not_found_or_succeeds() {
        let p = MemoryProvider::new();
        let known = KnownDeployment::from_spec(spec("ghost", 1));
        p.stop(&ctx(), &known).await.unwrap();
        p.remove(&ctx(), &known).await.unwrap();
        let nf = |r: Result<()>| assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
        nf(p.status(&known).await.map(drop));
        nf(p.start(&ctx(), &known).await.map(drop));
        nf(p.update(&ctx(), &known, &spec("ghost", 2)).await.map(drop));
        nf(p.logs(&known, &LogQuery::all()).await.map(drop));
        nf(p.metrics(&known).await.map(drop));
        nf(p.health(&known).await.map(drop));
    }

    #[tokio::test]
    async fn failed_update_keeps_the_old_revision_unless_rollback_is_off() {
        let p = MemoryProvider::new();
        let known = p.deploy_detached(&spec("upd", 1)).await.unwrap();
        assert!(p.update(&ctx(), &known, &failing("upd", 2)).await.is_err());
        assert_eq!(p.status(&known).await.unwrap(), ObservedStatus::Running);
        assert_eq!(p.backend().revision(known.id()), Some(Revision(1)));
        let next = spec("upd", 2);
        let a = p.update(&ctx(), &known, &next).await.unwrap();
        let b = p.update(&ctx(), &known, &next).await.unwrap();
        assert_eq!(a, b, "a repeated update converges");
        let mut no_rollback = failing("upd", 3);
        Arc::make_mut(&mut no_rollback.config).update.auto_rollback = false;
        assert!(p.update(&ctx(), &known, &no_rollback).await.is_err());
        assert!(matches!(
            p.status(&known).await.unwrap(),
            ObservedStatus::Failed { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_deploy_leaves_nothing() {
        let p = MemoryProvider::new();
        p.set_delay(Some(Duration::from_secs(10)));
        let s = spec("cancel", 1);
        let ctx = ctx();
        let cancel = ctx.cancel.clone();
        let deploy = p.deploy(&ctx, &s, None);
        let canceller = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(p.backend().status(&s.id), Some(ObservedStatus::Starting));
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(deploy, canceller);
        assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
        assert!(p.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_label_delays_until_cancelled() {
        let p = MemoryProvider::new();
        let mut s = spec("slow", 1);
        Arc::make_mut(&mut s.config)
            .labels
            .insert(MemoryProvider::SLOW_LABEL.into(), "5000".into());
        let started = tokio::time::Instant::now();
        p.deploy(&ctx(), &s, None).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        p.remove(&ctx(), &KnownDeployment::from_spec(s.clone()))
            .await
            .unwrap();
        let ctx = ctx();
        ctx.cancel.cancel();
        assert!(matches!(
            p.deploy(&ctx, &s, None).await,
            Err(Error::Cancelled { .. })
        ));
        assert!(p.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_call_ignores_cancellation_and_counts_in_flight_until_dropped() {
        let p = MemoryProvider::new();
        let known = p.deploy_detached(&spec("hang", 1)).await.unwrap();
        assert_eq!(p.max_concurrent_calls(known.id()), 0, "not tracked yet");
        p.track_concurrency(true);
        p.inject(ProviderOp::Stop, Fault::Hang);
        let ctx = ctx();
        ctx.cancel.cancel();
        // Cancelled before it begins: answers at once.
        assert!(p.stop(&ctx, &known).await.is_err());
        let ctx = OperationContext::detached();
        let stop = p.stop(&ctx, &known);
        tokio::pin!(stop);
        let waited = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                biased;
                _ = &mut stop => {}
                () = async { ctx.cancel.cancel(); std::future::pending::<()>().await } => {}
            }
        })
        .await;
        assert!(waited.is_err(), "a hang never answers");
        p.clear_faults();
        p.stop(&OperationContext::detached(), &known).await.unwrap();
        assert_eq!(
            p.max_concurrent_calls(known.id()),
            2,
            "the hung call overlapped"
        );
        assert_eq!(p.max_concurrent_calls_any(), 2);
    }

    #[tokio::test]
    async fn a_fresh_instance_recovers_from_known_and_the_backend() {
        let p = MemoryProvider::new();
        let run = p.deploy_detached(&spec("r-run", 1)).await.unwrap();
        let stopped = p.deploy_detached(&spec("r-stop", 1)).await.unwrap();
        p.stop(&ctx(), &stopped).await.unwrap();
        let gone = p.deploy_detached(&spec("r-gone", 1)).await.unwrap();
        p.vanish(gone.id());
        let fresh = MemoryProvider::with_backend(p.backend());
        drop(p);
        let found = fresh
            .recover(&ctx(), &[run.clone(), stopped.clone(), gone.clone()])
            .await
            .unwrap();
        assert_eq!(found[0].status, ObservedStatus::Running);
        assert_eq!(found[0].runtime.instances, run.runtime.instances);
        assert_eq!(found[1].status, ObservedStatus::Stopped);
        assert!(matches!(found[2].status, ObservedStatus::Failed { .. }));
        assert_eq!(
            fresh.backend().instances_started(),
            3,
            "nothing started twice"
        );
        // The fresh instance operates on what it recovered.
        let stopped = KnownDeployment::new(stopped.spec, found[1].runtime.clone());
        fresh.start(&ctx(), &stopped).await.unwrap();
        assert_eq!(fresh.backend().running(), 2);
        assert_eq!(fresh.calls(ProviderOp::Recover), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_crash_and_exit_are_reported_through_the_sink() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = OperationContext::new(EventSink::new(crate::event::EventBus::new(16), Some(tx)));
        let p = MemoryProvider::new();
        p.crash_after_deploy(Some(Duration::from_secs(1)));
        let s = spec("crash", 1);
        p.deploy(&ctx, &s, None).await.unwrap();
        let report = rx.recv().await.unwrap();
        assert!(matches!(report.status, ObservedStatus::Failed { .. }));
        assert_eq!(report.failure.unwrap().exit, Some(ExitStatus::Code(1)));
        p.exit_after_deploy(Some(Duration::from_secs(1)));
        p.deploy(&ctx, &spec("crash", 2), None).await.unwrap();
        let report = rx.recv().await.unwrap();
        assert_eq!(
            report.status,
            ObservedStatus::Exited {
                exit: ExitStatus::Code(0)
            }
        );
        // Supervision ends with the provider instance.
        p.deploy(&ctx, &spec("crash", 3), None).await.unwrap();
        let backend = p.backend();
        drop(p);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(backend.status(&s.id), Some(ObservedStatus::Running));
    }
}
