//! Helpers of the proxy's integration tests: a manager with the local provider and the
//! proxy, a keep-alive load generator that counts failures, a minimal WebSocket client,
//! and a guard that kills what a failing test started.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conan_core::{DeploymentConfig, DeploymentManager, HealthCheck};
use conan_provider_local::LocalProvider;
use conan_proxy::{Proxy, ProxySettings};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn app(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/apps")
        .join(name)
}

/// A port range of 40 ports no other test of this binary uses.
pub fn ports(slot: u16) -> std::ops::RangeInclusive<u16> {
    let base = 46000 + slot * 40;
    base..=base + 39
}

pub struct Setup {
    pub manager: DeploymentManager,
    pub proxy: Proxy,
    pub _dir: tempfile::TempDir,
    pub guard: Guard,
}

/// A manager with a local provider (ports of `slot`) and a proxy (its endpoints on the
/// upper 10 ports of the slot's range).
pub async fn setup(slot: u16, settings: impl FnOnce(&mut ProxySettings)) -> Setup {
    setup_at(*ports(slot).start(), settings).await
}

/// Like `setup`, on 40 ports from `base`, below the kernel's ephemeral range (32768 and
/// up here), so no outgoing connection of the load can hold a port a replica is given.
pub async fn setup_below_ephemeral(base: u16) -> Setup {
    setup_at(base, |_| {}).await
}

/// A manager with a local provider on the 30 ports from `base` and a proxy on the 10
/// after them.
async fn setup_at(base: u16, settings: impl FnOnce(&mut ProxySettings)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let provider = LocalProvider::builder()
        .state_dir(dir.path())
        .port_range(base..=base + 29)
        .node_path("/usr/bin/node")
        .cgroups(false)
        .build()
        .unwrap();
    let mut s = ProxySettings {
        port_range: base + 30..=base + 39,
        ..ProxySettings::default()
    };
    settings(&mut s);
    let proxy = Proxy::new(s).unwrap();
    let manager = DeploymentManager::builder()
        .provider(provider)
        .traffic(proxy.clone())
        .build()
        .await
        .unwrap();
    Setup {
        manager,
        proxy,
        _dir: dir,
        guard: Guard(Vec::new()),
    }
}

/// The ws-echo app as revision `rev`, with a fast health gate.
pub fn config(name: &str, rev: &str) -> DeploymentConfig {
    let mut c = DeploymentConfig::new(name);
    c.source = app("ws-echo");
    c.env.insert("REV", rev);
    c.health_check = Some(HealthCheck::http("/health").interval(Duration::from_millis(200)));
    c.update.healthy_deadline = Duration::from_secs(15);
    c.stop.timeout = Duration::from_secs(3);
    c.endpoint.drain_timeout = Duration::from_secs(5);
    c
}

/// Kills every process carrying `CONAN_DEPLOYMENT_ID=<id>` when dropped.
pub struct Guard(pub Vec<String>);

impl Drop for Guard {
    fn drop(&mut self) {
        for id in &self.0 {
            let needle = format!("CONAN_DEPLOYMENT_ID={id}");
            let Ok(procs) = std::fs::read_dir("/proc") else {
                return;
            };
            for e in procs.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
                {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub sent: u64,
    pub ok: u64,
    /// Connection errors (refused, reset, closed before an answer).
    pub connection_errors: u64,
    /// 5xx answers without the app's `x-app` tag: made by the proxy.
    pub proxy_5xx: u64,
    /// Answers the app made with a 5xx (not failures: the app said so).
    pub app_5xx: u64,
    pub timeouts: u64,
    /// `x-rev` values seen, in order of first appearance, with counts.
    pub revisions: Vec<(String, u64)>,
    pub elapsed: Duration,
    pub samples: Vec<String>,
}

impl Report {
    pub fn failures(&self) -> u64 {
        self.connection_errors + self.proxy_5xx + self.timeouts
    }
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// No failure, at 500 requests per second or more. The rate is only asserted on a
    /// machine that is not overloaded (a load average below twice its cores): a debug build
    /// sharing two cores with compilers cannot offer it, and the benchmark measures it in
    /// release (`benches/`, see the README).
    pub fn assert_clean(&self, what: &str) {
        assert_eq!(self.failures(), 0, "{what}: {self:?}");
        eprintln!(
            "{what}: {} requests at {:.0} req/s, no failure",
            self.sent,
            self.rate()
        );
        if !overloaded() {
            assert!(
                self.rate() >= 500.0,
                "{what}: only {:.0} req/s: {self:?}",
                self.rate()
            );
        }
    }
}

/// Held by each test that runs a [`Load`] for its whole length: two loads of 600 requests
/// a second (and their apps) at once are more than two cores serve in a debug build, and
/// `cargo test` runs the tests of a binary side by side.
pub async fn one_load_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOADS.lock().await
}

/// A keep-alive load at `rate` requests per second over `workers` connections against
/// `url`, until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    task: tokio::task::JoinHandle<Report>,
}

impl Load {
    pub fn start(url: String, rate: u32, workers: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move { run_load(url, rate, workers, flag, started).await });
        Self {
            stop,
            started,
            task,
        }
    }

