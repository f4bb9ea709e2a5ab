//! The provider conformance suite (v2): the behaviour every [`Provider`](crate::Provider)
//! must show, as stated in the [provider contract](crate::provider).
//!
//! # Running it
//!
//! A provider crate runs it against itself, with a [`ConformanceHarness`] that knows how to
//! build a **fresh provider instance** over the same backing platform (the same state
//! directory, the same Docker daemon, the same in-memory backend), as a restarted daemon
//! would, and how to make configs the provider can run:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use conan_core::testing::conformance::{self, ConformanceHarness};
//! use conan_core::{DeploymentConfig, DynProvider};
//! # fn my_provider(_state_dir: &std::path::Path) -> Arc<DynProvider> { unimplemented!() }
//! # fn processes_of(_id: &conan_core::DeploymentId) -> Vec<String> { Vec::new() }
//!
//! # async fn demo() {
//! let state_dir = std::env::temp_dir().join("my-provider-conformance");
//! let harness = ConformanceHarness::new(
//!     // Every call builds a new instance over the same state dir.
//!     move || my_provider(&state_dir),
//!     |name| DeploymentConfig::builder(name).source("examples/apps/hello").build_unchecked(),
//! )
//! // An app that exits at once: enables the failure checks.
//! .with_failing_config(|name| {
//!     DeploymentConfig::builder(name).source("examples/apps/crash").build_unchecked()
//! })
//! // An app that takes seconds to become ready: enables the mid-deploy cancellation check.
//! .with_slow_config(|name| {
//!     DeploymentConfig::builder(name).source("examples/apps/slow").build_unchecked()
//! })
//! // What of a deployment is still on the platform (processes, containers, ...).
//! .with_leftovers(|id| {
//!     let id = id.clone();
//!     Box::pin(async move { processes_of(&id) })
//! })
//! .timeout(Duration::from_secs(60));
//! conformance::run_all(&harness).await;
//! # }
//! ```
//!
//! Every check is also a public `async fn` taking the harness, so a crate can run them one
//! by one (one `#[tokio::test]` each, to see which rule broke) and skip what it cannot do.
//! Capability differences are harness options or the provider's
//! [`capabilities`](crate::Provider::capabilities): checks of optional behaviour (failing
//! and slow configs, leftovers, following logs, recovery) run only when the harness or the
//! capabilities say so.
//!
//! # What each check proves
//!
//! | check | contract rule |
//! |---|---|
//! | [`unknown_ids_are_not_found`] | `status`, `logs`, `metrics`, `health`, `start`, `update` of an unknown id answer `NotFound`; `stop` and `remove` of it succeed |
//! | [`deploy_reports_running`] | `deploy` returns once ready, with instances at the spec's revision; `status` says `Running` |
//! | [`deploy_emits_progress`] | a deploy reports progress on the sink of **its** context, about its deployment only, and never a failure when it succeeded |
//! | [`deploy_is_idempotent`] | the same spec deployed twice: one running revision, no `AlreadyExists`, one instance set on the platform |
//! | [`update_rolls_out`] | `update` of a running deployment ends with the new revision serving alone |
//! | [`update_is_idempotent`] | the same update twice converges on the new revision, one instance set |
//! | [`deploy_replaces_stopped`] | `deploy(rev2, Some(stopped))` (an update or rollback of a stopped deployment) runs rev2 |
//! | [`deploy_replaces_failed`] | `deploy(good rev2, Some(failed))` after a failed first deploy runs rev2 |
//! | [`stop_then_start`] | `stop` stops (twice is fine); `start(known)` resumes at the known revision, and again is a no-op |
//! | [`remove_forgets`] | after `remove`, `status` is `NotFound` (also for a fresh instance), nothing is left, a second remove succeeds |
//! | [`failed_deploy_leaves_nothing`] | a deploy that never becomes ready fails permanently and leaves nothing behind |
//! | [`failed_update_keeps_old`] | a failing update leaves the previous revision serving, and nothing of the attempt |
//! | [`deploy_honours_cancelled_token`] | a deploy whose token is already cancelled answers `Cancelled` and leaves nothing |
//! | [`cancellation_mid_deploy`] | cancelling a slow deploy after ~300 ms answers `Cancelled` within a few seconds and leaves nothing |
//! | [`concurrent_operations_through_manager`] | several deployments deployed, updated, stopped, started and removed at once through a [`DeploymentManager`] all end as expected |
//! | [`logs_answer_queries`] | logs show the app's lines, `tail` and filters apply; following (with `LogFollow`) starts with the history |
//! | [`metrics_and_health`] | metrics answer (memory with `Metrics`); health is the latest observation: healthy once the gate passed, `Unknown` once nothing runs |
//! | [`recovery_across_instances`] | with `Recovery`: a **fresh** instance adopts a running deployment from the store's knowledge alone (same revision, same instance ids, nothing started twice) and can stop and remove it; without it: the fresh instance does not claim it runs |
//!
//! A broken rule panics with a message that starts with the check's name and states the
//! rule (`remove_forgets: after remove, status must answer NotFound, got Ok(Running)`).
//!
//! # Cleanup
//!
//! Each check deploys under a fresh unique name (`cf-<check>-<random>`) and removes what it
//! created, also when the check fails: the panic is caught, the deployments the check
//! tracked are removed (through the check's provider instance, then through a fresh one if
//! that fails), and then the panic continues.
//!
//! Run the checks of one suite one after another (as [`run_all`] does) and do not run two
//! suites over the same backing platform at once: `recover` may clean up what the
//! deployments it is given do not explain, which includes other suites' deployments.
//!
//! The suite is test support: its API is **not covered by semver**.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::capability::Capability;
use crate::config::DeploymentConfig;
use crate::error::Error;
use crate::event::{Event, EventBus, EventEnvelope, EventSink, StatusReport};
use crate::id::{DeploymentId, Revision};
use crate::log::LogQuery;
use crate::manager::{DeploymentManager, RetryPolicy};
use crate::provider::{
    DeploymentSpec, DynProvider, HealthStatus, KnownDeployment, ObservedStatus, OperationContext,
    ProviderExt, RuntimeInfo,
};
use crate::status::DeploymentStatus;
use crate::testing::wait_until;

/// `assert_eq!` whose message starts with the caller's (which names the check and rule).
macro_rules! check_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if *left != *right {
                    panic!(
                        "{} (got {:?}, expected {:?})",
                        format_args!($($msg)+),
                        left,
                        right
                    );
                }
            }
        }
    };
}

