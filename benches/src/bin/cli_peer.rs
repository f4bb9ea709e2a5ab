//! Peer comparison for the `conan` command and its daemon, against a bare spawn, PM2 and
//! supervisord:
//!
//! 1. start to ready of `examples/apps/hello`: `conan deploy --health /health` (daemon
//!    already running) vs spawning `node app.js` and polling `GET /health` every
//!    millisecond vs `pm2 start` + the same polling vs `supervisorctl start` + the same
//!    polling;
//! 2. the daemon's resident memory with N (50) idle deployments running;
//! 3. the daemon's CPU use over 30 s with those deployments idle: the monitor probes each
//!    one's `GET /health` every 10 s and samples its metrics every 10 s (the defaults);
//!    Beside it, the floor: this process sending the same probes from one thread and
//!    doing nothing else;
//! 4. how soon the monitor has restarted an app that turns unhealthy (a check every 1 s,
//!    threshold 3: the bound is interval × threshold + 1 s = 4 s), until a new instance runs.
//!
//! PM2 is installed from npm into a temp dir, supervisor 4 from PyPI into a temp virtualenv
//! (`python3 -m venv`); when either install fails that peer is skipped with a notice.
//! supervisord runs in the foreground (`-n`) with a generated `supervisord.conf` in its temp
//! dir: a `unix_http_server` socket there, one `[program:...]` per app (`autostart=false`,
//! `startsecs=0` so `supervisorctl start` returns once the process is spawned, as `pm2
//! start` does, instead of sleeping the default 1 s; `PORT` from `environment=`), ports from
//! 31000-31999 (below the kernel's ephemeral range that the other peers draw from, and away
//! from conan's 27000-27999). A guard shuts supervisord and its programs down and removes
//! the temp dir even when a step fails. The harness builds `conan` in release mode first (or
//! uses `CONAN_BIN`).
//!
//! Row 1 is measured twice: with `--health /health` (bare: poll `GET /health`) and with no
//! health check (bare: poll a TCP connect; conan: ready when the app accepts TCP on its
//! PORT). The bare starts and the deploys alternate, so a change of the machine's load
//! hits both sides alike, and the bare node gets the environment a Conan app gets
//! (`app_env`). `--ready-only` stops after these rows.
//!
//! ```text
//! cargo run --release -p conan-benches --bin cli_peer -- [--apps N] [--runs N] [--cpu-secs S] [--no-pm2] [--no-supervisord] [--ready-only]
//! ```

use conan_benches::{app_env, free_port, median, ms, pm2_command, pm2_install, rss_kib};
use conan_benches::{arg_u64 as arg, workspace_root as root};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn hello() -> PathBuf {
    root().join("examples/apps/hello")
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    buf[..n].starts_with(b"HTTP/1.1 200")
}

fn wait_healthy(port: u16) {
    let start = Instant::now();
    while !healthy(port) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "port {port} never became healthy"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ", utime and stime are fields 12 and 13 (0-based).
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

/// CPU use of `pid` over `secs`, in percent of one core.
fn cpu_percent(pid: u32, secs: u64) -> f64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let after = cpu_ticks(pid);
    (after.saturating_sub(before)) as f64 / clock_ticks_per_sec() / secs as f64 * 100.0
}