    /// Stops sending; waits for the requests in flight. The rate is the one offered until
    /// now: requests sent over the time until the stop (not until the last answer).
    pub async fn stop(self) -> Report {
        let stopped_at = Instant::now();
        self.stop.store(true, Ordering::Release);
        let mut report = self.task.await.unwrap();
        report.elapsed = stopped_at - self.started;
        report
    }
}

/// `workers` connections take turns at one schedule of `rate` sends a second: each takes
/// the next slot, waits for its time and sends, so one slow answer does not hold back the
/// sends after it as long as another connection is free.
async fn run_load(
    url: String,
    rate: u32,
    workers: u32,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Report {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(workers as usize)
        .build(connector);
    let uri: hyper::Uri = url.parse().unwrap();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::from_std(started);
    let slots = Arc::new(AtomicU64::new(0));
    let report = Arc::new(std::sync::Mutex::new(Report::default()));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, uri, stop, report, sent, slots) = (
            client.clone(),
            uri.clone(),
            stop.clone(),
            report.clone(),
            sent.clone(),
            slots.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let slot = slots.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep_until(start + interval.mul_f64(slot as f64)).await;
                if stop.load(Ordering::Acquire) {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                let req = hyper::Request::get(uri.clone()).body(Empty::new()).unwrap();
                let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                    let res = client.request(req).await?;
                    let status = res.status().as_u16();
                    let tag = res.headers().contains_key("x-app");
                    let rev = res
                        .headers()
                        .get("x-rev")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let body = res.into_body().collect().await.map(|b| b.to_bytes());
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, tag, rev, body))
                })
                .await;
                let mut r = report.lock().unwrap();
                match outcome {
                    Err(_) => r.timeouts += 1,
                    Ok(Err(e)) => {
                        r.connection_errors += 1;
                        if r.samples.len() < 5 {
                            r.samples.push(format!("{e:?}"));
                        }
                    }
                    Ok(Ok((_, _, _, Err(e)))) => {
                        r.connection_errors += 1;
                        if r.samples.len() < 5 {
                            r.samples.push(format!("body: {e:?}"));
                        }
                    }
                    Ok(Ok((status, tag, rev, Ok(body)))) => {
                        if status >= 500 && !tag {
                            r.proxy_5xx += 1;
                            if r.samples.len() < 5 {
                                r.samples
                                    .push(format!("{status}: {}", String::from_utf8_lossy(&body)));
                            }
                        } else if status >= 500 {
                            r.app_5xx += 1;
                        } else {
                            r.ok += 1;
                        }
                        match r.revisions.iter_mut().find(|(v, _)| *v == rev) {
                            Some((_, n)) => *n += 1,
                            None => r.revisions.push((rev, 1)),
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut r = report.lock().unwrap().clone();
    r.sent = sent.load(Ordering::Relaxed);
    r
}

/// One GET: status, `x-rev`, body.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().ok()?;
    let res = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let status = res.status().as_u16();
    let rev = res
        .headers()
        .get("x-rev")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = res.into_body().collect().await.ok()?.to_bytes();
    Some((status, rev, String::from_utf8_lossy(&body).into_owned()))
}

/// A minimal WebSocket client (short text frames only).
pub struct Ws {
    stream: tokio::net::TcpStream,
}

impl Ws {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await? == 0 {
                return Err(std::io::Error::other("closed during the handshake"));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        if !head.starts_with("HTTP/1.1 101") {
            return Err(std::io::Error::other(format!("no upgrade: {head}")));
        }
        Ok(Self { stream })
    }

    /// Sends `text`, answers the echo (an error once the connection is closed).
    pub async fn echo(&mut self, text: &str) -> std::io::Result<String> {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await?;
        let mut head = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), self.stream.read_exact(&mut head))
            .await
            .map_err(|_| std::io::Error::other("no echo"))??;
        let mut data = vec![0u8; usize::from(head[1] & 0x7f)];
        self.stream.read_exact(&mut data).await?;
        Ok(String::from_utf8_lossy(&data).into_owned())
    }
}

/// Polls `f` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Whether the 1-minute load average exceeds twice the number of cores.
pub fn overloaded() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .is_some_and(|load| load > 2.0 * cores as f64)
}
