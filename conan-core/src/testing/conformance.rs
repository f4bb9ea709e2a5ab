//! The provider conformance suite: the behaviour every [`Provider`](crate::Provider) must show.
//!
//! A provider crate runs it against itself:
//!
//! ```no_run
//! # async fn demo(provider: std::sync::Arc<conan_core::DynProvider>) {
//! use conan_core::DeploymentConfig;
//! use conan_core::testing::conformance::{self, ConformanceHarness};
//!
//! let harness = ConformanceHarness::new(|name| {
//!     DeploymentConfig::builder(name).source("examples/apps/hello").build_unchecked()
//! });
//! conformance::run_all(provider, &harness).await;
//! # }
//! ```
//!
//! Each check deploys under a fresh unique name and removes what it created, also when
//! the check fails (the panic is caught, the cleanup runs, then the panic continues).
//! Capability differences are arguments: checks of optional behaviour (following logs,
//! failing configs) run only when the harness or the provider's capabilities say so.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};

use crate::capability::Capability;
use crate::config::DeploymentConfig;
use crate::error::Error;
use crate::id::{DeploymentId, Revision};
use crate::log::LogQuery;
use crate::provider::{DeploymentSpec, DynProvider, HealthStatus, OperationContext, ProviderExt};
use crate::status::{DeploymentStatus, StatusKind};
use crate::testing::wait_until;

type MakeConfig = Box<dyn Fn(&str) -> DeploymentConfig + Send + Sync>;

/// What the suite needs to know about the provider under test.
pub struct ConformanceHarness {
    /// A valid config for a deployment named by the argument, which becomes ready.
    pub config: MakeConfig,
    /// A config that never becomes ready (an app that exits at once), if the provider can
    /// run one; enables the failure checks.
    pub failing_config: Option<MakeConfig>,
    /// Whether the app of `config` writes at least one log line when it starts.
    pub expects_logs: bool,
    /// How long to wait for eventual conditions (log lines appearing, health settling).
    pub timeout: Duration,
}

impl std::fmt::Debug for ConformanceHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConformanceHarness")
            .field("failing_config", &self.failing_config.is_some())
            .field("expects_logs", &self.expects_logs)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ConformanceHarness {
    /// A harness with a config maker; logs expected; 30 s timeout.
    pub fn new(config: impl Fn(&str) -> DeploymentConfig + Send + Sync + 'static) -> Self {
        Self {
            config: Box::new(config),
            failing_config: None,
            expects_logs: true,
            timeout: Duration::from_secs(30),
        }
    }

    /// Adds a config maker for an app that never becomes ready.
    #[must_use]
    pub fn with_failing_config(
        mut self,
        config: impl Fn(&str) -> DeploymentConfig + Send + Sync + 'static,
    ) -> Self {
        self.failing_config = Some(Box::new(config));
        self
    }

    /// Sets whether startup logs are expected.
    #[must_use]
    pub fn expects_logs(mut self, yes: bool) -> Self {
        self.expects_logs = yes;
        self
    }

    fn spec(&self, check: &str) -> DeploymentSpec {
        let name = unique_name(check);
        DeploymentSpec::new(
            DeploymentId::generate(),
            Revision::FIRST,
            (self.config)(&name),
        )
    }
}

fn unique_name(check: &str) -> String {
    let mut base: String = check
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    base.make_ascii_lowercase();
    format!("cf-{base}-{:08x}", fastrand::u32(..))
}

fn ctx() -> OperationContext {
    OperationContext::detached()
}

/// Runs `body`, then removes `id` whatever happened, then re-raises a failure.
async fn with_cleanup<F>(provider: &Arc<DynProvider>, id: &DeploymentId, body: F)
where
    F: std::future::Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    let _ = provider.remove(&ctx(), id).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Deploy returns once ready; status is `Running`; the runtime names an instance.
pub async fn deploy_reports_running(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let spec = h.spec("deploy");
    with_cleanup(provider, &spec.id, async {
        let runtime = provider
            .deploy(&ctx(), &spec)
            .await
            .expect("deploy of a valid config succeeds");
        assert!(
            !runtime.instances.is_empty(),
            "a deployed app has at least one instance"
        );
        assert_eq!(runtime.instances[0].revision, spec.revision);
        assert_eq!(
            provider.status(&spec.id).await.expect("status"),
            DeploymentStatus::Running
        );
        assert!(provider.is_running(&spec.id).await.expect("is_running"));
    })
    .await;
}

