//! conan-core's provider conformance suite against the local provider, as
//! `Arc<dyn Provider>` over the provider itself and over the forwarding `Arc<T>` impl.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use conan_core::DynProvider;
use conan_core::prelude::*;
use conan_core::testing::conformance::{self, ConformanceHarness};
use conan_provider_local::LocalProvider;

fn harness() -> ConformanceHarness {
    ConformanceHarness::new(|name| config(name, "hello")).with_failing_config(|name| {
        let mut c = DeploymentConfig::new(name);
        c.source = app("crash");
        c.health_check = Some(HealthCheck::http("/health"));
        c.update.healthy_deadline = Duration::from_secs(5);
        c
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_as_dyn_provider() {
    let (p, _dir) = provider(24000..=24249);
    let p: Arc<LocalProvider> = p;
    conformance::run_all(p as Arc<DynProvider>, &harness()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_the_forwarding_arc_impl() {
    let (p, _dir) = provider(24250..=24499);
    let forwarded: Arc<DynProvider> = Arc::new(p);
    conformance::run_all(forwarded, &harness()).await;
}
