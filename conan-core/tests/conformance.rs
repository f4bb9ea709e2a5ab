//! The provider conformance suite, run against the in-memory reference provider (directly,
//! through `Arc<dyn Provider>` and through `Box<dyn Provider>`), and shown to **fail** for
//! providers that break the contract: one that keeps its state only in its own memory (so
//! a fresh instance cannot recover), and one whose deploy is not idempotent.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;

use conan_core::testing::conformance::{self, ConformanceHarness};
use conan_core::testing::{MemoryBackend, MemoryProvider};
use conan_core::{
    Capabilities, DeploymentConfig, DeploymentId, DeploymentSpec, DynProvider, Error,
    FailureReport, HealthCheck, HealthReport, KnownDeployment, LogQuery, LogStream, Metrics,
    ObservedStatus, OperationContext, Provider, RecoveredDeployment, Result, RuntimeInfo,
};

fn config(name: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name)
        .health_check(HealthCheck::http("/health"))
        .build_unchecked()
}

fn failing(name: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name)
        .label(MemoryProvider::FAIL_LABEL, "yes")
        .build_unchecked()
}

/// A harness over `backend` whose `make` wraps each fresh `MemoryProvider` with `wrap`.
fn harness(
    backend: &MemoryBackend,
    wrap: impl Fn(MemoryProvider) -> Arc<DynProvider> + Send + Sync + 'static,
) -> ConformanceHarness {
    let make_backend = backend.clone();
    let list_backend = backend.clone();
    ConformanceHarness::new(
        move || wrap(MemoryProvider::with_backend(make_backend.clone())),
        config,
    )
    .with_failing_config(failing)
    .with_leftovers(move |id| {
        let left: Vec<String> = list_backend.instance(id).into_iter().collect();
        Box::pin(async move { left })
    })
    .timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn memory_provider_passes_as_arc_dyn() {
    let backend = MemoryBackend::new();
    conformance::run_all(&harness(&backend, |p| Arc::new(p))).await;
    assert!(backend.is_empty(), "the suite cleans up after itself");
}

#[tokio::test]
async fn memory_provider_passes_through_the_box_forwarding_impl() {
    let backend = MemoryBackend::new();
    conformance::run_all(&harness(&backend, |p| {
        let boxed: Box<DynProvider> = Box::new(p);
        Arc::new(boxed)
    }))
    .await;
    assert!(backend.is_empty(), "the suite cleans up after itself");
}

#[tokio::test]
async fn memory_provider_passes_through_the_arc_forwarding_impl() {
    let backend = MemoryBackend::new();
    conformance::run_all(&harness(&backend, |p| Arc::new(Arc::new(p)))).await;
    assert!(backend.is_empty(), "the suite cleans up after itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_provider_passes_on_a_multi_threaded_runtime() {
    let backend = MemoryBackend::new();
    let h = harness(&backend, |p| Arc::new(p));
    // The suite's futures are Send: they can run on spawned tasks.
    tokio::spawn(async move { conformance::run_all(&h).await })
        .await
        .expect("the suite passes");
    assert!(backend.is_empty());
}

/// Every instance `make` builds takes 3 s (racing cancellation) in each mutating call:
/// the slow config for the mid-deploy cancellation check.
#[tokio::test]
async fn memory_provider_honours_cancellation_mid_deploy() {
    let backend = MemoryBackend::new();
    let h = harness(&backend, |p| {
        p.set_delay(Some(Duration::from_secs(3)));
        Arc::new(p)
    })
    .with_slow_config(config);
    conformance::cancellation_mid_deploy(&h).await;
    conformance::deploy_honours_cancelled_token(&h).await;
    assert!(
        backend.is_empty(),
        "nothing is left of the cancelled deploys"
    );
}

// ---------------------------------------------------------------------------------------
// Providers that break the contract, and proof that the suite catches them.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Flaw {
    /// Answers `recover` from its own in-instance map only, as a provider that keeps its
    /// state in memory: a fresh instance knows nothing.
    ForgetsAcrossInstances,
    /// Answers `AlreadyExists` when the deployment already runs.
    DeployNotIdempotent,
}

/// A `MemoryProvider` with one flaw; everything else is forwarded.
struct Flawed {
    inner: MemoryProvider,
    flaw: Flaw,
    /// What this instance deployed (the only memory a `ForgetsAcrossInstances` has).
    seen: Mutex<Vec<(DeploymentId, conan_core::Revision, RuntimeInfo)>>,
}

impl Flawed {
    fn make(backend: &MemoryBackend, flaw: Flaw) -> ConformanceHarness {
        harness(backend, move |inner| {
            Arc::new(Flawed {
                inner,
                flaw,
                seen: Mutex::new(Vec::new()),
            })
        })
    }

    fn remember(&self, spec: &DeploymentSpec, runtime: &RuntimeInfo) {
        let mut seen = self.seen.lock().unwrap();
        seen.retain(|(id, _, _)| *id != spec.id);
        seen.push((spec.id.clone(), spec.revision, runtime.clone()));
    }
}

#[async_trait]
impl Provider for Flawed {
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
        if matches!(self.flaw, Flaw::DeployNotIdempotent) && self.inner.backend().contains(&spec.id)
        {
            return Err(Error::AlreadyExists {
                name: spec.name().to_owned(),
            });
        }
        let runtime = self.inner.deploy(ctx, spec, previous).await?;
        self.remember(spec, &runtime);
        Ok(runtime)
    }
    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        let runtime = self.inner.update(ctx, current, spec).await?;
        self.remember(spec, &runtime);
        Ok(runtime)
    }
    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        self.inner.start(ctx, known).await
    }
    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        self.inner.stop(ctx, known).await
    }
    async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        self.inner.remove(ctx, known).await
    }
    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
        self.inner.status(known).await
    }
    async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
        self.inner.logs(known, query).await
    }
    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
        self.inner.metrics(known).await
    }
    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
        self.inner.health(known).await
    }
    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        match self.flaw {
            Flaw::ForgetsAcrossInstances => {
                let seen = self.seen.lock().unwrap();
                Ok(known
                    .iter()
                    .map(|k| match seen.iter().find(|(id, _, _)| id == k.id()) {
                        Some((id, revision, runtime)) => {
                            RecoveredDeployment::running(id.clone(), *revision, runtime.clone())
                        }
                        None => RecoveredDeployment::failed(
                            k.id().clone(),
                            k.revision(),
                            FailureReport::new("vanished (this instance never saw it)"),
                        ),
                    })
                    .collect())
            }
            Flaw::DeployNotIdempotent => self.inner.recover(ctx, known).await,
        }
    }
}

