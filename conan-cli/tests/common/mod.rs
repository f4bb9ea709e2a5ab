//! Helpers of the end-to-end tests: a private `CONAN_HOME` per test, the real `conan`
//! binary run with a deadline, and a guard that — even when the test fails — removes the
//! test's deployments, stops its daemon and kills whatever process of that home is left.
//!
//! Apps deployed with [`Home::tag_env`] in their env carry the home's tag, so the guard
//! (and the fault-injection suite's invariants, see [`procs`]) find every process of the
//! home, even one no state file or database row names any more.

#![allow(dead_code)]

pub mod procs;
pub mod users;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest any single `conan` invocation may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// The output of one `conan` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless it succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect_code(0)
    }

    /// Stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A private `CONAN_HOME` with its own daemon; cleaned up on drop.
pub struct Home {
    dir: tempfile::TempDir,
    docker_names: std::sync::Mutex<Vec<String>>,
    envs: Vec<(String, String)>,
    /// `ulimit -n` of every `conan` run (and so of the daemons they start).
    nofile: Option<u64>,
    /// Whether a tmpfs is mounted on the home (unmounted on drop).
    mounted: bool,
}

impl Home {
    /// A new home whose daemon allocates ports from a range of its own, so parallel
    /// tests (each with its own daemon and port allocator) never pick the same port.
    pub fn new() -> Self {
        static HOMES: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::Builder::new()
            .prefix("conan-e2e-")
            .tempdir()
            .expect("tempdir");
        let n = HOMES.fetch_add(1, Ordering::Relaxed) % 20;
        let first = 26_000 + (std::process::id() % 10) * 200 + n * 10;
        Self {
            dir,
            docker_names: std::sync::Mutex::new(Vec::new()),
            envs: vec![
                (
                    "CONAN_PORT_RANGE".to_owned(),
                    format!("{first}-{}", first + 9),
                ),
                // The proxy's endpoints: a range of its own per home, like the ports.
                (
                    "CONAN_PROXY_PORT_RANGE".to_owned(),
                    format!("{}-{}", first + 4_000, first + 4_009),
                ),
            ],
            nofile: None,
            mounted: false,
        }
    }

    /// A new home with `count` ports of its own (at most 40), from a region apart from
    /// [`new`](Self::new)'s (20000-25999), for tests that run many deployments at once.
    pub fn with_ports(count: u16) -> Self {
        static HOMES: AtomicU32 = AtomicU32::new(0);
        assert!(count <= 40, "at most 40 ports per home");
        let n = HOMES.fetch_add(1, Ordering::Relaxed) % 25;
        let first = 20_000 + (std::process::id() % 6) * 1000 + n * 40;
        let home = Self::new();
        let range = format!("{first}-{}", first + u32::from(count) - 1);
        home.with_env("CONAN_PORT_RANGE", &range)
    }

