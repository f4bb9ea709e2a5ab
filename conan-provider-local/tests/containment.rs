//! Containment with real processes: an instance's escaped double fork dies with it (by its
//! cgroup), a stop signals each process exactly once, and resource limits are hard limits.
//!
//! The cgroup tests run where this process may make cgroups (root, or a delegated
//! subtree; CI runs as root) and print why they are skipped elsewhere. There the provider
//! falls back to process markers, which an app that scrubs its environment and leaves its
//! session and parent escapes (documented in the crate docs).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use conan_core::prelude::*;
use conan_provider_local::LocalProvider;

const PORTS: std::ops::RangeInclusive<u16> = 20500..=20999;

/// An app that serves HTTP and, once listening, starts a process that escapes marker
/// tracking: `env -i` (no `CONAN_INSTANCE`), `setsid` (own session and group), its
/// parent exits at once (no ancestry). The escapee writes its pid to `escapee.pid`.
const ESCAPING_APP: &str = r#"
const http = require('http');
const { spawn } = require('child_process');
const path = require('path');
const pidfile = path.join(process.cwd(), `escapee-${process.pid}.pid`);
http.createServer((req, res) => { res.writeHead(200); res.end('ok'); })
  .listen(Number(process.env.PORT), process.env.HOST, () => {
    const script = `require('fs').writeFileSync(${JSON.stringify(pidfile)}, String(process.pid)); setInterval(() => {}, 1000)`;
    spawn('/usr/bin/env', ['-i', '/bin/sh', '-c',
      `/usr/bin/setsid ${process.execPath} -e "$0" & exit 0`, script], { stdio: 'ignore' });
    console.log('escaping app listening');
  });
"#;

/// An app whose main process, a child in its group and a detached (`setsid`) grandchild
/// each count the SIGTERMs they get in `term-<pid>.log` (one line each) and treat a second
/// one as "force quit" (exit 3). After the first they shut down cleanly in 300 ms.
const COUNTING_APP: &str = r#"
const http = require('http');
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const dir = process.cwd();
const counter = `
  const fs = require('fs');
  let n = 0;
  process.on('SIGTERM', () => {
    n += 1;
    fs.appendFileSync(require('path').join(${JSON.stringify(dir)}, 'term-' + process.pid + '.log'), 'TERM ' + n + '\\n');
    if (n > 1) { process.exit(3); }
    setTimeout(() => process.exit(0), 300);
  });
`;
eval(counter);
fs.writeFileSync(path.join(dir, `started-${process.pid}.pid`), String(process.pid));
const keep = counter + `; require('fs').writeFileSync(require('path').join(${JSON.stringify(dir)}, 'started-' + process.pid + '.pid'), String(process.pid)); setInterval(() => {}, 1000)`;
spawn(process.execPath, ['-e', keep], { stdio: 'ignore' });
spawn(process.execPath, ['-e', keep], { stdio: 'ignore', detached: true }).unref();
http.createServer((req, res) => { res.writeHead(200); res.end('ok'); })
  .listen(Number(process.env.PORT), process.env.HOST, () => console.log('counting app listening'));
"#;

/// An app that, once ready, allocates 16 MiB every 20 ms up to 512 MiB, then idles.
const HOG_APP: &str = r#"
const http = require('http');
const hoard = [];
http.createServer((req, res) => { res.writeHead(200); res.end('ok'); })
  .listen(Number(process.env.PORT), process.env.HOST, () => {
    console.log('hog listening');
    const t = setInterval(() => {
      hoard.push(Buffer.alloc(16 * 1024 * 1024, 1));
      console.log(`hog holds ${hoard.length * 16} MiB`);
      if (hoard.length >= 32) { clearInterval(t); console.log('hog done'); }
    }, 20);
  });
"#;

fn app_dir(source: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.js"), source).unwrap();
    dir
}

fn provider_with(cgroups: bool) -> (LocalProvider, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let p = LocalProvider::builder()
        .state_dir(dir.path())
        .port_range(PORTS)
        .node_path("/usr/bin/node")
        .cgroups(cgroups)
        .build()
        .unwrap();
    (p, dir)
}

fn app_spec(name: &str, source: &Path) -> DeploymentSpec {
    app_spec_with(name, source, |_| {})
}

