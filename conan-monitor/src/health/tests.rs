//! The scheduler against `MemoryProvider`, in virtual time.

use std::time::Duration;

use conan_core::testing::MemoryProvider;
use conan_core::{
    ByteSize, DeploymentConfig, DeploymentManager, Event, HealthCheck, HealthStatus, OperationKind,
    Resources, RestartCause, RestartPolicy, StatusKind,
};
use tokio::sync::broadcast;

use crate::{Monitor, MonitorSettings};

fn policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window: Duration::from_secs(600),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(4),
        jitter: 0.0,
        ..RestartPolicy::default()
    }
}

fn config(name: &str, max_restarts: u32) -> DeploymentConfig {
    let mut check = HealthCheck::http("/health");
    check.interval = Duration::from_secs(2);
    check.failure_threshold = 3;
    DeploymentConfig::builder(name)
        .health_check(check)
        .restart(policy(max_restarts))
        .build()
        .unwrap()
}

async fn setup() -> (MemoryProvider, DeploymentManager, Monitor) {
    let provider = MemoryProvider::new();
    let manager = DeploymentManager::builder()
        .provider(provider.clone())
        .build()
        .await
        .unwrap();
    let monitor = Monitor::builder(manager.clone()).build();
    (provider, manager, monitor)
}