type MakeProvider = Arc<dyn Fn() -> Arc<DynProvider> + Send + Sync>;
type MakeConfig = Arc<dyn Fn(&str) -> DeploymentConfig + Send + Sync>;
type Leftovers = Arc<dyn Fn(&DeploymentId) -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// How soon after the token is cancelled a deploy must answer [`Error::Cancelled`].
pub const CANCEL_WITHIN: Duration = Duration::from_secs(5);

/// When the mid-deploy cancellation check cancels the slow deploy.
pub const CANCEL_AFTER: Duration = Duration::from_millis(300);

/// What the suite needs to know about the provider under test.
///
/// Test support: **not covered by semver** (checks and options are added as the contract
/// grows).
pub struct ConformanceHarness {
    make: MakeProvider,
    config: MakeConfig,
    failing_config: Option<MakeConfig>,
    slow_config: Option<MakeConfig>,
    leftovers: Option<Leftovers>,
    expects_logs: bool,
    timeout: Duration,
}

impl std::fmt::Debug for ConformanceHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConformanceHarness")
            .field("failing_config", &self.failing_config.is_some())
            .field("slow_config", &self.slow_config.is_some())
            .field("leftovers", &self.leftovers.is_some())
            .field("expects_logs", &self.expects_logs)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ConformanceHarness {
    /// A harness for the provider `make` builds.
    ///
    /// `make` builds a **fresh** provider instance over the same backing platform each
    /// call (same state dir, same Docker daemon, same `MemoryBackend`), as a restarted
    /// daemon would. The suite calls it for each check, and again to test recovery across
    /// instances. `config` makes a valid config named by its argument, whose app becomes
    /// ready.
    ///
    /// Defaults: logs expected, 30 s timeout, no failing or slow config, no leftovers
    /// lister.
    pub fn new(
        make: impl Fn() -> Arc<DynProvider> + Send + Sync + 'static,
        config: impl Fn(&str) -> DeploymentConfig + Send + Sync + 'static,
    ) -> Self {
        Self {
            make: Arc::new(make),
            config: Arc::new(config),
            failing_config: None,
            slow_config: None,
            leftovers: None,
            expects_logs: true,
            timeout: Duration::from_secs(30),
        }
    }

    /// A config (named by the argument) whose app never becomes ready (it exits at once,
    /// never answers its health check). Enables the failure checks.
    #[must_use]
    pub fn with_failing_config(
        mut self,
        f: impl Fn(&str) -> DeploymentConfig + Send + Sync + 'static,
    ) -> Self {
        self.failing_config = Some(Arc::new(f));
        self
    }

    /// A config whose app takes at least ~2 s to become ready. Enables the check that
    /// cancels a deploy midway ([`cancellation_mid_deploy`]).
    #[must_use]
    pub fn with_slow_config(
        mut self,
        f: impl Fn(&str) -> DeploymentConfig + Send + Sync + 'static,
    ) -> Self {
        self.slow_config = Some(Arc::new(f));
        self
    }

    /// Lists what of a deployment is still on the platform (processes, containers,
    /// networks, temp dirs ...), one entry per thing. It must be empty after a remove, a
    /// failed deploy and a cancelled deploy, and keep its size across an idempotent
    /// deploy, an update and a recovery.
    #[must_use]
    pub fn with_leftovers(
        mut self,
        f: impl Fn(&DeploymentId) -> BoxFuture<'static, Vec<String>> + Send + Sync + 'static,
    ) -> Self {
        self.leftovers = Some(Arc::new(f));
        self
    }

    /// Whether the app of `config` writes at least one log line when it starts.
    #[must_use]
    pub fn expects_logs(mut self, yes: bool) -> Self {
        self.expects_logs = yes;
        self
    }

    /// How long to wait for a provider call to answer and for eventual conditions (log
    /// lines appearing, health settling, leftovers going away). Default 30 s.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// A fresh provider instance (calls `make`).
    #[must_use]
    pub fn make_provider(&self) -> Arc<DynProvider> {
        (self.make)()
    }

    /// What of `id` is still on the platform; `None` without a leftovers lister.
    pub async fn leftovers(&self, id: &DeploymentId) -> Option<Vec<String>> {
        match &self.leftovers {
            Some(list) => Some(list(id).await),
            None => None,
        }
    }

    /// A first-revision spec of a fresh deployment under a unique name, made by `make`.
    fn spec_with(make: &MakeConfig, check: &str) -> DeploymentSpec {
        let name = unique_name(check);
        DeploymentSpec::new(DeploymentId::generate(), Revision::FIRST, make(&name))
    }
}