fn app_spec_with(
    name: &str,
    source: &Path,
    tweak: impl FnOnce(&mut DeploymentConfig),
) -> DeploymentSpec {
    let mut c = DeploymentConfig::new(unique(name));
    c.source = source.to_path_buf();
    c.start_command = Some("exec /usr/bin/node server.js".into());
    c.health_check = Some(HealthCheck::http("/").interval(Duration::from_millis(500)));
    c.update.healthy_deadline = Duration::from_secs(10);
    c.stop.timeout = Duration::from_secs(10);
    tweak(&mut c);
    spec(c)
}

/// Kills the pids named in `*.pid` files of an app directory and everything left in the
/// deployment's cgroups, then removes those cgroups, even when a test fails.
struct Cleanup {
    app: PathBuf,
    id: String,
}

impl Cleanup {
    fn new(app: &Path, id: &DeploymentId) -> Self {
        Self {
            app: app.to_path_buf(),
            id: id.as_str().to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in pids_in(&self.app) {
            kill9(pid);
        }
        remove_cgroups(&self.id);
    }
}

fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The pids written in the `*.pid` files of `dir`.
fn pids_in(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The escapee's pid once it has written it.
async fn escapee(app: &Path) -> u32 {
    let mut pid = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            pid = std::fs::read_dir(app).ok().and_then(|d| {
                d.flatten()
                    .find(|e| e.file_name().to_string_lossy().starts_with("escapee-"))
                    .and_then(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
            });
            pid.is_some_and(alive)
        })
        .await,
        "the escapee never started"
    );
    pid.unwrap_or_default()
}

fn clear_pid_files(app: &Path) {
    for e in std::fs::read_dir(app).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".pid") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Skips (with the reason) where this process cannot make cgroups.
fn cgroups_or_skip(p: &LocalProvider, test: &str) -> bool {
    let c = p.containment();
    if !c.uses_cgroups() {
        eprintln!("skipping {test}: {c} (the fallback tracks processes by markers)");
    }
    c.uses_cgroups()
}

/// The first of `files` in the cgroup of `pid` that holds `controller` (a v1 hierarchy
/// with it, else the v2 one), trimmed.
fn limit_of(pid: u32, controller: &str, files: &[&str]) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts: Vec<(String, String)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            let (fs, _, opts) = (r.next()?, r.next()?, r.next()?);
            let point = left.split(' ').nth(4)?.to_owned();
            match fs {
                "cgroup2" => Some((point, String::new())),
                "cgroup" => Some((point, opts.to_owned())),
                _ => None,
            }
        })
        .collect();
    for line in cgroups_of(pid).lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let Some((point, _)) = mounts.iter().find(|(_, opts)| {
            if ctrls.is_empty() {
                opts.is_empty()
            } else {
                ctrls.split(',').any(|c| c == controller)
                    && opts.split(',').any(|o| o == controller)
            }
        }) else {
            continue;
        };
        if !ctrls.is_empty() && !ctrls.split(',').any(|c| c == controller) {
            continue;
        }
        let dir = Path::new(point).join(path.trim_start_matches('/'));
        for f in files {
            if let Ok(v) = std::fs::read_to_string(dir.join(f)) {
                return Some(v.trim().to_owned());
            }
        }
    }
    None
}

