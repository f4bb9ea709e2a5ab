//! Blue-green and recreate updates.

mod common;

use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_core::{Event, UpdateStrategy};

const PORTS: std::ops::RangeInclusive<u16> = 23000..=23499;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_and_a_failed_revision_leaves_the_old_one_serving() {
    let (p, _dir) = provider(PORTS);
    let s = spec(config(&unique("bg"), "hello"));
    let _g = Guard::new(&[&s.id]);
    let (ctx, mut rx) = ctx();
    let v1 = p.deploy(&ctx, &s).await.unwrap();
    let (pid1, port1) = (v1.instances[0].id.clone(), v1.port().unwrap());

    let s2 = DeploymentSpec::new(s.id.clone(), Revision(2), s.config.clone());
    let v2 = p.update(&ctx, &s2).await.unwrap();
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
    let e = p.update(&ctx, &s3).await.unwrap_err();
    assert!(e.failure().is_some(), "{e}");
    assert_eq!(get(port2, "/health").await, Some(200));
    assert_eq!(p.status(&s.id).await.unwrap(), DeploymentStatus::Running);
    assert_eq!(
        marked(s.id.as_str()),
        vec![v2.instances[0].id.parse::<u32>().unwrap()]
    );
    let mut rolled_back = false;
    while let Ok(ev) = rx.try_recv() {
        if let Event::RolledBack {
            failed, serving, ..
        } = ev.event
        {
            rolled_back = failed == Revision(3) && serving == Revision(2);
        }
    }
    assert!(rolled_back);
    p.remove(&ctx, &s.id).await.unwrap();
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
    let v1 = p.deploy(&ctx, &s).await.unwrap();
    let s2 = DeploymentSpec::new(s.id.clone(), Revision(2), s.config.clone());
    let v2 = p.update(&ctx, &s2).await.unwrap();
    assert_ne!(v1.instances[0].id, v2.instances[0].id);
    assert_eq!(v2.instances[0].revision, Revision(2));
    assert!(!alive(v1.instances[0].id.parse().unwrap()));
    assert_eq!(marked(s.id.as_str()).len(), 1);
    p.remove(&ctx, &s.id).await.unwrap();
}