/// The first event `want` matches, within `limit` of virtual time.
async fn next(
    rx: &mut broadcast::Receiver<conan_core::EventEnvelope>,
    limit: Duration,
    want: impl Fn(&Event) -> bool,
) -> Option<Event> {
    tokio::time::timeout(limit, async {
        loop {
            match rx.recv().await {
                Ok(e) if want(&e.event) => return Some(e.event),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

fn restarted(e: &Event) -> bool {
    matches!(
        e,
        Event::Finished {
            kind: OperationKind::Restart,
            ..
        }
    )
}

#[tokio::test(start_paused = true)]
async fn an_app_that_turns_unhealthy_is_restarted_after_the_threshold_and_is_healthy_again() {
    let (provider, manager, monitor) = setup().await;
    manager.deploy(config("web", 5)).await.unwrap();
    let mut rx = manager.subscribe();
    let started = tokio::time::Instant::now();
    provider.set_unhealthy("web", Some("GET /health answered 500"));
    let unhealthy = next(&mut rx, Duration::from_secs(60), |e| {
        matches!(e, Event::Unhealthy { .. })
    })
    .await
    .expect("an Unhealthy event");
    assert!(matches!(unhealthy, Event::Unhealthy { reason, .. } if reason.contains("500")));
    assert_eq!(
        manager.health("web").await.unwrap().status,
        HealthStatus::Unhealthy
    );
    let decided = next(&mut rx, Duration::from_secs(10), |e| {
        matches!(e, Event::MonitorRestart { .. })
    })
    .await
    .expect("a MonitorRestart event");
    assert!(matches!(
        decided,
        Event::MonitorRestart {
            attempt: 1,
            cause: RestartCause::Unhealthy { failures: 3, .. },
            ..
        }
    ));
    provider.set_unhealthy("web", None);
    next(&mut rx, Duration::from_secs(30), restarted)
        .await
        .expect("the restart operation");
    // Three probes 2 s apart, then the 1 s backoff.
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(2 * 3 + 1 + 1), "took {took:?}");
    assert_eq!(
        manager.get("web").unwrap().status.kind(),
        StatusKind::Running
    );
    assert_eq!(
        monitor
            .health()
            .monitor_restarts(&manager.get("web").unwrap().id),
        1
    );
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_app_ends_failed_after_the_cap_with_the_probe_history() {
    let (provider, manager, monitor) = setup().await;
    manager.deploy(config("flap", 2)).await.unwrap();
    let mut rx = manager.subscribe();
    provider.set_unhealthy("flap", Some("GET /health: connection refused"));
    let failed = next(&mut rx, Duration::from_secs(300), |e| {
        matches!(e, Event::Failed { .. })
    })
    .await
    .expect("a Failed event");
    let Event::Failed { failure, .. } = failed else {
        unreachable!()
    };
    assert!(failure.reason.contains("crash loop"), "{}", failure.reason);
    assert!(
        failure.reason.contains("connection refused"),
        "{}",
        failure.reason
    );
    assert!(
        failure.probe_history.len() >= 3,
        "{:?}",
        failure.probe_history
    );
    assert!(failure.probe_history.iter().all(|p| !p.healthy));
    let record = manager.get("flap").unwrap();
    assert_eq!(record.status.kind(), StatusKind::Failed);
    assert_eq!(
        record
            .last_failure
            .as_deref()
            .map(|f| f.probe_history.len()),
        Some(failure.probe_history.len())
    );
    assert_eq!(monitor.health().monitor_restarts(&record.id), 2);
    // Nothing runs any more.
    let after = manager.metrics("flap").await.unwrap();
    assert_eq!(after.memory_bytes, None);
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stopped_deployment_is_never_probed_or_restarted() {
    let (provider, manager, monitor) = setup().await;
    manager.deploy(config("quiet", 5)).await.unwrap();
    manager.stop("quiet").await.unwrap();
    let mut rx = manager.subscribe();
    provider.set_unhealthy("quiet", Some("down"));
    let acted = next(&mut rx, Duration::from_secs(120), |e| {
        matches!(
            e,
            Event::Unhealthy { .. } | Event::MonitorRestart { .. } | Event::Started { .. }
        )
    })
    .await;
    assert_eq!(acted, None);
    assert_eq!(
        manager.get("quiet").unwrap().status.kind(),
        StatusKind::Stopped
    );
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_update_in_progress_is_not_unhealthy_and_the_new_revision_starts_afresh() {
    let (provider, manager, monitor) = setup().await;
    manager.deploy(config("roll", 5)).await.unwrap();
    let mut rx = manager.subscribe();
    // The old revision fails two probes, then an update takes 30 s; the probes fail all
    // along, but the update's new revision (a new watch) must not inherit the count.
    provider.set_unhealthy("roll", Some("500"));
    next(&mut rx, Duration::from_secs(5), |_| false).await;
    provider.set_delay(Some(Duration::from_secs(30)));
    let mut v2 = config("roll", 5);
    v2.env.insert("V", "2");
    let update = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.update("roll", v2).await })
    };
    let during = next(&mut rx, Duration::from_secs(25), |e| {
        matches!(e, Event::Unhealthy { .. } | Event::MonitorRestart { .. })
    })
    .await;
    assert_eq!(
        during, None,
        "nothing may be unhealthy while the update runs"
    );
    provider.set_delay(None);
    provider.set_unhealthy("roll", None);
    update.await.unwrap().unwrap();
    assert_eq!(
        manager.get("roll").unwrap().status.kind(),
        StatusKind::Running
    );
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn memory_above_the_limit_for_n_samples_restarts_with_the_measured_value() {
    let (provider, manager, monitor) = setup().await;
    let config = DeploymentConfig::builder("fat")
        .restart(policy(5))
        .resources(Resources {
            memory: Some(ByteSize::mib(64)),
            cpus: None,
        })
        .build()
        .unwrap();
    manager.deploy(config).await.unwrap();
    let mut rx = manager.subscribe();
    provider.set_memory("fat", Some(100 << 20));
    let needed = MonitorSettings::default().memory_samples;
    for _ in 0..needed {
        let record = manager.get("fat").unwrap();
        let metrics = manager.metrics("fat").await.unwrap();
        super::on_sample(&monitor.shared, &record, &metrics);
    }
    let decided = next(&mut rx, Duration::from_secs(5), |e| {
        matches!(e, Event::MonitorRestart { .. })
    })
    .await
    .expect("a MonitorRestart event");
    assert!(matches!(
        decided,
        Event::MonitorRestart {
            cause: RestartCause::Memory {
                rss_bytes: 104_857_600,
                limit_bytes: 67_108_864,
                ..
            },
            ..
        }
    ));
    next(&mut rx, Duration::from_secs(10), restarted)
        .await
        .expect("the restart operation");
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn memory_the_platform_limits_is_left_to_the_platform() {
    let (provider, manager, monitor) = setup().await;
    let config = DeploymentConfig::builder("capped")
        .resources(Resources {
            memory: Some(ByteSize::mib(64)),
            cpus: None,
        })
        .build()
        .unwrap();
    manager.deploy(config).await.unwrap();
    let mut rx = manager.subscribe();
    provider.set_memory("capped", Some(100 << 20));
    for _ in 0..10 {
        let record = manager.get("capped").unwrap();
        let mut metrics = manager.metrics("capped").await.unwrap();
        metrics.memory_limit_bytes = Some(64 << 20);
        super::on_sample(&monitor.shared, &record, &metrics);
    }
    let acted = next(&mut rx, Duration::from_secs(5), |e| {
        matches!(e, Event::MonitorRestart { .. })
    })
    .await;
    assert_eq!(acted, None);
    monitor.shutdown().await;
}