/// The cgroup (v2 or v1 path) process `pid` is in, per `/proc/PID/cgroup`.
fn cgroups_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_fork_with_a_scrubbed_environment_dies_on_stop_and_on_remove() {
    let (p, _state) = provider_with(true);
    if !cgroups_or_skip(
        &p,
        "a_double_fork_with_a_scrubbed_environment_dies_on_stop_and_on_remove",
    ) {
        return;
    }
    let app = app_dir(ESCAPING_APP);
    let s = app_spec("escape", app.path());
    let _g = Guard::new(&[&s.id]);
    let _c = Cleanup::new(app.path(), &s.id);
    let (ctx, _rx) = ctx();
    p.deploy(&ctx, &s, None).await.unwrap();
    let pid = escapee(app.path()).await;
    let env = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .into_owned();
    assert!(
        !env.contains("CONAN_"),
        "the escapee's environment is scrubbed: {env}"
    );
    assert!(
        cgroups_of(pid).contains(&format!("/conan/{}/", s.id.as_str())),
        "the escapee is in its instance's cgroup: {}",
        cgroups_of(pid)
    );

    p.stop(&ctx, &known(&s)).await.unwrap();
    assert!(!alive(pid), "the escapee (pid {pid}) survived stop");
    for root in cgroup_roots() {
        assert!(
            !root.join(s.id.as_str()).exists(),
            "the stopped instance's cgroup is removed"
        );
    }

    clear_pid_files(app.path());
    p.start(&ctx, &known(&s)).await.unwrap();
    let pid = escapee(app.path()).await;
    p.remove(&ctx, &known(&s)).await.unwrap();
    assert!(!alive(pid), "the escapee (pid {pid}) survived remove");
    for root in cgroup_roots() {
        assert!(!root.join(s.id.as_str()).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_provider_kills_an_escapee_by_the_cgroup_an_earlier_one_made() {
    let (p, _state) = provider_with(true);
    if !cgroups_or_skip(
        &p,
        "a_fresh_provider_kills_an_escapee_by_the_cgroup_an_earlier_one_made",
    ) {
        return;
    }
    let app = app_dir(ESCAPING_APP);
    let s = app_spec("escape-adopted", app.path());
    let _g = Guard::new(&[&s.id]);
    let _c = Cleanup::new(app.path(), &s.id);
    let (ctx, _rx) = ctx();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let pid = escapee(app.path()).await;
    // The managing process restarts: a new provider adopts from the state directory.
    drop(p);
    let p = fresh_with_cgroups(_state.path());
    let mut k = known(&s);
    k.runtime = std::sync::Arc::new(info);
    assert!(p.is_running(&k).await.unwrap());
    assert!(alive(pid));
    p.stop(&ctx, &k).await.unwrap();
    assert!(
        !alive(pid),
        "the escapee (pid {pid}) survived a stop after adoption"
    );
    p.remove(&ctx, &k).await.unwrap();
}

fn fresh_with_cgroups(state: &Path) -> LocalProvider {
    LocalProvider::builder()
        .state_dir(state)
        .port_range(PORTS)
        .node_path("/usr/bin/node")
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cgroups_the_markers_still_reach_a_detached_grandchild() {
    let (p, _state) = provider_with(false);
    let c = p.containment();
    assert_eq!(
        c.kind(),
        conan_provider_local::ContainmentKind::ProcessMarkers
    );
    assert_eq!(
        c.to_string(),
        "process markers (no cgroup: disabled by configuration)"
    );
    assert!(!c.enforces_memory() && !c.enforces_cpus());
    let mut cfg = config(&unique("markers"), "grandchildren");
    cfg.stop.timeout = Duration::from_secs(5);
    let s = spec(cfg);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    p.deploy(&ctx, &s, None).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || marked(s.id.as_str()).len() >= 4).await);
    for root in cgroup_roots() {
        assert!(
            !root.join(s.id.as_str()).exists(),
            "no cgroup without cgroups"
        );
    }
    p.stop(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
    p.remove(&ctx, &known(&s)).await.unwrap();
}

/// Regression (issue 10, finding 8): the group and then each member got SIGTERM, so an
/// app treating a second SIGTERM as "force quit" lost its clean shutdown.
async fn each_process_gets_exactly_one_sigterm(cgroups: bool) {
    let (p, _state) = provider_with(cgroups);
    let app = app_dir(COUNTING_APP);
    let s = app_spec("one-term", app.path());
    let _g = Guard::new(&[&s.id]);
    let _c = Cleanup::new(app.path(), &s.id);
    let (ctx, _rx) = ctx();
    p.deploy(&ctx, &s, None).await.unwrap();
    // The main process, its child and its detached grandchild.
    assert!(
        wait_until(Duration::from_secs(10), || pids_in(app.path()).len() == 3).await,
        "{:?}",
        pids_in(app.path())
    );
    let pids = pids_in(app.path());
    let started = Instant::now();
    p.stop(&ctx, &known(&s)).await.unwrap();
    let took = started.elapsed();
    for pid in &pids {
        let log =
            std::fs::read_to_string(app.path().join(format!("term-{pid}.log"))).unwrap_or_default();
        assert_eq!(
            log,
            "TERM 1\n",
            "pid {pid} of {pids:?} ({})",
            p.containment()
        );
        assert!(!alive(*pid));
    }
    let lines = logs(&p, &known(&s)).await;
    assert!(
        !lines.iter().any(|l| l.message.contains("killed")),
        "a clean shutdown within the timeout needs no SIGKILL: {lines:?}"
    );
    assert!(took < s.config.stop.timeout, "stop took {took:?}");
    p.remove(&ctx, &known(&s)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_each_process_exactly_one_sigterm() {
    each_process_gets_exactly_one_sigterm(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_each_process_exactly_one_sigterm_without_cgroups() {
    each_process_gets_exactly_one_sigterm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_cpu_limits_are_hard_limits_in_the_cgroup() {
    let (p, _state) = provider_with(true);
    if !cgroups_or_skip(&p, "memory_and_cpu_limits_are_hard_limits_in_the_cgroup") {
        return;
    }
    let c = p.containment();
    if !c.enforces_memory() {
        eprintln!("skipping memory_and_cpu_limits_are_hard_limits_in_the_cgroup: {c}");
        return;
    }
    let app = app_dir(HOG_APP);
    let s = app_spec_with("hog", app.path(), |c| {
        c.resources.memory = Some(conan_core::ByteSize::mib(96));
        c.resources.cpus = Some(0.5);
        c.restart.policy = conan_core::RestartMode::Never;
    });
    let _g = Guard::new(&[&s.id]);
    let _c = Cleanup::new(app.path(), &s.id);
    let (ctx, mut rx) = ctx();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let mut notices = Vec::new();
    while let Ok(e) = rx.try_recv() {
        notices.push(format!("{:?}", e.event));
    }
    assert!(
        notices
            .iter()
            .any(|n| n.contains("resources.memory enforced")),
        "{notices:?}"
    );
    let pid: u32 = info.instances[0].id.parse().unwrap();
    let memory = limit_of(pid, "memory", &["memory.max", "memory.limit_in_bytes"]);
    assert_eq!(memory.as_deref(), Some("100663296"), "{}", cgroups_of(pid));
    if c.enforces_cpus() {
        let cpu = limit_of(pid, "cpu", &["cpu.max", "cpu.cfs_quota_us"]);
        assert!(
            matches!(cpu.as_deref(), Some("50000 100000" | "50000")),
            "{cpu:?}"
        );
    }
    // The app stops at 512 MiB without a limit; under 96 MiB the kernel kills it.
    assert!(
        wait_until(Duration::from_secs(20), || !alive(pid)).await,
        "the hog outgrew its memory limit"
    );
    // The supervisor reports the exit once it has reaped the process.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = logs(&p, &known(&s)).await;
        if lines
            .iter()
            .any(|l| l.message.contains("[conan] process exited"))
            || Instant::now() > deadline
        {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !lines.iter().any(|l| l.message.contains("hog done")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.message.contains("process exited (killed by signal 9)")),
        "{lines:?}"
    );
    p.remove(&ctx, &known(&s)).await.unwrap();
}

/// What the leader forks at once (possibly before it is moved into its cgroup) ends up
/// in the cgroup too: found by ancestry and moved right after the spawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_leader_forks_at_once_is_in_the_cgroup() {
    let (p, _state) = provider_with(true);
    if !cgroups_or_skip(&p, "what_the_leader_forks_at_once_is_in_the_cgroup") {
        return;
    }
    let app = app_dir(
        "require('http').createServer((q, r) => r.end('ok'))\
         .listen(Number(process.env.PORT), process.env.HOST);",
    );
    let s = app_spec_with("fork-at-once", app.path(), |c| {
        c.start_command =
            Some("/bin/sleep 60 & /bin/sleep 61 & exec /usr/bin/node server.js".into());
    });
    let _g = Guard::new(&[&s.id]);
    let _c = Cleanup::new(app.path(), &s.id);
    let (ctx, _rx) = ctx();
    p.deploy(&ctx, &s, None).await.unwrap();
    let members = marked(s.id.as_str());
    assert_eq!(members.len(), 3, "{members:?}");
    let inside = format!("/conan/{}/", s.id.as_str());
    for pid in &members {
        assert!(
            cgroups_of(*pid).contains(&inside),
            "pid {pid}: {}",
            cgroups_of(*pid)
        );
    }
    p.remove(&ctx, &known(&s)).await.unwrap();
    assert!(members.iter().all(|&pid| !alive(pid)));
}
