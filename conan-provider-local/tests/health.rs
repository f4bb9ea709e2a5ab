//! Health: probing the serving instance (the monitor's liveness probe), command checks,
//! cancellation, and what the provider refuses.

mod common;

use std::time::Duration;

use common::*;
use conan_core::Error;
use conan_core::prelude::*;

const PORTS: std::ops::RangeInclusive<u16> = 24500..=24999;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reaches_the_serving_instance_and_reports_what_it_saw() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("flip"), "hello");
    let check = HealthCheck::http("/health").interval(Duration::from_millis(100));
    c.health_check = Some(check.clone());
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let runtime = p.deploy(&ctx, &s, None).await.unwrap();
    let port = runtime.port().unwrap();
    let known = KnownDeployment::new(s.clone(), runtime);
    assert_eq!(
        p.health(&known).await.unwrap().status,
        HealthStatus::Healthy
    );
    assert!(p.probe(&known, &check).await.unwrap().is_healthy());
    assert_eq!(get(port, "/toggle-health").await, Some(200));
    let outcome = p.probe(&known, &check).await.unwrap();
    assert!(!outcome.is_healthy());
    assert_eq!(outcome.status(), Some(503), "{}", outcome.detail());
    assert_eq!(get(port, "/toggle-health").await, Some(200));
    assert!(p.probe(&known, &check).await.unwrap().is_healthy());
    p.remove(&ctx, &known).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_checks_gate_readiness() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("cmd"), "hello");
    c.health_check = Some(HealthCheck::command(
        "node -e \"require('http').get('http://'+process.env.HOST+':'+process.env.PORT+'/health', r => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))\"",
    ));
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let port = p.deploy(&ctx, &s, None).await.unwrap().port().unwrap();
    assert_eq!(get(port, "/health").await, Some(200));
    p.remove(&ctx, &known(&s)).await.unwrap();

    let mut c = config(&unique("cmd-bad"), "hello");
    c.health_check = Some(HealthCheck::command("exit 3"));
    c.update.healthy_deadline = Duration::from_millis(500);
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let e = p.deploy(&ctx, &s, None).await.unwrap_err();
    let f = e.failure().expect("failure bundle");
    assert!(f.probe.as_deref().unwrap().contains("exited 3"), "{f:?}");
    assert!(marked(s.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_deploy_leaves_nothing_and_says_cancelled() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("cancel"), "slow-start");
    c.health_check = Some(HealthCheck::http("/"));
    c.env.insert("SLOW_START_MS", "5000");
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let cancel = ctx.cancel.clone();
    let id = s.id.clone();
    tokio::spawn(async move {
        let ok = wait_until(Duration::from_secs(5), || !marked(id.as_str()).is_empty()).await;
        assert!(ok);
        cancel.cancel();
    });
    let e = p.deploy(&ctx, &s, None).await.unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    assert!(marked(s.id.as_str()).is_empty());
}
