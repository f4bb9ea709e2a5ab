//! Autoscaling with real processes (the local provider, the canary app answering after
//! 50 ms) through the real proxy, driven by the proxy's own in-flight counters: a
//! keep-alive load of 600 requests per second (about 30 in flight) scales the deployment
//! out from `min = 1` to `max = 3`; a light load (about 2 in flight) scales it back in to 1
//! once the scale-in cool-down passed. No failed request (a connection error, a 5xx the
//! app did not send, a timeout) during either change; the removed replicas are drained
//! and stopped.

mod common;

use std::time::{Duration, Instant};

use common::*;
use conan_core::autoscale::{Autoscaler, AutoscalerSettings};
use conan_core::{
    AuditAction, AuditQuery, Autoscale, DeploymentConfig, DeploymentManager, Event, HealthCheck,
    OperationKind,
};

const SCALE_IN_COOLDOWN: Duration = Duration::from_secs(4);

fn config(name: &str) -> DeploymentConfig {
    let mut c = DeploymentConfig::builder(name)
        .source(app("canary"))
        .env("DELAY_MS", "50")
        .autoscale(
            Autoscale::in_flight(1, 3, 4.0).cooldowns(Duration::from_secs(1), SCALE_IN_COOLDOWN),
        )
        .health_check(HealthCheck::http("/health").interval(Duration::from_millis(200)))
        .build()
        .unwrap();
    c.update.healthy_deadline = Duration::from_secs(15);
    c.stop.timeout = Duration::from_secs(3);
    c.endpoint.drain_timeout = Duration::from_secs(5);
    c
}

/// Live processes of deployment `id` (by the marker the local provider sets).
fn processes(id: &str) -> usize {
    let needle = format!("CONAN_DEPLOYMENT_ID={id}");
    std::fs::read_dir("/proc")
        .map(|procs| {
            procs
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|s| s.parse::<u32>().is_ok())
                        && std::fs::read(e.path().join("environ"))
                            .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
                })
                .count()
        })
        .unwrap_or(0)
}

fn replicas(m: &DeploymentManager) -> (u32, usize) {
    let rec = m.get("auto").unwrap();
    (
        DeploymentManager::replicas_of(&rec),
        rec.runtime.as_ref().map_or(0, |r| r.instances.len()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scales_out_to_max_and_back_in_to_min_failing_no_request() {
    let _load = one_load_at_a_time().await;
    let mut s = setup_below_ephemeral(27200).await;
    let manager = s.manager.clone();
    let mut events = manager.subscribe();
    let rec = manager.deploy(config("auto")).await.unwrap();
    s.guard.0.push(rec.id.to_string());
    assert_eq!(replicas(&manager), (1, 1));
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.expect("an endpoint");
    let url = format!("http://{endpoint}/");
    let autoscaler = Autoscaler::new(manager.clone())
        .settings(AutoscalerSettings::new(
            Duration::from_millis(250),
            Duration::from_secs(2),
        ))
        .spawn();

    // 600 req/s of 50 ms answers: ~30 in flight, ~10 per replica even at max.
    let started = Instant::now();
    let load = Load::start(url.clone(), 600, 48);
    let out = wait_until(Duration::from_secs(20), || async {
        replicas(&manager) == (3, 3)
    })
    .await;
    assert!(out, "{:?}", replicas(&manager));
    let out_at = Instant::now();
    let scaled_out = started.elapsed();
    // Some load on all three, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;
    report.assert_clean("scaling out from 1 to 3 replicas");
    assert_eq!(replicas(&manager), (3, 3), "max is the limit");
    let stats = manager.traffic_stats("auto").unwrap().unwrap();
    assert_eq!(
        stats.revisions.iter().map(|r| r.proxy_errors).sum::<u64>(),
        0
    );

    // A light load (20 req/s, ~1 in flight) fits in one replica: scaled in, drained first.
    let light = Load::start(url.clone(), 20, 4);
    let quiet = Instant::now();
    let back = wait_until(Duration::from_secs(30), || async {
        replicas(&manager) == (1, 1)
    })
    .await;
    assert!(back, "{:?}", replicas(&manager));
    // The cool-down runs from the last change (the scale-out).
    assert!(
        out_at.elapsed() >= SCALE_IN_COOLDOWN - Duration::from_millis(500),
        "scaled in {:?} after the scale-out, before the cool-down",
        out_at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = light.stop().await;
    assert_eq!(report.failures(), 0, "scaling in: {report:?}");
    assert!(report.ok > 20, "{report:?}");
    let id = rec.id.to_string();
    assert!(
        wait_until(Duration::from_secs(10), || async { processes(&id) == 1 }).await,
        "the removed replicas are stopped: {} processes",
        processes(&id)
    );
    eprintln!(
        "scaled out to 3 in {scaled_out:?}; in to 1 {:?} after the load dropped",
        quiet.elapsed()
    );

    // Each change is an event and in the audit log, asked for by the autoscaler.
    let mut changes = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::Scaled {
            from, to, reason, ..
        } = e.event
        {
            changes.push((from, to, reason));
        }
    }
    let pairs: Vec<_> = changes.iter().map(|(f, t, _)| (*f, *t)).collect();
    assert_eq!(pairs.first(), Some(&(1, 3)), "{changes:?}");
    assert_eq!(pairs.last(), Some(&(3, 1)), "{changes:?}");
    let audit = manager.audit(&AuditQuery::default()).await.unwrap();
    assert!(audit.iter().any(|e| matches!(
        &e.action,
        AuditAction::Operation { kind: OperationKind::Scale, requested_by: Some(by), .. } if by == "autoscaler"
    )));
    assert!(
        audit
            .iter()
            .any(|e| matches!(&e.action, AuditAction::Scale { from: 3, to: 1, .. }))
    );

    autoscaler.shutdown().await;
    manager.remove("auto").await.unwrap();
}
