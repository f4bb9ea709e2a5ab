//! The autoscaler's rules ([`decide`]) and its loop over a manager with a
//! [`MemoryProvider`] and a fake traffic layer whose in-flight count the test sets, in
//! virtual time (`start_paused`): no test sleeps on the wall clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::*;
use crate::config::{DeploymentConfig, EndpointConfig};
use crate::error::Result;
use crate::event::Event;
use crate::store::{AuditAction, AuditQuery, MemoryStore, StateStore};
use crate::testing::{MemoryBackend, MemoryProvider, wait_until};
use crate::traffic::{RevisionTraffic, Routes, Traffic, TrafficStats};

const SEC: Duration = Duration::from_secs(1);

fn policy() -> Autoscale {
    Autoscale::in_flight(1, 4, 4.0).cooldowns(5 * SEC, 20 * SEC)
}

#[test]
fn scales_out_to_what_the_load_needs_within_max() {
    let p = policy();
    let d = decide(&p, 1, 10.0, 60 * SEC, 10 * SEC).unwrap();
    assert_eq!(d.replicas, 3, "ceil(10 / 4)");
    assert!(d.reason.contains("10.0 per replica"), "{}", d.reason);
    assert_eq!(
        decide(&p, 2, 100.0, 60 * SEC, 10 * SEC).unwrap().replicas,
        4
    );
    // At the target exactly: nothing to do.
    assert_eq!(decide(&p, 2, 8.0, 60 * SEC, 10 * SEC), None);
    // At max already.
    assert_eq!(decide(&p, 4, 100.0, 60 * SEC, 10 * SEC), None);
}

#[test]
fn cool_downs_hold_changes_back() {
    let p = policy();
    assert_eq!(
        decide(&p, 1, 10.0, 4 * SEC, 10 * SEC),
        None,
        "scale-out cool-down"
    );
    assert!(decide(&p, 1, 10.0, 5 * SEC, 10 * SEC).is_some());
    assert_eq!(
        decide(&p, 4, 0.0, 19 * SEC, 10 * SEC),
        None,
        "scale-in cool-down"
    );
    assert_eq!(decide(&p, 4, 0.0, 20 * SEC, 10 * SEC).unwrap().replicas, 1);
}

#[test]
fn scale_in_needs_headroom_so_the_count_does_not_flap() {
    let p = policy();
    // 3 replicas carrying 7.5 (2.5 each): 2 would carry 3.75 each, within the target but
    // above 80 % of it, so the count stays.
    assert_eq!(decide(&p, 3, 7.5, 60 * SEC, 10 * SEC), None);
    // 6.0 fits into 2 replicas at 3.0 each (75 %): scale in.
    assert_eq!(decide(&p, 3, 6.0, 60 * SEC, 10 * SEC).unwrap().replicas, 2);
    // And once at 2 with that load, the same load never scales out again.
    assert_eq!(decide(&p, 2, 6.0, 60 * SEC, 10 * SEC), None);
    // Whatever load between the two thresholds, no decision takes it both ways.
    for tenths in 0..200 {
        let load = f64::from(tenths) / 10.0;
        for n in 1..=4 {
            if let Some(d) = decide(&p, n, load, 60 * SEC, 10 * SEC)
                && d.replicas < n
            {
                assert_eq!(
                    decide(&p, d.replicas, load, 60 * SEC, 10 * SEC),
                    None,
                    "load {load}: {n} -> {} -> back",
                    d.replicas
                );
            }
        }
    }
}

#[test]
fn cpu_targets_divide_the_total_by_replicas() {
    let p = Autoscale::cpu(2, 6, 70.0);
    assert_eq!(
        decide(&p, 2, 300.0, 60 * SEC, 10 * SEC).unwrap().replicas,
        5
    );
    let idle = decide(&p, 5, 10.0, 600 * SEC, 10 * SEC).unwrap();
    assert_eq!(idle.replicas, 2, "never below min");
    assert!(idle.reason.contains("CPU %"), "{}", idle.reason);
}

/// A traffic layer whose in-flight count the test sets (one revision, the serving one).
#[derive(Default)]
struct FakeTraffic {
    in_flight: AtomicU64,
}