    /// A new home on a fresh tmpfs of `bytes` (unmounted on drop); `Err` says why not
    /// (not root, or `mount` failed), for the caller to print when it skips.
    pub fn on_tmpfs(bytes: u64) -> Result<Self, String> {
        let mut home = Self::with_ports(20);
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            })
            .unwrap_or_default();
        if uid != "0" {
            return Err(format!("mounting a tmpfs needs root (uid {uid})"));
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("tmpfs")
            .arg(home.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        home.mounted = true;
        Ok(home)
    }

    /// The same home, every `conan` run (and so every daemon it starts) under
    /// `ulimit -n n` (soft and hard, so a daemon cannot raise it).
    pub fn with_nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// `CONAN_TEST_HOME=<path>`: give it to every app (`--env`) so that its processes are
    /// recognised as this home's ([`procs::of_home`]).
    pub fn tag_env(&self) -> String {
        format!("{}={}", procs::TAG, self.path().display())
    }

    /// The same home, with an extra env variable for every `conan` run (and so the daemon).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The env variables every `conan` run of this home gets (`CONAN_PORT_RANGE`, ...), for
    /// a process that starts `conan` itself (an MCP client).
    pub fn envs(&self) -> &[(String, String)] {
        &self.envs
    }

    /// Remember a Docker deployment so the guard removes its containers.
    pub fn track_docker(&self, name: &str) {
        self.docker_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_owned());
    }

    /// Runs `conan ARGS` with this home and waits (up to two minutes).
    pub fn conan(&self, args: &[&str]) -> Run {
        self.conan_in(args, None)
    }

    /// Runs `conan ARGS` in `cwd`.
    #[track_caller]
    pub fn conan_in(&self, args: &[&str], cwd: Option<&Path>) -> Run {
        match self.try_conan_in(args, cwd, COMMAND_DEADLINE) {
            Ok(run) => run,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `conan ARGS`; `Err` when it could not run or did not finish within
    /// `deadline` (it is then killed).
    pub fn try_conan(&self, args: &[&str], deadline: Duration) -> Result<Run, String> {
        self.try_conan_in(args, None, deadline)
    }

    fn command(&self) -> Command {
        let bin = env!("CARGO_BIN_EXE_conan");
        match self.nofile {
            None => Command::new(bin),
            Some(n) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                cmd
            }
        }
    }

    fn try_conan_in(
        &self,
        args: &[&str],
        cwd: Option<&Path>,
        deadline: Duration,
    ) -> Result<Run, String> {
        let mut cmd = self.command();
        cmd.args(args)
            .env("CONAN_HOME", self.path())
            .env("NO_COLOR", "1")
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn conan {args:?}: {e}"))?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(deadline) {
            Ok(Ok(out)) => Ok(Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
            Ok(Err(e)) => Err(format!("conan {args:?}: {e}")),
            Err(_) => {
                kill(pid as i32, 9);
                Err(format!("conan {args:?} did not finish within {deadline:?}"))
            }
        }
    }

    /// The environment every `conan` run of this home gets (`CONAN_HOME`, `NO_COLOR`,
    /// and what [`with_env`](Self::with_env) added), for running it through another tool.
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("CONAN_HOME".to_owned(), self.path().display().to_string()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        env.extend(self.envs.iter().cloned());
        env
    }

    /// Deploys the sample hello app as `name` with its `/health` check; the `--json` view.
    pub fn deploy_hello(&self, name: &str) -> Value {
        let hello = app("hello");
        self.conan(&[
            "deploy",
            hello.to_str().expect("utf-8 path"),
            "--name",
            name,
            "--health",
            "/health",
            "--json",
        ])
        .ok()
        .json()
    }

    /// The deployment's entry in `conan ls --json`.
    pub fn listed(&self, name: &str) -> Option<Value> {
        let list = self.conan(&["ls", "--json"]).ok().json();
        list.as_array()
            .expect("ls --json is an array")
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
    }

    /// The pid the running daemon wrote into its lock file.
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path().join("daemon.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// What the auto-started daemons of this home logged (`daemon.log`; empty when none).
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path().join("daemon.log")).unwrap_or_default()
    }

    fn local_pids(&self) -> Vec<i32> {
        let Ok(dirs) = std::fs::read_dir(self.path().join("local/deployments")) else {
            return Vec::new();
        };
        dirs.flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("state.json")).ok())
            .filter_map(|text| serde_json::from_str::<Value>(&text).ok())
            .filter_map(|v| v["instance"]["pid"].as_i64())
            .filter_map(|pid| i32::try_from(pid).ok())
            .collect()
    }
}

