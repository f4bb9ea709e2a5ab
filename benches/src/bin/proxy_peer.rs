//! The proxy against its peers, side by side in one run (issue 12's measurements):
//!
//! 1. **Failed requests during an update**: 5,000 requests at 500 req/s over keep-alive
//!    connections while the app is updated once, through Conan's endpoint, through Conan
//!    without the proxy (the client keeps the instance URL it was given), with `pm2 reload`
//!    in fork mode and in cluster mode (2 workers). A failure is a connection error, a 5xx
//!    the app did not send (ws-echo tags its answers `x-app`), or a timeout (5 s).
//!    (This part runs the manager, the local provider and the proxy in this process, as
//!    the daemon does.)
//! 2. **Proxy overhead** with `wrk` (`-t2 -c64 -d10s --latency`): the app directly, through
//!    the endpoint of a real `conan` daemon (its proxy runs on the daemon's one thread) and
//!    through nginx (2 workers, `upstream` with `keepalive 64`), the same app instance;
//!    a 2 s warm-up of each, then `--rounds N` (3) rounds of the three, interleaved, each
//!    round starting at the next one, and the median of each.
//! 3. **Memory**: the daemon's RSS with 50 proxied deployments (each endpoint used once).
//!
//! `wrk` and `nginx` come from Debian (`.ci/apt-need.sh` installs them), PM2 from npm into a
//! temp dir; the daemon is the release `conan` (`CONAN_BIN`, else built). Run:
//! `cargo run --release -p conan-benches --bin proxy_peer -- [--no-pm2] [--no-wrk]
//! [--no-rss] [--rounds N]`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use conan_benches::{arg_u64, pm2_command, pm2_install, release_conan, rss_kib, workspace_root};
use conan_core::{DeploymentConfig, DeploymentManager, HealthCheck};
use conan_provider_local::LocalProvider;
use conan_proxy::{Proxy, ProxySettings};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const REQUESTS: u64 = 5_000;
const RATE: u64 = 500;
const CONNECTIONS: u64 = 32;

fn app_dir() -> PathBuf {
    workspace_root().join("examples/apps/ws-echo")
}

#[derive(Default, Debug)]
struct Failures {
    connection: AtomicU64,
    proxy_5xx: AtomicU64,
    timeouts: AtomicU64,
    ok: AtomicU64,
}

impl Failures {
    fn total(&self) -> u64 {
        self.connection.load(Ordering::Relaxed)
            + self.proxy_5xx.load(Ordering::Relaxed)
            + self.timeouts.load(Ordering::Relaxed)
    }
    fn line(&self) -> String {
        format!(
            "{} failed (connection {}, 5xx not from the app {}, timeouts {}), {} ok",
            self.total(),
            self.connection.load(Ordering::Relaxed),
            self.proxy_5xx.load(Ordering::Relaxed),
            self.timeouts.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed)
        )
    }
}

