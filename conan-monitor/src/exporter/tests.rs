use std::time::Duration;

use conan_core::testing::MemoryProvider;
use conan_core::{DeploymentConfig, DeploymentManager, HealthCheck};

use crate::{Monitor, MonitorSettings};

async fn monitor() -> (Monitor, MemoryProvider) {
    let provider = MemoryProvider::new();
    let manager = DeploymentManager::builder()
        .provider(provider.clone())
        .build()
        .await
        .unwrap();
    // Probing is the health monitor's business; these tests feed the instruments.
    let settings = MonitorSettings {
        health: false,
        ..MonitorSettings::default()
    };
    (
        Monitor::builder(manager).settings(settings).build(),
        provider,
    )
}

fn config(name: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name)
        .source("/srv/app")
        .health_check(HealthCheck {
            failure_threshold: 2,
            ..HealthCheck::http("/health")
        })
        .build()
        .unwrap()
}

/// The value of the one series `series` (name with labels, exactly as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Renders until `series` has `want`, or panics with the last exposition after 5 s.
async fn until(monitor: &Monitor, series: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = monitor.render_prometheus();
        if value(&text, series) == Some(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn deployments_have_up_status_and_restarts_with_their_labels() {
    let (monitor, _provider) = monitor().await;
    let manager = monitor.manager().clone();
    manager.deploy(config("web")).await.unwrap();
    manager.deploy(config("api")).await.unwrap();
    let text = monitor.render_prometheus();
    assert_eq!(
        value(
            &text,
            r#"conan_deployment_up{deployment="web",provider="memory"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"conan_deployment_restarts_total{deployment="api"}"#
        ),
        Some(0.0)
    );
    assert!(text.contains("# TYPE conan_deployment_restarts_total counter\n"));
    assert!(text.contains("# TYPE conan_deployment_status gauge\n"));
    assert!(
        !text.contains("# EOF"),
        "the Prometheus text format, not OpenMetrics"
    );

    manager.restart("web").await.unwrap();
    until(
        &monitor,
        r#"conan_deployment_restarts_total{deployment="web"}"#,
        1.0,
    )
    .await;
    let text = until(
        &monitor,
        r#"conan_operations_total{operation="deploy",outcome="succeeded"}"#,
        2.0,
    )
    .await;
    assert_eq!(
        value(
            &text,
            r#"conan_operation_duration_seconds_count{operation="deploy"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"conan_operation_duration_seconds_bucket{operation="deploy",le="+Inf"}"#
        ),
        Some(2.0)
    );
    assert_eq!(value(&text, "conan_operations_pending"), Some(0.0));
    assert_eq!(value(&text, "conan_operations_in_progress"), Some(0.0));
    monitor.shutdown().await;
}

#[tokio::test]
async fn the_status_is_a_state_set_with_one_series_at_one() {
    let (monitor, _provider) = monitor().await;
    let manager = monitor.manager().clone();
    manager.deploy(config("web")).await.unwrap();
    manager.stop("web").await.unwrap();
    let text = monitor.render_prometheus();
    let series: Vec<(&str, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(r#"conan_deployment_status{deployment="web",status=""#)?;
            let (status, value) = rest.split_once("\"} ")?;
            Some((status, value.parse().ok()?))
        })
        .collect();
    assert_eq!(series.len(), conan_core::StatusKind::ALL.len(), "{text}");
    assert_eq!(
        series.iter().filter(|(_, v)| *v == 1.0).collect::<Vec<_>>(),
        [&("stopped", 1.0)]
    );
    assert!(series.iter().all(|(_, v)| *v == 0.0 || *v == 1.0));
    assert_eq!(
        value(
            &text,
            r#"conan_deployment_up{deployment="web",provider="memory"}"#
        ),
        Some(0.0)
    );
    monitor.shutdown().await;
}

#[tokio::test]
async fn health_checks_are_counted_and_timed() {
    let (monitor, _provider) = monitor().await;
    let manager = monitor.manager().clone();
    manager.deploy(config("web")).await.unwrap();
    let up = r#"conan_deployment_up{deployment="web",provider="memory"}"#;
    let instruments = monitor.instruments();
    instruments.health_check("web", true, Duration::from_millis(3));
    instruments.health_check("web", false, Duration::from_millis(40));
    let text = monitor.render_prometheus();
    // One failure of a threshold of two: still up.
    assert_eq!(value(&text, up), Some(1.0));
    for (series, want) in [
        (
            r#"conan_health_checks_total{deployment="web",result="healthy"}"#,
            1.0,
        ),
        (
            r#"conan_health_checks_total{deployment="web",result="unhealthy"}"#,
            1.0,
        ),
        (
            r#"conan_health_check_duration_seconds_bucket{deployment="web",le="0.005"}"#,
            1.0,
        ),
        (
            r#"conan_health_check_duration_seconds_bucket{deployment="web",le="0.05"}"#,
            2.0,
        ),
        (
            r#"conan_health_check_duration_seconds_count{deployment="web"}"#,
            2.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
    }
    let sum = value(
        &text,
        r#"conan_health_check_duration_seconds_sum{deployment="web"}"#,
    )
    .unwrap();
    assert!((sum - 0.043).abs() < 1e-9, "{sum}");
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn up_follows_the_health_monitors_verdict() {
    let provider = MemoryProvider::new();
    let manager = DeploymentManager::builder()
        .provider(provider.clone())
        .build()
        .await
        .unwrap();
    let monitor = Monitor::builder(manager.clone()).build();
    manager.deploy(config("web")).await.unwrap();
    let up = r#"conan_deployment_up{deployment="web",provider="memory"}"#;
    assert_eq!(value(&monitor.render_prometheus(), up), Some(1.0));
    // Two failures in a row (the threshold) make it unhealthy: down until it passes again
    // (the monitor's restart is 1 s of backoff away).
    provider.set_unhealthy("web", Some("GET /health -> 500"));
    let id = manager.get("web").unwrap().id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while monitor.health().status(&id) != Some(conan_core::HealthStatus::Unhealthy) {
        assert!(tokio::time::Instant::now() < deadline, "never unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(value(&monitor.render_prometheus(), up), Some(0.0));
    monitor.shutdown().await;
}

#[tokio::test]
async fn a_removed_deployment_disappears_from_the_output() {
    let (monitor, _provider) = monitor().await;
    let manager = monitor.manager().clone();
    manager.deploy(config("web")).await.unwrap();
    manager.deploy(config("gone")).await.unwrap();
    monitor
        .instruments()
        .health_check("gone", true, Duration::from_millis(2));
    assert!(monitor.render_prometheus().contains(r#"deployment="gone""#));
    manager.stop("gone").await.unwrap();
    manager.remove("gone").await.unwrap();
    let text = monitor.render_prometheus();
    assert!(!text.contains(r#"deployment="gone""#), "{text}");
    assert!(text.contains(r#"deployment="web""#));
    // Its instruments are forgotten too: a new deployment of that name starts at zero.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while monitor.shared.instruments.get("gone").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    monitor.shutdown().await;
}

#[tokio::test]
async fn promtool_finds_nothing_to_report() {
    let Some(promtool) = crate::exporter::tests::promtool() else {
        eprintln!("skipped: promtool is not installed (Debian's prometheus package has it)");
        return;
    };
    let (monitor, _provider) = monitor().await;
    let manager = monitor.manager().clone();
    manager.deploy(config("web")).await.unwrap();
    manager.deploy(config("api")).await.unwrap();
    manager.stop("api").await.unwrap();
    monitor
        .instruments()
        .health_check("web", true, Duration::from_millis(2));
    let text = until(
        &monitor,
        r#"conan_operations_total{operation="stop",outcome="succeeded"}"#,
        1.0,
    )
    .await;
    let problems = check(&promtool, &text);
    assert!(problems.is_empty(), "promtool: {problems}\n{text}");
    monitor.shutdown().await;
}

/// `promtool` when it is on the PATH.
fn promtool() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    })
}

/// What `promtool check metrics` says about `text` (empty: nothing).
fn check(promtool: &std::path::Path, text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_owned()
}

/// A traffic layer that answers fixed counters for every deployment.
struct FixedTraffic;

#[conan_core::prelude::async_trait]
impl conan_core::traffic::Traffic for FixedTraffic {
    async fn open(
        &self,
        _: &conan_core::DeploymentId,
        _: &str,
        _: &conan_core::EndpointConfig,
        _: Option<std::net::SocketAddr>,
    ) -> conan_core::Result<std::net::SocketAddr> {
        Ok("127.0.0.1:18000".parse().unwrap())
    }
    async fn route(
        &self,
        _: &conan_core::DeploymentId,
        _: conan_core::traffic::Routes,
    ) -> conan_core::Result<()> {
        Ok(())
    }
    async fn close(&self, _: &conan_core::DeploymentId) {}
    fn stats(&self, _: &conan_core::DeploymentId) -> Option<conan_core::traffic::TrafficStats> {
        use conan_core::traffic::{LATENCY_BUCKETS, LatencyHistogram, RevisionTraffic};
        let mut r = RevisionTraffic::new(conan_core::Revision(1));
        r.requests = 10;
        r.status_classes = [0, 7, 0, 1, 2];
        r.proxy_errors = 1;
        r.retries = 3;
        r.in_flight = 4;
        let mut buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        buckets[1] = 9; // <= 1 ms
        buckets[LATENCY_BUCKETS.len()] = 1; // > 10 s
        r.latency = LatencyHistogram::new(buckets, 12.5);
        let mut s = conan_core::traffic::TrafficStats::default();
        s.revisions = vec![r];
        Some(s)
    }
}

#[tokio::test]
async fn the_proxy_counters_are_exported_per_deployment_and_revision() {
    let manager = DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .traffic(FixedTraffic)
        .build()
        .await
        .unwrap();
    let settings = MonitorSettings {
        health: false,
        ..MonitorSettings::default()
    };
    let monitor = Monitor::builder(manager.clone()).settings(settings).build();
    manager.deploy(config("web")).await.unwrap();
    let text = monitor.render_prometheus();
    let l = r#"deployment="web",revision="1""#;
    assert_eq!(
        value(
            &text,
            &format!("conan_proxy_requests_total{{{l},class=\"2xx\"}}")
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("conan_proxy_requests_total{{{l},class=\"5xx\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&text, &format!("conan_proxy_errors_total{{{l}}}")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("conan_proxy_retries_total{{{l}}}")),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &format!("conan_proxy_in_flight{{{l}}}")),
        Some(4.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("conan_proxy_request_duration_seconds_bucket{{{l},le=\"0.001\"}}")
        ),
        Some(9.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("conan_proxy_request_duration_seconds_bucket{{{l},le=\"+Inf\"}}")
        ),
        Some(10.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("conan_proxy_request_duration_seconds_count{{{l}}}")
        ),
        Some(10.0)
    );
    monitor.shutdown().await;
}