fn unique_name(check: &str) -> String {
    let mut base: String = check
        .chars()
        .map(|c| if c == '_' { '-' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    base.make_ascii_lowercase();
    format!("cf-{base}-{:08x}", fastrand::u32(..))
}

fn ctx() -> OperationContext {
    OperationContext::detached()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ids(runtime: &RuntimeInfo) -> Vec<String> {
    let mut ids: Vec<String> = runtime.instances.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    ids
}

fn next_revision(spec: &DeploymentSpec) -> DeploymentSpec {
    DeploymentSpec::new(spec.id.clone(), spec.revision.next(), spec.config.clone())
}

/// One check's provider instance and the deployments it must clean up.
struct Scope<'h> {
    h: &'h ConformanceHarness,
    check: &'static str,
    /// `None` between dropping one instance and building the next.
    provider: Mutex<Option<Arc<DynProvider>>>,
    tracked: Mutex<Vec<KnownDeployment>>,
}

impl<'h> Scope<'h> {
    fn new(h: &'h ConformanceHarness, check: &'static str) -> Self {
        Self {
            h,
            check,
            provider: Mutex::new(Some(h.make_provider())),
            tracked: Mutex::new(Vec::new()),
        }
    }

    fn provider(&self) -> Arc<DynProvider> {
        let mut current = lock(&self.provider);
        current
            .get_or_insert_with(|| self.h.make_provider())
            .clone()
    }

    /// Drops the check's provider instance, then builds a fresh one (as a restarted
    /// daemon would) and makes it the one later calls and cleanup go through.
    fn restart_provider(&self) -> Arc<DynProvider> {
        let old = lock(&self.provider).take();
        drop(old);
        let fresh = self.h.make_provider();
        *lock(&self.provider) = Some(fresh.clone());
        fresh
    }

    /// Remembers (the latest known state of) a deployment to remove at the end.
    fn track(&self, known: &KnownDeployment) {
        let mut tracked = lock(&self.tracked);
        match tracked.iter_mut().find(|k| k.id() == known.id()) {
            Some(k) => *k = known.clone(),
            None => tracked.push(known.clone()),
        }
    }

    fn spec(&self) -> DeploymentSpec {
        let spec = ConformanceHarness::spec_with(&self.h.config, self.check);
        self.track(&KnownDeployment::from_spec(spec.clone()));
        spec
    }

    fn failing_spec(&self) -> Option<DeploymentSpec> {
        let make = self.h.failing_config.as_ref()?;
        let spec = ConformanceHarness::spec_with(make, self.check);
        self.track(&KnownDeployment::from_spec(spec.clone()));
        Some(spec)
    }

    /// Awaits a provider call, failing the check when it does not answer within the
    /// harness's timeout.
    async fn within<T>(&self, what: &str, call: impl std::future::Future<Output = T>) -> T {
        match tokio::time::timeout(self.h.timeout, call).await {
            Ok(answer) => answer,
            Err(_) => panic!(
                "{}: {what} did not answer within {:?} (calls are bounded; a provider must answer)",
                self.check, self.h.timeout
            ),
        }
    }

    /// Deploys `spec` with `previous`, expecting success; tracks the result.
    async fn deploy(
        &self,
        spec: &DeploymentSpec,
        previous: Option<&KnownDeployment>,
    ) -> KnownDeployment {
        let provider = self.provider();
        let runtime = self
            .within("deploy", provider.deploy(&ctx(), spec, previous))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: deploy of a valid config (revision {}) must succeed, got: {e}",
                    self.check, spec.revision
                )
            });
        let known = KnownDeployment::new(spec.clone(), runtime);
        self.track(&known);
        known
    }

    async fn status(&self, known: &KnownDeployment) -> crate::Result<ObservedStatus> {
        let provider = self.provider();
        self.within("status", provider.status(known)).await
    }

    async fn assert_running(&self, known: &KnownDeployment, after: &str) {
        match self.status(known).await {
            Ok(ObservedStatus::Running) => {}
            other => panic!(
                "{}: after {after}, status must be Running (the call returns once ready), got {other:?}",
                self.check
            ),
        }
    }

    async fn assert_not_found(&self, provider: &DynProvider, known: &KnownDeployment, after: &str) {
        let status = self.within("status", provider.status(known)).await;
        assert!(
            matches!(status, Err(Error::NotFound { .. })),
            "{}: after {after}, status must answer NotFound, got {status:?}",
            self.check
        );
    }

    /// Nothing runs for `known`: status is NotFound or not running.
    async fn assert_nothing_runs(&self, known: &KnownDeployment, after: &str) {
        match self.status(known).await {
            Err(Error::NotFound { .. }) => {}
            Ok(s) if !s.is_running() => {}
            other => panic!(
                "{}: nothing may run after {after}, status answered {other:?}",
                self.check
            ),
        }
    }

    /// How long leftovers may take to settle (processes being reaped, containers deleted).
    fn settle(&self) -> Duration {
        self.h.timeout.min(Duration::from_secs(10))
    }

    /// With a leftovers lister: waits (briefly) until nothing of `id` is left.
    async fn assert_nothing_left(&self, id: &DeploymentId, after: &str) {
        if self.h.leftovers.is_none() {
            return;
        }
        let gone = wait_until(self.settle(), || async {
            self.h.leftovers(id).await.is_some_and(|l| l.is_empty())
        })
        .await;
        if !gone {
            let left = self.h.leftovers(id).await.unwrap_or_default();
            panic!(
                "{}: nothing of the deployment may be left on the platform after {after}, found {left:?}",
                self.check
            );
        }
    }

    /// With a leftovers lister: the number of things of `id` on the platform.
    async fn leftover_count(&self, id: &DeploymentId) -> Option<usize> {
        self.h.leftovers(id).await.map(|l| l.len())
    }

    /// With a leftovers lister: waits (briefly) until `id` has `expected` things on the
    /// platform (one instance set).
    async fn assert_leftover_count(&self, id: &DeploymentId, expected: Option<usize>, after: &str) {
        let Some(expected) = expected else { return };
        let settled = wait_until(self.settle(), || async {
            self.leftover_count(id).await == Some(expected)
        })
        .await;
        if !settled {
            let left = self.h.leftovers(id).await.unwrap_or_default();
            panic!(
                "{}: after {after} exactly one instance set may be on the platform ({expected} things, as after the first deploy), found {}: {left:?}",
                self.check,
                left.len()
            );
        }
    }

    /// Removes every tracked deployment (best effort).
    async fn cleanup(&self) {
        let tracked = std::mem::take(&mut *lock(&self.tracked));
        let limit = self.h.timeout;
        for known in tracked {
            let provider = self.provider();
            let removed = tokio::time::timeout(limit, provider.remove(&ctx(), &known)).await;
            if !matches!(removed, Ok(Ok(()))) {
                let fresh = self.h.make_provider();
                let again = tokio::time::timeout(limit, fresh.remove(&ctx(), &known)).await;
                if !matches!(again, Ok(Ok(()))) {
                    tracing::warn!(
                        check = self.check,
                        deployment = %known.id(),
                        "conformance cleanup could not remove the deployment: {removed:?} / {again:?}"
                    );
                }
            }
        }
    }

    /// Runs `body`, then removes what was tracked whatever happened, then re-raises a
    /// failure of `body`.
    async fn run(&self, body: impl std::future::Future<Output = ()>) {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        self.cleanup().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// `status`, `logs`, `metrics`, `health`, `start` and `update` of a deployment the
/// provider never saw answer `NotFound`; `stop` and `remove` of it succeed (there is
/// nothing to stop or remove).
pub async fn unknown_ids_are_not_found(h: &ConformanceHarness) {
    let s = Scope::new(h, "unknown_ids_are_not_found");
    let spec = ConformanceHarness::spec_with(&h.config, s.check);
    let known = KnownDeployment::from_spec(spec.clone());
    s.run(async {
        let p = s.provider();
        let nf = |r: crate::Result<()>, what: &str| {
            assert!(
                matches!(r, Err(Error::NotFound { .. })),
                "{}: {what} of an unknown deployment must answer NotFound, got {r:?}",
                s.check
            );
        };
        nf(
            s.within("status", p.status(&known)).await.map(drop),
            "status",
        );
        nf(
            s.within("logs", p.logs(&known, &LogQuery::all()))
                .await
                .map(drop),
            "logs",
        );
        nf(
            s.within("metrics", p.metrics(&known)).await.map(drop),
            "metrics",
        );
        nf(
            s.within("health", p.health(&known)).await.map(drop),
            "health",
        );
        nf(
            s.within("start", p.start(&ctx(), &known)).await.map(drop),
            "start",
        );
        let next = next_revision(&spec);
        nf(
            s.within("update", p.update(&ctx(), &known, &next))
                .await
                .map(drop),
            "update",
        );
        let stop = s.within("stop", p.stop(&ctx(), &known)).await;
        assert!(
            stop.is_ok(),
            "{}: stop of an unknown deployment must succeed (nothing to stop), got {stop:?}",
            s.check
        );
        let remove = s.within("remove", p.remove(&ctx(), &known)).await;
        assert!(
            remove.is_ok(),
            "{}: remove of an unknown deployment must succeed (nothing to remove), got {remove:?}",
            s.check
        );
    })
    .await;
}

/// `deploy` returns once the app is ready: its runtime names at least one instance, all
/// at the spec's revision, and `status` says `Running`. With a leftovers lister, the
/// deployment shows on the platform.
pub async fn deploy_reports_running(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_reports_running");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        assert!(
            !known.runtime.instances.is_empty(),
            "{}: a deployed app's runtime must name at least one instance",
            s.check
        );
        assert!(
            known
                .runtime
                .instances
                .iter()
                .all(|i| i.revision == spec.revision),
            "{}: every instance must run the deployed revision {}, got {:?}",
            s.check,
            spec.revision,
            known.runtime.instances
        );
        s.assert_running(&known, "deploy").await;
        let p = s.provider();
        assert!(
            s.within("status", p.is_running(&known)).await.unwrap_or(false),
            "{}: is_running must be true after deploy",
            s.check
        );
        if let Some(n) = s.leftover_count(&spec.id).await {
            assert!(
                n > 0,
                "{}: the leftovers lister must see a running deployment (it found nothing: is the lister right?)",
                s.check
            );
        }
    })
    .await;
}

