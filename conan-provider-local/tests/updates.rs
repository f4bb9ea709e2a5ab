//! Blue-green and recreate updates, idempotent deploys, and updates through a
//! `DeploymentManager` (which alone reports rollbacks).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_core::{DeploymentManager, Event, StatusKind, UpdateStrategy};

const PORTS: std::ops::RangeInclusive<u16> = 23000..=23499;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_and_a_failed_revision_leaves_the_old_one_serving() {
    let (p, _dir) = provider(PORTS);
    let s = spec(config(&unique("bg"), "hello"));
    let _g = Guard::new(&[&s.id]);
    let (ctx, mut rx) = ctx();
    let v1 = p.deploy(&ctx, &s, None).await.unwrap();
    let (pid1, port1) = (v1.instances[0].id.clone(), v1.port().unwrap());

    let s2 = DeploymentSpec::new(s.id.clone(), Revision(2), s.config.clone());
    let k1 = KnownDeployment::new(s.clone(), v1);
    let v2 = p.update(&ctx, &k1, &s2).await.unwrap();
    let port2 = v2.port().unwrap();
    assert_ne!(port1, port2);
    assert_eq!(v2.instances[0].revision, Revision(2));
    assert!(
        !alive(pid1.parse().unwrap()),
        "old revision stopped after the switch"
    );
    assert_eq!(get(port2, "/health").await, Some(200));

    // Revision 3 never gets healthy: revision 2 keeps serving untouched.
    let mut bad = s.config.as_ref().clone();
    bad.health_check = Some(HealthCheck::http("/fail"));
    bad.update.healthy_deadline = Duration::from_secs(1);
    let s3 = DeploymentSpec::new(s.id.clone(), Revision(3), bad);
    let k2 = KnownDeployment::new(s2.clone(), v2.clone());
    let e = p.update(&ctx, &k2, &s3).await.unwrap_err();
    assert!(e.failure().is_some(), "{e}");
    assert_eq!(get(port2, "/health").await, Some(200));
    assert_eq!(p.status(&k2).await.unwrap(), ObservedStatus::Running);
    assert_eq!(
        marked(s.id.as_str()),
        vec![v2.instances[0].id.parse::<u32>().unwrap()]
    );
    // Rollbacks are the manager's to report: the provider emits none.
    while let Ok(ev) = rx.try_recv() {
        assert!(
            !matches!(ev.event, Event::RolledBack { .. }),
            "{:?}",
            ev.event
        );
    }
    p.remove(&ctx, &k2).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_then_starts() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("re"), "hello");
    c.update.strategy = UpdateStrategy::Recreate;
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let v1 = p.deploy(&ctx, &s, None).await.unwrap();
    let s2 = DeploymentSpec::new(s.id.clone(), Revision(2), s.config.clone());
    let v2 = p
        .update(&ctx, &KnownDeployment::new(s.clone(), v1.clone()), &s2)
        .await
        .unwrap();
    assert_ne!(v1.instances[0].id, v2.instances[0].id);
    assert_eq!(v2.instances[0].revision, Revision(2));
    assert!(!alive(v1.instances[0].id.parse().unwrap()));
    assert_eq!(marked(s.id.as_str()).len(), 1);
    // Repeating the update (as after an abandoned call) keeps the one instance.
    let again = p
        .update(&ctx, &KnownDeployment::new(s.clone(), v1), &s2)
        .await
        .unwrap();
    assert_eq!(again.instances[0].id, v2.instances[0].id);
    assert_eq!(marked(s.id.as_str()).len(), 1);
    p.remove(&ctx, &known(&s2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_the_same_spec_twice_converges_on_one_process() {
    let (p, _dir) = provider(PORTS);
    let s = spec(config(&unique("twice"), "hello"));
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let first = p.deploy(&ctx, &s, None).await.unwrap();
    let second = p.deploy(&ctx, &s, None).await.unwrap();
    assert_eq!(first.instances[0].id, second.instances[0].id);
    assert_eq!(marked(s.id.as_str()).len(), 1);

    // A fresh provider over the same state directory converges too.
    let fresh = fresh(&p);
    let third = fresh
        .deploy(&ctx, &s, Some(&KnownDeployment::new(s.clone(), second)))
        .await
        .unwrap();
    assert_eq!(third.instances[0].id, first.instances[0].id);
    assert_eq!(marked(s.id.as_str()).len(), 1);
    fresh.remove(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}

async fn manager(p: &Arc<conan_provider_local::LocalProvider>) -> DeploymentManager {
    DeploymentManager::builder()
        .provider_arc(p.clone())
        .retry(conan_core::RetryPolicy {
            max_retries: 0,
            ..conan_core::RetryPolicy::default()
        })
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_blue_green_update_through_the_manager_yields_exactly_one_rollback() {
    let (p, _dir) = provider(PORTS);
    let m = manager(&p).await;
    let mut c = config(&unique("mgr-bg"), "hello");
    c.provider = Some("local".into());
    let rec = m.deploy(c.clone()).await.unwrap();
    let _g = Guard::new(&[&rec.id]);
    let port = rec.runtime.as_ref().unwrap().port().unwrap();
    let mut rx = m.subscribe();

    let mut bad = c.clone();
    bad.health_check = Some(HealthCheck::http("/fail"));
    bad.update.healthy_deadline = Duration::from_secs(1);
    let e = m.update(rec.id.as_str(), bad).await.unwrap_err();
    assert!(e.failure().is_some(), "{e}");

    let after = m.get(rec.id.as_str()).unwrap();
    assert_eq!(after.status.kind(), StatusKind::Running);
    assert_eq!(after.revision, Revision(1));
    assert_eq!(
        get(port, "/health").await,
        Some(200),
        "the old revision serves"
    );
    assert_eq!(marked(rec.id.as_str()).len(), 1);
    let mut rollbacks = 0;
    while let Ok(ev) = rx.try_recv() {
        if let Event::RolledBack {
            failed, serving, ..
        } = ev.event
        {
            assert_eq!((failed, serving), (Revision(2), Revision(1)));
            rollbacks += 1;
        }
    }
    assert_eq!(rollbacks, 1);
    m.remove(rec.id.as_str()).await.unwrap();
    assert!(marked(rec.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_after_a_failed_first_deploy_runs() {
    let (p, _dir) = provider(PORTS);
    let m = manager(&p).await;
    let name = unique("mgr-fix");
    let mut broken = DeploymentConfig::new(&name);
    broken.provider = Some("local".into());
    broken.source = app("crash");
    broken.health_check = Some(HealthCheck::http("/health"));
    broken.update.healthy_deadline = Duration::from_secs(5);
    m.deploy(broken).await.unwrap_err();
    let failed = m.get(&name).unwrap();
    let _g = Guard::new(&[&failed.id]);
    assert_eq!(failed.status.kind(), StatusKind::Failed);
    assert!(marked(failed.id.as_str()).is_empty());

    let mut good = config(&name, "hello");
    good.provider = Some("local".into());
    let rec = m.update(&name, good).await.unwrap();
    assert_eq!(rec.status.kind(), StatusKind::Running);
    let port = rec.runtime.as_ref().unwrap().port().unwrap();
    assert_eq!(get(port, "/health").await, Some(200));
    assert_eq!(marked(rec.id.as_str()).len(), 1);
    m.remove(&name).await.unwrap();
    assert!(marked(rec.id.as_str()).is_empty());
}
