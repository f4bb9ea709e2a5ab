//! The proxy in front of real processes (the local provider, the ws-echo app): a keep-alive
//! load of at least 500 requests per second sees no failure during a blue-green update, a
//! rollback and a restart; a WebSocket opened before an update works until the old
//! revision's drain ends; a failing new revision never serves; pause, maintenance, a taken
//! address.

mod common;

use std::time::{Duration, Instant};

use common::*;
use conan_core::StatusKind;

const RATE: u32 = 600;
const WORKERS: u32 = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_rollback_and_restart_under_load_fail_no_request() {
    let _load = one_load_at_a_time().await;
    let mut s = setup(0, |_| {}).await;
    let rec = s.manager.deploy(config("zd-main", "r1")).await.unwrap();
    s.guard.0.push(rec.id.to_string());
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.expect("an endpoint");
    let url = format!("http://{endpoint}/");
    assert_eq!(get(endpoint, "/").await.unwrap().1, "r1");

    // A blue-green update.
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rec = s
        .manager
        .update("zd-main", config("zd-main", "r2"))
        .await
        .unwrap();
    assert_eq!(
        rec.runtime.as_ref().unwrap().endpoint,
        Some(endpoint),
        "the endpoint stays"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.stop().await;
    report.assert_clean("update");
    let revs: Vec<&str> = report.revisions.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(revs, ["r1", "r2"], "{report:?}");

    // A rollback to r1.
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.manager.rollback("zd-main", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.stop().await;
    report.assert_clean("rollback");
    assert_eq!(report.revisions.last().unwrap().0, "r1", "{report:?}");

    // A restart: a fresh instance beside the old one.
    let before = s.manager.get("zd-main").unwrap();
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rec = s.manager.restart("zd-main").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.stop().await;
    report.assert_clean("restart");
    assert_ne!(
        before.runtime.as_ref().unwrap().instances[0].id,
        rec.runtime.as_ref().unwrap().instances[0].id,
        "a new process serves"
    );
    assert_eq!(rec.runtime.as_ref().unwrap().endpoint, Some(endpoint));

    // The counters saw every revision.
    let stats = s.manager.traffic_stats("zd-main").unwrap().unwrap();
    assert!(stats.revisions.len() >= 3, "{stats:?}");
    let total: u64 = stats.revisions.iter().map(|r| r.requests).sum();
    assert!(total > 1000, "{stats:?}");
    assert!(
        stats.revisions.iter().all(|r| r.proxy_errors == 0),
        "{stats:?}"
    );

    s.manager.remove("zd-main").await.unwrap();
    assert!(
        get(endpoint, "/").await.is_none(),
        "the endpoint closed with the deployment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_opened_before_an_update_works_until_the_drain_ends() {
    let mut s = setup(1, |_| {}).await;
    let mut c = config("zd-ws", "r1");
    c.endpoint.drain_timeout = Duration::from_secs(3);
    let rec = s.manager.deploy(c).await.unwrap();
    s.guard.0.push(rec.id.to_string());
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.unwrap();
    let mut ws = Ws::connect(endpoint).await.unwrap();
    assert_eq!(ws.echo("a").await.unwrap(), "r1: a");

    let manager = s.manager.clone();
    let started = Instant::now();
    let mut c2 = config("zd-ws", "r2");
    c2.endpoint.drain_timeout = Duration::from_secs(3);
    let update = tokio::spawn(async move { manager.update("zd-ws", c2).await });
    // New requests reach r2 while the old socket is still served by r1.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            get(endpoint, "/").await.is_some_and(|r| r.1 == "r2")
        })
        .await
    );
    assert_eq!(ws.echo("b").await.unwrap(), "r1: b");
    let rec = update.await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the update waited for the drain"
    );
    assert_eq!(rec.status.kind(), StatusKind::Running);
    // r1 was stopped after its drain: its socket is gone.
    assert!(
        ws.echo("c").await.is_err(),
        "the old revision's socket ended with it"
    );
    let mut fresh = Ws::connect(endpoint).await.unwrap();
    assert_eq!(fresh.echo("d").await.unwrap(), "r2: d");
    s.manager.remove("zd-ws").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_new_revision_never_serves() {
    let _load = one_load_at_a_time().await;
    let mut s = setup(2, |_| {}).await;
    let rec = s.manager.deploy(config("zd-fail", "r1")).await.unwrap();
    s.guard.0.push(rec.id.to_string());
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.unwrap();
    let load = Load::start(format!("http://{endpoint}/"), RATE, WORKERS);
    let mut bad = config("zd-fail", "r2");
    bad.env.insert("FAIL_HEALTH", "1");
    bad.update.healthy_deadline = Duration::from_secs(2);
    let err = s.manager.update("zd-fail", bad).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    assert!(err.to_string().contains("health"), "{err}");
    assert_eq!(report.failures(), 0, "{report:?}");
    let revs: Vec<&str> = report.revisions.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(revs, ["r1"], "r2 never served: {report:?}");
    let rec = s.manager.get("zd-fail").unwrap();
    assert_eq!(rec.status.kind(), StatusKind::Running);
    let stats = s.manager.traffic_stats("zd-fail").unwrap().unwrap();
    assert!(
        stats.revisions.iter().all(|r| r.revision.0 == 1),
        "{stats:?}"
    );
    s.manager.remove("zd-fail").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_requests_resume_releases_them_and_maintenance_answers_503() {
    let mut s = setup(3, |_| {}).await;
    let rec = s.manager.deploy(config("zd-pause", "r1")).await.unwrap();
    s.guard.0.push(rec.id.to_string());
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.unwrap();

    s.proxy.pause(&rec.id, Duration::from_secs(20)).unwrap();
    let held = tokio::spawn(async move { get(endpoint, "/").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "held while paused");
    assert!(s.manager.traffic_stats("zd-pause").unwrap().unwrap().paused);
    s.proxy.resume(&rec.id).unwrap();
    let (status, rev, _) = held.await.unwrap().unwrap();
    assert_eq!((status, rev.as_str()), (200, "r1"));

    // A pause that outlasts its timeout answers 503.
    s.proxy.pause(&rec.id, Duration::from_millis(300)).unwrap();
    let (status, _, body) = get(endpoint, "/").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("paused"), "{body}");
    s.proxy.resume(&rec.id).unwrap();

    s.proxy
        .maintenance(&rec.id, Some("<h1>back soon</h1>".into()))
        .unwrap();
    let (status, _, body) = get(endpoint, "/").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "<h1>back soon</h1>"));
    s.proxy.maintenance(&rec.id, None).unwrap();
    assert_eq!(get(endpoint, "/").await.unwrap().0, 200);
    s.manager.remove("zd-pause").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_endpoint_address_fails_the_deploy_naming_the_holder_and_leaves_nothing() {
    let s = setup(4, |_| {}).await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let mut c = config("zd-taken", "r1");
    c.endpoint.listen = Some(taken);
    let err = s.manager.deploy(c).await.unwrap_err().to_string();
    assert!(err.contains("endpoint.listen"), "{err}");
    assert!(
        err.contains(&format!("{taken} is in use by pid {}", std::process::id())),
        "{err}"
    );
    assert!(s.manager.list().is_empty(), "nothing is left");
    assert!(s.proxy.endpoints().is_empty());
    // No process was started: nothing listens in the app's port range. (Not "every port
    // can be bound": the range is in the kernel's ephemeral range, where other tests'
    // outgoing connections come and go.)
    let range = ports(4);
    for port in *range.start()..=*range.start() + 29 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something listens on port {port}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_streamed_bodies_and_an_endpoint_turned_off() {
    let mut s = setup(5, |_| {}).await;
    let rec = s.manager.deploy(config("zd-hdr", "r1")).await.unwrap();
    s.guard.0.push(rec.id.to_string());
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.unwrap();
    let (status, _, body) = get(endpoint, "/headers").await.unwrap();
    assert_eq!(status, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], endpoint.to_string(), "{h}");
    assert_eq!(
        h["host"],
        endpoint.to_string(),
        "Host passes unchanged: {h}"
    );

    // A 1 MiB body streamed through both ways.
    let mut stream = tokio::net::TcpStream::connect(endpoint).await.unwrap();
    let payload = vec![b'x'; 1 << 20];
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close, x-hop\r\nx-hop: 1\r\n\r\n",
                payload.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.write_all(&payload).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.len() > payload.len(), "{}", answer.len());
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    // Without an endpoint: the instance's own port only (the old behaviour).
    let mut off = config("zd-off", "r1");
    off.endpoint.enabled = false;
    let rec = s.manager.deploy(off).await.unwrap();
    s.guard.0.push(rec.id.to_string());
    assert_eq!(rec.runtime.as_ref().unwrap().endpoint, None);
    assert_eq!(s.proxy.endpoints().len(), 1);
    s.manager.remove("zd-off").await.unwrap();
    s.manager.remove("zd-hdr").await.unwrap();
}