/// Sends `REQUESTS` at `RATE` to `url` over `CONNECTIONS` keep-alive connections; calls
/// `during` once a fifth of them went out.
async fn load_during<F: std::future::Future<Output = ()> + Send + 'static>(
    url: &str,
    during: F,
) -> Failures {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONNECTIONS as usize)
        .build(connector);
    let uri: hyper::Uri = url.parse().expect("url");
    let failures = Arc::new(Failures::default());
    let interval = Duration::from_secs_f64(1.0 / RATE as f64);
    let start = tokio::time::Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS as usize));
    let mut tasks = Vec::with_capacity(REQUESTS as usize);
    let trigger = REQUESTS / 5;
    let mut during = Some(Box::pin(during));
    let mut op = None;
    for i in 0..REQUESTS {
        tokio::time::sleep_until(start + interval * u32::try_from(i).unwrap_or(u32::MAX)).await;
        if i == trigger
            && let Some(f) = during.take()
        {
            op = Some(tokio::spawn(f));
        }
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (client, uri, failures) = (client.clone(), uri.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let req = hyper::Request::get(uri)
                .body(Empty::new())
                .expect("request");
            let outcome = tokio::time::timeout(Duration::from_secs(5), async {
                let res = client.request(req).await.map_err(|_| ())?;
                let status = res.status().as_u16();
                let tagged = res.headers().contains_key("x-app");
                res.into_body().collect().await.map_err(|_| ())?;
                Ok::<_, ()>((status, tagged))
            })
            .await;
            let counter = match outcome {
                Err(_) => &failures.timeouts,
                Ok(Err(())) => &failures.connection,
                Ok(Ok((s, false))) if s >= 500 => &failures.proxy_5xx,
                Ok(Ok(_)) => &failures.ok,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(op) = op {
        let _ = op.await;
    }
    Arc::into_inner(failures).unwrap_or_default()
}

fn config(name: &str, rev: &str, proxy: bool) -> DeploymentConfig {
    let mut c = DeploymentConfig::new(name);
    c.source = app_dir();
    c.env.insert("REV", rev);
    c.health_check = Some(HealthCheck::http("/health").interval(Duration::from_millis(500)));
    c.endpoint.enabled = proxy;
    c.endpoint.drain_timeout = Duration::from_secs(10);
    c
}

async fn conan_update(manager: &DeploymentManager, proxy: bool) -> Failures {
    let name = if proxy { "peer-proxy" } else { "peer-direct" };
    let rec = manager
        .deploy(config(name, "r1", proxy))
        .await
        .expect("deploy");
    let rt = rec.runtime.as_deref().expect("runtime");
    let url = match rt.endpoint {
        Some(e) => format!("http://{e}/"),
        None => format!("{}/", rt.url.clone().expect("url")),
    };
    let m = manager.clone();
    let failures = load_during(&url, async move {
        if let Err(e) = m.update(name, config(name, "r2", proxy)).await {
            eprintln!("update failed: {e}");
        }
    })
    .await;
    let _ = manager.remove(name).await;
    failures
}

fn pm2_reload(pm2: &Path, home: &Path, cluster: bool, port: u16) -> Option<Failures> {
    let app = app_dir();
    let cmd = |args: &[&str]| pm2_command(pm2, home, &app, args);
    let mut start = cmd(&["start", "app.js", "--name", "peer"]);
    if cluster {
        start.args(["-i", "2"]);
    }
    start.env("PORT", port.to_string()).env("REV", "r1");
    start.status().ok()?;
    let url = format!("http://127.0.0.1:{port}/");
    let ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if !ready {
        let _ = cmd(&["kill"]).status();
        return None;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ok()?;
    let (pm2, home) = (pm2.to_owned(), home.to_owned());
    let failures = rt.block_on(load_during(&url, async move {
        let app = app_dir();
        let _ = tokio::task::spawn_blocking(move || {
            pm2_command(&pm2, &home, &app, &["reload", "peer", "--update-env"])
                .env("REV", "r2")
                .status()
        })
        .await;
    }));
    let _ = cmd(&["kill"]).status();
    Some(failures)
}

/// `wrk` against `url`: (requests per second, p99 latency in ms, errors as text).
fn wrk(url: &str) -> Option<(f64, f64, String)> {
    wrk_for(url, "10s")
}

/// `wrk` against `url` for `duration` (wrk's syntax, e.g. `2s`).
fn wrk_for(url: &str, duration: &str) -> Option<(f64, f64, String)> {
    let out = Command::new("wrk")
        .args(["-t2", "-c64", "-d", duration, "--latency", url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))?
        .split_whitespace()
        .nth(1)?;
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(|l| format!(" ({})", l.trim()))
        .unwrap_or_default();
    Some((rps, wrk_ms(p99)?, errors))
}

/// A wrk latency (`812.00us`, `1.20ms`, `2.01s`) in milliseconds.
fn wrk_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    match unit {
        "us" => Some(n / 1000.0),
        "ms" => Some(n),
        "s" => Some(n * 1000.0),
        "m" => Some(n * 60_000.0),
        _ => None,
    }
}

/// nginx as a reverse proxy with keep-alive to `upstream`, in the foreground; stopped on
/// drop with SIGTERM (its fast shutdown: the master takes its workers down; a SIGKILL
/// would leave them running).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Nginx {
    fn start(dir: &Path, listen: u16, upstream: u16) -> Option<Self> {
        let conf = dir.join("nginx.conf");
        std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon off;\npid {pid};\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n\
               client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir}; uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
               upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{listen};\n\
                 location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
                   proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            dir = dir.display(),
        ),
    )
    .ok()?;
        let child = Command::new("nginx")
            .args(["-c"])
            .arg(&conf)
            .args(["-p"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let up = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
        });
        let nginx = Self(child);
        up.then_some(nginx)
    }
}

