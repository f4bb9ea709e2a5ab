//! [`FaultyProvider`]: fault injection around any provider.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::capability::Capabilities;
use crate::error::{Error, Result};
use crate::log::{LogQuery, LogStream};
use crate::provider::{
    DeploymentSpec, HealthReport, KnownDeployment, Metrics, ObservedStatus, OperationContext,
    Provider, RecoveredDeployment, RuntimeInfo,
};

/// A kind of [`Provider`] call faults can target.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Call {
    /// [`Provider::deploy`].
    Deploy,
    /// [`Provider::update`].
    Update,
    /// [`Provider::start`].
    Start,
    /// [`Provider::stop`].
    Stop,
    /// [`Provider::remove`].
    Remove,
    /// [`Provider::recover`].
    Recover,
    /// [`Provider::status`].
    Status,
    /// [`Provider::logs`].
    Logs,
    /// [`Provider::metrics`].
    Metrics,
    /// [`Provider::health`].
    Health,
}

impl Call {
    /// Every kind of call.
    pub const ALL: [Call; 10] = [
        Call::Deploy,
        Call::Update,
        Call::Start,
        Call::Stop,
        Call::Remove,
        Call::Recover,
        Call::Status,
        Call::Logs,
        Call::Metrics,
        Call::Health,
    ];

    /// The method's name (`"deploy"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Deploy => "deploy",
            Call::Update => "update",
            Call::Start => "start",
            Call::Stop => "stop",
            Call::Remove => "remove",
            Call::Recover => "recover",
            Call::Status => "status",
            Call::Logs => "logs",
            Call::Metrics => "metrics",
            Call::Health => "health",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault injected into one kind of call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum CallFault {
    /// The next `n` calls fail with a transient [`Error::Provider`] (without reaching the
    /// wrapped provider); later calls pass through.
    Transient(u32),
    /// Every call fails with a permanent [`Error::Provider`], without reaching the wrapped
    /// provider.
    Permanent,
    /// Every call waits this long before passing through. A call with a context races
    /// the wait against `ctx.cancel`: cancelled, it answers [`Error::Cancelled`] without
    /// reaching the wrapped provider. Read-only calls (no context) just wait.
    Delay(Duration),
    /// Every call passes through, and then its answer is held back this long (the work
    /// is done, the answer is late); cancellation is ignored, as by a provider that does
    /// not check its token.
    DelayAnswer(Duration),
    /// Every call never answers, ignoring cancellation, without reaching the wrapped
    /// provider (a wedged platform): only dropping the future ends it.
    Hang,
    /// Every call passes through, and then never answers, ignoring cancellation (the
    /// work is done, the answer is lost): only dropping the future ends it.
    HangAfter,
    /// Every call panics (a provider bug), without reaching the wrapped provider.
    Panic,
}

/// What one call does, decided under the lock and acted on after it is released.
enum Action {
    Pass,
    Fail { transient: bool },
    Delay(Duration),
    DelayAnswer(Duration),
    Hang,
    HangAfter,
    Panic,
}

/// Wraps any [`Provider`] and injects faults into chosen kinds of call
/// (the idea of `object_store`'s `ThrottledStore`), to test what sits on top of a provider
/// — the manager's retries, deadlines, cancellation and panic containment — over a real
/// provider rather than a mock.
///
/// ```
/// use std::time::Duration;
///
/// use conan_core::testing::{Call, CallFault, FaultyProvider, MemoryProvider};
///
/// let provider = FaultyProvider::new(MemoryProvider::new());
/// // The next two deploys fail with a transient error, then deploys pass through.
/// provider.inject(Call::Deploy, CallFault::Transient(2));
/// // Every stop takes 5 s (cut short when the call is cancelled).
/// provider.inject(Call::Stop, CallFault::Delay(Duration::from_secs(5)));
/// assert_eq!(provider.calls(Call::Deploy), 0);
/// ```
///
/// Faults are per call kind, one at a time ([`inject`](FaultyProvider::inject) replaces the
/// earlier one of that kind). Every call is counted ([`calls`](FaultyProvider::calls)),
/// and so is every call that reached the wrapped provider
/// ([`forwarded`](FaultyProvider::forwarded)). `name` and `capabilities` always pass
/// through.
///
/// Cloning shares the faults and counters (and clones the wrapped provider: wrap an
/// `Arc<P>` to share that too). To drive it through a manager and keep a handle for
/// injecting faults, register an `Arc<FaultyProvider<P>>` with `provider_arc` and keep a
/// clone of the `Arc`; `FaultyProvider<Arc<DynProvider>>` wraps a provider known only as a
/// trait object.
#[derive(Clone)]
pub struct FaultyProvider<P> {
    inner: P,
    shared: Arc<Shared>,
}

struct Shared {
    faults: Mutex<[Option<CallFault>; Call::ALL.len()]>,
    calls: [AtomicU32; Call::ALL.len()],
    forwarded: [AtomicU32; Call::ALL.len()],
}

impl<P: Provider> std::fmt::Debug for FaultyProvider<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let faults = *self.faults();
        let injected: Vec<_> = Call::ALL
            .iter()
            .filter_map(|c| faults[c.index()].map(|fault| (c.as_str(), fault)))
            .collect();
        f.debug_struct("FaultyProvider")
            .field("inner", &self.inner.name())
            .field("faults", &injected)
            .finish_non_exhaustive()
    }
}

