//! Shared helpers of Conan's benchmarks (`benches/`) and peer comparison harnesses
//! (`src/bin/`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conan::testing::MemoryProvider;
use conan::{DeploymentConfig, DeploymentManager, Request, StateStore, SubmitOptions};

/// Runs `deployments` deploy+stop cycles through a fresh manager on `store`, all submitted
/// at once, and returns the time from the first submission to the last completion.
///
/// The submitting and awaiting runs in a task on the current runtime, as it would in a
/// service that embeds the manager (request handlers are tasks): the runtime's workers are
/// then the only busy threads, rather than the workers plus the thread that blocks on the
/// benchmark's main future.
///
/// # Panics
/// If an operation fails (the in-memory provider has no faults injected here).
pub async fn deploy_stop_cycles(store: Arc<dyn StateStore>, deployments: usize) -> Duration {
    tokio::spawn(drive_deploy_stop_cycles(store, deployments))
        .await
        .expect("benchmark driver task")
}

async fn drive_deploy_stop_cycles(store: Arc<dyn StateStore>, deployments: usize) -> Duration {
    let manager = DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .store_arc(store)
        .concurrency(1024)
        .build()
        .await
        .expect("manager");
    let configs: Vec<_> = (0..deployments)
        .map(|i| {
            DeploymentConfig::builder(format!("app-{i}"))
                .build()
                .expect("valid config")
        })
        .collect();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(deployments * 2);
    for config in configs {
        let name = config.name.clone();
        handles.push(
            manager
                .submit(Request::Deploy(config), SubmitOptions::default())
                .expect("deploy"),
        );
        handles.push(
            manager
                .submit(Request::Stop { target: name }, SubmitOptions::default())
                .expect("stop"),
        );
    }
    for h in handles {
        h.wait().await.expect("operation");
    }
    start.elapsed()
}

/// Median of durations (sorts in place).
#[must_use]
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// A duration in milliseconds with one decimal (`"72.1 ms"`).
#[must_use]
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A port the kernel considers free right now (25999 if none could be bound).
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(25999)
}

/// Resident memory of `pid` in KiB, from `/proc/PID/status` (0 when it is gone).
#[must_use]
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Installs PM2 from npm under `dir`; its binary, or `None` when npm or the install failed.
#[must_use]
pub fn pm2_install(dir: &Path) -> Option<PathBuf> {
    let ok = Command::new("npm")
        .args([
            "install",
            "pm2",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let bin = dir.join("node_modules/.bin/pm2");
    (ok && bin.exists()).then_some(bin)
}

/// Gives `command` the environment a Conan app gets: only the variables of
/// [`DEFAULT_INHERITED_ENV`](conan_provider_local::DEFAULT_INHERITED_ENV) from this
/// process. Every peer's node starts with the same environment, so a comparison measures
/// the tools, not the environment: on a machine with `NODE_EXTRA_CA_CERTS` set, node reads
/// the certificate bundle at startup (about 100 ms here), and Conan's apps do not inherit it.
pub fn app_env(command: &mut Command) -> &mut Command {
    command
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| {
            name.to_str()
                .is_some_and(|n| conan_provider_local::DEFAULT_INHERITED_ENV.contains(&n))
        }))
}

/// `pm2 ARGS` with its state in `home` (`PM2_HOME`), run in `app_dir`, output discarded;
/// its environment is [`app_env`]'s.
#[must_use]
pub fn pm2_command(pm2: &Path, home: &Path, app_dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(pm2);
    app_env(&mut c);
    c.args(args)
        .env("PM2_HOME", home)
        .current_dir(app_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The workspace root (the harnesses run the sample apps and build `conan` from there).
#[must_use]
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The number after `name` on the command line, else `default`.
#[must_use]
pub fn arg_u64(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release `conan` binary: `CONAN_BIN` when set, else built now (in `CARGO_TARGET_DIR`
/// when set).
///
/// # Panics
/// When the build fails.
#[must_use]
pub fn release_conan() -> PathBuf {
    if let Some(bin) = std::env::var_os("CONAN_BIN") {
        return PathBuf::from(bin);
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "conan-cli"])
        .current_dir(workspace_root())
        .status()
        .expect("cargo build");
    assert!(status.success(), "building conan failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("release/conan")
}
