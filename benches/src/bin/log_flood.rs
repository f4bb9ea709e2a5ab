//! The daemon under a log flood (issue 10, finding 10): one app writing `--mbps` MB/s of
//! ~100-byte lines for `--secs` s through `conan`, with `conan logs -f` attached. Reports
//! the daemon's CPU use and peak RSS during the flood, its RSS before (idle, follower
//! attached) and after it (5 s and 15 s later: the log memory is trimmed once output is
//! quiet), how many "fell behind" notices the follower got, and the spool's apparent and
//! real size and the daemon's descriptors afterwards.
//!
//! The harness builds `conan` in release mode first (or uses `CONAN_BIN`).
//!
//! ```text
//! cargo run --release -p conan-benches --bin log_flood -- [--mbps 50] [--secs 20]
//! ```

use conan_benches::rss_kib;
use conan_benches::{arg_u64 as arg, release_conan as conan_bin};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The flooding app: waits `FLOOD_DELAY_MS`, writes `FLOOD_MBPS` MB/s for `FLOOD_SECS` s
/// with synchronous writes, then idles (it keeps running).
const FLOOD_JS: &str = r"
const fs = require('fs');
const mbps = Number(process.env.FLOOD_MBPS || 50);
const secs = Number(process.env.FLOOD_SECS || 20);
const delay = Number(process.env.FLOOD_DELAY_MS || 1000);
const perTick = mbps * 1e6 / 100;
let line = 0;
function chunk() {
  let s = '';
  while (s.length < perTick) { line++; s += 'flood line ' + String(line).padStart(9, '0') + ' ' + 'x'.repeat(70) + '\n'; }
  return s;
}
setTimeout(() => {
  const start = Date.now();
  let sent = 0;
  const t = setInterval(() => {
    const el = Date.now() - start;
    if (el >= secs * 1000) { clearInterval(t); fs.writeSync(1, `flood done: ${line} lines\n`); return; }
    while (sent < mbps * 1e6 * el / 1000) { const c = chunk(); fs.writeSync(1, c); sent += c.length; }
  }, 10);
}, delay);
setInterval(() => {}, 1 << 30);
";

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Conan {
    bin: PathBuf,
    home: PathBuf,
}

impl Conan {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("CONAN_HOME", &self.home)
            .env("CONAN_PORT_RANGE", "27000-27999")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) {
        let out = self.cmd(args).output().expect("run conan");
        assert!(
            out.status.success(),
            "conan {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn daemon_pid(&self) -> u32 {
        std::fs::read_to_string(self.home.join("daemon.lock"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .expect("daemon pid")
    }
}

fn spools(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            spools(&p, out);
        } else if p.extension().is_some_and(|x| x == "spool") {
            out.push(p);
        }
    }
}

fn main() {
    let mbps = arg("--mbps", 50);
    let secs = arg("--secs", 20);
    let tmp = tempfile::tempdir().expect("tempdir");
    let app = tmp.path().join("flood");
    std::fs::create_dir_all(&app).expect("app dir");
    std::fs::write(app.join("flood.js"), FLOOD_JS).expect("flood.js");
    let conan = Conan {
        bin: conan_bin(),
        home: tmp.path().join("conan-home"),
    };
    println!("log_flood: {mbps} MB/s for {secs} s, `conan logs -f` attached");
    conan.ok(&["ls"]);
    let pid = conan.daemon_pid();
    let (mbps_s, secs_s) = (format!("FLOOD_MBPS={mbps}"), format!("FLOOD_SECS={secs}"));
    conan.ok(&[
        "deploy",
        app.to_str().expect("utf-8 path"),
        "--name",
        "flood",
        "--start",
        "node flood.js",
        "-e",
        &mbps_s,
        "-e",
        &secs_s,
        "-e",
        "FLOOD_DELAY_MS=6000",
    ]);
    let mut follower = conan
        .cmd(&["logs", "-f", "flood"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("conan logs -f");
    let started = Arc::new(AtomicBool::new(false));
    let (lines, notices) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (started, lines, notices) = (started.clone(), lines.clone(), notices.clone());
        let out = follower.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.contains("flood line") {
                    started.store(true, Ordering::Release);
                    lines.fetch_add(1, Ordering::Relaxed);
                } else if line.contains("fell behind") {
                    notices.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let idle = rss_kib(pid);
    let fds_idle = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    while !started.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
        peak = peak.max(rss_kib(pid));
    }
    let cpu =
        (cpu_ticks(pid) - c0) as f64 / clock_ticks_per_sec() / t0.elapsed().as_secs_f64() * 100.0;
    std::thread::sleep(Duration::from_secs(5));
    let after5 = rss_kib(pid);
    std::thread::sleep(Duration::from_secs(10));
    let after15 = rss_kib(pid);
    let fds_after = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let mut found = Vec::new();
    spools(&conan.home, &mut found);
    let (apparent, real) = found
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .fold((0u64, 0u64), |(a, r), m| {
            (a + m.len(), r + m.blocks() * 512)
        });
    let _ = follower.kill();
    let _ = follower.wait();
    let _ = reader.join();
    println!(
        "  daemon during the flood: CPU {cpu:.1} % of a core, peak RSS {:.1} MiB",
        mib(peak)
    );
    println!(
        "  daemon RSS: idle {:.1} MiB (follower attached), 5 s after {:.1} MiB, 15 s after {:.1} MiB ({:+.1} MiB vs idle)",
        mib(idle),
        mib(after5),
        mib(after15),
        mib(after15) - mib(idle)
    );
    println!(
        "  follower: {} flood lines, {} \"fell behind\" notices",
        lines.load(Ordering::Relaxed),
        notices.load(Ordering::Relaxed)
    );
    println!(
        "  spools after: apparent {:.1} MiB, real {:.1} MiB; daemon fds {fds_idle} before, {fds_after} after",
        apparent as f64 / 1048576.0,
        real as f64 / 1048576.0
    );
    conan.ok(&["rm", "--force", "flood"]);
    conan.ok(&["daemon", "stop"]);
}
