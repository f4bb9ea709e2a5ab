//! The provider conformance suite v2, run against the static provider directly and
//! through `Arc<dyn Provider>` (the forwarding impl the manager's registry uses).

mod common;

use std::sync::Arc;
use std::time::Duration;

use conan_core::DynProvider;
use conan_core::testing::conformance::{self, ConformanceHarness};
use conan_provider_static::{StaticProvider, live_listeners};

use common::Site;

fn harness(site: &Site, wrap: bool) -> ConformanceHarness {
    let (ok, failing, slow) = (site.root(), site.root(), site.root());
    ConformanceHarness::new(
        move || {
            let provider: Arc<DynProvider> = Arc::new(StaticProvider::new());
            if wrap { Arc::new(provider) } else { provider }
        },
        move |name| common::config(name, &ok),
    )
    .with_failing_config(move |name| common::failing_config(name, &failing))
    .with_slow_config(move |name| common::slow_config(name, &slow))
    .with_leftovers(|id| {
        let left = live_listeners(id);
        Box::pin(async move { left })
    })
    .expects_logs(true)
    .timeout(Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_direct() {
    let site = Site::new();
    conformance::run_all(&harness(&site, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_arc_dyn_provider() {
    let site = Site::new();
    conformance::run_all(&harness(&site, true)).await;
}

/// The single-threaded runtime `#[tokio::test]` uses by default: aborted servers are only
/// dropped when the test task yields, which recovery's port wait must allow for.
#[tokio::test]
async fn conformance_on_a_current_thread_runtime() {
    let site = Site::new();
    conformance::run_all(&harness(&site, false)).await;
}
