//! Shared helpers of the Docker integration tests: a connected provider (failing loudly when
//! no daemon answers), the locally built Node base image, sample apps, and a scope that
//! removes every container and image a test created, even when the test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use conan_core::{
    DeploymentConfig, DeploymentConfigBuilder, DeploymentId, DeploymentSpec, KnownDeployment,
    Revision, RuntimeInfo,
};
use conan_provider_docker::{DockerOptions, DockerProvider};

/// The base image the tests build from the host's node (see conan-cli/assets/make-node-image.sh).
pub const BASE_IMAGE: &str = "conan-test/node:20";

/// The label every test deployment carries, valued with the test's unique tag.
pub const TEST_LABEL: &str = "conan.test";

/// A sample app: answers JSON with its revision, greeting and port; `/health` answers 200
/// (500 with `UNHEALTHY`); exits 3 at once with `CRASH`; listens only after `DELAY_MS`;
/// ignores SIGTERM with `IGNORE_TERM`.
pub const SERVER_JS: &str = r#"
const http = require('http');
const port = Number(process.env.PORT || 3000);
const rev = process.env.APP_REVISION || 'none';
if (process.env.CRASH) { console.error('fatal: crashing on purpose'); process.exit(3); }
const delay = Number(process.env.DELAY_MS || 0);
const server = http.createServer((req, res) => {
  if (req.url === '/health') { res.writeHead(process.env.UNHEALTHY ? 500 : 200); return res.end('ok'); }
  if (req.url === '/crash') { console.error('crash requested'); process.exit(5); }
  if (req.url === '/burn') { const t = Date.now(); while (Date.now() - t < 300) {} }
  console.log('request ' + req.url);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ revision: rev, greeting: process.env.GREETING || null, port }));
});
setTimeout(() => server.listen(port, () => { console.log('listening on ' + port); console.error('[warn] sample warning'); }), delay);
if (process.env.IGNORE_TERM) { process.on('SIGTERM', () => console.log('ignoring SIGTERM')); }
else { process.on('SIGTERM', () => { console.log('bye'); server.close(() => process.exit(0)); }); }
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Builds the base image once per test binary (a no-op when it exists).
pub fn ensure_base_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = repo_root().join("../conan-cli/assets/make-node-image.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg(BASE_IMAGE)
            .status()
            .expect("run make-node-image.sh");
        assert!(
            status.success(),
            "building {BASE_IMAGE} failed (see output above)"
        );
    });
}

/// A provider on the local daemon; panics with instructions when none answers.
pub async fn provider() -> DockerProvider {
    let provider = match DockerProvider::builder()
        .base_image(BASE_IMAGE)
        .build()
        .await
    {
        Ok(p) => p,
        Err(e) => panic!(
            "these tests need a Docker daemon and none answered: {e}\n\
             start one with `.ci/docker-up.sh` (from the workspace root) and run the tests again"
        ),
    };
    ensure_base_image();
    provider
}

/// One test's unique tag and the cleanup of everything labelled with it.
pub struct Scope {
    pub tag: String,
    dirs: Vec<tempfile::TempDir>,
}

impl Scope {
    pub fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let tag = format!("t{:06x}-{test}", (nanos ^ (nanos >> 24)) as u32 & 0xff_ffff);
        Self {
            tag,
            dirs: Vec::new(),
        }
    }

    /// A unique deployment name.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.tag)
    }

    /// A directory with `files` written into it, removed with the scope.
    pub fn app_dir(&mut self, files: &[(&str, &str)]) -> PathBuf {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(path, text).unwrap();
        }
        // The daemon (root) reads bind mounts; make sure it may.
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        path
    }

    /// The sample Node app (package.json + server.js).
    pub fn node_app(&mut self) -> PathBuf {
        self.app_dir(&[
            (
                "package.json",
                r#"{"name":"sample","scripts":{"start":"node server.js"}}"#,
            ),
            ("server.js", SERVER_JS),
        ])
    }

    /// A config builder labelled for this scope, with a fast health check.
    pub fn config(&self, name: &str, source: &Path) -> DeploymentConfigBuilder {
        DeploymentConfig::builder(name)
            .source(source)
            .label(TEST_LABEL, &self.tag)
            .health_check(conan_core::HealthCheck::http("/health").timeout(Duration::from_secs(2)))
            .healthy_deadline(Duration::from_secs(30))
            .stop_timeout(Duration::from_secs(2))
    }

    /// A config that runs the sample app from a bind mount on the base image: no build.
    pub fn mounted_config(&mut self, name: &str) -> DeploymentConfigBuilder {
        let dir = self.node_app();
        let options = DockerOptions {
            image: Some(BASE_IMAGE.to_owned()),
            volumes: vec![format!("{}:/app:ro", dir.display())],
            ..DockerOptions::default()
        };
        self.config(name, &dir)
            .start_command("node server.js")
            .provider_options("docker", options)
    }

    /// Container ids labelled for this scope (all states).
    pub fn containers(&self) -> Vec<String> {
        docker_lines(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={TEST_LABEL}={}", self.tag),
        ])
    }

    /// Image references of this scope (`conan/<tag>-...`).
    pub fn images(&self) -> Vec<String> {
        docker_lines(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &format!("reference=conan/{}*", self.tag),
        ])
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let containers = self.containers();
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
        let mut images = self.images();
        images.extend(docker_lines(&[
            "images",
            "-q",
            "--filter",
            &format!("label={TEST_LABEL}={}", self.tag),
        ]));
        if !images.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
        // Networks a test names after its tag.
        let networks = docker_lines(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.tag),
        ]);
        if !networks.is_empty() {
            let mut args = vec!["network", "rm"];
            args.extend(networks.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
    }
}

/// Lines of a docker CLI command's output.
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker CLI");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `docker inspect -f FORMAT ID`.
pub fn inspect(id: &str, format: &str) -> String {
    docker_lines(&["inspect", "-f", format, id]).join("\n")
}

/// What the store would know after `runtime` was returned for `spec`.
pub fn known(spec: &DeploymentSpec, runtime: &RuntimeInfo) -> KnownDeployment {
    KnownDeployment::new(spec.clone(), runtime.clone())
}

/// Container ids labelled with deployment `id` (all states).
pub fn containers_of(id: &DeploymentId) -> Vec<String> {
    docker_lines(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=conan.deployment={id}"),
    ])
}

/// A spec of a first deploy.
pub fn spec(config: DeploymentConfig) -> DeploymentSpec {
    DeploymentSpec::new(DeploymentId::generate(), Revision(1), config)
}

/// GETs `path` on a URL like `http://127.0.0.1:1234`; status and body.
pub async fn get(url: &str, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(hostport)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad response: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
