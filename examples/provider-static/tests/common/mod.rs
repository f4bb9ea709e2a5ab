//! Shared test support: a site directory and configs serving it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use conan_core::{DeploymentConfig, HealthCheck};
use conan_provider_static::{NAME, StaticOptions};

/// The page every test site serves at `/`.
pub const INDEX: &str =
    "<!doctype html><title>conan static</title><p>hello from conan-provider-static</p>\n";

/// A temporary site: `index.html`, `app.js`, `docs/index.html`, and next to the site
/// (outside its root) a `secret.txt` that must never be served.
pub struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("docs")).expect("site dir");
        std::fs::write(root.join("index.html"), INDEX).expect("index.html");
        std::fs::write(root.join("app.js"), "console.log('hi');\n").expect("app.js");
        std::fs::write(root.join("docs/index.html"), "<p>docs</p>\n").expect("docs");
        std::fs::write(dir.path().join("secret.txt"), "top secret\n").expect("secret");
        Self { dir }
    }

    /// The served directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("site")
    }

    /// The directory above the root (holds `secret.txt`).
    pub fn outside(&self) -> &Path {
        self.dir.path()
    }
}

/// A config serving `root` on an ephemeral port, health-checked with `GET /`.
pub fn config(name: &str, root: &Path) -> DeploymentConfig {
    DeploymentConfig::builder(name)
        .source(root)
        .provider(NAME)
        .health_check(HealthCheck::http("/").interval(Duration::from_millis(200)))
        .healthy_deadline(Duration::from_secs(10))
        .build_unchecked()
}

/// A config whose source directory does not exist: its deploy fails.
pub fn failing_config(name: &str, root: &Path) -> DeploymentConfig {
    config(name, &root.join("does-not-exist"))
}

/// A config whose server waits 2 s before accepting connections.
pub fn slow_config(name: &str, root: &Path) -> DeploymentConfig {
    let mut config = config(name, root);
    let options = StaticOptions::new().with_startup_delay(Duration::from_secs(2));
    config.provider_options.insert(
        NAME.to_owned(),
        serde_json::to_value(options).expect("options serialize"),
    );
    config
}

/// One raw HTTP/1.1 request on a plain TCP connection (blocking; call it from
/// `spawn_blocking`): answers the status code, headers and body.
pub fn request(port: u16, raw: &str) -> (u16, String, Vec<u8>) {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the static server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(raw.as_bytes()).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response[split + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head, body)
}

/// `GET path` with `Connection: close`.
pub fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

/// Runs a blocking request off the runtime.
pub async fn fetch(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || get(port, &path))
        .await
        .expect("request task")
}
