//! Regression tests of contract v2 particular to Docker: idempotency by revision (found by
//! label), replacing a failed first deploy through the manager, a fresh instance stopping
//! with the config's stop timeout, and cancelling a slow image build.

mod common;

use std::time::{Duration, Instant};

use common::*;
use conan_core::{
    DeploymentManager, DeploymentStatus, Error, KnownDeployment, ObservedStatus, OperationContext,
    Provider, RetryPolicy,
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_deploy_of_the_same_spec_converges_on_one_container() {
    let first = provider().await;
    let mut scope = Scope::new("repeat");
    let spec = spec(scope.mounted_config(&scope.name("rep")).build().unwrap());
    let ctx = OperationContext::detached();
    let r1 = first.deploy(&ctx, &spec, None).await.expect("deploy");
    let again = first.deploy(&ctx, &spec, None).await.expect("deploy again");
    assert_eq!(containers_of(&spec.id).len(), 1, "one container");
    assert_eq!(again.instances[0].id, r1.instances[0].id, "the same one");
    // A fresh instance (the answer was lost, the daemon restarted) converges too.
    drop(first);
    let second = provider().await;
    let third = second
        .deploy(&ctx, &spec, None)
        .await
        .expect("deploy on a fresh instance");
    assert_eq!(containers_of(&spec.id).len(), 1, "still one container");
    assert_eq!(third.instances[0].id, r1.instances[0].id);
    assert_eq!(
        third.details.get("containers"),
        Some(&serde_json::json!([r1.instances[0].id])),
        "container ids are kept in the runtime details"
    );
    assert!(
        third.details.contains_key("image_id"),
        "{:?}",
        third.details
    );
    second.remove(&ctx, &known(&spec, &third)).await.unwrap();
    assert!(containers_of(&spec.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_after_a_failed_first_deploy_works_through_the_manager() {
    let docker = provider().await;
    let mut scope = Scope::new("refail");
    let name = scope.name("fix");
    let manager = DeploymentManager::builder()
        .provider(docker)
        .retry(RetryPolicy::none())
        .build()
        .await
        .expect("manager");
    let broken = scope
        .mounted_config(&name)
        .provider("docker")
        .env("CRASH", "1")
        .build()
        .unwrap();
    let err = manager.deploy(broken).await.unwrap_err();
    assert!(err.failure().is_some(), "{err:?}");
    let fixed = scope
        .mounted_config(&name)
        .provider("docker")
        .env("APP_REVISION", "fixed")
        .build()
        .unwrap();
    let record = manager
        .update(&name, fixed)
        .await
        .expect("update of a failed deployment");
    assert_eq!(record.status, DeploymentStatus::Running);
    let url = record
        .runtime
        .as_ref()
        .and_then(|r| r.url.clone())
        .expect("url");
    let (_, body) = get(&url, "/").await.unwrap();
    assert!(body.contains("\"revision\":\"fixed\""), "{body}");
    assert_eq!(containers_of(&record.id).len(), 1);
    manager.remove(&name).await.expect("remove");
    assert!(containers_of(&record.id).is_empty());
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_stops_with_the_configs_stop_timeout() {
    let first = provider().await;
    let mut scope = Scope::new("stoptime");
    // The app ignores SIGTERM: stopping takes exactly the stop timeout, then a kill.
    let spec = spec(
        scope
            .mounted_config(&scope.name("st"))
            .env("IGNORE_TERM", "1")
            .stop_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let ctx = OperationContext::detached();
    let runtime = first.deploy(&ctx, &spec, None).await.expect("deploy");
    drop(first);
    let fresh = provider().await;
    let k = known(&spec, &runtime);
    let began = Instant::now();
    fresh.stop(&ctx, &k).await.expect("stop");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "stopped after the config's 1 s stop timeout (not a fallback), took {took:?}"
    );
    let stopped = KnownDeployment::new(spec.clone(), runtime.stopped());
    assert_eq!(
        fresh.status(&stopped).await.unwrap(),
        ObservedStatus::Stopped
    );
    fresh.remove(&ctx, &stopped).await.unwrap();
    assert!(containers_of(&spec.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_slow_image_build_leaves_nothing() {
    let provider = provider().await;
    let mut scope = Scope::new("cancelbuild");
    let dockerfile = format!("FROM {BASE_IMAGE}\nRUN sleep 60\nCMD [\"node\"]\n");
    let dir = scope.app_dir(&[("Dockerfile", &dockerfile)]);
    let spec = spec(scope.config(&scope.name("slow"), &dir).build().unwrap());
    let cancel = CancellationToken::new();
    let ctx = OperationContext::with_cancel(conan_core::EventSink::detached(), cancel.clone());
    let canceller = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cancel.cancel();
        Instant::now()
    };
    let (result, cancelled_at) =
        futures::future::join(provider.deploy(&ctx, &spec, None), canceller).await;
    assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "answers soon after the cancellation, took {:?}",
        cancelled_at.elapsed()
    );
    assert!(containers_of(&spec.id).is_empty());
    assert!(
        eventually(Duration::from_secs(10), || async {
            scope.images().is_empty()
        })
        .await,
        "no image of the attempt: {:?}",
        scope.images()
    );
}
