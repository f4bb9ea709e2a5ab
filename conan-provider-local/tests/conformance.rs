//! conan-core's provider conformance suite (v2) against the local provider: every check
//! builds a fresh `LocalProvider` over one state directory, used as `Arc<dyn Provider>`
//! directly and through the forwarding `Box<T>` impl. Leftovers are the processes carrying
//! the deployment's marker and the machine-wide port locks of the suite's lock directory.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_core::testing::conformance::{self, ConformanceHarness};
use conan_provider_local::LocalProvider;

fn harness(
    state: &Path,
    locks: &Path,
    ports: std::ops::RangeInclusive<u16>,
    forwarded: bool,
) -> ConformanceHarness {
    let (state, lock_dir) = (state.to_path_buf(), locks.to_path_buf());
    let make = move || {
        let p = LocalProvider::builder()
            .state_dir(&state)
            .port_lock_dir(&lock_dir)
            .port_range(ports.clone())
            .node_path("/usr/bin/node")
            .build()
            .unwrap();
        if forwarded {
            Arc::new(Box::new(p) as Box<DynProvider>) as Arc<DynProvider>
        } else {
            Arc::new(p) as Arc<DynProvider>
        }
    };
    let locks = locks.to_path_buf();
    ConformanceHarness::new(make, |name| config(name, "hello"))
        .with_failing_config(|name| {
            let mut c = DeploymentConfig::new(name);
            c.source = app("crash");
            c.health_check = Some(HealthCheck::http("/health"));
            c.update.healthy_deadline = Duration::from_secs(5);
            c
        })
        .with_slow_config(|name| {
            let mut c = config(name, "slow-start");
            c.health_check = Some(HealthCheck::http("/"));
            c.env.insert("SLOW_START_MS", "5000");
            c
        })
        .with_leftovers(move |id| {
            let (id, locks) = (id.clone(), locks.clone());
            Box::pin(async move {
                tokio::task::spawn_blocking(move || leftovers(&id, &locks))
                    .await
                    .unwrap_or_default()
            })
        })
        .timeout(Duration::from_secs(60))
}

/// The processes of `id` and the port locks of the suite's lock directory that no live
/// process of another deployment explains (a lock whose port another deployment's app
/// serves on is that deployment's; a lock nobody serves on is leaked, and counts).
fn leftovers(id: &DeploymentId, locks: &Path) -> Vec<String> {
    let mut out: Vec<String> = marked(id.as_str())
        .into_iter()
        .map(|p| format!("pid {p}"))
        .collect();
    let Ok(dir) = std::fs::read_dir(locks) else {
        return out;
    };
    let others = ports_of_other_deployments(id);
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !others.contains(&name) {
            out.push(format!("port lock {name}"));
        }
    }
    out
}

/// `PORT` of every live process that carries another deployment's id.
fn ports_of_other_deployments(id: &DeploymentId) -> Vec<String> {
    let mine = format!("CONAN_DEPLOYMENT_ID={id}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        let other = vars
            .iter()
            .any(|v| v.starts_with(b"CONAN_DEPLOYMENT_ID=") && *v != mine.as_bytes());
        if !other {
            continue;
        }
        if let Some(port) = vars.iter().find_map(|v| v.strip_prefix(b"PORT=")) {
            out.push(String::from_utf8_lossy(port).into_owned());
        }
    }
    out
}

struct Dirs {
    state: tempfile::TempDir,
    locks: PathBuf,
    _locks: tempfile::TempDir,
}

fn dirs() -> Dirs {
    let locks = tempfile::tempdir().unwrap();
    Dirs {
        state: tempfile::tempdir().unwrap(),
        locks: locks.path().join("ports"),
        _locks: locks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_as_dyn_provider() {
    let d = dirs();
    let h = harness(d.state.path(), &d.locks, 24000..=24249, false);
    conformance::run_all(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_the_forwarding_box_impl() {
    let d = dirs();
    let h = harness(d.state.path(), &d.locks, 24250..=24499, true);
    conformance::run_all(&h).await;
}