/// Runs `check` and answers its panic message; fails the test when it did not panic.
async fn panic_of(check: impl std::future::Future<Output = ()>) -> String {
    let outcome = AssertUnwindSafe(check).catch_unwind().await;
    let payload = outcome.expect_err("the suite must fail for a provider that breaks the contract");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_suite_fails_a_provider_that_keeps_its_state_only_in_memory() {
    let backend = MemoryBackend::new();
    let h = Flawed::make(&backend, Flaw::ForgetsAcrossInstances);
    // Everything but recovery works: it forwards to a correct provider.
    conformance::deploy_reports_running(&h).await;
    conformance::stop_then_start(&h).await;
    let message = panic_of(conformance::recovery_across_instances(&h)).await;
    assert!(
        message.starts_with("recovery_across_instances:") && message.contains("Running"),
        "the panic names the check and the broken rule: {message}"
    );
    assert!(
        backend.is_empty(),
        "the failed check still removed what it deployed"
    );
}

#[tokio::test]
async fn the_suite_fails_a_provider_whose_deploy_is_not_idempotent() {
    let backend = MemoryBackend::new();
    let h = Flawed::make(&backend, Flaw::DeployNotIdempotent);
    let message = panic_of(conformance::deploy_is_idempotent(&h)).await;
    assert!(
        message.starts_with("deploy_is_idempotent:") && message.contains("AlreadyExists"),
        "the panic names the check and the broken rule: {message}"
    );
    assert!(backend.is_empty(), "the failed check still cleaned up");
}

#[tokio::test]
async fn the_suite_fails_a_provider_that_ignores_cancellation() {
    // Over a delay that ignores the token, a cancelled deploy completes: the check fails.
    use conan_core::testing::{Call, CallFault, FaultyProvider};
    let backend = MemoryBackend::new();
    let h = harness(&backend, |p| {
        let faulty = FaultyProvider::new(p);
        faulty.inject(Call::Deploy, CallFault::DelayAnswer(Duration::from_secs(2)));
        Arc::new(faulty)
    })
    .with_slow_config(config);
    let message = panic_of(conformance::cancellation_mid_deploy(&h)).await;
    assert!(
        message.starts_with("cancellation_mid_deploy:") && message.contains("Cancelled"),
        "the panic names the check and the broken rule: {message}"
    );
    assert!(backend.is_empty(), "the failed check still cleaned up");
}