/// What a sink saw.
struct Seen {
    events: Vec<Event>,
    reports: Vec<StatusReport>,
}

fn drain(
    rx: &mut broadcast::Receiver<EventEnvelope>,
    reports: &mut mpsc::UnboundedReceiver<StatusReport>,
) -> Seen {
    let mut events = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(envelope) => events.push(envelope.event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    let mut seen_reports = Vec::new();
    while let Ok(report) = reports.try_recv() {
        seen_reports.push(report);
    }
    Seen {
        events,
        reports: seen_reports,
    }
}

/// A deploy reports what it does through the sink of **its** context: at least one
/// `Progress` event for its deployment, and nothing about any other deployment (two
/// deploys run at once, each with its own sink). Only provider observations are emitted
/// (progress, healthy, unhealthy, restarted), and a deploy that succeeded reports no
/// failure or exit.
pub async fn deploy_emits_progress(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_emits_progress");
    s.run(async {
        let p = s.provider();
        let (a, b) = (s.spec(), s.spec());
        let sink = |capacity| {
            let (tx, rx) = mpsc::unbounded_channel();
            let sink = EventSink::new(EventBus::new(capacity), Some(tx));
            let events = sink.subscribe();
            (sink, events, rx)
        };
        let (sink_a, mut events_a, mut reports_a) = sink(16_384);
        let (sink_b, mut events_b, mut reports_b) = sink(16_384);
        let (ctx_a, ctx_b) = (OperationContext::new(sink_a), OperationContext::new(sink_b));
        let (ra, rb) = s
            .within(
                "two concurrent deploys",
                futures::future::join(p.deploy(&ctx_a, &a, None), p.deploy(&ctx_b, &b, None)),
            )
            .await;
        for (spec, result) in [(&a, ra), (&b, rb)] {
            let runtime = result.unwrap_or_else(|e| {
                panic!("{}: deploy of a valid config must succeed, got: {e}", s.check)
            });
            s.track(&KnownDeployment::new(spec.clone(), runtime));
        }
        for (spec, events, reports) in [
            (&a, &mut events_a, &mut reports_a),
            (&b, &mut events_b, &mut reports_b),
        ] {
            let seen = drain(events, reports);
            assert!(
                seen.events.iter().any(|e| matches!(e, Event::Progress { deployment, .. } if *deployment == spec.id)),
                "{}: a deploy must report at least one Progress event for its deployment on its context's sink, saw {:?}",
                s.check,
                seen.events
            );
            for event in &seen.events {
                check_eq!(
                    event.deployment(),
                    &spec.id,
                    "{}: a deploy's sink must only carry events about that deployment, got {event:?}",
                    s.check
                );
                assert!(
                    matches!(
                        event,
                        Event::Progress { .. }
                            | Event::Healthy { .. }
                            | Event::Unhealthy { .. }
                            | Event::Restarted { .. }
                    ),
                    "{}: a provider only emits observations (progress, healthy, unhealthy, restarted), got {event:?}",
                    s.check
                );
            }
            for report in &seen.reports {
                check_eq!(
                    report.deployment, spec.id,
                    "{}: a deploy's sink must only carry reports about that deployment, got {report:?}",
                    s.check
                );
                assert!(
                    report.status.is_running(),
                    "{}: a deploy that succeeded must not report its deployment failed or exited, got {report:?}",
                    s.check
                );
            }
        }
    })
    .await;
}

/// The same spec deployed twice (a retry after a lost answer) converges: no
/// `AlreadyExists`, one running revision, the same number of instances, and (with a
/// leftovers lister) one instance set on the platform.
pub async fn deploy_is_idempotent(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_is_idempotent");
    s.run(async {
        let spec = s.spec();
        let first = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let p = s.provider();
        let again = s.within("deploy", p.deploy(&ctx(), &spec, None)).await;
        let runtime = match again {
            Ok(runtime) => runtime,
            Err(e) => panic!(
                "{}: deploy is idempotent: the same spec again must succeed (never AlreadyExists), got: {e}",
                s.check
            ),
        };
        let second = KnownDeployment::new(spec.clone(), runtime);
        s.track(&second);
        check_eq!(
            second.runtime.instances.len(),
            first.runtime.instances.len(),
            "{}: deploying the same spec again must converge on one instance set, got {:?} after {:?}",
            s.check,
            second.runtime.instances,
            first.runtime.instances
        );
        assert!(
            second.runtime.instances.iter().all(|i| i.revision == spec.revision),
            "{}: after a repeated deploy every instance runs revision {}, got {:?}",
            s.check,
            spec.revision,
            second.runtime.instances
        );
        s.assert_running(&second, "a repeated deploy").await;
        s.assert_leftover_count(&spec.id, one_set, "a repeated deploy").await;
    })
    .await;
}

/// `update` of a running deployment rolls the new revision out: every instance runs it,
/// status is `Running`, and (with a leftovers lister) the old instances are gone.
pub async fn update_rolls_out(h: &ConformanceHarness) {
    let s = Scope::new(h, "update_rolls_out");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let next = next_revision(&spec);
        let p = s.provider();
        let runtime = s
            .within("update", p.update(&ctx(), &known, &next))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: update of a running deployment must succeed, got: {e}",
                    s.check
                )
            });
        let updated = KnownDeployment::new(next.clone(), runtime);
        s.track(&updated);
        assert!(
            !updated.runtime.instances.is_empty()
                && updated
                    .runtime
                    .instances
                    .iter()
                    .all(|i| i.revision == next.revision),
            "{}: after update every instance runs the new revision {}, got {:?}",
            s.check,
            next.revision,
            updated.runtime.instances
        );
        s.assert_running(&updated, "update").await;
        s.assert_leftover_count(&spec.id, one_set, "update").await;
    })
    .await;
}

