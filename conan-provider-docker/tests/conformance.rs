//! conan-core's provider conformance suite, run against the Docker provider (directly and
//! through `Arc<dyn Provider>`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use conan_core::testing::conformance::{self, ConformanceHarness};
use conan_core::{DeploymentConfig, DynProvider, HealthCheck};
use conan_provider_docker::DockerOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_provider_passes_the_conformance_suite() {
    let provider: Arc<DynProvider> = Arc::new(provider().await);
    let mut scope = Scope::new("conformance");
    let dir = scope.node_app();
    let tag = scope.tag.clone();
    let make = move |name: &str, crash: bool| {
        let options = DockerOptions {
            image: Some(BASE_IMAGE.to_owned()),
            volumes: vec![format!("{}:/app:ro", dir.display())],
            ..DockerOptions::default()
        };
        let mut builder = DeploymentConfig::builder(name)
            .source(&dir)
            .label(TEST_LABEL, &tag)
            .start_command("node server.js")
            .health_check(HealthCheck::http("/health"))
            .healthy_deadline(Duration::from_secs(20))
            .stop_timeout(Duration::from_secs(2))
            .provider_options("docker", options);
        if crash {
            builder = builder.env("CRASH", "1");
        }
        builder.build().expect("valid config")
    };
    let make = Arc::new(make);
    let ok = Arc::clone(&make);
    let harness = ConformanceHarness::new(move |name| ok(name, false))
        .with_failing_config(move |name| make(name, true));
    conformance::run_all(provider, &harness).await;
    assert!(
        scope.containers().is_empty(),
        "the suite leaves nothing behind: {:?}",
        scope.containers()
    );
}