#[async_trait]
impl Traffic for FakeTraffic {
    async fn open(
        &self,
        _: &DeploymentId,
        _: &str,
        _: &EndpointConfig,
        kept: Option<SocketAddr>,
    ) -> Result<SocketAddr> {
        Ok(kept.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 18080))))
    }
    async fn route(&self, _: &DeploymentId, _: Routes) -> Result<()> {
        Ok(())
    }
    async fn close(&self, _: &DeploymentId) {}
    fn stats(&self, _: &DeploymentId) -> Option<TrafficStats> {
        let mut rev = RevisionTraffic::new(Revision::FIRST);
        rev.in_flight = self.in_flight.load(Ordering::Relaxed);
        Some(TrafficStats {
            revisions: vec![rev],
            ..TrafficStats::default()
        })
    }
}

struct Setup {
    manager: DeploymentManager,
    traffic: Arc<FakeTraffic>,
    autoscaler: AutoscalerHandle,
    events: tokio::sync::broadcast::Receiver<crate::event::EventEnvelope>,
}

async fn setup(policy: Autoscale) -> Setup {
    let traffic = Arc::new(FakeTraffic::default());
    let manager = DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .traffic_arc(traffic.clone())
        .build()
        .await
        .unwrap();
    let events = manager.subscribe();
    let config = DeploymentConfig::builder("web")
        .autoscale(policy)
        .build()
        .unwrap();
    manager.deploy(config).await.unwrap();
    let autoscaler = Autoscaler::new(manager.clone())
        .settings(AutoscalerSettings::new(SEC, 5 * SEC))
        .spawn();
    Setup {
        manager,
        traffic,
        autoscaler,
        events,
    }
}

fn replicas(m: &DeploymentManager) -> u32 {
    DeploymentManager::replicas_of(&m.get("web").unwrap())
}