/// The same update twice (a retry with the same arguments) converges on the new revision
/// serving alone.
pub async fn update_is_idempotent(h: &ConformanceHarness) {
    let s = Scope::new(h, "update_is_idempotent");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let next = next_revision(&spec);
        let p = s.provider();
        for attempt in ["update", "a repeated update"] {
            let runtime = s
                .within(attempt, p.update(&ctx(), &known, &next))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: update is idempotent: {attempt} with the same arguments must succeed, got: {e}",
                        s.check
                    )
                });
            let updated = KnownDeployment::new(next.clone(), runtime);
            s.track(&updated);
            assert!(
                !updated.runtime.instances.is_empty()
                    && updated.runtime.instances.iter().all(|i| i.revision == next.revision),
                "{}: after {attempt} every instance runs revision {}, got {:?}",
                s.check,
                next.revision,
                updated.runtime.instances
            );
            s.assert_running(&updated, attempt).await;
            s.assert_leftover_count(&spec.id, one_set, attempt).await;
        }
    })
    .await;
}

/// An update (or rollback) of a **stopped** deployment is `deploy(rev2, Some(stopped))`:
/// it replaces whatever is kept of the stopped revision and runs rev2.
pub async fn deploy_replaces_stopped(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_replaces_stopped");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let p = s.provider();
        s.within("stop", p.stop(&ctx(), &known))
            .await
            .unwrap_or_else(|e| panic!("{}: stop must succeed, got: {e}", s.check));
        let stopped = KnownDeployment::new(spec.clone(), known.runtime.stopped());
        s.track(&stopped);
        let next = next_revision(&spec);
        let updated = s.deploy(&next, Some(&stopped)).await;
        assert!(
            !updated.runtime.instances.is_empty()
                && updated
                    .runtime
                    .instances
                    .iter()
                    .all(|i| i.revision == next.revision),
            "{}: deploy with a stopped previous must run the new revision {}, got {:?}",
            s.check,
            next.revision,
            updated.runtime.instances
        );
        s.assert_running(&updated, "deploy over a stopped deployment")
            .await;
        s.assert_leftover_count(&spec.id, one_set, "deploy over a stopped deployment")
            .await;
    })
    .await;
}

/// After a first deploy failed, `deploy(good rev2, Some(failed))` (the user's fix) runs
/// rev2. Needs a failing config.
pub async fn deploy_replaces_failed(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_replaces_failed");
    let Some(failing) = s.failing_spec() else {
        return;
    };
    s.run(async {
        let p = s.provider();
        let failed = s.within("deploy", p.deploy(&ctx(), &failing, None)).await;
        assert!(
            failed.is_err(),
            "{}: a deploy of the failing config must fail (is the harness's failing config right?)",
            s.check
        );
        let previous = KnownDeployment::from_spec(failing.clone());
        let mut good = (s.h.config)(failing.name());
        good.port = failing.config.port;
        let next = DeploymentSpec::new(failing.id.clone(), failing.revision.next(), good);
        let known = s.deploy(&next, Some(&previous)).await;
        assert!(
            !known.runtime.instances.is_empty()
                && known
                    .runtime
                    .instances
                    .iter()
                    .all(|i| i.revision == next.revision),
            "{}: deploy with a failed previous must run the new revision {}, got {:?}",
            s.check,
            next.revision,
            known.runtime.instances
        );
        s.assert_running(&known, "deploy over a failed deployment")
            .await;
    })
    .await;
}

/// `stop` stops (status `Stopped`) and is idempotent; `start(known)` resumes at the known
/// revision and, called again, returns the running runtime without starting a second set.
pub async fn stop_then_start(h: &ConformanceHarness) {
    let s = Scope::new(h, "stop_then_start");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let p = s.provider();
        s.within("stop", p.stop(&ctx(), &known))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: stop of a running deployment must succeed, got: {e}",
                    s.check
                )
            });
        let stopped = KnownDeployment::new(spec.clone(), known.runtime.stopped());
        s.track(&stopped);
        let status = s.status(&stopped).await;
        assert!(
            matches!(status, Ok(ObservedStatus::Stopped)),
            "{}: after stop, status must be Stopped (what start needs is kept), got {status:?}",
            s.check
        );
        let again = s.within("stop", p.stop(&ctx(), &stopped)).await;
        assert!(
            again.is_ok(),
            "{}: stop is idempotent: stopping a stopped deployment must succeed, got {again:?}",
            s.check
        );
        for attempt in ["start", "a repeated start"] {
            let runtime = s
                .within(attempt, p.start(&ctx(), &stopped))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {attempt} of a stopped deployment must succeed, got: {e}",
                        s.check
                    )
                });
            let started = KnownDeployment::new(spec.clone(), runtime);
            s.track(&started);
            assert!(
                !started.runtime.instances.is_empty()
                    && started
                        .runtime
                        .instances
                        .iter()
                        .all(|i| i.revision == spec.revision),
                "{}: {attempt} resumes at the known revision {}, got {:?}",
                s.check,
                spec.revision,
                started.runtime.instances
            );
            s.assert_running(&started, attempt).await;
            s.assert_leftover_count(&spec.id, one_set, attempt).await;
        }
    })
    .await;
}

