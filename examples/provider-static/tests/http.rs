//! The built-in server over real sockets: files, content types, errors, traversal, bounds,
//! access logs and counters; the health gate; fixed-port updates; recovery on a fresh
//! instance; cancellation of an update.

mod common;

use std::sync::Arc;
use std::time::Duration;

use conan_core::testing::wait_until;
use conan_core::{
    DeploymentId, DeploymentSpec, Error, EventSink, HealthCheck, KnownDeployment, LogQuery,
    ObservedStatus, OperationContext, Provider, ProviderExt, Revision,
};
use conan_provider_static::{DETAIL_PORT, MAX_HEAD_BYTES, StaticProvider, live_listeners};
use futures::StreamExt;

use common::{INDEX, Site, fetch};

fn spec(config: conan_core::DeploymentConfig) -> DeploymentSpec {
    DeploymentSpec::new(DeploymentId::generate(), Revision::FIRST, config)
}

fn ctx() -> OperationContext {
    OperationContext::detached()
}

fn port_of(known: &KnownDeployment) -> u16 {
    known
        .runtime
        .port()
        .expect("a running deployment has a port")
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn refused(port: u16) -> bool {
    wait_until(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_files_and_refuses_what_is_outside_the_root() {
    let site = Site::new();
    let provider = StaticProvider::new();
    let spec = spec(common::config("http", &site.root()));
    let known = provider.deploy_detached(&spec).await.expect("deploy");
    let port = port_of(&known);
    assert_eq!(
        known.runtime.url.as_deref(),
        Some(format!("http://127.0.0.1:{port}").as_str())
    );
    assert_eq!(
        known.detail(DETAIL_PORT).and_then(|v| v.as_u64()),
        Some(u64::from(port))
    );

    let (status, head, body) = fetch(port, "/").await;
    assert_eq!(status, 200);
    assert_eq!(body, INDEX.as_bytes());
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", INDEX.len())),
        "{head}"
    );

    let (status, head, _) = fetch(port, "/app.js?v=3").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript"), "{head}");
    let (status, _, body) = fetch(port, "/docs/").await;
    assert_eq!(
        (status, body.as_slice()),
        (200, b"<p>docs</p>\n".as_slice())
    );
    let (status, _, _) = fetch(port, "/missing.html").await;
    assert_eq!(status, 404);
    let (status, _, _) = fetch(port, "/health").await;
    assert_eq!(
        status, 404,
        "no special health route: only files are served"
    );

    for traversal in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/docs/../../secret.txt",
    ] {
        let (status, _, body) = fetch(port, traversal).await;
        assert_eq!(status, 403, "{traversal} must be refused");
        assert!(!String::from_utf8_lossy(&body).contains("top secret"));
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(
            site.outside().join("secret.txt"),
            site.root().join("link.txt"),
        )
        .expect("symlink");
        let (status, _, body) = fetch(port, "/link.txt").await;
        assert_eq!(status, 403, "a symlink out of the root is refused");
        assert!(!String::from_utf8_lossy(&body).contains("top secret"));
    }

    let head_only = tokio::task::spawn_blocking(move || {
        common::request(port, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    })
    .await
    .expect("task");
    assert_eq!(head_only.0, 200);
    assert!(head_only.2.is_empty(), "HEAD has no body");
    let post = tokio::task::spawn_blocking(move || {
        common::request(
            port,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
    })
    .await
    .expect("task");
    assert_eq!(post.0, 405);
    assert!(post.1.contains("Allow: GET, HEAD"));
    let huge = tokio::task::spawn_blocking(move || {
        let raw = format!(
            "GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES * 2)
        );
        common::request(port, &raw)
    })
    .await
    .expect("task");
    assert_eq!(huge.0, 431, "an oversized request head is refused");
    let bad = tokio::task::spawn_blocking(move || common::request(port, "NONSENSE\r\n\r\n"))
        .await
        .expect("task");
    assert_eq!(bad.0, 400);

    // One access-log line per request, with status codes.
    let lines = provider
        .logs_vec(&known, &LogQuery::all())
        .await
        .expect("logs");
    assert!(
        lines
            .iter()
            .any(|l| l.message.contains("\"GET / HTTP/1.1\" 200")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.message.contains(" 403 ")),
        "{lines:?}"
    );
    let served = provider
        .requests_served(&spec.id)
        .expect("requests counted");
    assert!(served >= 12, "requests counted: {served}");
    let metrics = provider.metrics(&known).await.expect("metrics");
    assert_eq!(metrics.port, Some(port));
    assert!(
        metrics
            .network_tx_bytes
            .is_some_and(|b| b > INDEX.len() as u64)
    );
    assert!(metrics.network_rx_bytes.is_some_and(|b| b > 0));
    assert!(metrics.memory_bytes.is_some());

    provider.remove(&ctx(), &known).await.expect("remove");
    assert!(live_listeners(&spec.id).is_empty());
    assert!(refused(port).await, "the port is closed after remove");
}

#[tokio::test]
async fn follow_delivers_new_access_lines() {
    let site = Site::new();
    let provider = StaticProvider::new();
    let spec = spec(common::config("follow", &site.root()));
    let known = provider.deploy_detached(&spec).await.expect("deploy");
    let mut follow = provider
        .logs(&known, &LogQuery::all().contains("/app.js").follow())
        .await
        .expect("follow");
    let port = port_of(&known);
    let (status, _, _) = fetch(port, "/app.js").await;
    assert_eq!(status, 200);
    let line = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .expect("a line arrives")
        .expect("the stream is open")
        .expect("a line");
    assert!(
        line.message.contains("\"GET /app.js HTTP/1.1\" 200"),
        "{line:?}"
    );
    provider.remove(&ctx(), &known).await.expect("remove");
    let end = tokio::time::timeout(Duration::from_secs(10), follow.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "a follow ends when the deployment is removed"
    );
}

#[tokio::test]
async fn a_health_gate_that_never_passes_fails_the_deploy_and_frees_the_port() {
    let site = Site::new();
    let provider = StaticProvider::new();
    let mut config = common::config("gate", &site.root());
    config.health_check = Some(HealthCheck::http("/health").interval(Duration::from_millis(50)));
    config.update.healthy_deadline = Duration::from_millis(500);
    let spec = spec(config);
    let err = provider
        .deploy(&ctx(), &spec, None)
        .await
        .expect_err("GET /health answers 404");
    let failure = err.failure().expect("a failure bundle");
    assert!(
        failure.probe.as_deref().is_some_and(|p| p.contains("404")),
        "{failure:?}"
    );
    assert!(
        !failure.last_logs.is_empty(),
        "the bundle quotes the access log"
    );
    assert!(live_listeners(&spec.id).is_empty(), "nothing is left bound");
    let status = provider
        .status(&KnownDeployment::from_spec(spec.clone()))
        .await;
    assert!(
        matches!(status, Ok(ObservedStatus::Failed { .. })),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_on_a_fixed_port_switch_in_place_and_restore_the_old_revision_on_failure() {
    let (one, two) = (Site::new(), Site::new());
    std::fs::write(two.root().join("index.html"), "second\n").expect("write");
    let port = free_port();
    let provider = StaticProvider::new();
    let mut config = common::config("fixed", &one.root());
    config.port = Some(port);
    let spec = spec(config.clone());
    let known = provider.deploy_detached(&spec).await.expect("deploy");
    assert_eq!(port_of(&known), port);

    let mut second = config.clone();
    second.source = two.root();
    let next = DeploymentSpec::new(spec.id.clone(), Revision(2), second);
    let runtime = provider
        .update(&ctx(), &known, &next)
        .await
        .expect("update");
    assert_eq!(runtime.port(), Some(port));
    assert_eq!(fetch(port, "/").await.2, b"second\n");
    let current = KnownDeployment::new(next.clone(), runtime);

    // A revision that never passes its gate: revision 2 is restored on the same port.
    let mut broken = next.config.as_ref().clone();
    broken.health_check = Some(HealthCheck::http("/nope").interval(Duration::from_millis(50)));
    broken.update.healthy_deadline = Duration::from_millis(400);
    let bad = DeploymentSpec::new(spec.id.clone(), Revision(3), broken);
    let err = provider
        .update(&ctx(), &current, &bad)
        .await
        .expect_err("gate fails");
    assert!(matches!(err, Error::HealthCheckFailed { .. }), "{err}");
    assert_eq!(
        provider.status(&current).await.expect("status"),
        ObservedStatus::Running
    );
    assert_eq!(
        fetch(port, "/").await.2,
        b"second\n",
        "revision 2 serves again"
    );
    assert_eq!(live_listeners(&spec.id).len(), 1);

    // A revision whose directory is missing fails before the old one is touched.
    let missing = DeploymentSpec::new(
        spec.id.clone(),
        Revision(4),
        common::failing_config("fixed", &one.root()),
    );
    let err = provider
        .update(&ctx(), &current, &missing)
        .await
        .expect_err("no dir");
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert_eq!(fetch(port, "/").await.2, b"second\n");

    provider.remove(&ctx(), &current).await.expect("remove");
    assert!(refused(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_update_keeps_the_old_revision_and_leaves_nothing_of_the_new() {
    let site = Site::new();
    let provider = StaticProvider::new();
    let spec = spec(common::config("cancel-update", &site.root()));
    let known = provider.deploy_detached(&spec).await.expect("deploy");
    let slow = DeploymentSpec::new(
        spec.id.clone(),
        Revision(2),
        common::slow_config("cancel-update", &site.root()),
    );
    let cancellable = OperationContext::new(EventSink::detached());
    let (result, ()) = futures::join!(provider.update(&cancellable, &known, &slow), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancellable.cancel.cancel();
    });
    assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
    assert_eq!(
        provider.status(&known).await.expect("status"),
        ObservedStatus::Running
    );
    assert_eq!(
        live_listeners(&spec.id).len(),
        1,
        "only the old revision's port is bound"
    );
    assert_eq!(fetch(port_of(&known), "/").await.0, 200);
    provider.remove(&ctx(), &known).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_recovers_from_the_details_alone() {
    let site = Site::new();
    let doomed = Site::new();
    let first = StaticProvider::new();
    let running = first
        .deploy_detached(&spec(common::config("rec", &site.root())))
        .await
        .expect("deploy");
    let vanishing = first
        .deploy_detached(&spec(common::config("gone", &doomed.root())))
        .await
        .expect("deploy");
    let stopped = first
        .deploy_detached(&spec(common::config("stopped", &site.root())))
        .await
        .expect("deploy");
    first.stop(&ctx(), &stopped).await.expect("stop");
    let stopped = KnownDeployment::new(stopped.spec.clone(), stopped.runtime.stopped());
    let port = port_of(&running);

    // Dropping the instance stops its servers and frees their ports.
    drop(first);
    assert!(refused(port).await, "a dropped instance's servers are gone");
    drop(doomed);

    let fresh = StaticProvider::new();
    assert!(
        matches!(fresh.status(&running).await, Err(Error::NotFound { .. })),
        "a fresh instance holds nothing until it recovers"
    );
    let found = fresh
        .recover(
            &ctx(),
            &[running.clone(), vanishing.clone(), stopped.clone()],
        )
        .await
        .expect("recover");
    let of = |id: &DeploymentId| found.iter().find(|f| &f.id == id).expect("answered");
    assert_eq!(of(running.id()).status, ObservedStatus::Running);
    assert_eq!(
        of(running.id()).runtime.port(),
        Some(port),
        "the recorded port"
    );
    assert_eq!(fetch(port, "/").await.2, INDEX.as_bytes());
    assert!(
        matches!(&of(vanishing.id()).status, ObservedStatus::Failed { reason } if reason.contains("vanished")),
        "{:?}",
        of(vanishing.id())
    );
    assert_eq!(of(stopped.id()).status, ObservedStatus::Stopped);
    assert_eq!(
        fresh.status(&stopped).await.expect("status"),
        ObservedStatus::Stopped
    );
    let restarted = fresh
        .start(&ctx(), &stopped)
        .await
        .expect("start from the details");
    assert_eq!(
        restarted.port(),
        Some(port_of_details(&stopped)),
        "the recorded port"
    );
    assert!(
        fresh
            .is_running(&KnownDeployment::new(
                stopped.spec.clone(),
                restarted.clone()
            ))
            .await
            .expect("status")
    );

    // A second instance alive at the same time cannot take the port: failed, with a reason.
    let rival = Arc::new(StaticProvider::new());
    let found = rival
        .recover(&ctx(), std::slice::from_ref(&running))
        .await
        .expect("recover");
    assert!(
        matches!(&found[0].status, ObservedStatus::Failed { reason } if reason.contains("taken")),
        "{found:?}"
    );
    assert_eq!(live_listeners(running.id()).len(), 1);

    for k in [&running, &vanishing, &stopped] {
        fresh.remove(&ctx(), k).await.expect("remove");
        rival.remove(&ctx(), k).await.expect("remove");
        assert!(live_listeners(k.id()).is_empty());
    }
}

fn port_of_details(known: &KnownDeployment) -> u16 {
    known
        .detail(DETAIL_PORT)
        .and_then(|v| v.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .expect("a recorded port")
}

#[tokio::test]
async fn events_are_progress_and_health_observations_only() {
    let site = Site::new();
    let provider = StaticProvider::new();
    let sink = EventSink::detached();
    let mut events = sink.subscribe();
    let spec = spec(common::config("events", &site.root()));
    let runtime = provider
        .deploy(&OperationContext::new(sink), &spec, None)
        .await
        .expect("deploy");
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e.event);
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, conan_core::Event::Progress { .. }))
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, conan_core::Event::Healthy { .. }))
    );
    assert!(seen.iter().all(|e| matches!(
        e,
        conan_core::Event::Progress { .. } | conan_core::Event::Healthy { .. }
    )));
    provider
        .remove(&ctx(), &KnownDeployment::new(spec, runtime))
        .await
        .expect("remove");
}
