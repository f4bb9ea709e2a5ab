//! The monitor against real containers: an app that starts healthy and then answers 500
//! is restarted after the threshold, through the same path as local processes (the Docker
//! provider only says how to reach the container). Needs a Docker daemon (`.ci/docker-up.sh`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use conan_core::{
    DeploymentConfig, DeploymentManager, Event, HealthCheck, HealthStatus, RestartCause,
    RestartPolicy, StatusKind,
};
use conan_monitor::Monitor;
use conan_provider_docker::{DockerOptions, DockerProvider};

const BASE_IMAGE: &str = "conan-test/node:20";
const LABEL: &str = "conan.test";

/// Removes every container labelled with the test's tag when dropped.
struct Scope(String);

impl Drop for Scope {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label={LABEL}={}", self.0),
            ])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
            }
        }
    }
}

fn base_image() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conan-cli/assets/make-node-image.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(BASE_IMAGE)
        .status()
        .unwrap();
    assert!(status.success(), "building {BASE_IMAGE} failed");
}

struct Setup {
    manager: DeploymentManager,
    monitor: Monitor,
    name: String,
    port: u16,
    _cleanup: Cleanup,
    _scope: Scope,
    _app: tempfile::TempDir,
}

async fn deploy(suffix: &str, check: HealthCheck) -> Setup {
    let provider = DockerProvider::builder()
        .base_image(BASE_IMAGE)
        .build()
        .await
        .expect("a Docker daemon (start one with .ci/docker-up.sh)");
    base_image();
    let tag = unique("mon");
    let scope = Scope(tag.clone());
    let app = tempfile::tempdir().unwrap();
    write_app(app.path());
    let manager = DeploymentManager::builder()
        .provider(provider)
        .build()
        .await
        .unwrap();
    let monitor = Monitor::builder(manager.clone()).build();
    let name = format!("{tag}-{suffix}");
    let options = DockerOptions {
        image: Some(BASE_IMAGE.to_owned()),
        volumes: vec![format!("{}:/app:ro", app.path().display())],
        ..DockerOptions::default()
    };
    let config = DeploymentConfig::builder(&name)
        .source(app.path())
        .label(LABEL, &tag)
        .start_command("node server.js")
        .provider_options("docker", options)
        .health_check(check)
        .restart(RestartPolicy {
            backoff_initial: Duration::from_millis(100),
            jitter: 0.0,
            ..RestartPolicy::default()
        })
        .healthy_deadline(Duration::from_secs(30))
        .stop_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let cleanup = Cleanup {
        manager: manager.clone(),
        names: vec![name.clone()],
    };
    manager.deploy(config).await.unwrap();
    let port = manager
        .get(&name)
        .unwrap()
        .runtime
        .as_deref()
        .and_then(|r| {
            r.url
                .as_deref()
                .and_then(|u| u.rsplit(':').next()?.parse::<u16>().ok())
        })
        .expect("a published port");
    Setup {
        manager,
        monitor,
        name,
        port,
        _cleanup: cleanup,
        _scope: scope,
        _app: app,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_answering_500_is_restarted_after_the_threshold() {
    let check = HealthCheck::http("/health")
        .interval(Duration::from_millis(300))
        .failure_threshold(3);
    let s = deploy("web", check).await;
    let before = s.manager.get(&s.name).unwrap().runtime.clone();
    let mut rx = s.manager.subscribe();
    assert_eq!(get(s.port, "/break").await, Some(200));
    let broke = Instant::now();
    let decided = next_event(&mut rx, Duration::from_secs(15), |e| {
        matches!(e, Event::MonitorRestart { .. })
    })
    .await
    .expect("the monitor decides a restart");
    let took = broke.elapsed();
    assert!(
        took <= Duration::from_millis(300 * 3 + 1000),
        "decided after {took:?}"
    );
    assert!(
        matches!(&decided, Event::MonitorRestart { cause: RestartCause::Unhealthy { reason, .. }, .. } if reason.contains("500")),
        "{decided:?}"
    );
    assert_eq!(
        s.manager.health(&s.name).await.unwrap().status,
        HealthStatus::Unhealthy
    );
    next_event(&mut rx, Duration::from_secs(60), is_restart_done)
        .await
        .expect("the restart ran");
    let record = s.manager.get(&s.name).unwrap();
    assert_eq!(record.status.kind(), StatusKind::Running);
    assert_ne!(record.runtime, before, "a new container serves");
    s.monitor.shutdown().await;
    s.manager.remove(&s.name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_stops_answering_is_restarted() {
    let check = HealthCheck::http("/health")
        .interval(Duration::from_millis(300))
        .timeout(Duration::from_millis(500))
        .failure_threshold(2);
    let s = deploy("frozen", check).await;
    let before = s.manager.get(&s.name).unwrap().runtime.clone();
    let mut rx = s.manager.subscribe();
    // The event loop blocks for good: the published port accepts, nothing answers.
    assert_eq!(get(s.port, "/freeze").await, Some(200));
    let decided = next_event(&mut rx, Duration::from_secs(15), |e| {
        matches!(e, Event::MonitorRestart { .. })
    })
    .await
    .expect("the monitor decides a restart");
    assert!(
        matches!(&decided, Event::MonitorRestart { cause: RestartCause::Unhealthy { reason, .. }, .. } if reason.contains("no answer")),
        "{decided:?}"
    );
    next_event(&mut rx, Duration::from_secs(60), is_restart_done)
        .await
        .expect("the restart ran");
    let record = s.manager.get(&s.name).unwrap();
    assert_eq!(record.status.kind(), StatusKind::Running);
    assert_ne!(record.runtime, before, "a new container serves");
    s.monitor.shutdown().await;
    s.manager.remove(&s.name).await.unwrap();
}