/// `remove` deletes everything: `status` answers `NotFound` afterwards (also for a fresh
/// provider instance), nothing is left on the platform, and a second remove succeeds.
pub async fn remove_forgets(h: &ConformanceHarness) {
    let s = Scope::new(h, "remove_forgets");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let p = s.provider();
        s.within("remove", p.remove(&ctx(), &known))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: remove of a running deployment must succeed, got: {e}",
                    s.check
                )
            });
        s.assert_not_found(&*p, &known, "remove").await;
        let fresh = h.make_provider();
        s.assert_not_found(&*fresh, &known, "remove (asking a fresh instance)")
            .await;
        s.assert_nothing_left(&spec.id, "remove").await;
        let again = s.within("remove", p.remove(&ctx(), &known)).await;
        assert!(
            again.is_ok(),
            "{}: remove is idempotent: removing a removed deployment must succeed, got {again:?}",
            s.check
        );
    })
    .await;
}

/// A deploy that never becomes ready fails with a permanent error (not `Cancelled`) and
/// leaves nothing behind. Needs a failing config.
pub async fn failed_deploy_leaves_nothing(h: &ConformanceHarness) {
    let s = Scope::new(h, "failed_deploy_leaves_nothing");
    let Some(spec) = s.failing_spec() else {
        return;
    };
    s.run(async {
        let p = s.provider();
        let err = s
            .within("deploy", p.deploy(&ctx(), &spec, None))
            .await
            .expect_err("failed_deploy_leaves_nothing: a deploy of the failing config must fail");
        assert!(
            !err.is_transient() && !matches!(err, Error::Cancelled { .. }),
            "{}: an app that never becomes ready fails the deploy permanently, got: {err}",
            s.check
        );
        let known = KnownDeployment::from_spec(spec.clone());
        s.assert_nothing_runs(&known, "a failed deploy").await;
        s.assert_nothing_left(&spec.id, "a failed deploy").await;
    })
    .await;
}

/// An update to a revision that never becomes ready fails, and the previous revision
/// keeps serving (status `Running`, and with a leftovers lister, no more than its own
/// instance set). Needs a failing config.
pub async fn failed_update_keeps_old(h: &ConformanceHarness) {
    let s = Scope::new(h, "failed_update_keeps_old");
    let Some(failing) = h.failing_config.clone() else {
        return;
    };
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let mut bad = failing(spec.name());
        bad.port = spec.config.port;
        let next = DeploymentSpec::new(spec.id.clone(), spec.revision.next(), bad);
        let p = s.provider();
        let result = s.within("update", p.update(&ctx(), &known, &next)).await;
        assert!(
            result.is_err(),
            "{}: an update to a revision that never becomes ready must fail, got {result:?}",
            s.check
        );
        s.assert_running(
            &known,
            "a failed update (the previous revision keeps serving)",
        )
        .await;
        s.assert_leftover_count(&spec.id, one_set, "a failed update")
            .await;
    })
    .await;
}

/// A deploy whose context is already cancelled answers `Cancelled` and leaves nothing.
pub async fn deploy_honours_cancelled_token(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_honours_cancelled_token");
    s.run(async {
        let spec = s.spec();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ctx = OperationContext::with_cancel(EventSink::detached(), cancel);
        let p = s.provider();
        let result = s.within("deploy", p.deploy(&ctx, &spec, None)).await;
        assert!(
            matches!(result, Err(Error::Cancelled { .. })),
            "{}: a deploy whose token is cancelled must answer Cancelled (check ctx.cancel between steps), got {result:?}",
            s.check
        );
        let known = KnownDeployment::from_spec(spec.clone());
        s.assert_nothing_runs(&known, "a cancelled deploy").await;
        s.assert_nothing_left(&spec.id, "a cancelled deploy").await;
    })
    .await;
}

/// A slow deploy cancelled after [`CANCEL_AFTER`] answers `Cancelled` within
/// [`CANCEL_WITHIN`] of the cancellation, and leaves nothing behind. Needs a slow config.
pub async fn cancellation_mid_deploy(h: &ConformanceHarness) {
    let s = Scope::new(h, "cancellation_mid_deploy");
    let Some(slow) = h.slow_config.clone() else {
        return;
    };
    s.run(async {
        let spec = ConformanceHarness::spec_with(&slow, s.check);
        s.track(&KnownDeployment::from_spec(spec.clone()));
        let cancel = CancellationToken::new();
        let ctx = OperationContext::with_cancel(EventSink::detached(), cancel.clone());
        let p = s.provider();
        let began = tokio::time::Instant::now();
        let canceller = async {
            tokio::time::sleep(CANCEL_AFTER).await;
            cancel.cancel();
            tokio::time::Instant::now()
        };
        let (result, cancelled_at) = s
            .within(
                "a cancelled deploy",
                futures::future::join(p.deploy(&ctx, &spec, None), canceller),
            )
            .await;
        let answered_after_cancel = cancelled_at.elapsed();
        if let Ok(runtime) = &result {
            s.track(&KnownDeployment::new(spec.clone(), runtime.clone()));
        }
        assert!(
            matches!(result, Err(Error::Cancelled { .. })),
            "{}: a deploy cancelled midway must answer Cancelled (race ctx.cancel against long waits), got {result:?} after {:?} (the slow config must take at least ~2 s to become ready)",
            s.check,
            began.elapsed()
        );
        assert!(
            answered_after_cancel <= CANCEL_WITHIN,
            "{}: a cancelled deploy must answer within {CANCEL_WITHIN:?} of the cancellation, took {answered_after_cancel:?}",
            s.check
        );
        let known = KnownDeployment::from_spec(spec.clone());
        s.assert_nothing_runs(&known, "a deploy cancelled midway").await;
        s.assert_nothing_left(&spec.id, "a deploy cancelled midway").await;
    })
    .await;
}

fn known_of(record: &crate::store::DeploymentRecord) -> KnownDeployment {
    KnownDeployment::new(
        DeploymentSpec::new(record.id.clone(), record.revision, record.config.clone()),
        record.runtime.as_deref().cloned().unwrap_or_default(),
    )
}

