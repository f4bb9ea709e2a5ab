//! Blue-green and rolling updates, failed updates, replicas and recovery by label.

mod common;

use std::time::Duration;

use common::*;
use conan_core::{
    DeploymentSpec, ObservedStatus, OperationContext, Provider, Revision, UpdateStrategy,
};

fn next(spec: &DeploymentSpec, config: conan_core::DeploymentConfig) -> DeploymentSpec {
    DeploymentSpec::new(spec.id.clone(), Revision(spec.revision.0 + 1), config)
}

async fn revision_at(url: &str) -> String {
    let (_, body) = get(url, "/").await.unwrap_or((0, String::new()));
    body.split("\"revision\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_update_switches_and_a_failed_update_keeps_the_old_serving() {
    let provider = provider().await;
    let mut scope = Scope::new("bluegreen");
    let name = scope.name("bg");
    let ctx = OperationContext::detached();
    let v1 = spec(
        scope
            .mounted_config(&name)
            .env("APP_REVISION", "one")
            .build()
            .unwrap(),
    );
    let r1 = provider.deploy(&ctx, &v1, None).await.expect("deploy v1");
    assert_eq!(revision_at(r1.url.as_deref().unwrap()).await, "one");

    let v2 = next(
        &v1,
        scope
            .mounted_config(&name)
            .env("APP_REVISION", "two")
            .strategy(UpdateStrategy::BlueGreen)
            .build()
            .unwrap(),
    );
    let r2 = provider
        .update(&ctx, &known(&v1, &r1), &v2)
        .await
        .expect("update to v2");
    let k2 = known(&v2, &r2);
    assert_eq!(
        revision_at(r2.url.as_deref().unwrap()).await,
        "two",
        "the URL answers from the new revision"
    );
    assert_eq!(scope.containers().len(), 1, "old container removed");
    assert_eq!(
        inspect(
            &r2.instances[0].id,
            "{{index .Config.Labels \"conan.revision\"}}"
        ),
        "2"
    );

    let v3 = next(
        &v2,
        scope
            .mounted_config(&name)
            .env("APP_REVISION", "three")
            .env("CRASH", "1")
            .build()
            .unwrap(),
    );
    let err = provider.update(&ctx, &k2, &v3).await.unwrap_err();
    assert!(err.failure().is_some(), "failure bundle: {err:?}");
    assert_eq!(provider.status(&k2).await.unwrap(), ObservedStatus::Running);
    assert_eq!(
        revision_at(r2.url.as_deref().unwrap()).await,
        "two",
        "old revision keeps serving"
    );
    assert_eq!(
        scope.containers(),
        vec![r2.instances[0].id[..12].to_owned()]
    );

    provider.remove(&ctx, &k2).await.unwrap();
    assert!(scope.containers().is_empty());
    assert!(scope.images().is_empty(), "{:?}", scope.images());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_roll_one_at_a_time() {
    let provider = provider().await;
    let mut scope = Scope::new("rolling");
    let name = scope.name("roll");
    let ctx = OperationContext::detached();
    let v1 = spec(
        scope
            .mounted_config(&name)
            .env("APP_REVISION", "one")
            .replicas(2)
            .build()
            .unwrap(),
    );
    let r1 = provider.deploy(&ctx, &v1, None).await.expect("deploy");
    assert_eq!(r1.instances.len(), 2);
    let ports: std::collections::BTreeSet<_> = r1.instances.iter().map(|i| i.port).collect();
    assert_eq!(ports.len(), 2, "each replica has its own port");
    assert_eq!(scope.containers().len(), 2);

    let v2 = next(
        &v1,
        scope
            .mounted_config(&name)
            .env("APP_REVISION", "two")
            .replicas(2)
            .strategy(UpdateStrategy::Rolling)
            .build()
            .unwrap(),
    );
    let r2 = provider
        .update(&ctx, &known(&v1, &r1), &v2)
        .await
        .expect("rolling update");
    let k2 = known(&v2, &r2);
    assert_eq!(r2.instances.len(), 2);
    for i in &r2.instances {
        assert_eq!(i.revision, Revision(2));
        let url = format!("http://127.0.0.1:{}", i.port.unwrap());
        assert_eq!(revision_at(&url).await, "two");
    }
    assert_eq!(scope.containers().len(), 2, "old replicas removed");

    // A failing rolling update puts back what it replaced.
    let v3 = next(
        &v2,
        scope
            .mounted_config(&name)
            .env("CRASH", "1")
            .replicas(2)
            .strategy(UpdateStrategy::Rolling)
            .build()
            .unwrap(),
    );
    provider.update(&ctx, &k2, &v3).await.unwrap_err();
    assert_eq!(provider.status(&k2).await.unwrap(), ObservedStatus::Running);
    assert_eq!(scope.containers().len(), 2);
    for i in &r2.instances {
        let url = format!("http://127.0.0.1:{}", i.port.unwrap());
        assert!(
            eventually(Duration::from_secs(10), || async {
                revision_at(&url).await == "two"
            })
            .await,
            "replica {} serves revision two again",
            i.id
        );
    }
    provider.remove(&ctx, &k2).await.unwrap();
    assert!(scope.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_provider_recovers_running_containers_by_label() {
    let first = provider().await;
    let mut scope = Scope::new("recover");
    let ctx = OperationContext::detached();
    let alive = spec(scope.mounted_config(&scope.name("alive")).build().unwrap());
    let gone = spec(scope.mounted_config(&scope.name("gone")).build().unwrap());
    let (ra, rg) = futures::future::join(
        first.deploy(&ctx, &alive, None),
        first.deploy(&ctx, &gone, None),
    )
    .await;
    let (ra, rg) = (ra.unwrap(), rg.unwrap());
    let started = inspect(&ra.instances[0].id, "{{.State.StartedAt}}");
    drop(first);
    // The app of `gone` disappears while no manager runs.
    docker_lines(&["rm", "-f", &rg.instances[0].id]);

    let second = provider().await;
    let recovered = second
        .recover(&ctx, &[known(&alive, &ra), known(&gone, &rg)])
        .await
        .unwrap();
    let a = recovered
        .iter()
        .find(|r| r.id == alive.id)
        .expect("alive recovered");
    assert_eq!(a.status, ObservedStatus::Running);
    assert_eq!(
        a.runtime.instances[0].id, ra.instances[0].id,
        "adopted, not recreated"
    );
    assert_eq!(
        inspect(&ra.instances[0].id, "{{.State.StartedAt}}"),
        started,
        "not restarted"
    );
    let g = recovered
        .iter()
        .find(|r| r.id == gone.id)
        .expect("gone reported");
    assert!(
        matches!(g.status, ObservedStatus::Failed { .. }),
        "{:?}",
        g.status
    );
    assert!(g.failure.is_some());

    // The adopted deployment is fully manageable.
    let ka = known(&alive, &a.runtime);
    assert!(second.status(&ka).await.unwrap().is_running());
    let (status, _) = get(a.runtime.url.as_deref().unwrap(), "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            second.health(&ka).await.is_ok()
        })
        .await
    );
    second.remove(&ctx, &ka).await.unwrap();
    assert!(scope.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_rolls_back_and_networks_are_created_when_missing() {
    let provider = provider().await;
    let mut scope = Scope::new("recreate");
    let name = scope.name("rc");
    let network = format!("{}-net", scope.tag);
    let ctx = OperationContext::detached();
    let with_network = |builder: conan_core::DeploymentConfigBuilder, dir: &std::path::Path| {
        builder.provider_options(
            "docker",
            conan_provider_docker::DockerOptions {
                image: Some(BASE_IMAGE.to_owned()),
                volumes: vec![format!("{}:/app:ro", dir.display())],
                network: Some(network.clone()),
                ..Default::default()
            },
        )
    };
    let dir = scope.node_app();
    let base = |rev: &str| {
        scope
            .config(&name, &dir)
            .start_command("node server.js")
            .env("APP_REVISION", rev)
            .strategy(UpdateStrategy::Recreate)
    };
    let v1 = spec(with_network(base("one"), &dir).build().unwrap());
    let r1 = provider.deploy(&ctx, &v1, None).await.expect("deploy");
    let k1 = known(&v1, &r1);
    let id = &r1.instances[0].id;
    assert!(
        inspect(id, "{{json .NetworkSettings.Networks}}").contains(&network),
        "attached to the created network"
    );
    assert_eq!(revision_at(r1.url.as_deref().unwrap()).await, "one");

    let v2 = next(
        &v1,
        with_network(base("two").env("CRASH", "1"), &dir)
            .build()
            .unwrap(),
    );
    let err = provider.update(&ctx, &k1, &v2).await.unwrap_err();
    assert!(err.failure().is_some(), "{err:?}");
    assert_eq!(provider.status(&k1).await.unwrap(), ObservedStatus::Running);
    let containers = scope.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let back = inspect(
        &containers[0],
        "{{(index (index .NetworkSettings.Ports \"3000/tcp\") 0).HostPort}}",
    );
    assert_eq!(
        revision_at(&format!("http://127.0.0.1:{back}")).await,
        "one",
        "auto rollback started the previous revision again"
    );
    provider.remove(&ctx, &k1).await.unwrap();
    assert!(scope.containers().is_empty());
}