/// The floor under the monitor's idle cost: this process probes the same `ports` with
/// `GET /health` (a new connection each, as the monitor does: Node closes idle keep-alive
/// connections after 5 s) every 10 s, spread evenly, doing nothing else for `secs`. Returns
/// its own CPU use in percent of one core; the kernel charges the loopback TCP work of both
/// ends of each probe to the prober, as it does for the daemon.
fn bare_prober_cpu(ports: &[u16], secs: u64) -> f64 {
    let me = std::process::id();
    let before = cpu_ticks(me);
    let start = Instant::now();
    let gap = Duration::from_secs(10) / u32::try_from(ports.len().max(1)).unwrap_or(1);
    let mut next = start;
    'outer: loop {
        for &port in ports {
            if start.elapsed() >= Duration::from_secs(secs) {
                break 'outer;
            }
            let _ = healthy(port);
            next += gap;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    cpu_ticks(me).saturating_sub(before) as f64 / clock_ticks_per_sec() / wall * 100.0
}

/// Whether something accepts TCP connections on `port`.
fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn wait_listening(port: u16) {
    let t = Instant::now();
    while !listening(port) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "port {port} never accepted a connection"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Spawns `node app.js` and polls until ready: `GET /health` answers 200 (`health`), or
/// the port accepts a TCP connection. The node gets a Conan app's environment
/// ([`app_env`]).
fn bare_once(health: bool) -> Duration {
    let port = free_port();
    let t = Instant::now();
    let mut child: Child = app_env(&mut Command::new("node"))
        .arg("app.js")
        .current_dir(hello())
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node");
    if health {
        wait_healthy(port);
    } else {
        wait_listening(port);
    }
    let took = t.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn conan_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CONAN_BIN") {
        return PathBuf::from(bin);
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "conan-cli"])
        .current_dir(root())
        .status()
        .expect("cargo build");
    assert!(status.success(), "building conan failed");
    root().join("target/release/conan")
}

struct Conan {
    bin: PathBuf,
    home: PathBuf,
}