/// Four deployments driven at once through a [`DeploymentManager`] built on the provider
/// (deploy all; then update one, stop two and remove one at the same time; then start
/// one and remove two at the same time) all end in the expected states, as the manager
/// and the provider see them.
pub async fn concurrent_operations_through_manager(h: &ConformanceHarness) {
    let s = Scope::new(h, "concurrent_operations_through_manager");
    s.run(async {
        let provider = s.provider();
        let manager = DeploymentManager::builder()
            .provider_arc(provider.clone())
            .retry(RetryPolicy::none())
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}: building a manager failed: {e}", s.check));
        let names: Vec<String> = (0..4).map(|i| unique_name(&format!("many{i}"))).collect();
        // Phase 1: deploy all at once.
        let deployed = s
            .within(
                "concurrent deploys",
                futures::future::join_all(names.iter().map(|n| manager.deploy((h.config)(n)))),
            )
            .await;
        let mut known = Vec::new();
        for (name, result) in names.iter().zip(deployed) {
            let record = result.unwrap_or_else(|e| {
                panic!(
                    "{}: concurrent deploy of {name} must succeed, got: {e}",
                    s.check
                )
            });
            check_eq!(
                record.status,
                DeploymentStatus::Running,
                "{}: {name} must be Running after its deploy",
                s.check
            );
            let k = known_of(&record);
            s.track(&k);
            known.push(k);
        }

        // Phase 2: update #0, stop #1 and #2, remove #3, at once.
        let (updated, stopped1, stopped2, removed3) = s
            .within("concurrent update, stops and remove", async {
                futures::join!(
                    manager.update(&names[0], (h.config)(&names[0])),
                    manager.stop(&names[1]),
                    manager.stop(&names[2]),
                    manager.remove(&names[3]),
                )
            })
            .await;
        let updated = updated.unwrap_or_else(|e| panic!("{}: update must succeed: {e}", s.check));
        check_eq!(
            (updated.status.clone(), updated.revision),
            (DeploymentStatus::Running, known[0].revision().next()),
            "{}: the updated deployment runs its second revision",
            s.check
        );
        s.track(&known_of(&updated));
        for (i, result) in [(1, stopped1), (2, stopped2)] {
            let record = result.unwrap_or_else(|e| panic!("{}: stop must succeed: {e}", s.check));
            check_eq!(
                record.status,
                DeploymentStatus::Stopped,
                "{}: {} must be Stopped after its stop",
                s.check,
                names[i]
            );
            let status = s.status(&known_of(&record)).await;
            assert!(
                matches!(status, Ok(ObservedStatus::Stopped)),
                "{}: the provider must see {} Stopped, got {status:?}",
                s.check,
                names[i]
            );
            s.track(&known_of(&record));
        }
        removed3.unwrap_or_else(|e| panic!("{}: remove must succeed: {e}", s.check));
        assert_removed(&s, &manager, &names[3], &known[3]).await;

        // Phase 3: start #1, remove #0 and #2, at once.
        let (started1, removed0, removed2) = s
            .within("concurrent start and removes", async {
                futures::join!(
                    manager.start(&names[1]),
                    manager.remove(&names[0]),
                    manager.remove(&names[2]),
                )
            })
            .await;
        let started = started1.unwrap_or_else(|e| panic!("{}: start must succeed: {e}", s.check));
        check_eq!(
            (started.status.clone(), started.revision),
            (DeploymentStatus::Running, known[1].revision()),
            "{}: the started deployment runs at its revision",
            s.check
        );
        let started_known = known_of(&started);
        s.track(&started_known);
        s.assert_running(&started_known, "a start through the manager")
            .await;
        removed0.unwrap_or_else(|e| panic!("{}: remove must succeed: {e}", s.check));
        removed2.unwrap_or_else(|e| panic!("{}: remove must succeed: {e}", s.check));
        assert_removed(&s, &manager, &names[0], &known[0]).await;
        assert_removed(&s, &manager, &names[2], &known[2]).await;

        s.within("remove", manager.remove(&names[1]))
            .await
            .unwrap_or_else(|e| panic!("{}: remove must succeed: {e}", s.check));
        assert_removed(&s, &manager, &names[1], &known[1]).await;
        s.within("manager shutdown", manager.shutdown()).await;
    })
    .await;
}

async fn assert_removed(
    s: &Scope<'_>,
    manager: &DeploymentManager,
    name: &str,
    known: &KnownDeployment,
) {
    match manager.get(name) {
        Err(Error::NotFound { .. }) => {}
        Ok(record) if record.status == DeploymentStatus::Removed => {}
        other => panic!(
            "{}: the manager must have forgotten {name} after its remove, got {other:?}",
            s.check
        ),
    }
    let provider = s.provider();
    s.assert_not_found(&*provider, known, "a remove through the manager")
        .await;
    s.assert_nothing_left(known.id(), "a remove through the manager")
        .await;
}

/// Logs answer queries: the app's startup line shows (with `expects_logs`), `tail(1)`
/// returns one line, a substring filter excludes lines, and with `LogFollow` a follow
/// stream starts with the history. Without `expects_logs`, a query still answers.
pub async fn logs_answer_queries(h: &ConformanceHarness) {
    let s = Scope::new(h, "logs_answer_queries");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let p = s.provider();
        if !h.expects_logs {
            s.within("logs", p.logs_vec(&known, &LogQuery::tail(5)))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: logs of a running deployment must answer, got: {e}",
                        s.check
                    )
                });
            return;
        }
        let appeared = wait_until(h.timeout, || async {
            p.logs_vec(&known, &LogQuery::all())
                .await
                .is_ok_and(|l| !l.is_empty())
        })
        .await;
        assert!(
            appeared,
            "{}: the app's startup line must show in the logs within {:?}",
            s.check, h.timeout
        );
        let one = s
            .within("logs", p.logs_vec(&known, &LogQuery::tail(1)))
            .await
            .unwrap_or_else(|e| panic!("{}: logs must answer, got: {e}", s.check));
        check_eq!(
            one.len(),
            1,
            "{}: tail(1) must return one line, got {one:?}",
            s.check
        );
        let none = s
            .within(
                "logs",
                p.logs_vec(
                    &known,
                    &LogQuery::all().contains("\u{1f}never-written\u{1f}"),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: logs must answer, got: {e}", s.check));
        assert!(
            none.is_empty(),
            "{}: a substring filter must exclude lines that do not contain it, got {none:?}",
            s.check
        );
        if p.supports(Capability::LogFollow) {
            let mut follow = s
                .within("logs (follow)", p.logs(&known, &LogQuery::tail(1).follow()))
                .await
                .unwrap_or_else(|e| panic!("{}: a follow query must answer, got: {e}", s.check));
            let first = tokio::time::timeout(h.timeout, follow.next()).await;
            assert!(
                matches!(first, Ok(Some(Ok(_)))),
                "{}: a follow stream must start with the history (tail 1), got {first:?}",
                s.check
            );
        }
    })
    .await;
}

