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
//! | [`replace_switches_to_fresh_instances`] | `replace` (unless `NotSupported`) ends with fresh instances of the same revision serving alone, after exactly one `cutover` to them; one instance set on the platform; twice in a row too |
//! | [`scale_changes_the_count_with_one_cutover`] | with `Scale`: `scale` to 2 and back to 1 keeps the serving instances, lists the count, calls `cutover` once each time, stays `Running` |
//! | [`deploy_honours_cancelled_token`] | a deploy whose token is already cancelled answers `Cancelled` and leaves nothing |
//! | [`cancellation_mid_deploy`] | cancelling a slow deploy after ~300 ms answers `Cancelled` within a few seconds and leaves nothing |
//! | [`concurrent_operations_through_manager`] | several deployments deployed, updated, stopped, started and removed at once through a [`DeploymentManager`](crate::manager::DeploymentManager) all end as expected |
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

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::config::DeploymentConfig;
use crate::error::Error;
use crate::id::{DeploymentId, Revision};
use crate::provider::{
    DeploymentSpec, DynProvider, KnownDeployment, ObservedStatus, OperationContext, RuntimeInfo,
};
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

mod faults;
mod lifecycle;
mod manager;
mod observation;
mod recovery;
mod replace;
mod scale;
mod updates;

pub use faults::{
    cancellation_mid_deploy, deploy_honours_cancelled_token, failed_deploy_leaves_nothing,
};
pub use lifecycle::{
    deploy_reports_running, remove_forgets, stop_then_start, unknown_ids_are_not_found,
};
pub use manager::concurrent_operations_through_manager;
pub use observation::{deploy_emits_progress, logs_answer_queries, metrics_and_health};
pub use recovery::recovery_across_instances;
pub use replace::replace_switches_to_fresh_instances;
pub use scale::scale_changes_the_count_with_one_cutover;
pub use updates::{
    deploy_is_idempotent, deploy_replaces_failed, deploy_replaces_stopped, failed_update_keeps_old,
    update_is_idempotent, update_rolls_out,
};

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
    replace_switches_to_fresh_instances(harness).await;
    scale_changes_the_count_with_one_cutover(harness).await;
    deploy_honours_cancelled_token(harness).await;
    cancellation_mid_deploy(harness).await;
    concurrent_operations_through_manager(harness).await;
    logs_answer_queries(harness).await;
    metrics_and_health(harness).await;
    recovery_across_instances(harness).await;
}
