//! Replicas behind the proxy, with real processes (the local provider, the canary app)
//! and a keep-alive load of at least 500 requests per second: no failed request (a
//! connection error, a 5xx the app did not send, a timeout) during a rolling update of 3
//! replicas, while a replica is killed with SIGKILL, during a canary that is promoted, and
//! during one that is rolled back for the app's own 5xx.

mod common;

use std::time::Duration;

use common::*;
use conan_core::{CanaryPlan, CanaryStep, DeploymentConfig, HealthCheck, UpdateStrategy};

const RATE: u32 = 600;
const WORKERS: u32 = 48;

/// The canary app as revision `rev`, 3 replicas, a fast health gate.
fn replicas(name: &str, rev: &str, strategy: UpdateStrategy) -> DeploymentConfig {
    let mut c = DeploymentConfig::new(name);
    c.source = app("canary");
    c.replicas = 3;
    c.env.insert("REVISION", rev);
    c.health_check = Some(HealthCheck::http("/health").interval(Duration::from_millis(200)));
    c.update.healthy_deadline = Duration::from_secs(15);
    c.update.strategy = strategy;
    c.update.canary = Some(CanaryPlan {
        steps: vec![
            CanaryStep::new(20, Duration::from_secs(2)),
            CanaryStep::new(50, Duration::from_secs(2)),
        ],
        min_requests: 50,
        ..CanaryPlan::default()
    });
    c.stop.timeout = Duration::from_secs(3);
    c.endpoint.drain_timeout = Duration::from_secs(5);
    c.restart.backoff_initial = Duration::from_millis(100);
    c.restart.jitter = 0.0;
    c
}

fn pids(rec: &conan_core::DeploymentRecord) -> Vec<String> {
    rec.runtime
        .as_ref()
        .map(|r| r.instances.iter().map(|i| i.id.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_of_three_replicas_and_a_killed_replica_fail_no_request() {
    let _load = one_load_at_a_time().await;
    let mut s = setup_below_ephemeral(27000).await;
    let rec = s
        .manager
        .deploy(replicas("rep-roll", "1", UpdateStrategy::Rolling))
        .await
        .unwrap();
    s.guard.0.push(rec.id.to_string());
    assert_eq!(pids(&rec).len(), 3);
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.expect("an endpoint");
    let url = format!("http://{endpoint}/");

    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rec = s
        .manager
        .update(
            "rep-roll",
            replicas("rep-roll", "2", UpdateStrategy::Rolling),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.stop().await;
    report.assert_clean("rolling update of 3 replicas");
    let revs: Vec<&str> = report.revisions.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(revs, ["1", "2"], "{report:?}");
    assert_eq!(pids(&rec).len(), 3);
    assert!(
        rec.runtime
            .as_ref()
            .unwrap()
            .instances
            .iter()
            .all(|i| i.revision == rec.revision)
    );

    // SIGKILL one replica under load: the others serve, it comes back alone.
    let before = pids(&rec);
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let victim = before[1].clone();
    let _ = std::process::Command::new("kill")
        .args(["-9", &victim])
        .status();
    let back = wait_until(Duration::from_secs(20), || {
        let m = &s.manager;
        let victim = victim.clone();
        let before = before.clone();
        async move {
            m.get("rep-roll").is_ok_and(|r| {
                let now = pids(&r);
                now.len() == 3
                    && !now.contains(&victim)
                    && before
                        .iter()
                        .filter(|p| **p != victim)
                        .all(|p| now.contains(p))
            })
        }
    })
    .await;
    assert!(back, "{:?}", s.manager.get("rep-roll").map(|r| pids(&r)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    report.assert_clean("a replica killed with SIGKILL");
    s.manager.remove("rep-roll").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_promoted_and_one_rolled_back_for_5xx_fail_no_request() {
    let _load = one_load_at_a_time().await;
    let mut s = setup_below_ephemeral(27040).await;
    let rec = s
        .manager
        .deploy(replicas("rep-canary", "1", UpdateStrategy::Canary))
        .await
        .unwrap();
    s.guard.0.push(rec.id.to_string());
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.expect("an endpoint");
    let url = format!("http://{endpoint}/");
    let mut events = s.manager.subscribe();

    // Revision 2 is as good as 1: promoted after 20 % and 50 %.
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = s
        .manager
        .update(
            "rep-canary",
            replicas("rep-canary", "2", UpdateStrategy::Canary),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    report.assert_clean("a promoted canary");
    assert!(
        rec.runtime
            .as_ref()
            .unwrap()
            .instances
            .iter()
            .all(|i| i.revision == rec.revision)
    );
    let seen: std::collections::BTreeMap<_, _> = report.revisions.iter().cloned().collect();
    assert!(seen.get("2").copied().unwrap_or(0) > 100, "{report:?}");
    let mut steps = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let conan_core::Event::Progress { message, .. } = ev.event
            && message.starts_with("canary")
        {
            steps.push(message);
        }
    }
    assert!(
        steps
            .iter()
            .any(|m| m.starts_with("canary promoted after 20 % for")),
        "{steps:?}"
    );

    // Revision 3 answers 500 to a third of the requests: rolled back with the numbers.
    let mut bad = replicas("rep-canary", "3", UpdateStrategy::Canary);
    bad.env.insert("FAIL_RATIO", "0.3");
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = s.manager.update("rep-canary", bad).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    report.assert_clean("a canary rolled back for 5xx");
    assert!(
        report.app_5xx > 0,
        "the canary's own 5xx reached clients: {report:?}"
    );
    let failure = err.failure().expect("a failure bundle");
    assert!(
        failure.reason.contains("canary rolled back") && failure.reason.contains("5xx ratio"),
        "{failure:?}"
    );
    let rec = s.manager.get("rep-canary").unwrap();
    assert_eq!(
        rec.revision,
        conan_core::Revision(2),
        "revision 2 serves on"
    );
    assert_eq!(pids(&rec).len(), 3);
    let stats = s.manager.traffic_stats("rep-canary").unwrap().unwrap();
    let r3 = stats
        .revision(conan_core::Revision(3))
        .expect("revision 3 was counted");
    assert!(
        r3.status_classes[4] > 0 && r3.proxy_errors == 0,
        "{stats:?}"
    );
    s.manager.remove("rep-canary").await.unwrap();
}