fn free_port() -> u16 {
    conan_benches::free_port()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let provider = LocalProvider::builder()
        .state_dir(tmp.path().join("local"))
        .port_range(47000..=47999)
        .cgroups(false)
        .build()
        .expect("local provider");
    let proxy = Proxy::new(ProxySettings {
        port_range: 48000..=48999,
        ..ProxySettings::default()
    })
    .expect("proxy");
    let manager = rt.block_on(async {
        DeploymentManager::builder()
            .provider(provider)
            .traffic(proxy.clone())
            .build()
            .await
            .expect("manager")
    });

    println!(
        "## failed requests during one update: {REQUESTS} requests at {RATE} req/s, {CONNECTIONS} keep-alive connections"
    );
    let f = rt.block_on(conan_update(&manager, true));
    println!("  conan (proxy, blue-green): {}", f.line());
    let f = rt.block_on(conan_update(&manager, false));
    println!(
        "  conan without the proxy (blue-green, client keeps the instance URL): {}",
        f.line()
    );
    if has("--no-pm2") {
        println!("  pm2: skipped (--no-pm2)");
    } else if let Some(pm2) = pm2_install(&tmp.path().join("pm2")) {
        let home = tmp.path().join("pm2-home");
        for (cluster, label) in [
            (false, "pm2 reload, fork mode"),
            (true, "pm2 reload, cluster mode (2)"),
        ] {
            match pm2_reload(&pm2, &home, cluster, free_port()) {
                Some(f) => println!("  {label}: {}", f.line()),
                None => println!("  {label}: did not start"),
            }
        }
    } else {
        println!("  pm2: npm install failed; skipped");
    }

    rt.block_on(manager.shutdown());
    let daemon = Daemon::start(tmp.path());
    // Memory first, on a daemon that served no load yet.
    if has("--no-rss") {
        println!("## rss: skipped (--no-rss)");
    } else {
        daemon_rss(&daemon);
    }
    if has("--no-wrk") {
        println!("## wrk: skipped (--no-wrk)");
    } else {
        overhead(&daemon, tmp.path(), arg_u64("--rounds", 3).max(1));
    }
}