/// Every call about an unknown deployment answers `NotFound`.
pub async fn unknown_ids_are_not_found(provider: &Arc<DynProvider>, _h: &ConformanceHarness) {
    let id = DeploymentId::generate();
    let nf = |r: Result<(), Error>, what: &str| {
        assert!(
            matches!(r, Err(Error::NotFound { .. })),
            "{what} of an unknown id must be NotFound, got {r:?}"
        );
    };
    nf(provider.status(&id).await.map(|_| ()), "status");
    nf(provider.stop(&ctx(), &id).await, "stop");
    nf(provider.remove(&ctx(), &id).await, "remove");
    nf(
        provider.logs(&id, &LogQuery::all()).await.map(|_| ()),
        "logs",
    );
    nf(provider.metrics(&id).await.map(|_| ()), "metrics");
    nf(provider.health(&id).await.map(|_| ()), "health");
}

/// Stop stops (and is idempotent); start brings it back.
pub async fn stop_then_start(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let spec = h.spec("stop-start");
    with_cleanup(provider, &spec.id, async {
        provider.deploy(&ctx(), &spec).await.expect("deploy");
        provider.stop(&ctx(), &spec.id).await.expect("stop");
        assert_eq!(
            provider.status(&spec.id).await.expect("status").kind(),
            StatusKind::Stopped
        );
        provider
            .stop(&ctx(), &spec.id)
            .await
            .expect("a second stop is a no-op");
        let runtime = provider.start(&ctx(), &spec).await.expect("start");
        assert!(!runtime.instances.is_empty());
        assert_eq!(
            provider.status(&spec.id).await.expect("status"),
            DeploymentStatus::Running
        );
    })
    .await;
}

/// Remove deletes everything; afterwards the deployment is unknown.
pub async fn remove_forgets(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let spec = h.spec("remove");
    with_cleanup(provider, &spec.id, async {
        provider.deploy(&ctx(), &spec).await.expect("deploy");
        provider.remove(&ctx(), &spec.id).await.expect("remove");
        assert!(matches!(
            provider.status(&spec.id).await,
            Err(Error::NotFound { .. })
        ));
    })
    .await;
}

/// Logs answer queries; `tail` bounds them; a follow stream delivers history first.
pub async fn logs_answer_queries(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let spec = h.spec("logs");
    with_cleanup(provider, &spec.id, async {
        provider.deploy(&ctx(), &spec).await.expect("deploy");
        if h.expects_logs {
            let appeared = wait_until(h.timeout, || async {
                provider
                    .logs_vec(&spec.id, &LogQuery::all())
                    .await
                    .is_ok_and(|l| !l.is_empty())
            })
            .await;
            assert!(appeared, "the app's startup line shows in the logs");
            let one = provider
                .logs_vec(&spec.id, &LogQuery::tail(1))
                .await
                .expect("logs");
            assert_eq!(one.len(), 1, "tail 1 returns one line");
            let none = provider
                .logs_vec(
                    &spec.id,
                    &LogQuery::all().contains("\u{1f}never-written\u{1f}"),
                )
                .await
                .expect("logs");
            assert!(none.is_empty(), "a substring filter excludes lines");
            if provider.supports(Capability::LogFollow) {
                let mut follow = provider
                    .logs(&spec.id, &LogQuery::tail(1).follow())
                    .await
                    .expect("follow");
                let first = tokio::time::timeout(h.timeout, follow.next()).await;
                assert!(
                    matches!(first, Ok(Some(Ok(_)))),
                    "follow starts with the history"
                );
            }
        } else {
            provider
                .logs_vec(&spec.id, &LogQuery::tail(5))
                .await
                .expect("logs");
        }
    })
    .await;
}

/// Metrics and health answer for a running deployment.
pub async fn metrics_and_health(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let spec = h.spec("metrics");
    with_cleanup(provider, &spec.id, async {
        provider.deploy(&ctx(), &spec).await.expect("deploy");
        let m = provider.metrics(&spec.id).await.expect("metrics");
        if provider.supports(Capability::Metrics) {
            assert!(
                m.memory_bytes.is_some(),
                "a metrics-capable provider reports memory"
            );
        }
        let health = provider.health(&spec.id).await.expect("health");
        if spec.config.health_check.is_some() && provider.supports(Capability::HealthChecks) {
            let healthy = wait_until(h.timeout, || async {
                provider
                    .health(&spec.id)
                    .await
                    .is_ok_and(|r| r.status == HealthStatus::Healthy)
            })
            .await;
            assert!(
                healthy,
                "a deployment that passed its gate reports healthy (last: {health:?})"
            );
        }
    })
    .await;
}