impl<P: Provider> FaultyProvider<P> {
    /// Wraps `inner`, with no fault injected.
    #[must_use]
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared {
                faults: Mutex::new([None; Call::ALL.len()]),
                calls: std::array::from_fn(|_| AtomicU32::new(0)),
                forwarded: std::array::from_fn(|_| AtomicU32::new(0)),
            }),
        }
    }

    /// The wrapped provider.
    #[must_use]
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped provider, unwrapped.
    #[must_use]
    pub fn into_inner(self) -> P {
        self.inner
    }

    fn faults(&self) -> MutexGuard<'_, [Option<CallFault>; Call::ALL.len()]> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Injects `fault` into calls of `call` (replacing an earlier fault of `call`).
    pub fn inject(&self, call: Call, fault: CallFault) -> &Self {
        self.faults()[call.index()] = Some(fault);
        self
    }

    /// Removes the fault of `call`.
    pub fn clear(&self, call: Call) -> &Self {
        self.faults()[call.index()] = None;
        self
    }

    /// Removes every fault.
    pub fn clear_all(&self) -> &Self {
        *self.faults() = [None; Call::ALL.len()];
        self
    }

    /// The fault currently injected into `call` (a `Transient(n)` counts down to 0).
    #[must_use]
    pub fn fault(&self, call: Call) -> Option<CallFault> {
        self.faults()[call.index()]
    }

    /// How many times `call` was made (including calls a fault answered).
    #[must_use]
    pub fn calls(&self, call: Call) -> u32 {
        self.shared.calls[call.index()].load(Ordering::Relaxed)
    }

    /// How many calls of `call` reached the wrapped provider.
    #[must_use]
    pub fn forwarded(&self, call: Call) -> u32 {
        self.shared.forwarded[call.index()].load(Ordering::Relaxed)
    }

    /// Counts the call and decides what it does.
    fn action(&self, call: Call) -> Action {
        self.shared.calls[call.index()].fetch_add(1, Ordering::Relaxed);
        let mut faults = self.faults();
        match &mut faults[call.index()] {
            None | Some(CallFault::Transient(0)) => Action::Pass,
            Some(CallFault::Transient(n)) => {
                *n -= 1;
                Action::Fail { transient: true }
            }
            Some(CallFault::Permanent) => Action::Fail { transient: false },
            Some(CallFault::Delay(d)) => Action::Delay(*d),
            Some(CallFault::DelayAnswer(d)) => Action::DelayAnswer(*d),
            Some(CallFault::Hang) => Action::Hang,
            Some(CallFault::HangAfter) => Action::HangAfter,
            Some(CallFault::Panic) => Action::Panic,
        }
    }

    fn injected_error(&self, call: Call, transient: bool) -> Error {
        Error::provider(
            self.inner.name(),
            format!(
                "injected {} fault in {call}",
                if transient { "transient" } else { "permanent" }
            ),
            transient,
        )
    }

    /// Runs `forward` (the call to the wrapped provider) under the fault of `call`.
    async fn run<T, F>(&self, call: Call, ctx: Option<&OperationContext>, forward: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let after = match self.action(call) {
            Action::Pass => None,
            Action::Fail { transient } => return Err(self.injected_error(call, transient)),
            Action::Panic => panic!("injected panic in {call}"),
            Action::Hang => return std::future::pending().await,
            Action::Delay(d) => {
                match ctx {
                    Some(ctx) => {
                        tokio::select! {
                            () = tokio::time::sleep(d) => {}
                            () = ctx.cancel.cancelled() => {}
                        }
                        ctx.check_cancelled(call.as_str())?;
                    }
                    None => tokio::time::sleep(d).await,
                }
                None
            }
            Action::DelayAnswer(d) => Some(Some(d)),
            Action::HangAfter => Some(None),
        };
        self.shared.forwarded[call.index()].fetch_add(1, Ordering::Relaxed);
        let answer = forward.await;
        match after {
            None => answer,
            Some(Some(d)) => {
                tokio::time::sleep(d).await;
                answer
            }
            Some(None) => std::future::pending().await,
        }
    }
}

