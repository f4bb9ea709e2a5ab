//! `monitor_deployment` over a real manager and `MemoryProvider`, in virtual time.

use std::time::Duration;

use conan_core::testing::MemoryProvider;
use conan_core::{DeploymentConfig, DeploymentManager, HealthStatus};
use futures::StreamExt;

use super::*;
use crate::MonitorSettings;

async fn setup() -> (DeploymentManager, Monitor) {
    let manager = DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .build()
        .await
        .unwrap();
    manager
        .deploy(DeploymentConfig::builder("web").build().unwrap())
        .await
        .unwrap();
    let settings = MonitorSettings {
        sample_interval: Duration::from_secs(1),
        health: false,
        ..MonitorSettings::default()
    };
    let monitor = Monitor::builder(manager.clone()).settings(settings).build();
    (manager, monitor)
}

#[test]
fn unknown_metric_names_are_an_error_listing_the_known_ones() {
    assert_eq!(
        MetricName::parse_list("cpu, Memory,health").unwrap(),
        [MetricName::Cpu, MetricName::Memory, MetricName::Health]
    );
    assert!(MetricName::parse_list("").unwrap().is_empty());
    let e = MetricName::parse_list("cpu,disk").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown metric 'disk'; known metrics: cpu, memory, network, health, restarts, requests"
    );
    // Typed requests read the same names, durations as people write them.
    let r: WatchRequest =
        serde_json::from_str(r#"{"target":"web","metrics":["cpu","health"],"interval":"2s"}"#)
            .unwrap();
    assert_eq!(r.interval, Duration::from_secs(2));
    assert_eq!(r.window, Duration::from_secs(600));
    assert!(serde_json::from_str::<WatchRequest>(r#"{"target":"w","metrics":["disk"]}"#).is_err());
}

#[tokio::test(start_paused = true)]
async fn watch_answers_current_values_and_the_recent_series() {
    let (manager, monitor) = setup().await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let request = WatchRequest::new("web")
        .metrics([MetricName::Cpu, MetricName::Memory, MetricName::Health])
        .interval(Duration::from_secs(2));
    let m = monitor.watch(&request).await.unwrap();
    assert_eq!((m.name.as_str(), m.status.as_str()), ("web", "running"));
    assert_eq!(m.interval_ms, 2000);
    let memory = m.metrics.memory.as_ref().unwrap();
    assert_eq!(memory.usage, Some(1 << 20));
    assert!(!memory.series.is_empty(), "{m:?}");
    assert_eq!(memory.series[0].max, f64::from(1 << 20));
    assert_eq!(m.metrics.cpu.as_ref().unwrap().usage, Some(0.0));
    let health = m.metrics.health.as_ref().unwrap();
    assert_eq!(health.status, HealthStatus::Healthy);
    assert!(health.last_check.is_some());
    // Not asked, not answered.
    assert!(m.metrics.network.is_none() && m.metrics.restarts.is_none());

    // The shape the agent tools answer from.
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["deployment_id"], m.deployment_id.as_str());
    assert_eq!(json["status"], "running");
    assert_eq!(json["metrics"]["cpu"]["usage"], 0.0);
    assert_eq!(json["metrics"]["memory"]["usage"], 1 << 20);
    assert!(json["metrics"]["memory"].get("limit").is_some(), "{json}");
    assert_eq!(json["metrics"]["health"]["status"], "healthy");
    assert!(
        json["metrics"]["health"]["last_check"].is_string(),
        "{json}"
    );
    assert_eq!(json["interval_ms"], 2000);

    // Every metric: restarts, network and requests too (requests: nobody reports them).
    let all = monitor.watch(&WatchRequest::new("web")).await.unwrap();
    assert_eq!(all.metrics.restarts.as_ref().unwrap().total, 0);
    assert!(all.metrics.network.is_some());
    assert_eq!(all.metrics.requests.as_ref().unwrap().per_second, None);

    // Stopped: the status, no values, health unknown.
    manager.stop("web").await.unwrap();
    let stopped = monitor.watch(&request).await.unwrap();
    assert_eq!(stopped.status, "stopped");
    assert_eq!(stopped.metrics.memory.as_ref().unwrap().usage, None);
    assert_eq!(
        stopped.metrics.health.as_ref().unwrap().status,
        HealthStatus::Unknown
    );
    assert!(stopped.sampled_at.is_none());

    let unknown = monitor.watch(&WatchRequest::new("nope")).await.unwrap_err();
    assert!(matches!(
        unknown,
        WatchError::Manager(conan_core::Error::NotFound { .. })
    ));
    let fast = WatchRequest::new("web").interval(Duration::from_millis(10));
    assert!(matches!(
        monitor.watch(&fast).await,
        Err(WatchError::OutOfRange {
            what: "interval",
            ..
        })
    ));
    monitor.shutdown().await;
    manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_stream_updates_every_interval_until_the_deployment_is_removed() {
    let (manager, monitor) = setup().await;
    let request = WatchRequest::new("web")
        .metrics([MetricName::Memory])
        .interval(Duration::from_secs(2));
    let mut stream = monitor.watch_stream(request).unwrap();
    let start = tokio::time::Instant::now();
    for i in 0..3 {
        let update = stream.next().await.unwrap().unwrap();
        assert_eq!(update.metrics.memory.unwrap().usage, Some(1 << 20));
        // The first at once, then one per interval.
        assert_eq!(start.elapsed().as_secs(), 2 * i, "update {i}");
    }
    manager.stop("web").await.unwrap();
    manager.remove("web").await.unwrap();
    let last = stream.next().await.unwrap();
    assert!(matches!(
        last,
        Err(WatchError::Manager(conan_core::Error::NotFound { .. }))
    ));
    assert!(stream.next().await.is_none());
    monitor.shutdown().await;
    manager.shutdown().await;
}
