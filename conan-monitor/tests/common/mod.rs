//! Helpers of the monitor's integration tests: a flaky Node app written to a temp dir,
//! managers over real providers, event waits, and cleanup that holds when a test fails.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use conan_core::{DeploymentManager, Event, EventEnvelope, OperationKind};
use tokio::sync::broadcast;

/// A Node app: `/health` answers 200, then 500 once `FAIL_AFTER_MS` passed since start (or
/// after `GET /break`); `GET /freeze` blocks its event loop for good (nothing answers, the
/// port stays open); `HOG_MB` makes it hold that many MiB, allocated 1 MiB per 10 ms.
pub const FLAKY_JS: &str = r#"
const http = require('http');
const port = Number(process.env.PORT || 3000);
const host = process.env.HOST;
const failAfter = Number(process.env.FAIL_AFTER_MS || -1);
const started = Date.now();
let broken = false;
const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    const bad = broken || (failAfter >= 0 && Date.now() - started > failAfter);
    res.writeHead(bad ? 500 : 200);
    return res.end(bad ? 'failing' : 'ok');
  }
  if (req.url === '/break') { broken = true; }
  if (req.url === '/freeze') { setTimeout(() => { for (;;) {} }, 10); }
  res.end('pid ' + process.pid);
});
if (host) server.listen(port, host); else server.listen(port);
console.log('flaky pid ' + process.pid + ' on ' + port);
const keep = [];
const hog = Number(process.env.HOG_MB || 0);
if (hog > 0) setInterval(() => { if (keep.length < hog) keep.push(Buffer.alloc(1 << 20, 1)); }, 10);
process.on('SIGTERM', () => process.exit(0));
"#;

/// Writes the flaky app into `dir`.
pub fn write_app(dir: &Path) {
    std::fs::write(dir.join("server.js"), FLAKY_JS).unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"flaky","version":"1.0.0","scripts":{"start":"node server.js"}}"#,
    )
    .unwrap();
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u32(..))
}

/// The first event `want` matches within `limit`.
pub async fn next_event(
    rx: &mut broadcast::Receiver<EventEnvelope>,
    limit: Duration,
    want: impl Fn(&Event) -> bool,
) -> Option<Event> {
    tokio::time::timeout(limit, async {
        loop {
            match rx.recv().await {
                Ok(e) if want(&e.event) => return Some(e.event),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// `GET path` on `127.0.0.1:port`; the status code.
pub async fn get(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The serving port of `name`.
pub fn port_of(manager: &DeploymentManager, name: &str) -> u16 {
    let record = manager.get(name).unwrap();
    record
        .runtime
        .as_deref()
        .and_then(|r| r.instances.first().and_then(|i| i.port))
        .expect("a port")
}

/// Removes the named deployments when dropped (on a runtime of its own, so it works while
/// a failed test unwinds).
pub struct Cleanup {
    pub manager: DeploymentManager,
    pub names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let manager = self.manager.clone();
        let names = std::mem::take(&mut self.names);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for name in &names {
                    let id = manager.get(name).ok().map(|r| r.id);
                    let _ =
                        tokio::time::timeout(Duration::from_secs(15), manager.remove(name)).await;
                    if let Some(id) = id {
                        kill_marked(id.as_str());
                    }
                }
            });
        })
        .join();
    }
}

/// SIGKILLs every live process whose environment carries `CONAN_DEPLOYMENT_ID=<id>`.
pub fn kill_marked(id: &str) {
    let needle = format!("CONAN_DEPLOYMENT_ID={id}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|&b| b == 0).any(|v| v == needle.as_bytes())
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

/// Polls `f` until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Whether `e` is the successful end of a restart operation.
pub fn is_restart_done(e: &Event) -> bool {
    matches!(e, Event::Finished { kind: OperationKind::Restart, outcome, .. } if outcome.is_success())
}