impl Conan {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(args)
            .env("CONAN_HOME", &self.home)
            .env("CONAN_PORT_RANGE", "27000-27999")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run conan")
    }

    fn ok(&self, args: &[&str]) {
        let out = self.run(args);
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

/// The `pid` and `url` of `name` in `conan ls --json`.
fn listed(conan: &Conan, name: &str) -> Option<(u64, String)> {
    let out = conan.run(&["ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let d = list.as_array()?.iter().find(|d| d["name"] == name)?;
    (d["status"] == "running").then_some(())?;
    Some((d["pid"].as_u64()?, d["url"].as_str()?.to_owned()))
}

/// The app ports (not a proxy's) of every running deployment in `conan ls --json`.
fn app_ports(conan: &Conan) -> Vec<u16> {
    let out = conan.run(&["ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["status"] == "running")
        .filter_map(|d| u16::try_from(d["port"].as_u64()?).ok())
        .collect()
}

/// Deploys hello with a check every second (threshold 3), flips its health check to 503
/// and times until a new instance runs (median of `runs`).
fn unhealthy_to_restarted(conan: &Conan, runs: u64) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["app.js", "package.json"] {
        std::fs::copy(hello().join(file), dir.path().join(file)).expect("copy hello");
    }
    std::fs::write(
        dir.path().join("conan.toml"),
        "[health_check]\npath = \"/health\"\ninterval = \"1s\"\nfailure_threshold = 3\n",
    )
    .expect("write conan.toml");
    let source = dir.path().to_str().expect("utf-8 path");
    let mut times = Vec::new();
    for i in 0..runs {
        let name = format!("flip-{i}");
        conan.ok(&["deploy", source, "--name", &name]);
        let (pid, url) = listed(conan, &name).expect("deployed");
        let port: u16 = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /toggle-health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("toggle");
        let _ = s.read(&mut [0u8; 64]);
        let t = Instant::now();
        loop {
            if listed(conan, &name).is_some_and(|(p, _)| p != pid) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{name} was not restarted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        times.push(t.elapsed());
        conan.ok(&["rm", "--force", &name]);
    }
    median(&mut times)
}

/// `conan deploy` of hello to ready, with `--health /health` or with no health check
/// (ready when it accepts TCP on its PORT, or after `min_uptime`).
fn conan_once(conan: &Conan, name: &str, health: bool) -> Duration {
    let hello = hello();
    let hello = hello.to_str().expect("utf-8 path");
    let mut args = vec!["deploy", hello, "--name", name];
    if health {
        args.extend(["--health", "/health"]);
    }
    let t = Instant::now();
    conan.ok(&args);
    let took = t.elapsed();
    conan.ok(&["rm", "--force", name]);
    took
}

/// Start to ready, bare and through `conan deploy`, runs interleaved (a bare start, then a
/// deploy, and so on) so that a change of the machine's load hits both sides alike:
/// the medians of (bare, conan).
fn ready_pair(conan: &Conan, runs: u64, health: bool) -> (Duration, Duration) {
    let (mut bare, mut deploy) = (Vec::new(), Vec::new());
    for i in 0..runs {
        bare.push(bare_once(health));
        let name = format!("ready-{}-{i}", if health { "h" } else { "n" });
        deploy.push(conan_once(conan, &name, health));
    }
    (median(&mut bare), median(&mut deploy))
}

fn pm2_peer(pm2: &Path, home: &Path, runs: u64, apps: u64, cpu_secs: u64, bare: Duration) {
    let app_dir = hello();
    let pm2_cmd = |args: &[&str]| pm2_command(pm2, home, &app_dir, args);
    let _ = pm2_cmd(&["ping"]).status();
    let mut times = Vec::new();
    for i in 0..runs {
        let port = free_port();
        let name = format!("ready-{i}");
        let t = Instant::now();
        let _ = pm2_cmd(&["start", "app.js", "--name", &name])
            .env("PORT", port.to_string())
            .status();
        wait_healthy(port);
        times.push(t.elapsed());
        let _ = pm2_cmd(&["delete", &name]).status();
    }
    let ready = median(&mut times);
    for i in 0..apps {
        let port = free_port();
        let _ = pm2_cmd(&["start", "app.js", "--name", &format!("idle-{i}")])
            .env("PORT", port.to_string())
            .status();
        wait_healthy(port);
    }
    let pid: u32 = std::fs::read_to_string(home.join("pm2.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let rss = rss_kib(pid);
    let cpu = cpu_percent(pid, cpu_secs);
    let _ = pm2_cmd(&["kill"]).status();
    println!(
        "  pm2: start to ready {} ({:.2}x bare), daemon RSS with {apps} apps {:.1} MiB, daemon CPU over {cpu_secs} s {cpu:.2} %",
        ms(ready),
        ready.as_secs_f64() / bare.as_secs_f64(),
        rss as f64 / 1024.0
    );
}

/// Installs supervisor 4 from PyPI into a virtualenv at `venv`; returns its `bin` dir.
fn supervisord_install(venv: &Path) -> Option<PathBuf> {
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = quiet(Command::new("python3").args(["-m", "venv"]).arg(venv))
        && quiet(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            "--disable-pip-version-check",
            "supervisor>=4,<5",
        ]));
    let bin = venv.join("bin");
    (ok && bin.join("supervisord").exists() && bin.join("supervisorctl").exists()).then_some(bin)
}

/// `n` free ports from 31000-31999: below the ephemeral range `free_port` draws from for the
/// other peers, and away from conan's `CONAN_PORT_RANGE`.
fn supervisord_ports(n: u64) -> Vec<u16> {
    let ports: Vec<u16> = (31000..32000)
        .filter(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .take(n as usize)
        .collect();
    assert_eq!(
        ports.len() as u64,
        n,
        "not enough free ports in 31000-31999"
    );
    ports
}

/// A running `supervisord -n` in its own temp dir. Dropping it stops every program, shuts
/// supervisord down (escalating to SIGTERM, then SIGKILL), kills any program that outlived
/// it, and removes the temp dir.
struct Supervisord {
    bin: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
    // Dropped after `drop` has run: the directory goes once supervisord is gone.
    dir: tempfile::TempDir,
}

impl Supervisord {
    /// Writes `supervisord.conf` with one program per `(name, port)` and starts supervisord.
    fn start(bin: PathBuf, dir: tempfile::TempDir, programs: &[(String, u16)]) -> Self {
        let d = dir.path();
        let hello = hello().canonicalize().expect("hello app dir");
        std::fs::create_dir_all(d.join("logs")).expect("log dir");
        let mut conf = format!(
            "[unix_http_server]\nfile={sock}\nchmod=0700\n\n\
             [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}/logs\nnodaemon=true\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{sock}\n",
            sock = d.join("supervisor.sock").display(),
            d = d.display(),
        );
        for (name, port) in programs {
            conf.push_str(&format!(
                "\n[program:{name}]\ncommand=node app.js\ndirectory={}\n\
                 environment=PORT=\"{port}\"\nautostart=false\nautorestart=false\n\
                 startsecs=0\nstopasgroup=true\nkillasgroup=true\n",
                hello.display()
            ));
        }
        let conf_path = d.join("supervisord.conf");
        std::fs::write(&conf_path, conf).expect("write supervisord.conf");
        let child = app_env(&mut Command::new(bin.join("supervisord")))
            .arg("-n")
            .arg("-c")
            .arg(&conf_path)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn supervisord");
        let mut sv = Supervisord {
            bin,
            conf: conf_path,
            child: Some(child),
            dir,
        };
        let sock = sv.dir.path().join("supervisor.sock");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(Ok(Some(status))) = sv.child.as_mut().map(Child::try_wait) {
                panic!(
                    "supervisord exited ({status}): see {}",
                    sv.dir.path().join("supervisord.log").display()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "supervisord never opened its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sv
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.bin.join("supervisorctl"))
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run supervisorctl")
    }

    /// `supervisorctl start NAME`, which must report the program started.
    fn start_program(&self, name: &str) {
        let out = self.ctl(&["start", name]);
        assert!(
            out.status.success(),
            "supervisorctl start {name} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Program pids, in case supervisord has to be killed before it stops them.
        let pids: Vec<u32> = String::from_utf8_lossy(&self.ctl(&["pid", "all"]).stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| p != 0)
            .collect();
        let _ = self.ctl(&["stop", "all"]);
        let _ = self.ctl(&["shutdown"]);
        if !wait_exit(&mut child, Duration::from_secs(15)) {
            let _ = Command::new("kill")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
            if !wait_exit(&mut child, Duration::from_secs(10)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("app.js") {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn supervisord_peer(
    bin: PathBuf,
    dir: tempfile::TempDir,
    runs: u64,
    apps: u64,
    cpu_secs: u64,
    bare: Duration,
) {
    let ports = supervisord_ports(runs + apps);
    let ready_names: Vec<(String, u16)> = (0..runs)
        .map(|i| (format!("ready-{i}"), ports[i as usize]))
        .collect();
    let idle_names: Vec<(String, u16)> = (0..apps)
        .map(|i| (format!("idle-{i}"), ports[(runs + i) as usize]))
        .collect();
    let programs: Vec<(String, u16)> = ready_names.iter().chain(&idle_names).cloned().collect();
    let sv = Supervisord::start(bin, dir, &programs);
    let mut times = Vec::new();
    for (name, port) in &ready_names {
        let t = Instant::now();
        sv.start_program(name);
        wait_healthy(*port);
        times.push(t.elapsed());
        let _ = sv.ctl(&["stop", name]);
    }
    let ready = median(&mut times);
    for (name, port) in &idle_names {
        sv.start_program(name);
        wait_healthy(*port);
    }
    let rss = rss_kib(sv.pid());
    let cpu = cpu_percent(sv.pid(), cpu_secs);
    drop(sv);
    println!(
        "  supervisord: start to ready {} ({:.2}x bare), daemon RSS with {apps} apps {:.1} MiB, daemon CPU over {cpu_secs} s {cpu:.2} %",
        ms(ready),
        ready.as_secs_f64() / bare.as_secs_f64(),
        rss as f64 / 1024.0
    );
}

fn main() {
    let apps = arg("--apps", 50);
    let runs = arg("--runs", 10).max(1);
    let cpu_secs = arg("--cpu-secs", 30).max(1);
    let no_pm2 = std::env::args().any(|a| a == "--no-pm2");
    let no_supervisord = std::env::args().any(|a| a == "--no-supervisord");
    let tmp = tempfile::tempdir().expect("tempdir");
    let conan = Conan {
        bin: conan_bin(),
        home: tmp.path().join("conan-home"),
    };
    println!("cli_peer: {runs} runs (median), {apps} idle apps, CPU over {cpu_secs} s");

    conan.ok(&["ls"]); // starts the daemon: deploys are timed against a running daemon
    let (bare_tcp, ready_tcp) = ready_pair(&conan, runs, false);
    println!(
        "  start to ready, no health check: bare node + TCP poll {}, conan deploy {} ({:.2}x bare)",
        ms(bare_tcp),
        ms(ready_tcp),
        ready_tcp.as_secs_f64() / bare_tcp.as_secs_f64()
    );
    let (bare, ready) = ready_pair(&conan, runs, true);
    println!(
        "  start to ready: bare node + poll {}, conan deploy {} ({:.2}x bare)",
        ms(bare),
        ms(ready),
        ready.as_secs_f64() / bare.as_secs_f64()
    );
    if std::env::args().any(|a| a == "--ready-only") {
        conan.ok(&["daemon", "stop"]);
        return;
    }

    let hello = hello();
    let hello = hello.to_str().expect("utf-8 path");
    let empty_rss = rss_kib(conan.daemon_pid());
    for i in 0..apps {
        conan.ok(&[
            "deploy",
            hello,
            "--name",
            &format!("idle-{i}"),
            "--health",
            "/health",
        ]);
    }
    let pid = conan.daemon_pid();
    let rss = rss_kib(pid);
    let cpu = cpu_percent(pid, cpu_secs);
    println!(
        "  conan daemon: RSS {:.1} MiB with {apps} apps ({:.1} MiB with none), CPU over {cpu_secs} s {cpu:.2} % of a core",
        rss as f64 / 1024.0,
        empty_rss as f64 / 1024.0
    );
    let ports = app_ports(&conan);
    let floor = bare_prober_cpu(&ports, cpu_secs);
    println!(
        "  bare prober (the floor: the same {} GET /health probes every 10 s from one thread, nothing else): CPU {floor:.2} % of a core",
        ports.len()
    );
    for i in 0..apps {
        conan.ok(&["rm", "--force", &format!("idle-{i}")]);
    }
    let restart_runs = runs.min(3);
    let restarted = unhealthy_to_restarted(&conan, restart_runs);
    println!(
        "  conan monitor: unhealthy to restarted in {} (median of {restart_runs}; check every 1 s, threshold 3: bound 4 s)",
        ms(restarted)
    );
    conan.ok(&["daemon", "stop"]);

    if no_pm2 {
        println!("  pm2: skipped (--no-pm2)");
    } else {
        let dir = tmp.path().join("pm2");
        match pm2_install(&dir) {
            Some(pm2) => pm2_peer(&pm2, &dir.join(".pm2"), runs, apps, cpu_secs, bare),
            None => println!("  pm2: skipped (npm missing or `npm install pm2` failed)"),
        }
    }

    if no_supervisord {
        println!("  supervisord: skipped (--no-supervisord)");
    } else {
        let dir = tempfile::tempdir().expect("tempdir");
        match supervisord_install(&dir.path().join("venv")) {
            Some(bin) => supervisord_peer(bin, dir, runs, apps, cpu_secs, bare),
            None => println!(
                "  supervisord: skipped (python3 -m venv or `pip install 'supervisor>=4,<5'` failed)"
            ),
        }
    }
}