/// Metrics answer for a running deployment (with `Metrics`, memory is measured). Health
/// is the latest observation, not a probe run now: with a health check and
/// `HealthChecks`, it becomes `Healthy` after the gate passed; once the deployment is
/// stopped, nothing runs and it answers `Unknown`.
pub async fn metrics_and_health(h: &ConformanceHarness) {
    let s = Scope::new(h, "metrics_and_health");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let p = s.provider();
        let m = s
            .within("metrics", p.metrics(&known))
            .await
            .unwrap_or_else(|e| panic!("{}: metrics of a running deployment must answer, got: {e}", s.check));
        if p.supports(Capability::Metrics) {
            assert!(
                m.memory_bytes.is_some(),
                "{}: a provider with the Metrics capability reports memory, got {m:?}",
                s.check
            );
        }
        let health = s
            .within("health", p.health(&known))
            .await
            .unwrap_or_else(|e| panic!("{}: health of a running deployment must answer, got: {e}", s.check));
        if spec.config.health_check.is_some() && p.supports(Capability::HealthChecks) {
            let healthy = wait_until(h.timeout, || async {
                p.health(&known)
                    .await
                    .is_ok_and(|r| r.status == HealthStatus::Healthy)
            })
            .await;
            assert!(
                healthy,
                "{}: a deployment that passed its health gate must report Healthy (first answer: {health:?})",
                s.check
            );
        }
        s.within("stop", p.stop(&ctx(), &known))
            .await
            .unwrap_or_else(|e| panic!("{}: stop must succeed, got: {e}", s.check));
        let stopped = KnownDeployment::new(spec.clone(), known.runtime.stopped());
        s.track(&stopped);
        let after = s.within("health", p.health(&stopped)).await;
        assert!(
            matches!(&after, Ok(r) if r.status == HealthStatus::Unknown),
            "{}: health of a stopped deployment must answer Unknown (nothing runs; health is the latest observation, not a stale Healthy), got {after:?}",
            s.check
        );
    })
    .await;
}

/// With [`Capability::Recovery`]: deploy on instance A, drop A, build a **fresh** instance
/// B; `B.recover(&[known])` (the store's knowledge only) must answer the deployment
/// `Running` at its revision with the same instance ids, must not start anything twice
/// (with a leftovers lister: the count is unchanged), must not claim a never-deployed
/// deployment runs, and B must then be able to stop and remove it.
///
/// Without `Recovery`, a fresh instance must not claim the deployment runs (it answers it
/// failed or stopped, or leaves it out).
pub async fn recovery_across_instances(h: &ConformanceHarness) {
    let s = Scope::new(h, "recovery_across_instances");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let ghost = KnownDeployment::from_spec(ConformanceHarness::spec_with(&h.config, s.check));
        let recovery = s.provider().supports(Capability::Recovery);
        if !recovery {
            let b = h.make_provider();
            let found = s
                .within("recover", b.recover(&ctx(), std::slice::from_ref(&known)))
                .await
                .unwrap_or_else(|e| panic!("{}: recover must answer, got: {e}", s.check));
            if let Some(mine) = found.iter().find(|f| f.id == spec.id) {
                assert!(
                    !mine.status.is_running(),
                    "{}: a provider without Recovery must answer every deployment failed or stopped, got {mine:?}",
                    s.check
                );
            }
            return;
        }
        // Drop instance A, then build B: from now on only B (and cleanup) talk to the
        // platform.
        let b = s.restart_provider();
        let found = s
            .within("recover", b.recover(&ctx(), &[known.clone(), ghost.clone()]))
            .await
            .unwrap_or_else(|e| {
                panic!("{}: recover on a fresh instance must answer, got: {e}", s.check)
            });
        let mine = found.iter().find(|f| f.id == spec.id).unwrap_or_else(|| {
            panic!(
                "{}: recover on a fresh instance must answer the running deployment it was given (it works from `known` and the platform, not from memory), got {found:?}",
                s.check
            )
        });
        check_eq!(
            mine.status,
            ObservedStatus::Running,
            "{}: recover on a fresh instance must find the deployment Running, got {mine:?}",
            s.check
        );
        check_eq!(
            mine.revision, spec.revision,
            "{}: recover must find the deployment at its revision",
            s.check
        );
        check_eq!(
            ids(&mine.runtime),
            ids(&known.runtime),
            "{}: recover must adopt the same instances (same ids), not start new ones",
            s.check
        );
        if let Some(g) = found.iter().find(|f| f.id == *ghost.id()) {
            assert!(
                !g.status.is_running(),
                "{}: recover must not claim a never-deployed deployment runs, got {g:?}",
                s.check
            );
        }
        if let (Some(before), Some(after)) = (one_set, s.leftover_count(&spec.id).await) {
            check_eq!(
                after, before,
                "{}: recover must not start anything twice: {before} things on the platform before, {after} after",
                s.check
            );
        }
        let adopted = KnownDeployment::new(spec.clone(), mine.runtime.clone());
        s.track(&adopted);
        s.assert_running(&adopted, "recover (asking the fresh instance)")
            .await;
        s.within("stop", b.stop(&ctx(), &adopted))
            .await
            .unwrap_or_else(|e| {
                panic!("{}: the fresh instance must be able to stop what it recovered, got: {e}", s.check)
            });
        let stopped = KnownDeployment::new(spec.clone(), adopted.runtime.stopped());
        s.track(&stopped);
        let status = s.status(&stopped).await;
        assert!(
            matches!(status, Ok(ObservedStatus::Stopped)),
            "{}: after the fresh instance stopped the recovered deployment, status must be Stopped, got {status:?}",
            s.check
        );
        s.within("remove", b.remove(&ctx(), &stopped))
            .await
            .unwrap_or_else(|e| {
                panic!("{}: the fresh instance must be able to remove what it recovered, got: {e}", s.check)
            });
        s.assert_not_found(&*b, &stopped, "the fresh instance removed it").await;
        s.assert_nothing_left(&spec.id, "the fresh instance removed it").await;
    })
    .await;
}

/// Runs every check, one after another (see the [module documentation](self) for what each
/// proves). Checks of optional behaviour skip themselves when the harness or the
/// provider's capabilities do not enable them.
pub async fn run_all(harness: &ConformanceHarness) {
    unknown_ids_are_not_found(harness).await;
    deploy_reports_running(harness).await;
    deploy_emits_progress(harness).await;
    deploy_is_idempotent(harness).await;
    update_rolls_out(harness).await;
    update_is_idempotent(harness).await;
    deploy_replaces_stopped(harness).await;
    deploy_replaces_failed(harness).await;
    stop_then_start(harness).await;
    remove_forgets(harness).await;
    failed_deploy_leaves_nothing(harness).await;
    failed_update_keeps_old(harness).await;
    deploy_honours_cancelled_token(harness).await;
    cancellation_mid_deploy(harness).await;
    concurrent_operations_through_manager(harness).await;
    logs_answer_queries(harness).await;
    metrics_and_health(harness).await;
    recovery_across_instances(harness).await;
}
