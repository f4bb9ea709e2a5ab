//! The proxy in front of real containers (the Docker provider; the ws-echo app bind-mounted
//! into the Node base image built locally from the host's node, so nothing is pulled or
//! built per test): a keep-alive load of at least 500 requests per second sees no failure
//! during a blue-green update, a rollback and a restart (`Provider::replace`: a fresh
//! container beside the old one); a WebSocket opened before an update works until the old
//! container's drain ends; a failing new revision never serves; a rolling update and a
//! restart of 3 replicas drain each replaced replica before it stops; a container Docker
//! restarts after a crash, or a failed `recreate` update puts back, is published on a new
//! port, and the endpoint follows it. Every test removes its
//! containers and images, also when it fails. Without a Docker daemon installed the tests
//! are skipped with a message; with one installed that does not answer they fail.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Load, Ws, get, one_load_at_a_time, wait_until};
use conan_core::{DeploymentConfig, DeploymentManager, HealthCheck, StatusKind};
use conan_provider_docker::{DockerOptions, DockerProvider};
use conan_proxy::{Proxy, ProxySettings};

const RATE: u32 = 600;
const WORKERS: u32 = 48;

/// The base image the Docker tests share (conan-cli/assets/make-node-image.sh builds it once).
const BASE_IMAGE: &str = "conan-test/node:20";
const TEST_LABEL: &str = "conan.test";

fn docker(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a Docker daemon answers; `None` (skip) when Docker is not installed at all.
fn docker_ready() -> Option<()> {
    let answers = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        let installed = Command::new("sh")
            .args(["-c", "command -v dockerd"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            !installed,
            "dockerd is installed but no Docker daemon answers: start one with \
             `.ci/docker-up.sh` (from the workspace root) and run the tests again"
        );
        eprintln!("skipping: Docker is not installed on this machine (no dockerd)");
        return None;
    }
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conan-cli/assets/make-node-image.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(BASE_IMAGE)
        .status()
        .expect("run make-node-image.sh");
    assert!(status.success(), "building {BASE_IMAGE} failed");
    Some(())
}

/// Removes every container and image of one test when dropped (also on a failed assert).
struct Cleanup {
    tag: String,
}

impl Cleanup {
    fn containers(&self, running_only: bool) -> Vec<String> {
        let filter = format!("label={TEST_LABEL}={}", self.tag);
        let flags = if running_only { "-q" } else { "-aq" };
        docker(&["ps", flags, "--filter", &filter])
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let containers = self.containers(false);
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            docker(&args);
        }
        let images = docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &format!("reference=conan/{}*", self.tag),
        ]);
        if !images.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            docker(&args);
        }
    }
}

struct Setup {
    manager: DeploymentManager,
    cleanup: Cleanup,
    /// One test at a time: container starts on two shared cores would otherwise starve
    /// the load generator (and the rate it must offer).
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A manager with the Docker provider and a proxy whose endpoints take the 10 ports from
/// `base` (below the kernel's ephemeral range, where the daemon publishes containers).
async fn setup(test: &str, base: u16) -> Option<Setup> {
    docker_ready()?;
    let serial = SERIAL.lock().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let cleanup = Cleanup {
        tag: format!("p{:05x}-{test}", nanos & 0xf_ffff),
    };
    let provider = DockerProvider::builder()
        .base_image(BASE_IMAGE)
        .build()
        .await
        .expect("a Docker provider");
    let proxy = Proxy::new(ProxySettings {
        port_range: base..=base + 9,
        ..ProxySettings::default()
    })
    .unwrap();
    let manager = DeploymentManager::builder()
        .provider(provider)
        .traffic(proxy)
        .build()
        .await
        .unwrap();
    Some(Setup {
        manager,
        cleanup,
        _serial: serial,
    })
}

impl Setup {
    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.cleanup.tag)
    }

    /// The ws-echo app as revision `rev` in a container: bind-mounted, run with the base
    /// image's node, a fast health gate.
    fn config(&self, name: &str, rev: &str) -> DeploymentConfig {
        let dir = common::app("ws-echo")
            .canonicalize()
            .expect("examples/apps/ws-echo");
        let options = DockerOptions {
            image: Some(BASE_IMAGE.to_owned()),
            volumes: vec![format!("{}:/app:ro", dir.display())],
            ..DockerOptions::default()
        };
        let mut c = DeploymentConfig::builder(name)
            .provider("docker")
            .source(&dir)
            .start_command("node app.js")
            .env("REV", rev)
            .label(TEST_LABEL, &self.cleanup.tag)
            .health_check(HealthCheck::http("/health").interval(Duration::from_millis(200)))
            .healthy_deadline(Duration::from_secs(20))
            .stop_timeout(Duration::from_secs(3))
            .provider_options("docker", options)
            .build()
            .unwrap();
        c.endpoint.drain_timeout = Duration::from_secs(5);
        c
    }
}