/// A `conan` daemon of its own home (the release binary, see [`release_conan`]), stopped
/// on drop.
struct Daemon {
    bin: PathBuf,
    home: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Self {
        let d = Self {
            bin: release_conan(),
            home: dir.join("conan-home"),
        };
        d.ok(&["ls"]);
        d
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(args)
            .env("CONAN_HOME", &self.home)
            .env("CONAN_PORT_RANGE", "46000-46999")
            .env("CONAN_PROXY_PORT_RANGE", "45000-45999")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run conan")
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "conan {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `(url, app port)` of `name` in `conan ls --json`: the endpoint and the instance's port.
    fn addresses(&self, name: &str) -> (String, u16) {
        let out = self.ok(&["ls", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ls --json");
        let d = list
            .as_array()
            .and_then(|l| l.iter().find(|d| d["name"] == name))
            .expect("deployed");
        let url = d["url"].as_str().expect("url").to_owned();
        let port = d["port"].as_u64().and_then(|p| u16::try_from(p).ok());
        (url, port.expect("port"))
    }

    fn pid(&self) -> u32 {
        std::fs::read_to_string(self.home.join("daemon.lock"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .expect("daemon pid")
    }
}

impl Drop for Daemon {
    /// Removes every deployment left (a step that panicked), then stops the daemon.
    fn drop(&mut self) {
        let out = self.run(&["ls", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for d in list.as_array().into_iter().flatten() {
            if let Some(name) = d["name"].as_str() {
                let _ = self.run(&["rm", "--force", name]);
            }
        }
        let _ = self.run(&["daemon", "stop"]);
    }
}

/// Proxy overhead: `wrk` against the app directly, through the daemon's proxy (the
/// endpoint `conan deploy` gives) and through nginx, the same instance; `rounds` rounds of
/// the three, interleaved, and the median of each.
fn overhead(daemon: &Daemon, dir: &Path, rounds: u64) {
    println!(
        "## proxy overhead: wrk -t2 -c64 -d10s --latency, GET / of ws-echo, after a 2 s warm-up of each, {rounds} rounds interleaved in rotating order (median)"
    );
    let app = app_dir();
    daemon.ok(&[
        "deploy",
        app.to_str().expect("utf-8 path"),
        "--name",
        "peer-wrk",
    ]);
    let (endpoint, port) = daemon.addresses("peer-wrk");
    let nginx_port = free_port();
    let nginx_dir = dir.join("nginx");
    let _ = std::fs::create_dir_all(&nginx_dir);
    let ng = Nginx::start(&nginx_dir, nginx_port, port);
    let targets = [
        ("app directly", format!("http://127.0.0.1:{port}/")),
        ("conan proxy (daemon)", format!("{endpoint}/")),
        ("nginx", format!("http://127.0.0.1:{nginx_port}/")),
    ];
    let mut results: Vec<Vec<(f64, f64, String)>> = vec![Vec::new(); targets.len()];
    // A warm-up of each (node's JIT, the connection pools), not counted.
    for (label, url) in &targets {
        if *label == "nginx" && ng.is_none() {
            continue;
        }
        let _ = wrk_for(url, "2s");
    }
    for round in 0..rounds {
        // Each round starts at the next target, so none always follows the same one.
        for k in 0..targets.len() {
            let i = (k + round as usize) % targets.len();
            let (label, url) = &targets[i];
            if *label == "nginx" && ng.is_none() {
                continue;
            }
            if let Some(r) = wrk(url) {
                results[i].push(r);
            }
        }
    }
    let mut medians = Vec::new();
    for ((label, _), mut runs) in targets.iter().zip(results) {
        if runs.is_empty() {
            println!("  {label}: no result (wrk missing, or nginx did not start)");
            medians.push(None);
            continue;
        }
        let rps = median_f64(runs.iter().map(|r| r.0).collect());
        let p99 = median_f64(runs.iter().map(|r| r.1).collect());
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let errors: String = runs.iter().map(|r| r.2.as_str()).collect();
        println!("  {label}: {rps:.0} req/s, p99 {p99:.2} ms{errors}");
        medians.push(Some((rps, p99)));
    }
    if let (Some((c_rps, c_p99)), Some((n_rps, n_p99))) = (medians[1], medians[2]) {
        println!(
            "  conan proxy / nginx: {:.2}x the requests per second, {:.2}x the p99 latency",
            c_rps / n_rps,
            c_p99 / n_p99
        );
    }
    drop(ng);
    daemon.ok(&["rm", "--force", "peer-wrk"]);
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The daemon's RSS with 50 proxied deployments of ws-echo (each endpoint used once, so it
/// holds a pooled backend connection), against its RSS with none.
fn daemon_rss(daemon: &Daemon) {
    let before = rss_kib(daemon.pid());
    let app = app_dir();
    let app = app.to_str().expect("utf-8 path");
    let names: Vec<String> = (0..50).map(|i| format!("idle-{i}")).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    for name in &names {
        daemon.ok(&["deploy", app, "--name", name]);
        let (endpoint, _) = daemon.addresses(name);
        let answered = rt.block_on(async {
            client
                .get(format!("{endpoint}/").parse().expect("uri"))
                .await
                .is_ok()
        });
        assert!(answered, "{name} answers through its endpoint");
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(daemon.pid());
    println!(
        "## daemon RSS with 50 proxied deployments: {:.1} MiB ({:.1} MiB with none)",
        after as f64 / 1024.0,
        before as f64 / 1024.0,
    );
    for name in &names {
        daemon.ok(&["rm", "--force", name]);
    }
}