fn scaled(
    events: &mut tokio::sync::broadcast::Receiver<crate::event::EventEnvelope>,
) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::Scaled { from, to, .. } = e.event {
            out.push((from, to));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn scales_out_to_max_under_load_and_in_to_min_after_the_cool_down() {
    let mut s = setup(policy()).await;
    assert_eq!(replicas(&s.manager), 1);
    s.traffic.in_flight.store(30, Ordering::Relaxed);
    let started = Instant::now();
    assert!(wait_until(60 * SEC, || async { replicas(&s.manager) == 4 }).await);
    // One window (5 s) of samples decides; the first change needs no cool-down.
    assert!(started.elapsed() <= 7 * SEC, "{:?}", started.elapsed());
    assert_eq!(
        scaled(&mut s.events),
        vec![(1, 4)],
        "straight to max, not beyond"
    );

    // The load is gone: nothing happens before the scale-in cool-down (20 s).
    s.traffic.in_flight.store(0, Ordering::Relaxed);
    let idle = Instant::now();
    assert!(wait_until(60 * SEC, || async { replicas(&s.manager) == 1 }).await);
    assert!(idle.elapsed() >= 19 * SEC, "{:?}", idle.elapsed());
    assert_eq!(scaled(&mut s.events), vec![(4, 1)]);

    // Every change is in the audit log, asked for by the autoscaler, with its reason.
    let audit = s.manager.audit(&AuditQuery::default()).await.unwrap();
    let scales: Vec<_> = audit
        .iter()
        .filter_map(|e| match &e.action {
            AuditAction::Scale { from, to, reason } => Some((*from, *to, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(scales.len(), 2, "{scales:?}");
    assert!(scales[0].2.contains("above the target"), "{scales:?}");
    assert!(scales[1].2.contains("below 80 %"), "{scales:?}");
    let by: Vec<_> = audit
        .iter()
        .filter_map(|e| match &e.action {
            AuditAction::Operation {
                kind: crate::event::OperationKind::Scale,
                requested_by,
                ..
            } => requested_by.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(by, vec!["autoscaler", "autoscaler"]);
    s.autoscaler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_growing_load_waits_out_the_scale_out_cool_down() {
    let mut s = setup(Autoscale::in_flight(1, 4, 4.0).cooldowns(30 * SEC, 60 * SEC)).await;
    s.traffic.in_flight.store(6, Ordering::Relaxed);
    let loaded = Instant::now();
    assert!(wait_until(60 * SEC, || async { replicas(&s.manager) == 2 }).await);
    // The first change of a deployment needs a full window (5 s), not the cool-down.
    assert!(loaded.elapsed() <= 7 * SEC, "{:?}", loaded.elapsed());
    let first = Instant::now();
    s.traffic.in_flight.store(14, Ordering::Relaxed);
    assert!(wait_until(120 * SEC, || async { replicas(&s.manager) == 4 }).await);
    assert!(first.elapsed() >= 29 * SEC, "{:?}", first.elapsed());
    assert_eq!(scaled(&mut s.events), vec![(1, 2), (2, 4)]);
    s.autoscaler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_load_between_the_thresholds_never_flaps() {
    let mut s = setup(Autoscale::in_flight(1, 4, 4.0).cooldowns(SEC, SEC)).await;
    s.traffic.in_flight.store(11, Ordering::Relaxed);
    assert!(wait_until(60 * SEC, || async { replicas(&s.manager) == 3 }).await);
    // 7.5 .. 8.5 in flight over 3 replicas: within the target, too much for 2 at 80 %.
    for i in 0..120u64 {
        s.traffic
            .in_flight
            .store(if i % 2 == 0 { 7 } else { 9 }, Ordering::Relaxed);
        tokio::time::sleep(SEC / 2).await;
    }
    assert_eq!(replicas(&s.manager), 3);
    assert_eq!(
        scaled(&mut s.events),
        vec![(1, 3)],
        "one change, no flapping"
    );
    s.autoscaler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_scaled_while_an_update_runs_and_the_count_survives_it() {
    let provider = MemoryProvider::new();
    let traffic = Arc::new(FakeTraffic::default());
    let manager = DeploymentManager::builder()
        .provider(provider.clone())
        .traffic_arc(traffic.clone())
        .build()
        .await
        .unwrap();
    let config = DeploymentConfig::builder("web")
        .autoscale(policy())
        .build()
        .unwrap();
    manager.deploy(config.clone()).await.unwrap();
    manager.scale("web", 3).await.unwrap();
    let autoscaler = Autoscaler::new(manager.clone())
        .settings(AutoscalerSettings::new(SEC, 5 * SEC))
        .spawn();
    // A slow update (the memory provider waits 20 s for a slow-labelled config): the
    // deployment is `updating` meanwhile, and a heavy load changes nothing.
    traffic.in_flight.store(100, Ordering::Relaxed);
    let mut next = config.clone();
    next.labels
        .insert(MemoryProvider::SLOW_LABEL.to_owned(), "20000".to_owned());
    let update = {
        let m = manager.clone();
        tokio::spawn(async move { m.update("web", next).await })
    };
    assert!(
        wait_until(5 * SEC, || async {
            manager.get("web").unwrap().status.kind() == StatusKind::Updating
        })
        .await
    );
    tokio::time::sleep(15 * SEC).await;
    assert_eq!(replicas(&manager), 3, "no scale during the update");
    let rec = update.await.unwrap().unwrap();
    assert_eq!(rec.revision, Revision(2));
    assert_eq!(
        DeploymentManager::replicas_of(&rec),
        3,
        "the update carried the count"
    );
    // Running again: now the load scales it, the window measured afresh.
    assert!(wait_until(30 * SEC, || async { replicas(&manager) == 4 }).await);
    autoscaler.shutdown().await;
}

#[tokio::test]
async fn a_stale_scale_changes_nothing_and_bad_counts_are_refused() {
    let traffic = Arc::new(FakeTraffic::default());
    let manager = DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .traffic_arc(traffic)
        .build()
        .await
        .unwrap();
    let config = DeploymentConfig::builder("web")
        .autoscale(policy())
        .build()
        .unwrap();
    manager.deploy(config).await.unwrap();
    let stale = manager
        .submit(
            Request::Scale {
                target: "web".to_owned(),
                replicas: 3,
                reason: None,
                revision: Some(Revision(7)),
            },
            SubmitOptions::default(),
        )
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(DeploymentManager::replicas_of(&stale), 1);
    let err = manager.scale("web", 5).await.unwrap_err();
    assert!(
        err.to_string().contains("outside the autoscaling range"),
        "{err}"
    );
    let err = manager.scale("web", 0).await.unwrap_err();
    assert!(
        err.to_string().contains("replicas: must be at least 1"),
        "{err}"
    );
}

#[tokio::test]
async fn the_scaled_count_survives_a_manager_restart_and_a_stop() {
    let backend = MemoryBackend::new();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let build = |traffic: Arc<FakeTraffic>| {
        DeploymentManager::builder()
            .provider(MemoryProvider::with_backend(backend.clone()))
            .traffic_arc(traffic)
            .store_arc(store.clone())
            .build()
    };
    let first = build(Arc::new(FakeTraffic::default())).await.unwrap();
    let config = DeploymentConfig::builder("web")
        .autoscale(policy())
        .build()
        .unwrap();
    first.deploy(config).await.unwrap();
    let rec = first.scale("web", 3).await.unwrap();
    assert_eq!(rec.runtime.as_ref().unwrap().replicas, Some(3));
    first.shutdown().await;

    let second = build(Arc::new(FakeTraffic::default())).await.unwrap();
    second.recover().await.unwrap();
    let rec = second.get("web").unwrap();
    assert_eq!(rec.status.kind(), StatusKind::Running);
    assert_eq!(
        DeploymentManager::replicas_of(&rec),
        3,
        "kept across the restart"
    );
    assert_eq!(rec.config.replicas, 1, "the config still says min");
    let rec = second.stop("web").await.unwrap();
    assert_eq!(DeploymentManager::replicas_of(&rec), 3);
    let rec = second.start("web").await.unwrap();
    assert_eq!(
        DeploymentManager::replicas_of(&rec),
        3,
        "and across stop/start"
    );
    // A manual scale of a stopped deployment keeps the count for the next start.
    second.stop("web").await.unwrap();
    second.scale("web", 2).await.unwrap();
    let rec = second.start("web").await.unwrap();
    assert_eq!(DeploymentManager::replicas_of(&rec), 2);
}

#[tokio::test]
async fn autoscaling_needs_a_traffic_layer() {
    let manager = DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .build()
        .await
        .unwrap();
    let config = DeploymentConfig::builder("web")
        .autoscale(policy())
        .build()
        .unwrap();
    let err = manager.deploy(config).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("replicas: autoscaling needs the proxy"),
        "{err}"
    );
    assert!(manager.get("web").is_err(), "nothing was stored");
}

#[tokio::test(start_paused = true)]
async fn a_cpu_target_follows_the_providers_metrics() {
    let provider = MemoryProvider::new();
    let manager = DeploymentManager::builder()
        .provider(provider.clone())
        .traffic_arc(Arc::new(FakeTraffic::default()))
        .build()
        .await
        .unwrap();
    let config = DeploymentConfig::builder("web")
        .autoscale(Autoscale::cpu(1, 4, 70.0).cooldowns(SEC, 10 * SEC))
        .build()
        .unwrap();
    manager.deploy(config).await.unwrap();
    let autoscaler = Autoscaler::new(manager.clone())
        .settings(AutoscalerSettings::new(SEC, 5 * SEC))
        .spawn();
    // Three busy cores over one replica: 5 needed, 4 allowed.
    provider.set_cpu("web", Some(300.0));
    assert!(wait_until(60 * SEC, || async { replicas(&manager) == 4 }).await);
    // 100 % over 4 replicas is 25 % each: 2 keep each at 50 % (below 80 % of 70).
    provider.set_cpu("web", Some(100.0));
    assert!(wait_until(60 * SEC, || async { replicas(&manager) == 2 }).await);
    let audit = manager.audit(&AuditQuery::default()).await.unwrap();
    let reasons: Vec<_> = audit
        .iter()
        .filter_map(|e| match &e.action {
            AuditAction::Scale { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("CPU % 300.0 per replica"),
        "{reasons:?}"
    );
    autoscaler.shutdown().await;
}
