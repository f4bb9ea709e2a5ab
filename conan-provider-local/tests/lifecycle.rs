//! Spawn, readiness, ports, stop and process trees, with real Node processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use conan_core::prelude::*;
use conan_core::{Error, ExitStatus};

const PORTS: std::ops::RangeInclusive<u16> = 21000..=21999;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_deploys_serves_reports_metrics_and_stops() {
    let (p, _dir) = provider(PORTS);
    let s = spec(config(&unique("hello"), "hello"));
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let port = info.port().unwrap();
    assert!(PORTS.contains(&port));
    assert_eq!(get(port, "/health").await, Some(200));
    assert_eq!(p.status(&known(&s)).await.unwrap(), ObservedStatus::Running);
    let pid: u32 = info.instances[0].id.parse().unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(env.contains(&format!("PORT={port}")) && env.contains("HOST=127.0.0.1"));

    let m = p.metrics(&known(&s)).await.unwrap();
    assert_eq!(m.port, Some(port));
    assert!(m.memory_bytes.unwrap() > 1_000_000, "{m:?}");
    assert!(m.cpu_percent.is_some() && m.uptime.is_some());
    assert_eq!(m.pids, Some(1));

    let lines = logs(&p, &known(&s)).await;
    assert!(
        lines.iter().any(|l| l.message.contains("hello listening")),
        "{lines:?}"
    );

    p.stop(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
    assert_eq!(p.status(&known(&s)).await.unwrap(), ObservedStatus::Stopped);
    p.stop(&ctx, &known(&s)).await.unwrap(); // idempotent
    let lines = logs(&p, &known(&s)).await;
    assert!(lines.iter().any(|l| l.message.contains("SIGTERM received")));

    p.start(&ctx, &known(&s)).await.unwrap();
    assert!(p.is_running(&known(&s)).await.unwrap());
    p.remove(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
    assert!(matches!(
        p.status(&known(&s)).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_including_a_detached_one_are_gone_after_stop() {
    let (p, _dir) = provider(PORTS);
    let s = spec(config(&unique("gc"), "grandchildren"));
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    p.deploy(&ctx, &s, None).await.unwrap();
    let ok = wait_until(Duration::from_secs(5), || marked(s.id.as_str()).len() >= 4).await;
    assert!(
        ok,
        "expected app + 3 descendants: {:?}",
        marked(s.id.as_str())
    );
    let lines = logs(&p, &known(&s)).await;
    let detached: u32 = lines
        .iter()
        .find_map(|l| l.message.strip_prefix("grandchildren: detached pid "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(alive(detached));
    p.stop(&ctx, &known(&s)).await.unwrap();
    assert!(!alive(detached), "detached grandchild survived");
    assert!(marked(s.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ignoring_app_is_killed_within_the_stop_timeout() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("stubborn"), "ignore-sigterm");
    c.health_check = Some(HealthCheck::tcp());
    c.stop.timeout = Duration::from_millis(700);
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    p.deploy(&ctx, &s, None).await.unwrap();
    let t = Instant::now();
    p.stop(&ctx, &known(&s)).await.unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_millis(700 + 250), "{took:?}");
    assert!(marked(s.id.as_str()).is_empty());
    let lines = logs(&p, &known(&s)).await;
    assert!(
        lines.iter().any(|l| l.message.contains("ignoring it")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deploys_get_fifty_distinct_ports() {
    let (p, _dir) = provider(PORTS);
    let specs: Vec<_> = (0..50)
        .map(|i| spec(config(&format!("many-{i}"), "hello")))
        .collect();
    let _g = Guard::new(&specs.iter().map(|s| &s.id).collect::<Vec<_>>());
    let (ctx, _rx) = ctx();
    let results = futures::future::join_all(specs.iter().map(|s| p.deploy(&ctx, s, None))).await;
    let mut ports: Vec<u16> = results
        .into_iter()
        .map(|r| r.unwrap().port().unwrap())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 50);
    for port in &ports {
        assert_eq!(get(*port, "/health").await, Some(200));
    }
    let knowns: Vec<_> = specs.iter().map(known).collect();
    futures::future::join_all(knowns.iter().map(|k| p.remove(&ctx, k))).await;
    for s in &specs {
        assert!(marked(s.id.as_str()).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_clear_errors_and_leaves_nothing_behind() {
    let (p, dir) = provider(PORTS);
    let (ctx, _rx) = ctx();

    // Missing source directory.
    let mut c = config(&unique("nosrc"), "hello");
    c.source = dir.path().join("missing");
    let e = p.deploy(&ctx, &spec(c), None).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidConfig { .. }) && e.to_string().contains("does not exist"),
        "{e}"
    );

    // Nothing to start.
    let empty = tempfile::tempdir().unwrap();
    let mut c = config(&unique("empty"), "hello");
    c.source = empty.path().to_path_buf();
    let e = p
        .deploy(&ctx, &spec(c), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nothing to start") && e.contains("server.js (not found)"),
        "{e}"
    );

    // Port in use, with the holder's pid.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = listener.local_addr().unwrap().port();
    let mut c = config(&unique("taken"), "hello");
    c.port = Some(taken);
    match p.deploy(&ctx, &spec(c), None).await {
        Err(Error::PortInUse { port, holder }) => {
            assert_eq!(port, taken);
            assert_eq!(holder, Some(std::process::id()));
        }
        other => panic!("{other:?}"),
    }

    // Exits at once: the failure bundle has the exit code and the last lines.
    let mut c = config(&unique("crash"), "crash");
    c.env.insert("CRASH_CODE", "3");
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let e = p.deploy(&ctx, &s, None).await.unwrap_err();
    let f = e.failure().expect("failure bundle");
    assert_eq!(f.exit, Some(ExitStatus::Code(3)));
    assert!(
        f.last_logs
            .iter()
            .any(|l| l.message.contains("fatal error")),
        "{f:?}"
    );
    assert!(marked(s.id.as_str()).is_empty());

    // A health path that always answers 500: fails at the deadline, process killed.
    let mut c = config(&unique("five"), "hello");
    c.health_check = Some(HealthCheck::http("/fail"));
    c.update.healthy_deadline = Duration::from_secs(8);
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let t = Instant::now();
    let e = p.deploy(&ctx, &s, None).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(11));
    let f = e.failure().expect("failure bundle");
    assert_eq!(
        f.probe.as_deref(),
        Some("GET /fail -> 500: failing on purpose"),
        "{f:?}"
    );
    assert!(marked(s.id.as_str()).is_empty());
    assert!(matches!(
        p.status(&known(&s)).await.unwrap(),
        ObservedStatus::Failed { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_command_and_slow_start_readiness() {
    let (p, _dir) = provider(PORTS);
    let (ctx, _rx) = ctx();
    let mut c = config(&unique("slow"), "slow-start");
    c.health_check = Some(HealthCheck::http("/"));
    c.start_command = Some("exec node server.js".into());
    c.env.insert("SLOW_START_MS", "600");
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let t = Instant::now();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(get(info.port().unwrap(), "/").await, Some(200));
    p.remove(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}
