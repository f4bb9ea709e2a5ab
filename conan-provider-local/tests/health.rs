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

/// Issue 14, item 10: with no health check, deploy waited the whole `min_uptime` even when
/// the app was listening on its `PORT` long before. Ready is now "accepts TCP on its PORT,
/// or stays up `min_uptime`, whichever comes first".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_check_ready_is_listening_or_min_uptime_whichever_first() {
    let (p, _dir) = provider(PORTS);
    let (ctx, _rx) = ctx();

    // Listens after 200 ms, min_uptime 20 s: ready as soon as it accepts connections.
    let mut c = config(&unique("listen"), "slow-start");
    c.health_check = None;
    c.env.insert("SLOW_START_MS", "200");
    c.restart.min_uptime = Duration::from_secs(20);
    c.update.healthy_deadline = Duration::from_secs(30);
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let started = std::time::Instant::now();
    let port = p.deploy(&ctx, &s, None).await.unwrap().port().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "ready before it listened: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "waited for min_uptime: {took:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    );
    p.remove(&ctx, &known(&s)).await.unwrap();

    // Listens on no port: ready once it stayed up min_uptime.
    let mut c = config(&unique("quiet"), "hello");
    c.health_check = None;
    c.start_command = Some("node -e 'setInterval(() => {}, 1000)'".into());
    c.restart.min_uptime = Duration::from_millis(600);
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let started = std::time::Instant::now();
    p.deploy(&ctx, &s, None).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "ready before min_uptime: {took:?}"
    );
    p.remove(&ctx, &known(&s)).await.unwrap();
}

/// Issue 14, item 9: a 1 MB env value failed as "cannot start node" with no reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_env_value_says_argument_list_too_long() {
    let (p, _dir) = provider(PORTS);
    let (ctx, _rx) = ctx();
    let mut c = config(&unique("big-env"), "hello");
    c.env.insert("BIG", "x".repeat(1 << 20));
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let e = p.deploy(&ctx, &s, None).await.unwrap_err().to_string();
    assert!(e.contains("Argument list too long"), "{e}");
    assert!(e.contains("128 KiB"), "{e}");
    assert!(!e.contains("xxxx"), "the value is a secret: {e}");
}
