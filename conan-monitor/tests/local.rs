//! The monitor against real Node processes of the local provider: an app that turns
//! unhealthy (500, or no answer at all) is restarted after the threshold, a flapping one
//! ends `Failed` with the probe history, one over its memory limit is restarted, and a
//! stopped one is left alone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use conan_core::{
    ByteSize, DeploymentConfig, DeploymentManager, Event, HealthCheck, HealthStatus, OperationKind,
    RestartCause, RestartPolicy, StatusKind,
};
use conan_monitor::{Monitor, MonitorSettings};
use conan_provider_local::LocalProvider;

struct Setup {
    manager: DeploymentManager,
    monitor: Monitor,
    app: tempfile::TempDir,
    _state: tempfile::TempDir,
}

async fn setup(
    ports: std::ops::RangeInclusive<u16>,
    cgroups: bool,
    settings: MonitorSettings,
) -> Setup {
    let state = tempfile::tempdir().unwrap();
    let app = tempfile::tempdir().unwrap();
    write_app(app.path());
    let provider = LocalProvider::builder()
        .state_dir(state.path())
        .port_range(ports)
        .node_path("/usr/bin/node")
        .cgroups(cgroups)
        .build()
        .unwrap();
    let manager = DeploymentManager::builder()
        .provider(provider)
        .build()
        .await
        .unwrap();
    let monitor = Monitor::builder(manager.clone()).settings(settings).build();
    Setup {
        manager,
        monitor,
        app,
        _state: state,
    }
}

fn check(interval_ms: u64, threshold: u32) -> HealthCheck {
    HealthCheck::http("/health")
        .interval(Duration::from_millis(interval_ms))
        .failure_threshold(threshold)
}

