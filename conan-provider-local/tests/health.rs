//! Health after readiness: unhealthy/healthy events, command checks, cancellation, and
//! what the provider refuses.

mod common;

use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_core::{Error, Event};

const PORTS: std::ops::RangeInclusive<u16> = 24500..=24999;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_app_turning_unhealthy_and_back_is_reported() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("flip"), "hello");
    c.health_check = Some(
        HealthCheck::http("/health")
            .interval(Duration::from_millis(100))
            .failure_threshold(2),
    );
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, mut rx) = ctx();
    let port = p.deploy(&ctx, &s, None).await.unwrap().port().unwrap();
    assert_eq!(
        p.health(&known(&s)).await.unwrap().status,
        HealthStatus::Healthy
    );
    assert_eq!(get(port, "/toggle-health").await, Some(200));
    let reason = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(ev) = rx.recv().await
                && let Event::Unhealthy { reason, .. } = ev.event
            {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reason, "GET /health -> 503: unhealthy");
    let h = p.health(&known(&s)).await.unwrap();
    assert_eq!(h.status, HealthStatus::Unhealthy);
    assert!(h.consecutive_failures >= 2);
    assert_eq!(get(port, "/toggle-health").await, Some(200));
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(ev) = rx.recv().await
                && let Event::Healthy { .. } = ev.event
            {
                return;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        p.health(&known(&s)).await.unwrap().status,
        HealthStatus::Healthy
    );
    p.remove(&ctx, &known(&s)).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_one_replica_is_not_supported() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("many"), "hello");
    c.replicas = 2;
    let (ctx, _rx) = ctx();
    let e = p.deploy(&ctx, &spec(c), None).await.unwrap_err();
    assert!(matches!(e, Error::NotSupported { .. }), "{e}");
}