#[async_trait]
impl<P: Provider> Provider for FaultyProvider<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        self.run(
            Call::Deploy,
            Some(ctx),
            self.inner.deploy(ctx, spec, previous),
        )
        .await
    }

    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        self.run(
            Call::Update,
            Some(ctx),
            self.inner.update(ctx, current, spec),
        )
        .await
    }

    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        self.run(Call::Start, Some(ctx), self.inner.start(ctx, known))
            .await
    }

    async fn replace(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
    ) -> Result<RuntimeInfo> {
        self.run(Call::Start, Some(ctx), self.inner.replace(ctx, known))
            .await
    }

    async fn scale(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
        replicas: u32,
    ) -> Result<RuntimeInfo> {
        self.run(
            Call::Update,
            Some(ctx),
            self.inner.scale(ctx, known, replicas),
        )
        .await
    }

    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        self.run(Call::Stop, Some(ctx), self.inner.stop(ctx, known))
            .await
    }

    async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        self.run(Call::Remove, Some(ctx), self.inner.remove(ctx, known))
            .await
    }

    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
        self.run(Call::Status, None, self.inner.status(known)).await
    }

    async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
        self.run(Call::Logs, None, self.inner.logs(known, query))
            .await
    }

    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
        self.run(Call::Metrics, None, self.inner.metrics(known))
            .await
    }

    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
        self.run(Call::Health, None, self.inner.health(known)).await
    }

    async fn probe(
        &self,
        known: &KnownDeployment,
        check: &crate::config::HealthCheck,
    ) -> Result<crate::probe::ProbeOutcome> {
        self.run(Call::Health, None, self.inner.probe(known, check))
            .await
    }

    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        self.run(Call::Recover, Some(ctx), self.inner.recover(ctx, known))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use futures::FutureExt;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::DeploymentConfig;
    use crate::event::EventSink;
    use crate::id::{DeploymentId, Revision};
    use crate::provider::{DynProvider, ProviderExt};
    use crate::testing::MemoryProvider;

    fn spec(name: &str) -> DeploymentSpec {
        DeploymentSpec::new(
            DeploymentId::generate(),
            Revision::FIRST,
            DeploymentConfig::builder(name).build_unchecked(),
        )
    }

    fn ctx() -> OperationContext {
        OperationContext::detached()
    }

    #[tokio::test]
    async fn without_faults_every_call_passes_through_and_is_counted() {
        let p = FaultyProvider::new(MemoryProvider::new());
        assert_eq!(p.name(), p.inner().name());
        assert_eq!(p.capabilities(), p.inner().capabilities());
        let spec = spec("pass");
        let known = p.deploy_detached(&spec).await.unwrap();
        assert_eq!(p.status(&known).await.unwrap(), ObservedStatus::Running);
        p.metrics(&known).await.unwrap();
        p.health(&known).await.unwrap();
        p.logs_vec(&known, &LogQuery::all()).await.unwrap();
        p.recover(&ctx(), std::slice::from_ref(&known))
            .await
            .unwrap();
        p.stop(&ctx(), &known).await.unwrap();
        p.remove(&ctx(), &known).await.unwrap();
        for call in [
            Call::Deploy,
            Call::Status,
            Call::Metrics,
            Call::Health,
            Call::Logs,
            Call::Recover,
            Call::Stop,
            Call::Remove,
        ] {
            assert_eq!((p.calls(call), p.forwarded(call)), (1, 1), "{call}");
        }
        assert_eq!(p.calls(Call::Update), 0);
        assert!(matches!(
            p.inner().status(&known).await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn transient_faults_fail_n_times_then_pass_through() {
        let p = FaultyProvider::new(MemoryProvider::new());
        p.inject(Call::Deploy, CallFault::Transient(2));
        let spec = spec("transient");
        for _ in 0..2 {
            let err = p.deploy(&ctx(), &spec, None).await.unwrap_err();
            assert!(err.is_transient(), "{err}");
            assert!(
                err.to_string()
                    .contains("injected transient fault in deploy")
            );
        }
        assert_eq!(p.fault(Call::Deploy), Some(CallFault::Transient(0)));
        let runtime = p.deploy(&ctx(), &spec, None).await.unwrap();
        assert!(!runtime.instances.is_empty());
        assert_eq!((p.calls(Call::Deploy), p.forwarded(Call::Deploy)), (3, 1));
        p.remove(&ctx(), &KnownDeployment::new(spec, runtime))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn permanent_faults_fail_every_call_until_cleared() {
        let p = FaultyProvider::new(MemoryProvider::new());
        let spec = spec("permanent");
        let known = p.deploy_detached(&spec).await.unwrap();
        p.inject(Call::Stop, CallFault::Permanent)
            .inject(Call::Status, CallFault::Permanent);
        for _ in 0..3 {
            let err = p.stop(&ctx(), &known).await.unwrap_err();
            assert!(!err.is_transient(), "{err}");
        }
        assert!(p.status(&known).await.is_err());
        assert_eq!(p.forwarded(Call::Stop), 0);
        // Nothing reached the provider: it still runs.
        assert_eq!(
            p.inner().status(&known).await.unwrap(),
            ObservedStatus::Running
        );
        p.clear(Call::Stop);
        p.stop(&ctx(), &known).await.unwrap();
        p.clear_all();
        assert_eq!(p.status(&known).await.unwrap(), ObservedStatus::Stopped);
        p.remove(&ctx(), &known).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn delays_pass_through_after_waiting() {
        let p = FaultyProvider::new(MemoryProvider::new());
        p.inject(Call::Deploy, CallFault::Delay(Duration::from_secs(10)));
        let spec = spec("delay");
        let began = tokio::time::Instant::now();
        let runtime = p.deploy(&ctx(), &spec, None).await.unwrap();
        assert!(began.elapsed() >= Duration::from_secs(10));
        let known = KnownDeployment::new(spec, runtime);
        p.inject(Call::Status, CallFault::Delay(Duration::from_secs(3)));
        let began = tokio::time::Instant::now();
        assert_eq!(p.status(&known).await.unwrap(), ObservedStatus::Running);
        assert!(began.elapsed() >= Duration::from_secs(3));
        p.remove(&ctx(), &known).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_is_cut_short_by_cancellation_without_reaching_the_provider() {
        let p = FaultyProvider::new(MemoryProvider::new());
        p.inject(Call::Deploy, CallFault::Delay(Duration::from_secs(3600)));
        let spec = spec("delay-cancel");
        let cancel = CancellationToken::new();
        let ctx = OperationContext::with_cancel(EventSink::detached(), cancel.clone());
        let began = tokio::time::Instant::now();
        let (result, ()) = futures::join!(p.deploy(&ctx, &spec, None), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        });
        assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
        assert!(began.elapsed() < Duration::from_secs(2));
        assert_eq!(p.forwarded(Call::Deploy), 0);
        let known = KnownDeployment::from_spec(spec);
        assert!(matches!(
            p.inner().status(&known).await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_answer_comes_late_but_the_work_is_done() {
        let p = FaultyProvider::new(MemoryProvider::new());
        p.inject(
            Call::Deploy,
            CallFault::DelayAnswer(Duration::from_secs(60)),
        );
        let spec = spec("delay-answer");
        let known = KnownDeployment::from_spec(spec.clone());
        let ctx = ctx();
        let timed_out =
            tokio::time::timeout(Duration::from_secs(5), p.deploy(&ctx, &spec, None)).await;
        assert!(timed_out.is_err(), "the answer is held back");
        assert_eq!(p.forwarded(Call::Deploy), 1);
        assert_eq!(
            p.inner().status(&known).await.unwrap(),
            ObservedStatus::Running
        );
        p.clear(Call::Deploy);
        p.remove(&ctx, &known).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn hangs_ignore_cancellation_and_end_only_when_dropped() {
        let p = FaultyProvider::new(MemoryProvider::new());
        p.inject(Call::Deploy, CallFault::Hang);
        let spec = spec("hang");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let cancelled = OperationContext::with_cancel(EventSink::detached(), cancel);
        let hung =
            tokio::time::timeout(Duration::from_secs(3600), p.deploy(&cancelled, &spec, None))
                .await;
        assert!(hung.is_err(), "a hung call never answers, even cancelled");
        assert_eq!((p.calls(Call::Deploy), p.forwarded(Call::Deploy)), (1, 0));
        let known = KnownDeployment::from_spec(spec.clone());
        assert!(matches!(
            p.inner().status(&known).await,
            Err(Error::NotFound { .. })
        ));

        // HangAfter: the work is done, the answer never comes.
        p.inject(Call::Deploy, CallFault::HangAfter);
        let hung =
            tokio::time::timeout(Duration::from_secs(3600), p.deploy(&ctx(), &spec, None)).await;
        assert!(hung.is_err());
        assert_eq!(p.forwarded(Call::Deploy), 1);
        assert_eq!(
            p.inner().status(&known).await.unwrap(),
            ObservedStatus::Running
        );
        p.remove(&ctx(), &known).await.unwrap();
    }

    #[tokio::test]
    async fn panics_are_injected_and_the_provider_stays_usable() {
        let p = FaultyProvider::new(MemoryProvider::new());
        p.inject(Call::Update, CallFault::Panic);
        let spec = spec("panic");
        let known = p.deploy_detached(&spec).await.unwrap();
        let next = DeploymentSpec::new(spec.id.clone(), spec.revision.next(), spec.config.clone());
        let outcome = AssertUnwindSafe(p.update(&ctx(), &known, &next))
            .catch_unwind()
            .await;
        let panic = outcome.expect_err("the update panics");
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        assert!(message.contains("injected panic in update"), "{message}");
        assert_eq!(p.forwarded(Call::Update), 0);
        // The faults lock is not poisoned: the provider keeps working.
        p.clear(Call::Update);
        p.update(&ctx(), &known, &next).await.unwrap();
        p.remove(&ctx(), &KnownDeployment::from_spec(next))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn works_as_a_trait_object_and_shares_faults_between_clones() {
        let p = FaultyProvider::new(Arc::new(MemoryProvider::new()));
        let shared: Arc<DynProvider> = Arc::new(p.clone());
        p.inject(Call::Start, CallFault::Transient(1));
        let spec = spec("dyn");
        let known = shared.deploy_detached(&spec).await.unwrap();
        shared.stop(&ctx(), &known).await.unwrap();
        assert!(
            shared
                .start(&ctx(), &known)
                .await
                .unwrap_err()
                .is_transient()
        );
        shared.start(&ctx(), &known).await.unwrap();
        assert_eq!((p.calls(Call::Start), p.forwarded(Call::Start)), (2, 1));
        assert_eq!(p.calls(Call::Deploy), 1);
        shared.remove(&ctx(), &known).await.unwrap();
        assert!(format!("{p:?}").contains("FaultyProvider"));
    }
}
