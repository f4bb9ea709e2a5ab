//! Recovery time of the `conan` daemon: N (100) small local apps (`examples/apps/hello` with
//! its `/health` check) are deployed, the daemon is SIGKILLed, and the next command starts a
//! new daemon. Measured from that command's start (the new daemon is spawned by it) to:
//!
//! 1. the first answer of `conan ls --json` (the daemon is up and has loaded its state);
//! 2. the first `conan ls --json` that shows all N deployments `running` with pids that are
//!    alive (polled every 10 ms).
//!
//! Repeated `--runs` times on the same deployments (kill, recover); the median and the
//! extremes are printed. The apps carry a tag in their env (`CONAN_BENCH_HOME`), and a guard
//! kills every tagged process, the daemon and the temp home even when a step fails. The
//! harness builds `conan` in release mode first (or uses `CONAN_BIN`).
//!
//! ```text
//! cargo run --release -p conan-benches --bin recovery -- [--apps N] [--runs N]
//! ```

use conan_benches::{arg_u64 as arg, release_conan as conan_bin, workspace_root as root};
use conan_benches::{median, ms};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

const TAG: &str = "CONAN_BENCH_HOME";

/// A temp `CONAN_HOME` whose daemon and tagged apps are killed on drop.
struct Home {
    bin: PathBuf,
    dir: tempfile::TempDir,
    ports: String,
}

impl Home {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(args)
            .env("CONAN_HOME", self.dir.path())
            .env("CONAN_PORT_RANGE", &self.ports)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run conan")
    }

    fn tag(&self) -> String {
        format!("{TAG}={}", self.dir.path().display())
    }

    fn daemon_pid(&self) -> Option<i64> {
        std::fs::read_to_string(self.dir.path().join("daemon.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `ls --json` as (status, pid) pairs; `None` when it fails.
    fn listing(&self) -> Option<Vec<(String, Option<i64>)>> {
        let out = self.run(&["ls", "--json"]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let items = parse_listing(&text)?;
        Some(items)
    }

    fn tagged_pids(&self) -> Vec<i64> {
        let tag = self.tag();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == tag.as_bytes()))
            })
            .collect()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            kill(pid);
        }
        for pid in self.tagged_pids() {
            kill(pid);
        }
    }
}

fn kill(pid: i64) {
    let _ = Command::new("kill")
        .args(["-9", "--", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The (status, pid) of each item of an `ls --json` array.
fn parse_listing(text: &str) -> Option<Vec<(String, Option<i64>)>> {
    let items: Vec<serde_json::Value> = serde_json::from_str(text).ok()?;
    Some(
        items
            .iter()
            .map(|d| {
                (
                    d["status"].as_str().unwrap_or_default().to_owned(),
                    d["pid"].as_i64(),
                )
            })
            .collect(),
    )
}

fn all_running(items: &[(String, Option<i64>)], n: usize) -> bool {
    items.len() == n
        && items
            .iter()
            .all(|(status, pid)| status == "running" && pid.is_some_and(alive))
}

fn main() {
    let apps = arg("--apps", 100) as usize;
    let runs = arg("--runs", 3);
    let bin = conan_bin();
    // Below the kernel's ephemeral range (32768-), where outgoing connections could take an
    // app's port between the check and its listen.
    let first_port = 28_000;
    let home = Home {
        bin,
        dir: tempfile::Builder::new()
            .prefix("conan-recovery-")
            .tempdir()
            .expect("temp home"),
        ports: format!("{first_port}-{}", first_port + 2 * apps as u32 + 10),
    };
    let hello = root().join("examples/apps/hello");
    let hello = hello.to_str().expect("utf-8 path").to_owned();
    let tag = home.tag();
    println!("deploying {apps} apps ...");
    let deployed = Instant::now();
    std::thread::scope(|s| {
        let workers = 8;
        for w in 0..workers {
            let (home, hello, tag) = (&home, &hello, &tag);
            s.spawn(move || {
                for i in (w..apps).step_by(workers) {
                    let name = format!("recover-{i}");
                    let out = home.run(&[
                        "deploy", hello, "--name", &name, "--health", "/health", "--env", tag,
                    ]);
                    assert!(
                        out.status.success(),
                        "deploy {name} failed:\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
    });
    println!("  deployed in {:.1} s", deployed.elapsed().as_secs_f64());
    let listing = home.listing().expect("ls");
    assert!(
        all_running(&listing, apps),
        "not all {apps} running before the kill"
    );

    let mut answers = Vec::new();
    let mut recoveries = Vec::new();
    for run in 0..runs {
        let daemon = home.daemon_pid().expect("daemon pid");
        kill(daemon);
        let gone = Instant::now();
        while alive(daemon) {
            assert!(
                gone.elapsed() < Duration::from_secs(10),
                "daemon survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let start = Instant::now();
        let mut answered = None;
        loop {
            let listing = home.listing();
            if listing.is_some() && answered.is_none() {
                answered = Some(start.elapsed());
            }
            if listing.is_some_and(|l| all_running(&l, apps)) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{apps} deployments not all running with live pids 120 s after the kill"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let recovered = start.elapsed();
        let answered = answered.unwrap_or(recovered);
        println!(
            "  run {}: first answer {}, all {apps} running with live pids {}",
            run + 1,
            ms(answered),
            ms(recovered)
        );
        answers.push(answered);
        recoveries.push(recovered);
    }
    let (lo, hi) = (
        recoveries.iter().min().copied().unwrap_or_default(),
        recoveries.iter().max().copied().unwrap_or_default(),
    );
    println!(
        "recovery of {apps} deployments after SIGKILL of the daemon: first answer {} (median), all running with live pids {} (median of {runs}; {}–{})",
        ms(median(&mut answers)),
        ms(median(&mut recoveries)),
        ms(lo),
        ms(hi)
    );
    remove_all(&home, apps);
}

/// Removes the deployments (the guard kills whatever is left).
fn remove_all(home: &Home, apps: usize) {
    std::thread::scope(|s| {
        for w in 0..8 {
            s.spawn(move || {
                for i in (w..apps).step_by(8) {
                    let _ = home.run(&["rm", "--force", &format!("recover-{i}")]);
                }
            });
        }
    });
    let _ = home.run(&["daemon", "stop"]);
}