impl Home {
    /// Removes the (emptied) instance cgroups of this home's deployments. A test that
    /// stops the daemon with deployments still running leaves them to the kill above,
    /// which empties their cgroups but cannot remove them.
    fn remove_cgroups(&self) {
        let Ok(deployments) = std::fs::read_dir(self.path().join("local/deployments")) else {
            return;
        };
        let ids: Vec<std::ffi::OsString> = deployments
            .filter_map(|e| Some(e.ok()?.file_name()))
            .collect();
        let mut bases = vec![std::path::PathBuf::from("/sys/fs/cgroup/conan")];
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            bases.extend(hierarchies.filter_map(|h| Some(h.ok()?.path().join("conan"))));
        }
        for base in bases.iter().filter(|b| b.is_dir()) {
            for id in &ids {
                let dep = base.join(id);
                let Ok(instances) = std::fs::read_dir(&dep) else {
                    continue;
                };
                for instance in instances.filter_map(Result::ok) {
                    if instance.path().is_dir() {
                        // A killed process may take a moment to leave its cgroup.
                        for _ in 0..50 {
                            if std::fs::remove_dir(instance.path()).is_ok() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                let _ = std::fs::remove_dir(&dep);
            }
        }
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Best effort: remove deployments through the daemon, then stop it.
        if self.path().join("conan.sock").exists() {
            if let Ok(list) = std::panic::catch_unwind(|| self.conan(&["ls", "--json"]))
                && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&list.stdout)
            {
                for item in items {
                    if let Some(name) = item["name"].as_str() {
                        let _ = std::panic::catch_unwind(|| self.conan(&["rm", "--force", name]));
                    }
                }
            }
            let _ = std::panic::catch_unwind(|| self.conan(&["daemon", "stop"]));
        }
        // Whatever is left of this home: app process groups, then the daemon.
        // Only processes that still are Conan apps: pids are recycled (pid_max may be 32768).
        for pid in self.local_pids() {
            if alive(pid) && is_conan_app(pid) {
                kill(-pid, 9);
                kill(pid, 9);
            }
        }
        if let Some(pid) = self.daemon_pid()
            && alive(pid)
            && is_conan_daemon(pid, self.path())
        {
            kill(pid, 9);
        }
        // Tagged app processes no record names any more (the faults suite's leftovers).
        for p in procs::of_home(self.path()) {
            kill(p.pid, 9);
        }
        self.remove_cgroups();
        if self.mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let names = self
            .docker_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for name in names {
            let ids = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=conan.name={name}")])
                .output();
            if let Ok(out) = ids {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["rm", "-f", id]).output();
                }
            }
        }
    }
}

/// Whether `pid` carries the marker the local provider puts in every app's environment.
fn is_conan_app(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|&b| b == 0)
                .any(|kv| kv.starts_with(b"CONAN_INSTANCE="))
        })
        .unwrap_or(false)
}

fn is_conan_daemon(pid: i32, home: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            let needle = format!("CONAN_HOME={}", home.display());
            env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes())
        })
        .unwrap_or(false)
}

/// Sends `signal` to `pid` (negative: a process group) with `kill(1)`.
pub fn kill(pid: i32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `check` until it holds or `deadline` passes.
#[track_caller]
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A deployment name unique to this test run.
pub fn unique(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `examples/apps/NAME`.
pub fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/apps")
        .join(name)
        .canonicalize()
        .expect("sample app")
}

/// `GET path` on `url` (http://127.0.0.1:PORT): the status line and body.
pub fn http_get(url: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://")?.trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// A running `conan` whose stdout lines arrive on a channel; killed on drop.
pub struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Home {
    /// Starts `conan ARGS` in the background (for `-f` commands).
    pub fn follow(&self, args: &[&str]) -> Follower {
        let mut cmd = self.command();
        cmd.args(args)
            .env("CONAN_HOME", self.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn conan");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines: rx }
    }
}

impl Follower {
    /// The next line containing `text` within `deadline`, if any.
    pub fn line_with(&self, text: &str, deadline: Duration) -> Result<String, Vec<String>> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_sub(start.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        Err(seen)
    }

    /// Waits for a line containing `text`; panics with what came instead after `deadline`.
    #[track_caller]
    pub fn expect_line(&self, text: &str, deadline: Duration) -> String {
        self.line_with(text, deadline).unwrap_or_else(|seen| {
            panic!(
                "no line with {text:?} within {deadline:?}; got:\n{}",
                seen.join("\n")
            )
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