/// Update rolls out a new revision and stays running.
pub async fn update_rolls_out(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let spec = h.spec("update");
    with_cleanup(provider, &spec.id, async {
        provider.deploy(&ctx(), &spec).await.expect("deploy");
        let next = DeploymentSpec::new(spec.id.clone(), spec.revision.next(), spec.config.clone());
        let runtime = provider.update(&ctx(), &next).await.expect("update");
        assert!(
            runtime
                .instances
                .iter()
                .all(|i| i.revision == next.revision),
            "instances run the new revision"
        );
        assert_eq!(
            provider.status(&spec.id).await.expect("status"),
            DeploymentStatus::Running
        );
    })
    .await;
}

/// A deploy that never becomes ready fails with a report and leaves nothing running.
pub async fn failed_deploy_leaves_nothing(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let Some(failing) = &h.failing_config else {
        return;
    };
    let name = unique_name("fail-deploy");
    let spec = DeploymentSpec::new(DeploymentId::generate(), Revision::FIRST, failing(&name));
    with_cleanup(provider, &spec.id, async {
        let err = provider
            .deploy(&ctx(), &spec)
            .await
            .expect_err("a failing app must fail its deploy");
        assert!(
            !err.is_transient(),
            "a failed health gate is permanent: {err}"
        );
        match provider.status(&spec.id).await {
            Err(Error::NotFound { .. }) => {}
            Ok(s) => assert!(
                !s.is_running(),
                "nothing runs after a failed deploy, got {s}"
            ),
            Err(e) => panic!("status after failed deploy: {e}"),
        }
    })
    .await;
}

/// A failing update leaves the old revision serving.
pub async fn failed_update_keeps_old(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let Some(failing) = &h.failing_config else {
        return;
    };
    let spec = h.spec("fail-update");
    with_cleanup(provider, &spec.id, async {
        provider.deploy(&ctx(), &spec).await.expect("deploy");
        let mut bad = failing(spec.name());
        bad.port = spec.config.port;
        let next = DeploymentSpec::new(spec.id.clone(), spec.revision.next(), bad);
        provider
            .update(&ctx(), &next)
            .await
            .expect_err("a failing revision must fail the update");
        assert_eq!(
            provider.status(&spec.id).await.expect("status"),
            DeploymentStatus::Running,
            "the old revision keeps serving"
        );
    })
    .await;
}

/// Recovery finds a running deployment without starting it again.
pub async fn recover_adopts_running(provider: &Arc<DynProvider>, h: &ConformanceHarness) {
    let spec = h.spec("recover");
    with_cleanup(provider, &spec.id, async {
        let runtime = provider.deploy(&ctx(), &spec).await.expect("deploy");
        let found = provider
            .recover(&ctx(), std::slice::from_ref(&spec))
            .await
            .expect("recover");
        let mine = found
            .iter()
            .find(|f| f.id == spec.id)
            .expect("the deployment is recovered");
        assert_eq!(mine.status, DeploymentStatus::Running);
        let before: Vec<_> = runtime.instances.iter().map(|i| &i.id).collect();
        let after: Vec<_> = mine.runtime.instances.iter().map(|i| &i.id).collect();
        assert_eq!(
            before, after,
            "recovery adopts the same instances, it does not start new ones"
        );
    })
    .await;
}

/// Runs every check in turn.
pub async fn run_all(provider: Arc<DynProvider>, harness: &ConformanceHarness) {
    unknown_ids_are_not_found(&provider, harness).await;
    deploy_reports_running(&provider, harness).await;
    stop_then_start(&provider, harness).await;
    remove_forgets(&provider, harness).await;
    logs_answer_queries(&provider, harness).await;
    metrics_and_health(&provider, harness).await;
    update_rolls_out(&provider, harness).await;
    failed_deploy_leaves_nothing(&provider, harness).await;
    failed_update_keeps_old(&provider, harness).await;
    recover_adopts_running(&provider, harness).await;
}