fn endpoint_of(rec: &conan_core::DeploymentRecord) -> SocketAddr {
    rec.runtime
        .as_ref()
        .and_then(|r| r.endpoint)
        .expect("an endpoint")
}

fn container_of(rec: &conan_core::DeploymentRecord) -> String {
    rec.runtime.as_ref().unwrap().instances[0].id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_update_rollback_and_restart_under_load_fail_no_request() {
    let _load = one_load_at_a_time().await;
    let Some(s) = setup("zd", 27200).await else {
        return;
    };
    let name = s.name("main");
    let rec = s.manager.deploy(s.config(&name, "r1")).await.unwrap();
    let endpoint = endpoint_of(&rec);
    let url = format!("http://{endpoint}/");
    assert_eq!(get(endpoint, "/").await.unwrap().1, "r1");
    let instance_port = rec.runtime.as_ref().unwrap().instances[0].port;
    assert_ne!(
        instance_port,
        Some(endpoint.port()),
        "the proxy fronts the published port"
    );

    // A blue-green update.
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rec = s
        .manager
        .update(&name, s.config(&name, "r2"))
        .await
        .unwrap();
    assert_eq!(endpoint_of(&rec), endpoint, "the endpoint stays");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.stop().await;
    report.assert_clean("docker update");
    let revs: Vec<&str> = report.revisions.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(revs, ["r1", "r2"], "{report:?}");
    assert_eq!(
        s.cleanup.containers(false).len(),
        1,
        "the old container is gone"
    );

    // A rollback to r1 (an update to the old revision's config: blue-green again).
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.manager.rollback(&name, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.stop().await;
    report.assert_clean("docker rollback");
    assert_eq!(report.revisions.last().unwrap().0, "r1", "{report:?}");

    // A restart: a fresh container beside the old one, then the switch.
    let before = s.manager.get(&name).unwrap();
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rec = s.manager.restart(&name).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.stop().await;
    report.assert_clean("docker restart");
    assert_ne!(
        container_of(&before),
        container_of(&rec),
        "a new container serves"
    );
    assert_ne!(
        before.runtime.as_ref().unwrap().instances[0].port,
        rec.runtime.as_ref().unwrap().instances[0].port,
        "on a fresh published port"
    );
    assert_eq!(endpoint_of(&rec), endpoint);
    assert_eq!(rec.status.kind(), StatusKind::Running);
    let left = s.cleanup.containers(false);
    assert_eq!(left.len(), 1, "only the fresh container is left: {left:?}");
    assert!(container_of(&rec).starts_with(&left[0]), "{left:?}");

    let stats = s.manager.traffic_stats(&name).unwrap().unwrap();
    assert!(
        stats.revisions.iter().all(|r| r.proxy_errors == 0),
        "{stats:?}"
    );

    s.manager.remove(&name).await.unwrap();
    assert!(get(endpoint, "/").await.is_none(), "the endpoint closed");
    assert!(s.cleanup.containers(false).is_empty(), "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_websocket_opened_before_an_update_works_until_the_drain_ends() {
    let Some(s) = setup("ws", 27210).await else {
        return;
    };
    let name = s.name("ws");
    let mut c = s.config(&name, "r1");
    c.endpoint.drain_timeout = Duration::from_secs(3);
    let rec = s.manager.deploy(c).await.unwrap();
    let endpoint = endpoint_of(&rec);
    let mut ws = Ws::connect(endpoint).await.unwrap();
    assert_eq!(ws.echo("a").await.unwrap(), "r1: a");

    let manager = s.manager.clone();
    let mut c2 = s.config(&name, "r2");
    c2.endpoint.drain_timeout = Duration::from_secs(3);
    let target = name.clone();
    let update = tokio::spawn(async move { manager.update(&target, c2).await });
    // New requests reach r2 while the old socket is still served by r1's container.
    // `switched` is when the first request that reached r2 was sent: at most a poll
    // before the cutover, which then drains for 3 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let switched = loop {
        let sent = Instant::now();
        if get(endpoint, "/").await.is_some_and(|r| r.1 == "r2") {
            break sent;
        }
        assert!(Instant::now() < deadline, "r2 never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ws.echo("b").await.unwrap(), "r1: b");
    let rec = update.await.unwrap().unwrap();
    assert!(
        switched.elapsed() >= Duration::from_millis(2500),
        "the update waited for the drain ({:?})",
        switched.elapsed()
    );
    assert_eq!(rec.status.kind(), StatusKind::Running);
    assert!(
        ws.echo("c").await.is_err(),
        "the old container's socket ended with it"
    );
    let mut fresh = Ws::connect(endpoint).await.unwrap();
    assert_eq!(fresh.echo("d").await.unwrap(), "r2: d");
    s.manager.remove(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_failing_new_revision_never_serves() {
    let _load = one_load_at_a_time().await;
    let Some(s) = setup("fail", 27220).await else {
        return;
    };
    let name = s.name("fail");
    let rec = s.manager.deploy(s.config(&name, "r1")).await.unwrap();
    let endpoint = endpoint_of(&rec);
    let serving = container_of(&rec);
    let load = Load::start(format!("http://{endpoint}/"), RATE, WORKERS);
    let mut bad = s.config(&name, "r2");
    bad.env.insert("FAIL_HEALTH", "1");
    bad.update.healthy_deadline = Duration::from_secs(3);
    let err = s.manager.update(&name, bad).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    assert!(err.to_string().contains("health"), "{err}");
    assert_eq!(report.failures(), 0, "{report:?}");
    let revs: Vec<&str> = report.revisions.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(revs, ["r1"], "r2 never served: {report:?}");
    let rec = s.manager.get(&name).unwrap();
    assert_eq!(rec.status.kind(), StatusKind::Running);
    assert_eq!(
        container_of(&rec),
        serving,
        "the old container serves untouched"
    );
    let left = s.cleanup.containers(false);
    assert_eq!(left.len(), 1, "the failed container was removed: {left:?}");
    assert!(serving.starts_with(&left[0]));
    let stats = s.manager.traffic_stats(&name).unwrap().unwrap();
    assert!(
        stats.revisions.iter().all(|r| r.revision.0 == 1),
        "{stats:?}"
    );
    s.manager.remove(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_rolling_update_and_restart_of_3_replicas_under_load_fail_no_request() {
    let _load = one_load_at_a_time().await;
    let Some(s) = setup("roll", 27230).await else {
        return;
    };
    let name = s.name("roll");
    let rolling = |rev: &str| {
        let mut c = s.config(&name, rev);
        c.replicas = 3;
        c.update.strategy = conan_core::UpdateStrategy::Rolling;
        c.update.max_parallel = 1;
        c
    };
    let rec = s.manager.deploy(rolling("r1")).await.unwrap();
    let endpoint = endpoint_of(&rec);
    assert_eq!(rec.runtime.as_ref().unwrap().instances.len(), 3);
    let url = format!("http://{endpoint}/");

    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rec = s.manager.update(&name, rolling("r2")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = load.stop().await;
    report.assert_clean("docker rolling update of 3 replicas");
    assert_eq!(report.revisions.last().unwrap().0, "r2", "{report:?}");
    let serving: Vec<String> = rec
        .runtime
        .as_ref()
        .unwrap()
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(serving.len(), 3);
    let left = s.cleanup.containers(false);
    assert_eq!(left.len(), 3, "the old replicas are gone: {left:?}");

    // A restart of the 3 replicas: 3 fresh containers beside them, then the switch.
    let load = Load::start(url.clone(), RATE, WORKERS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = s.manager.restart(&name).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    report.assert_clean("docker restart of 3 replicas");
    let fresh: Vec<String> = rec
        .runtime
        .as_ref()
        .unwrap()
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(fresh.len(), 3);
    assert!(fresh.iter().all(|id| !serving.contains(id)), "all fresh");
    assert_eq!(
        s.cleanup.containers(false).len(),
        3,
        "the old ones are gone"
    );

    // A new revision that never gets ready never serves; the old replicas keep serving.
    let load = Load::start(url, RATE, WORKERS);
    let mut bad = rolling("r3");
    bad.env.insert("FAIL_HEALTH", "1");
    bad.update.healthy_deadline = Duration::from_secs(3);
    s.manager.update(&name, bad).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    assert_eq!(report.failures(), 0, "{report:?}");
    let revs: Vec<&str> = report.revisions.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(revs, ["r2"], "r3 never served: {report:?}");
    let rec = s.manager.get(&name).unwrap();
    assert_eq!(rec.status.kind(), StatusKind::Running);
    assert_eq!(s.cleanup.containers(true).len(), 3);
    assert_eq!(
        s.cleanup.containers(false).len(),
        3,
        "r3's container was removed"
    );
    s.manager.remove(&name).await.unwrap();
}

/// Docker restarts a crashed container (SIGKILL) on a new published port; the endpoint follows it
/// (the provider reports the new runtime and the proxy routes to the new port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_container_restarted_by_docker_is_routed_to_on_its_new_port() {
    let Some(s) = setup("kill", 27240).await else {
        return;
    };
    let name = s.name("kill");
    let rec = s.manager.deploy(s.config(&name, "r1")).await.unwrap();
    let endpoint = endpoint_of(&rec);
    let container = container_of(&rec);
    let port = rec.runtime.as_ref().unwrap().instances[0].port;
    // SIGKILL from the host (a crash, not `docker kill`, which Docker counts as a stop).
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &container]).join("");
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .is_ok_and(|s| s.success()),
        "kill -9 {pid}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || async {
            s.manager.get(&name).is_ok_and(|r| {
                r.status.kind() == StatusKind::Running
                    && r.runtime.as_ref().unwrap().instances[0].port != port
            })
        })
        .await,
        "the manager learns the restarted container's new port: {:?} (was {port:?})",
        s.manager
            .get(&name)
            .ok()
            .map(|r| (r.status.clone(), r.runtime.clone()))
    );
    let rec = s.manager.get(&name).unwrap();
    assert_eq!(
        container_of(&rec),
        container,
        "the same container, restarted by Docker"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            get(endpoint, "/")
                .await
                .is_some_and(|r| r.0 == 200 && r.1 == "r1")
        })
        .await,
        "the endpoint answers again"
    );
    s.manager.remove(&name).await.unwrap();
}

/// A failed `recreate` update puts the stopped old container back, which Docker publishes
/// on a new port: the endpoint follows it (a gap during the update is what `recreate`
/// means; a dead endpoint after it is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_failed_recreate_update_serves_the_restored_container_through_the_endpoint() {
    let Some(s) = setup("recreate", 27250).await else {
        return;
    };
    let name = s.name("recreate");
    let recreate = |rev: &str| {
        let mut c = s.config(&name, rev);
        c.update.strategy = conan_core::UpdateStrategy::Recreate;
        c
    };
    let rec = s.manager.deploy(recreate("r1")).await.unwrap();
    let endpoint = endpoint_of(&rec);
    let container = container_of(&rec);
    let mut bad = recreate("r2");
    bad.env.insert("FAIL_HEALTH", "1");
    bad.update.healthy_deadline = Duration::from_secs(3);
    s.manager.update(&name, bad).await.unwrap_err();
    let published = || {
        docker(&["port", &container, "3000/tcp"])
            .first()
            .and_then(|l| l.rsplit(':').next()?.parse::<u16>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.manager.get(&name).is_ok_and(|r| {
                r.status.kind() == StatusKind::Running
                    && r.runtime.as_ref().unwrap().instances[0].port == published()
            })
        })
        .await,
        "the record names the restored container's port {:?}: {:?}",
        published(),
        s.manager.get(&name).ok().and_then(|r| r.runtime.clone())
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            get(endpoint, "/")
                .await
                .is_some_and(|r| r.0 == 200 && r.1 == "r1")
        })
        .await,
        "the endpoint serves the restored container"
    );
    s.manager.remove(&name).await.unwrap();
}