fn config(s: &Setup, name: &str, check: HealthCheck) -> DeploymentConfig {
    let mut c = DeploymentConfig::new(name);
    c.source = s.app.path().to_path_buf();
    c.health_check = Some(check);
    c.stop.timeout = Duration::from_secs(1);
    c.update.healthy_deadline = Duration::from_secs(10);
    c.restart = RestartPolicy {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        jitter: 0.0,
        ..RestartPolicy::default()
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_answering_500_is_restarted_within_interval_times_threshold_plus_a_second() {
    let s = setup(25000..=25099, true, MonitorSettings::default()).await;
    let name = unique("turns-500");
    let _cleanup = Cleanup {
        manager: s.manager.clone(),
        names: vec![name.clone()],
    };
    s.manager
        .deploy(config(&s, &name, check(200, 3)))
        .await
        .unwrap();
    let before = s.manager.get(&name).unwrap().runtime.clone();
    let mut rx = s.manager.subscribe();
    let port = port_of(&s.manager, &name);
    assert_eq!(get(port, "/break").await, Some(200));
    let broke = Instant::now();
    let decided = next_event(&mut rx, Duration::from_secs(10), |e| {
        matches!(e, Event::MonitorRestart { .. })
    })
    .await
    .expect("the monitor decides a restart");
    let took = broke.elapsed();
    assert!(
        took <= Duration::from_millis(200 * 3 + 1000),
        "decided after {took:?} (interval 200 ms × threshold 3 + 1 s)"
    );
    assert!(
        matches!(&decided, Event::MonitorRestart { cause: RestartCause::Unhealthy { failures: 3, reason }, .. } if reason.contains("500")),
        "{decided:?}"
    );
    assert_eq!(
        s.manager.health(&name).await.unwrap().status,
        HealthStatus::Unhealthy
    );
    next_event(&mut rx, Duration::from_secs(15), is_restart_done)
        .await
        .expect("the restart ran");
    let record = s.manager.get(&name).unwrap();
    assert_eq!(record.status.kind(), StatusKind::Running);
    assert_ne!(record.runtime, before, "a new instance serves");
    assert_eq!(get(port_of(&s.manager, &name), "/health").await, Some(200));
    assert_eq!(s.monitor.health().monitor_restarts(&record.id), 1);
    s.monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_stops_answering_is_restarted() {
    let s = setup(25100..=25199, true, MonitorSettings::default()).await;
    let name = unique("frozen");
    let _cleanup = Cleanup {
        manager: s.manager.clone(),
        names: vec![name.clone()],
    };
    let mut c = check(200, 2);
    c.timeout = Duration::from_millis(300);
    s.manager.deploy(config(&s, &name, c)).await.unwrap();
    let mut rx = s.manager.subscribe();
    // SIGSTOP: the port stays open, nothing answers.
    let record = s.manager.get(&name).unwrap();
    for pid in pids_of(record.id.as_str()) {
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
    }
    let decided = next_event(&mut rx, Duration::from_secs(10), |e| {
        matches!(e, Event::MonitorRestart { .. })
    })
    .await
    .expect("the monitor decides a restart");
    assert!(
        matches!(&decided, Event::MonitorRestart { cause: RestartCause::Unhealthy { reason, .. }, .. } if reason.contains("no answer")),
        "{decided:?}"
    );
    next_event(&mut rx, Duration::from_secs(15), is_restart_done)
        .await
        .expect("the restart ran");
    assert_eq!(get(port_of(&s.manager, &name), "/health").await, Some(200));
    s.monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_app_ends_failed_after_the_cap_with_the_probe_history() {
    let s = setup(25200..=25299, true, MonitorSettings::default()).await;
    let name = unique("flapping");
    let _cleanup = Cleanup {
        manager: s.manager.clone(),
        names: vec![name.clone()],
    };
    let mut c = config(&s, &name, check(150, 2));
    c.env.insert("FAIL_AFTER_MS", "300");
    c.restart.max_restarts = 2;
    s.manager.deploy(c).await.unwrap();
    let mut rx = s.manager.subscribe();
    let failed = next_event(&mut rx, Duration::from_secs(40), |e| {
        matches!(e, Event::Failed { .. })
    })
    .await
    .expect("the deployment fails after the cap");
    let Event::Failed { failure, .. } = failed else {
        unreachable!()
    };
    assert!(failure.reason.contains("crash loop"), "{}", failure.reason);
    assert!(
        failure.probe_history.len() >= 2,
        "{:?}",
        failure.probe_history
    );
    assert!(
        failure
            .probe_history
            .iter()
            .any(|p| !p.healthy && p.detail.contains("500")),
        "{:?}",
        failure.probe_history
    );
    assert!(
        !failure.last_logs.is_empty(),
        "the bundle carries the last log lines"
    );
    let record = s.manager.get(&name).unwrap();
    assert_eq!(record.status.kind(), StatusKind::Failed);
    assert!(
        common::wait_for(Duration::from_secs(5), || pids_of(record.id.as_str())
            .is_empty())
        .await,
        "nothing runs"
    );
    assert_eq!(s.monitor.health().monitor_restarts(&record.id), 2);
    s.monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_over_its_memory_limit_is_restarted_with_the_measured_value() {
    let mut settings = MonitorSettings::default();
    settings.sample_interval = Duration::from_millis(200);
    settings.memory_samples = 2;
    // Without cgroups nothing else enforces the limit.
    let s = setup(25300..=25399, false, settings).await;
    let name = unique("hog");
    let _cleanup = Cleanup {
        manager: s.manager.clone(),
        names: vec![name.clone()],
    };
    let mut c = config(&s, &name, check(1000, 3));
    c.env.insert("HOG_MB", "120");
    c.resources.memory = Some(ByteSize::mib(80));
    s.manager.deploy(c).await.unwrap();
    let mut rx = s.manager.subscribe();
    let decided = next_event(&mut rx, Duration::from_secs(20), |e| {
        matches!(e, Event::MonitorRestart { .. })
    })
    .await
    .expect("the monitor restarts it");
    let Event::MonitorRestart {
        cause:
            RestartCause::Memory {
                rss_bytes,
                limit_bytes,
                samples,
            },
        ..
    } = decided
    else {
        panic!("{decided:?}")
    };
    assert_eq!(limit_bytes, 80 << 20);
    assert!(rss_bytes > limit_bytes);
    assert_eq!(samples, 2);
    next_event(&mut rx, Duration::from_secs(15), is_restart_done)
        .await
        .expect("the restart ran");
    s.monitor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_deployment_is_never_restarted() {
    let s = setup(25400..=25499, true, MonitorSettings::default()).await;
    let name = unique("stopped");
    let _cleanup = Cleanup {
        manager: s.manager.clone(),
        names: vec![name.clone()],
    };
    s.manager
        .deploy(config(&s, &name, check(100, 2)))
        .await
        .unwrap();
    let mut rx = s.manager.subscribe();
    assert_eq!(get(port_of(&s.manager, &name), "/break").await, Some(200));
    s.manager.stop(&name).await.unwrap();
    let acted = next_event(&mut rx, Duration::from_secs(2), |e| {
        matches!(
            e,
            Event::MonitorRestart { .. }
                | Event::Started {
                    kind: OperationKind::Restart,
                    ..
                }
        )
    })
    .await;
    assert_eq!(acted, None, "the monitor acted on a stopped deployment");
    assert_eq!(
        s.manager.get(&name).unwrap().status.kind(),
        StatusKind::Stopped
    );
    s.monitor.shutdown().await;
}

/// Live processes of deployment `id`.
fn pids_of(id: &str) -> Vec<u32> {
    let needle = format!("CONAN_DEPLOYMENT_ID={id}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|&b| b == 0).any(|v| v == needle.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}
