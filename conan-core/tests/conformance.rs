//! The provider conformance suite, run against the in-memory reference provider, directly
//! and through `Arc<dyn Provider>` / `Box<dyn Provider>`.

use std::sync::Arc;

use conan_core::testing::MemoryProvider;
use conan_core::testing::conformance::{self, ConformanceHarness};
use conan_core::{DeploymentConfig, DynProvider, HealthCheck};

fn harness() -> ConformanceHarness {
    ConformanceHarness::new(|name| {
        DeploymentConfig::builder(name)
            .health_check(HealthCheck::http("/health"))
            .build_unchecked()
    })
    .with_failing_config(|name| {
        DeploymentConfig::builder(name)
            .label(MemoryProvider::FAIL_LABEL, "yes")
            .build_unchecked()
    })
}

#[tokio::test]
async fn memory_provider_passes_as_arc_dyn() {
    let provider: Arc<DynProvider> = Arc::new(MemoryProvider::new());
    conformance::run_all(provider, &harness()).await;
}

#[tokio::test]
async fn memory_provider_passes_through_forwarding_impls() {
    // Arc<Box<dyn Provider>> exercises the Box forwarding impl; Arc<Arc<..>> the Arc one.
    let boxed: Box<DynProvider> = Box::new(MemoryProvider::new());
    conformance::run_all(Arc::new(boxed), &harness()).await;
    let shared = Arc::new(MemoryProvider::new());
    conformance::run_all(Arc::new(shared.clone()), &harness()).await;
    assert!(shared.is_empty(), "the suite cleans up after itself");
}
