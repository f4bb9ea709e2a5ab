//! Helpers shared by the integration tests: real processes, unique names, cleanup guards.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use conan_core::prelude::*;
use conan_core::{EventBus, EventEnvelope};
use conan_provider_local::LocalProvider;

pub fn apps() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/apps")
}

pub fn app(name: &str) -> PathBuf {
    apps().join(name)
}

/// A provider on a fresh state directory with its own port range.
pub fn provider(ports: std::ops::RangeInclusive<u16>) -> (Arc<LocalProvider>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let p = LocalProvider::builder()
        .state_dir(dir.path())
        .port_range(ports)
        .node_path("/usr/bin/node")
        .build()
        .unwrap();
    (Arc::new(p), dir)
}

/// A fresh provider over the same state directory and settings as `p` (as after a restart
/// of the managing process).
pub fn fresh(p: &LocalProvider) -> LocalProvider {
    let s = p.settings();
    LocalProvider::builder()
        .state_dir(&s.state_dir)
        .port_range(s.port_range.clone())
        .port_lock_dir(&s.port_lock_dir)
        .node_path(&s.node_path)
        .build()
        .unwrap()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u32(..))
}

/// A config for `app` with an HTTP check on `/health` and short timings.
pub fn config(name: &str, app_name: &str) -> DeploymentConfig {
    let mut c = DeploymentConfig::new(name);
    c.source = app(app_name);
    c.health_check = Some(HealthCheck::http("/health").interval(Duration::from_millis(500)));
    c.update.healthy_deadline = Duration::from_secs(10);
    c.stop.timeout = Duration::from_secs(2);
    c
}

pub fn spec(config: DeploymentConfig) -> DeploymentSpec {
    DeploymentSpec::new(DeploymentId::generate(), Revision(1), config)
}

/// What a manager would hand the provider for `spec` (nothing persisted).
pub fn known(spec: &DeploymentSpec) -> KnownDeployment {
    KnownDeployment::from_spec(spec.clone())
}

/// Kills every process carrying `CONAN_DEPLOYMENT_ID=<id>` when dropped, so a failing
/// test leaves nothing behind.
pub struct Guard(pub Vec<String>);

impl Guard {
    pub fn new(ids: &[&DeploymentId]) -> Self {
        Guard(ids.iter().map(|i| i.as_str().to_owned()).collect())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for id in &self.0 {
            for pid in marked(id) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            remove_cgroups(id);
        }
    }
}

/// Live (non-zombie) processes whose environment carries `CONAN_DEPLOYMENT_ID=<id>`.
pub fn marked(id: &str) -> Vec<u32> {
    let needle = format!("CONAN_DEPLOYMENT_ID={id}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !alive(pid) {
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

pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A context whose events can be read back.
pub fn ctx() -> (
    OperationContext,
    tokio::sync::broadcast::Receiver<EventEnvelope>,
) {
    let bus = EventBus::new(4096);
    let rx = bus.subscribe();
    (OperationContext::new(EventSink::new(bus, None)), rx)
}

pub async fn get(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1)?.parse().ok()
}

pub async fn logs(p: &LocalProvider, known: &KnownDeployment) -> Vec<LogLine> {
    p.logs_vec(known, &LogQuery::all()).await.unwrap()
}

/// Every `conan` cgroup parent the local provider may use: `<hierarchy>/conan` and
/// `<own cgroup>/conan` of each mounted hierarchy that exists.
pub fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if !right.starts_with("cgroup") {
            continue;
        }
        if let Some(point) = left.split(' ').nth(4) {
            roots.push(PathBuf::from(point).join("conan"));
            for l in own.lines() {
                if let Some(path) = l.splitn(3, ':').nth(2)
                    && path != "/"
                {
                    roots.push(PathBuf::from(point).join(&path[1..]).join("conan"));
                }
            }
        }
    }
    roots.retain(|r| r.parent().is_some_and(|p| p.is_dir()));
    roots
}

/// SIGKILLs whatever is left in deployment `id`'s cgroups and removes them (and the
/// `conan` parents once empty), so a failed test leaves no cgroup behind.
pub fn remove_cgroups(id: &str) {
    for root in cgroup_roots() {
        let dep = root.join(id);
        let Ok(instances) = std::fs::read_dir(&dep) else {
            continue;
        };
        for inst in instances.flatten().filter(|e| e.path().is_dir()) {
            let procs =
                std::fs::read_to_string(inst.path().join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(inst.path()).is_err() && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir(&dep);
        let _ = std::fs::remove_dir(&root);
    }
}
