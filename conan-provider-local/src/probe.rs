//! Health probes: a hand-written HTTP/1.1 `GET` (status line only), a TCP connect, or
//! "the process is alive". No HTTP client library: the probe needs one request and one
//! status code.

use std::time::Duration;

use conan_core::{HealthCheck, HealthCheckKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeResult {
    pub ok: bool,
    /// `"GET /health -> 200"`, `"connect 127.0.0.1:4100: connection refused"`.
    pub detail: String,
    /// The probe got no answer within its time limit.
    pub timed_out: bool,
}

/// How to probe one instance.
#[derive(Clone, Debug)]
pub(crate) enum Probe {
    Http {
        host: String,
        port: u16,
        path: String,
    },
    Tcp {
        host: String,
        port: u16,
    },
    /// A command run by `sh -c` in the app's directory; exit status 0 is healthy.
    Command {
        command: String,
        dir: std::path::PathBuf,
        env: Vec<(String, String)>,
    },
    /// The process being alive is all there is to check.
    Alive,
}

impl Probe {
    /// The probe for `check` against an instance on `port`, whose app lives in `dir`.
    pub fn for_check(
        check: Option<&HealthCheck>,
        host: &str,
        port: Option<u16>,
        dir: &std::path::Path,
    ) -> Self {
        let host = if host == "0.0.0.0" { "127.0.0.1" } else { host }.to_owned();
        match (check, port) {
            (Some(c), Some(p)) => {
                let port = c.port.unwrap_or(p);
                match c.kind {
                    HealthCheckKind::Http => Probe::Http {
                        host,
                        port,
                        path: c.http_path().to_owned(),
                    },
                    HealthCheckKind::Tcp => Probe::Tcp { host, port },
                    HealthCheckKind::Command => match &c.command {
                        Some(command) => Probe::Command {
                            command: command.clone(),
                            dir: dir.to_path_buf(),
                            env: vec![("PORT".into(), port.to_string()), ("HOST".into(), host)],
                        },
                        None => Probe::Alive,
                    },
                    HealthCheckKind::Process => Probe::Alive,
                }
            }
            _ => Probe::Alive,
        }
    }

    /// Runs the probe once, bounded by `limit`.
    pub async fn run(&self, limit: Duration) -> ProbeResult {
        match self {
            Probe::Alive => ProbeResult {
                ok: true,
                detail: "process alive".into(),
                timed_out: false,
            },
            Probe::Command { command, dir, env } => {
                let mut cmd = tokio::process::Command::new("/bin/sh");
                cmd.arg("-c")
                    .arg(command)
                    .current_dir(dir)
                    .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true);
                match timeout(limit, cmd.status()).await {
                    Ok(Ok(status)) => ProbeResult {
                        ok: status.success(),
                        detail: format!("command exited with {status}"),
                        timed_out: false,
                    },
                    Ok(Err(e)) => fail(format!("command could not run: {e}")),
                    Err(_) => timed_out("command timed out".to_owned()),
                }
            }
            Probe::Tcp { host, port } => {
                match timeout(limit, TcpStream::connect((host.as_str(), *port))).await {
                    Ok(Ok(_)) => ProbeResult {
                        ok: true,
                        detail: format!("connect {host}:{port}: ok"),
                        timed_out: false,
                    },
                    Ok(Err(e)) => fail(format!("connect {host}:{port}: {e}")),
                    Err(_) => timed_out(format!("connect {host}:{port}: timed out")),
                }
            }
            Probe::Http { host, port, path } => {
                match timeout(limit, http_get(host, *port, path)).await {
                    Ok(Ok(code)) => ProbeResult {
                        ok: (200..300).contains(&code),
                        detail: format!("GET {path} -> {code}"),
                        timed_out: false,
                    },
                    Ok(Err(e)) => fail(format!("GET {path} on {host}:{port}: {e}")),
                    Err(_) => timed_out(format!(
                        "GET {path} on {host}:{port}: no answer within {}",
                        conan_core::time::format_duration(limit)
                    )),
                }
            }
        }
    }
}

fn fail(detail: String) -> ProbeResult {
    ProbeResult {
        ok: false,
        detail,
        timed_out: false,
    }
}

fn timed_out(detail: String) -> ProbeResult {
    ProbeResult {
        ok: false,
        detail,
        timed_out: true,
    }
}

/// Sends `GET path` and returns the status code of the answer.
pub(crate) async fn http_get(host: &str, port: u16, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: conan-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') || buf.len() > 4096 {
            break;
        }
    }
    parse_status(&buf)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// The delay before readiness probe number `n` (0-based): every millisecond for the first
/// [`FAST_PROBES`] probes (about the first 200 ms, where most apps become ready; a refused
/// connection costs microseconds), then growing ×1.5 up to the smaller of the check
/// interval and 250 ms — readiness is noticed within about a millisecond of a fast app
/// being ready, and within 250 ms of a slow one.
pub(crate) fn readiness_delay(n: u32, interval: Duration) -> Duration {
    let slow = n.saturating_sub(FAST_PROBES).min(40);
    let ms = 1.5f64.powi(i32::try_from(slow).unwrap_or(40));
    Duration::from_secs_f64(ms / 1000.0)
        .min(interval)
        .min(Duration::from_millis(250))
}

/// Readiness probes made at a 1 ms pace before backing off.
pub(crate) const FAST_PROBES: u32 = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 500 Oops\r\n"), Some(500));
        assert_eq!(parse_status(b"SSH-2.0-x\r\n"), None);
    }

    #[test]
    fn readiness_schedule_starts_fast_and_caps() {
        let i = Duration::from_secs(10);
        assert_eq!(readiness_delay(0, i), Duration::from_millis(1));
        assert_eq!(
            readiness_delay(FAST_PROBES - 1, i),
            Duration::from_millis(1)
        );
        assert!(readiness_delay(FAST_PROBES + 5, i) < Duration::from_millis(10));
        assert_eq!(
            readiness_delay(FAST_PROBES + 30, i),
            Duration::from_millis(250)
        );
        let short = Duration::from_millis(50);
        assert_eq!(readiness_delay(FAST_PROBES + 30, short), short);
    }

    #[tokio::test]
    async fn http_probe_against_a_tiny_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 512];
            let _ = s.read(&mut b).await;
            s.write_all(b"HTTP/1.1 503 Nope\r\n\r\n").await.unwrap();
        });
        let p = Probe::Http {
            host: "127.0.0.1".into(),
            port,
            path: "/health".into(),
        };
        let r = p.run(Duration::from_secs(2)).await;
        assert!(!r.ok);
        assert_eq!(r.detail, "GET /health -> 503");
    }
}
