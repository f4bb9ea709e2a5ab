//! [`MemoryProvider`]: the in-memory reference provider of contract v2, with fault
//! injection; [`MemoryBackend`]: the "platform" it runs deployments on.

mod backend;
mod faults;
#[cfg(test)]
mod tests;

pub use backend::MemoryBackend;
pub use faults::{Fault, ProviderOp};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::capability::{Capabilities, Capability};
use crate::error::{Error, Result};
use crate::event::{EventSink, Phase};
use crate::failure::{ExitStatus, FailureReport};
use crate::id::DeploymentId;
use crate::log::{LogLine, LogQuery, LogStream, OutputStream};
use crate::provider::{
    DeploymentSpec, HealthReport, HealthStatus, KnownDeployment, Metrics, ObservedStatus,
    OperationContext, Provider, RecoveredDeployment, RuntimeInfo,
};
use crate::time::Timestamp;

use backend::{Held, State, Text};
use faults::{Call, Decision, Ending, Faults, Ids, Wait};

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

    /// Makes probes ([`Provider::probe`]) of deployment `name` fail with `detail`
    /// (`None`: pass again). Probes of a running deployment pass otherwise.
    pub fn set_unhealthy(&self, name: &str, detail: Option<&str>) {
        let mut f = self.faults();
        match detail {
            Some(d) => f.unhealthy.insert(name.to_owned(), d.to_owned()),
            None => f.unhealthy.remove(name),
        };
    }

    /// Makes the metrics of deployment `name` show `bytes` of resident memory (`None`:
    /// the default 1 MiB).
    pub fn set_memory(&self, name: &str, bytes: Option<u64>) {
        let mut f = self.faults();
        match bytes {
            Some(b) => f.memory.insert(name.to_owned(), b),
            None => f.memory.remove(name),
        };
    }

    /// Makes the metrics of deployment `name` show `percent` of CPU (of one core, all its
    /// instances together; `None`: the default 0).
    pub fn set_cpu(&self, name: &str, percent: Option<f64>) {
        let mut f = self.faults();
        match percent {
            Some(p) => f.cpu.insert(name.to_owned(), p),
            None => f.cpu.remove(name),
        };
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
        let (decision, wait, ending) = {
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
            let (decision, wait) = faults.decide(op);
            (decision, wait, faults.ending)
        };
        // From here the call is counted in flight until `call` drops (also when unwinding).
        let call = Call {
            provider: self,
            ids,
            wait,
            op,
            ending,
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
    fn supervise(
        &self,
        ending: Option<(Ending, Duration)>,
        sink: &EventSink,
        id: &DeploymentId,
        instance: u32,
    ) {
        let Some((ending, after)) = ending else {
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
            Capability::Scale,
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
        let ending = call.ending;
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
                let parts = held.runtime_parts();
                let instance = held.instance;
                drop(all);
                let runtime = parts.build();
                drop(call);
                ctx.events.healthy(&spec.id);
                self.supervise(ending, &ctx.events, &spec.id, instance);
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
        self.supervise(ending, &ctx.events, &spec.id, instance);
        Ok(runtime)
    }

    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        let mut call = self.enter(Some(ctx), ProviderOp::Update, Ids::One(&spec.id))?;
        let ending = call.ending;
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
        self.supervise(ending, &ctx.events, &spec.id, instance);
        Ok(runtime)
    }

    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        let mut call = self.enter(Some(ctx), ProviderOp::Start, Ids::One(known.id()))?;
        let ending = call.ending;
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
        self.supervise(ending, &ctx.events, known.id(), instance);
        Ok(runtime)
    }

    /// Records the count in the held spec (the backend runs one instance whatever the
    /// count) after the call's wait, like instances that start; the cutover sees it.
    async fn scale(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
        replicas: u32,
    ) -> Result<RuntimeInfo> {
        let call = self.enter(Some(ctx), ProviderOp::Scale, Ids::One(known.id()))?;
        call.wait(ctx).await?;
        let runtime = self.read(known.id(), |held| {
            if !held.state.is_running() {
                return None;
            }
            std::sync::Arc::make_mut(&mut held.spec.config).replicas = replicas;
            Some(held.runtime())
        })?;
        let runtime = runtime.ok_or_else(|| Self::not_found(known.id()))?;
        drop(call);
        ctx.cutover(&runtime).await;
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
        let memory = self
            .faults()
            .memory
            .get(&known.spec.config.name)
            .copied()
            .unwrap_or(1 << 20);
        let cpu = self
            .faults()
            .cpu
            .get(&known.spec.config.name)
            .copied()
            .unwrap_or(0.0);
        self.read(known.id(), |held| {
            let running = held.state == State::Running;
            let mut m = Metrics::new();
            m.cpu_percent = running.then_some(cpu);
            m.memory_bytes = running.then_some(memory);
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

    async fn probe(
        &self,
        known: &KnownDeployment,
        _check: &crate::config::HealthCheck,
    ) -> Result<crate::probe::ProbeOutcome> {
        let failing = self
            .faults()
            .unhealthy
            .get(&known.spec.config.name)
            .cloned();
        let running = self.read(known.id(), |held| held.state == State::Running)?;
        Ok(match (running, failing) {
            (false, _) => crate::probe::ProbeOutcome::unhealthy("memory: not running"),
            (true, Some(detail)) => crate::probe::ProbeOutcome::unhealthy(detail),
            (true, None) => crate::probe::ProbeOutcome::healthy("memory: running"),
        })
    }

    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        let call = self.enter(Some(ctx), ProviderOp::Recover, Ids::Known(known))?;
        let ending = call.ending;
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
            self.supervise(ending, &ctx.events, &id, instance);
        }
        Ok(found)
    }
}
