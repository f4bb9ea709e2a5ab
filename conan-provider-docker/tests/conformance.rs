//! conan-core's provider conformance suite (v2), run against the Docker provider: every
//! check gets a FRESH `DockerProvider` on the same daemon (as a restarted daemon would),
//! and leftovers are the containers labelled with the deployment's id.
//!
//! The whole suite runs on the provider as `Arc<dyn Provider>`; the checks that matter
//! most for idempotency and recovery run again through the forwarding impl of
//! `Arc<Arc<dyn Provider>>` (what a wrapper or registry hands around), concurrently.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use conan_core::testing::conformance::{self, ConformanceHarness};
use conan_core::{DeploymentConfig, DeploymentId, DynProvider, HealthCheck};
use conan_provider_docker::{DockerOptions, DockerProvider};

/// A fresh provider, built synchronously (the harness's factory is not async).
fn fresh_provider() -> DockerProvider {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            DockerProvider::builder()
                .base_image(BASE_IMAGE)
                .build()
                .await
                .expect("a Docker daemon answers")
        })
    })
}

fn harness(scope: &mut Scope, wrap: bool) -> ConformanceHarness {
    let dir = scope.node_app();
    let tag = scope.tag.clone();
    let make_config = move |name: &str, env: &[(&str, &str)]| {
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
        for (k, v) in env {
            builder = builder.env(*k, *v);
        }
        builder.build().expect("valid config")
    };
    let make_config = Arc::new(make_config);
    let (ok, failing, slow) = (
        Arc::clone(&make_config),
        Arc::clone(&make_config),
        make_config,
    );
    ConformanceHarness::new(
        move || {
            let provider: Arc<DynProvider> = Arc::new(fresh_provider());
            if wrap { Arc::new(provider) } else { provider }
        },
        move |name| ok(name, &[]),
    )
    .with_failing_config(move |name| failing(name, &[("CRASH", "1")]))
    .with_slow_config(move |name| slow(name, &[("DELAY_MS", "4000")]))
    .with_leftovers(|id: &DeploymentId| {
        let id = id.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || containers_of(&id))
                .await
                .unwrap_or_default()
        })
    })
    .timeout(Duration::from_secs(90))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_provider_passes_the_conformance_suite() {
    let _ = provider().await; // fails loudly without a daemon; builds the base image
    let mut scope = Scope::new("conformance");
    let harness = harness(&mut scope, false);
    conformance::run_all(&harness).await;
    assert!(
        scope.containers().is_empty(),
        "the suite leaves nothing behind: {:?}",
        scope.containers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_a_forwarding_arc_dyn_provider() {
    let _ = provider().await;
    let mut scope = Scope::new("conformance-arc");
    let h = harness(&mut scope, true);
    conformance::unknown_ids_are_not_found(&h).await;
    conformance::deploy_is_idempotent(&h).await;
    conformance::update_is_idempotent(&h).await;
    conformance::stop_then_start(&h).await;
    conformance::recovery_across_instances(&h).await;
    assert!(
        scope.containers().is_empty(),
        "the checks leave nothing behind: {:?}",
        scope.containers()
    );
}
