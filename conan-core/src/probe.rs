//! Health probes shared by every provider: an HTTP/1.1 `GET`, a TCP connect, or a command.
//!
//! A provider turns a deployment's [`HealthCheck`] into a [`Probe`] with
//! [`Probe::for_check`] (or builds one with [`Probe::http`], [`Probe::tcp`] or
//! [`Probe::command`] when it must translate ports or hosts itself), then calls
//! [`Probe::run`] as often as its readiness gate or liveness loop needs. Each run returns a
//! [`ProbeOutcome`]: a verdict, a one-line `detail` fit for an event or a failure report,
//! and what was seen on the way (HTTP status, a body excerpt, whether the time limit hit).
//!
//! Guarantees of [`Probe::run`]:
//!
//! - **Bounded in time.** The whole probe (name resolution, connect, request, response; or
//!   the command from spawn to exit) finishes within the given timeout, plus a few
//!   milliseconds of scheduling. A command still running then is killed.
//! - **Bounded in memory.** At most [`MAX_RESPONSE_BYTES`] of an HTTP response and
//!   [`MAX_OUTPUT_BYTES`] of each of a command's stdout and stderr are kept; a server that
//!   streams forever or a command that floods its output costs no more than that.
//! - **Never an error.** Every failure (refused, reset, timed out, not HTTP, cannot spawn)
//!   is an unhealthy outcome whose `detail` says what happened; nothing is retried inside
//!   a run, retrying is the caller's schedule (see [`readiness_delay`]).
//!
//! The HTTP client is hand-written on purpose: a probe needs one request and one status
//! line, and this crate stays free of HTTP client libraries.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::{HealthCheck, HealthCheckKind};
use crate::time::format_duration;

/// The most bytes of an HTTP response (status line, headers and body) a probe reads.
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// The most bytes of a response body kept in [`ProbeOutcome::body_excerpt`].
pub const BODY_EXCERPT_BYTES: usize = 256;

/// The most bytes of each of a command's stdout and stderr a probe keeps (the rest is
/// read and dropped, so the command never blocks on a full pipe).
pub const MAX_OUTPUT_BYTES: usize = 4096;

/// The most bytes of a body or of command output quoted in [`ProbeOutcome::detail`].
const DETAIL_EXCERPT_BYTES: usize = 200;

/// The most bytes of a command quoted in [`ProbeOutcome::detail`].
const DETAIL_COMMAND_BYTES: usize = 80;

/// How long a command's pipes may stay open after it exited (a background child may hold
/// them) before the probe stops reading them.
const PIPE_GRACE: Duration = Duration::from_millis(50);

/// `PATH` of a command probe when neither its env nor this process has one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Readiness probes made at a 1 ms pace before [`readiness_delay`] backs off.
pub const FAST_PROBES: u32 = 200;

/// The delay before readiness probe number `n` (0-based) when the check's interval is
/// `interval`.
///
/// Every millisecond for the first [`FAST_PROBES`] probes (about the first 200 ms, when most
/// apps become ready; a refused connection costs microseconds), then growing ×1.5 per probe
/// up to the smaller of `interval` and 250 ms. Readiness is thus noticed within about a
/// millisecond of a fast app being ready, and within 250 ms of a slow one. The schedule is
/// for waiting until an instance is first ready; a running instance is probed every
/// `interval`.
#[must_use]
pub fn readiness_delay(n: u32, interval: Duration) -> Duration {
    let slow = n.saturating_sub(FAST_PROBES).min(40);
    let ms = 1.5f64.powi(i32::try_from(slow).unwrap_or(40));
    Duration::from_secs_f64(ms / 1000.0)
        .min(interval)
        .min(Duration::from_millis(250))
}

/// How to probe one instance.
///
/// Build one with [`Probe::for_check`] or the constructors; the variants and their fields
/// are public to read (`match` needs `..`, so fields can be added).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Probe {
    /// `GET path` on `host:port`; a 2xx status is healthy.
    ///
    /// Only 2xx counts, unlike Kubernetes (200–399): the probe does not follow redirects,
    /// and a redirect (typically to a login page) says nothing about the app's health.
    #[non_exhaustive]
    Http {
        /// Host to connect to (an IP address or a name), also sent as `Host`.
        host: String,
        /// TCP port.
        port: u16,
        /// Request target; starts with `/`.
        path: String,
    },
    /// A TCP connection to `host:port` succeeds.
    #[non_exhaustive]
    Tcp {
        /// Host to connect to.
        host: String,
        /// TCP port.
        port: u16,
        /// When non-zero, the connection must also stay open this long (or the server must
        /// send something): a proxy in front of the app, such as Docker's userland proxy on
        /// a published port, accepts connections even when nothing listens behind it and
        /// closes them at once. Zero (the default) means connecting is enough.
        hold: Duration,
    },
    /// `sh -c command` in `dir`; exit status 0 is healthy.
    ///
    /// The command's environment is exactly `env` plus `PATH` (this process's `PATH` unless
    /// `env` sets one): it does not inherit the provider's environment.
    #[non_exhaustive]
    Command {
        /// Shell command line.
        command: String,
        /// Working directory.
        dir: PathBuf,
        /// Environment variables, applied in order.
        env: Vec<(String, String)>,
    },
}

impl Probe {
    /// The probe of `check` against an instance listening on `host:port` whose app lives in
    /// `dir`; `None` for a [`HealthCheckKind::Process`] check (the provider checks liveness
    /// itself) and for a command check without a command (which validation rejects).
    ///
    /// `check.port`, when set, overrides `port`. The host `0.0.0.0` (listen on every
    /// interface) is probed as `127.0.0.1`, and `::` as `::1`. A command probe gets `PORT`
    /// and `HOST` in its environment; add more with [`Probe::with_env`].
    ///
    /// A provider that translates ports (a container port published on another host port)
    /// resolves `check.port` itself and builds the probe with [`Probe::http`] or
    /// [`Probe::tcp`].
    #[must_use]
    pub fn for_check(check: &HealthCheck, host: &str, port: u16, dir: &Path) -> Option<Probe> {
        let port = check.port.unwrap_or(port);
        match check.kind {
            HealthCheckKind::Http => Some(Probe::http(host, port, check.http_path())),
            HealthCheckKind::Tcp => Some(Probe::tcp(host, port)),
            HealthCheckKind::Command => {
                let command = check.command.as_deref()?;
                let host = probe_host(host);
                let env = [
                    ("PORT".to_owned(), port.to_string()),
                    ("HOST".to_owned(), host.to_owned()),
                ];
                Some(Probe::command(command, dir, env))
            }
            HealthCheckKind::Process => None,
        }
    }

    /// An HTTP probe of `path` (`/` when empty) on `host:port` (`0.0.0.0` probed as
    /// `127.0.0.1`).
    #[must_use]
    pub fn http(host: &str, port: u16, path: &str) -> Probe {
        let path = if path.is_empty() { "/" } else { path };
        Probe::Http {
            host: probe_host(host).to_owned(),
            port,
            path: path.to_owned(),
        }
    }

    /// A TCP connect probe of `host:port` (`0.0.0.0` probed as `127.0.0.1`).
    #[must_use]
    pub fn tcp(host: &str, port: u16) -> Probe {
        Probe::Tcp {
            host: probe_host(host).to_owned(),
            port,
            hold: Duration::ZERO,
        }
    }

    /// A command probe: `sh -c command` in `dir` with exactly `env` (plus `PATH`).
    #[must_use]
    pub fn command(
        command: impl Into<String>,
        dir: impl Into<PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Probe {
        Probe::Command {
            command: command.into(),
            dir: dir.into(),
            env: env.into_iter().collect(),
        }
    }

    /// The same probe, but a TCP probe also requires the connection to stay open for
    /// `hold` (see [`Probe::Tcp`]). Other probes are returned unchanged.
    #[must_use]
    pub fn with_hold(mut self, hold: Duration) -> Probe {
        if let Probe::Tcp { hold: h, .. } = &mut self {
            *h = hold;
        }
        self
    }

    /// The same probe with more environment variables for a command probe (later entries
    /// win). Other probes are returned unchanged.
    #[must_use]
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Probe {
        if let Probe::Command { env, .. } = &mut self {
            env.extend(vars);
        }
        self
    }

    /// Runs the probe once; the whole run is bounded by `timeout` (see the module docs).
    pub async fn run(&self, timeout: Duration) -> ProbeOutcome {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut outcome = match self {
            Probe::Http { host, port, path } => http_probe(host, *port, path, deadline).await,
            Probe::Tcp { host, port, hold } => tcp_probe(host, *port, *hold, deadline).await,
            Probe::Command { command, dir, env } => {
                command_probe(command, dir, env, deadline).await
            }
        };
        if outcome.timed_out {
            outcome.detail = format!(
                "{}: no answer within {}",
                outcome.detail,
                format_duration(timeout)
            );
        }
        outcome.duration = started.elapsed();
        outcome
    }
}

impl fmt::Display for Probe {
    /// What is probed, for messages: `GET http://127.0.0.1:4100/health`,
    /// `TCP 127.0.0.1:4100`, or the command in backticks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Http { host, port, path } => {
                write!(f, "GET http://{}{}", authority(host, *port), path)
            }
            Probe::Tcp { host, port, .. } => write!(f, "TCP {}", authority(host, *port)),
            Probe::Command { command, .. } => write!(f, "command `{}`", quote_command(command)),
        }
    }
}

/// What one run of a [`Probe`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeOutcome {
    /// The instance passed the probe.
    pub healthy: bool,
    /// One line for people: `GET /health -> 200`, `GET /health -> 500: <body excerpt>`,
    /// `connect 127.0.0.1:4100: connection refused`, ``command `x` exited 1: <stderr>``.
    pub detail: String,
    /// The time limit passed before a verdict: no HTTP status line, no TCP connection, or
    /// the command had not exited (it was killed). Always unhealthy. An HTTP status line
    /// that came in time decides even if the rest of the response did not.
    pub timed_out: bool,
    /// The HTTP status code, when a status line came back.
    pub status: Option<u16>,
    /// The start of the HTTP response body (at most [`BODY_EXCERPT_BYTES`], lossy UTF-8,
    /// control characters other than newline and tab replaced by spaces), when one came.
    pub body_excerpt: Option<String>,
    /// How long the run took.
    pub duration: Duration,
}

impl ProbeOutcome {
    /// A healthy outcome (for probes a provider makes itself, e.g. "container running").
    #[must_use]
    pub fn healthy(detail: impl Into<String>) -> ProbeOutcome {
        ProbeOutcome {
            healthy: true,
            detail: detail.into(),
            timed_out: false,
            status: None,
            body_excerpt: None,
            duration: Duration::ZERO,
        }
    }

    /// An unhealthy outcome (e.g. "no published port").
    #[must_use]
    pub fn unhealthy(detail: impl Into<String>) -> ProbeOutcome {
        ProbeOutcome {
            healthy: false,
            ..ProbeOutcome::healthy(detail)
        }
    }

    /// An unhealthy outcome that ran out of time; `detail` says what was waited for.
    fn timeout(detail: impl Into<String>) -> ProbeOutcome {
        ProbeOutcome {
            timed_out: true,
            ..ProbeOutcome::unhealthy(detail)
        }
    }

    /// The same outcome with `duration`.
    #[must_use]
    pub fn with_duration(mut self, duration: Duration) -> ProbeOutcome {
        self.duration = duration;
        self
    }

    /// Whether the instance passed the probe (the `healthy` field).
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// The one-line detail (the `detail` field).
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The detail, by value (for an event or a failure report).
    #[must_use]
    pub fn into_detail(self) -> String {
        self.detail
    }

    /// Whether the time limit hit (the `timed_out` field).
    #[must_use]
    pub fn is_timed_out(&self) -> bool {
        self.timed_out
    }

    /// The HTTP status code, if any (the `status` field).
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The start of the HTTP body, if any (the `body_excerpt` field).
    #[must_use]
    pub fn body_excerpt(&self) -> Option<&str> {
        self.body_excerpt.as_deref()
    }

    /// How long the run took (the `duration` field).
    #[must_use]
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl fmt::Display for ProbeOutcome {
    /// The detail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

async fn http_probe(host: &str, port: u16, path: &str, deadline: Instant) -> ProbeOutcome {
    let what = format!("GET {path}");
    // Anything that would break the request line (or smuggle headers) is refused here.
    if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return ProbeOutcome::unhealthy(format!(
            "{what}: invalid path (must start with '/', no spaces or control characters)"
        ));
    }
    let addr = authority(host, port);
    let mut stream = match timeout_at(deadline, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return ProbeOutcome::unhealthy(format!("{what}: connect {addr}: {}", io_text(&e)));
        }
        Err(_) => return ProbeOutcome::timeout(format!("{what}: connect {addr}")),
    };
    // A failure here only costs latency.
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: conan-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    match timeout_at(deadline, stream.write_all(request.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return ProbeOutcome::unhealthy(format!("{what} on {addr}: send: {}", io_text(&e)));
        }
        Err(_) => return ProbeOutcome::timeout(format!("{what} on {addr}")),
    }

    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let ended = loop {
        let room = MAX_RESPONSE_BYTES - buf.len();
        if room == 0 || Response::parse(&buf).is_some_and(|r| r.is_enough()) {
            break Ended::Enough;
        }
        let n = room.min(chunk.len());
        match timeout_at(deadline, stream.read(&mut chunk[..n])).await {
            Ok(Ok(0)) => break Ended::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => break Ended::Failed(e),
            Err(_) => break Ended::Deadline,
        }
    };

    let Some(response) = Response::parse(&buf) else {
        return match ended {
            Ended::Deadline => ProbeOutcome::timeout(format!("{what} on {addr}")),
            Ended::Failed(e) => {
                ProbeOutcome::unhealthy(format!("{what} on {addr}: read: {}", io_text(&e)))
            }
            Ended::Closed if buf.is_empty() => ProbeOutcome::unhealthy(format!(
                "{what} on {addr}: connection closed before a response"
            )),
            Ended::Closed | Ended::Enough => ProbeOutcome::unhealthy(format!(
                "{what} on {addr}: not an HTTP response: {}",
                one_line(&String::from_utf8_lossy(&buf), DETAIL_EXCERPT_BYTES)
            )),
        };
    };
    // A status line decides, even when the rest of the answer was cut short.
    response.outcome(&what)
}

/// Why reading a response stopped.
enum Ended {
    /// Enough was read to judge (or the read limit was reached).
    Enough,
    /// The server closed the connection.
    Closed,
    /// Reading failed.
    Failed(std::io::Error),
    /// The deadline passed.
    Deadline,
}

/// The parts of an HTTP response a probe looks at, borrowed from the bytes read so far.
struct Response<'a> {
    status: u16,
    /// The headers, once their end was seen.
    headers: Option<Vec<(&'a str, &'a str)>>,
    /// The bytes after the headers.
    body: &'a [u8],
}

impl<'a> Response<'a> {
    /// `None` until a complete `HTTP/x.y NNN ...` status line was read.
    fn parse(buf: &'a [u8]) -> Option<Response<'a>> {
        let status_end = buf.iter().position(|&b| b == b'\n')?;
        let status = parse_status(&buf[..status_end])?;
        let mut pos = status_end + 1;
        let mut headers = Vec::new();
        loop {
            let Some(len) = buf[pos..].iter().position(|&b| b == b'\n') else {
                return Some(Response {
                    status,
                    headers: None,
                    body: &[],
                });
            };
            let line = &buf[pos..pos + len];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos += len + 1;
            if line.is_empty() {
                break;
            }
            // The headers the probe reads are ASCII; others may be anything.
            if let Ok(text) = std::str::from_utf8(line)
                && let Some((name, value)) = text.split_once(':')
            {
                headers.push((name.trim(), value.trim()));
            }
        }
        Some(Response {
            status,
            headers: Some(headers),
            body: &buf[pos..],
        })
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .as_ref()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    /// Whether the probe has read all it wants: the headers and the body's first
    /// [`BODY_EXCERPT_BYTES`] (or the whole body, when shorter).
    fn is_enough(&self) -> bool {
        if self.headers.is_none() {
            return false;
        }
        if matches!(self.status, 100..=199 | 204 | 304) {
            return true;
        }
        if self.is_chunked() {
            let (body, complete) = dechunk(self.body);
            return complete || body.len() >= BODY_EXCERPT_BYTES;
        }
        let wanted = self
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(BODY_EXCERPT_BYTES, |len| len.min(BODY_EXCERPT_BYTES));
        self.body.len() >= wanted
    }

    /// The start of the body, decoded from chunks when chunked; `None` when empty.
    fn body_excerpt(&self) -> Option<String> {
        let body = if self.is_chunked() {
            dechunk(self.body).0
        } else {
            self.body.to_vec()
        };
        let body = &body[..body.len().min(BODY_EXCERPT_BYTES)];
        let text = String::from_utf8_lossy(body);
        // A cut through a multi-byte character shows as one replacement character.
        let text: String = text
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        (!text.trim().is_empty()).then_some(text)
    }

    fn outcome(&self, what: &str) -> ProbeOutcome {
        let status = self.status;
        let excerpt = self.body_excerpt();
        let healthy = (200..300).contains(&status);
        let mut detail = format!("{what} -> {status}");
        if !healthy {
            if (300..400).contains(&status)
                && let Some(location) = self.header("location")
            {
                detail.push_str(&format!(
                    " (redirect to {} not followed)",
                    one_line(location, DETAIL_EXCERPT_BYTES)
                ));
            }
            if let Some(body) = &excerpt {
                detail.push_str(": ");
                detail.push_str(&one_line(body, DETAIL_EXCERPT_BYTES));
            }
        }
        ProbeOutcome {
            healthy,
            detail,
            timed_out: false,
            status: Some(status),
            body_excerpt: excerpt,
            duration: Duration::ZERO,
        }
    }
}

/// The status code of an `HTTP/x.y NNN reason` line.
fn parse_status(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// The data of the complete chunks at the start of a chunked body, and whether the last
/// (zero-size) chunk was among them. Best effort: the probe only shows the data.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return (out, false);
        };
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else {
            return (out, false);
        };
        if size == 0 {
            return (out, true);
        }
        let data = &raw[line_end + 2..];
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        if data.len() < size + 2 {
            return (out, false);
        }
        raw = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// TCP

async fn tcp_probe(host: &str, port: u16, hold: Duration, deadline: Instant) -> ProbeOutcome {
    let addr = authority(host, port);
    let mut stream = match timeout_at(deadline, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ProbeOutcome::unhealthy(format!("connect {addr}: {}", io_text(&e))),
        Err(_) => return ProbeOutcome::timeout(format!("connect {addr}")),
    };
    if !hold.is_zero() {
        let until = (Instant::now() + hold).min(deadline);
        let mut byte = [0u8; 1];
        match timeout_at(until, stream.read(&mut byte)).await {
            Ok(Ok(0)) => {
                return ProbeOutcome::unhealthy(format!(
                    "connect {addr}: closed at once (nothing listens behind it)"
                ));
            }
            Ok(Err(e)) => {
                return ProbeOutcome::unhealthy(format!("connect {addr}: {}", io_text(&e)));
            }
            // The server spoke first, or the connection stayed open: someone is there.
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    ProbeOutcome::healthy(format!("connect {addr}: ok"))
}

// ---------------------------------------------------------------------------------------
// Command

async fn command_probe(
    command: &str,
    dir: &Path,
    env: &[(String, String)],
    deadline: Instant,
) -> ProbeOutcome {
    let what = format!("command `{}`", quote_command(command));
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the child (on timeout, or when the caller drops the probe) kills it.
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ProbeOutcome::unhealthy(format!(
                "{what} could not start in {}: {}",
                dir.display(),
                io_text(&e)
            ));
        }
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = {
        let pipes = async {
            tokio::join!(drain(stdout, &mut out), drain(stderr, &mut err));
        };
        let mut pipes = std::pin::pin!(pipes);
        let mut pipes_done = false;
        let status = {
            let mut wait = std::pin::pin!(timeout_at(deadline, child.wait()));
            loop {
                tokio::select! {
                    s = &mut wait => break s,
                    () = &mut pipes, if !pipes_done => pipes_done = true,
                }
            }
        };
        // Output still buffered in the pipes is worth a moment; a background child
        // holding them open is not worth the rest of the timeout.
        if !pipes_done && matches!(status, Ok(Ok(_))) {
            let grace = (Instant::now() + PIPE_GRACE).min(deadline);
            let _ = timeout_at(grace, &mut pipes).await;
        }
        status
    };
    match status {
        Ok(Ok(status)) if status.success() => ProbeOutcome::healthy(format!("{what} exited 0")),
        Ok(Ok(status)) => {
            let mut detail = match status.code() {
                Some(code) => format!("{what} exited {code}"),
                None => format!("{what} ended with {status}"),
            };
            let said = if err.iter().any(|b| !b.is_ascii_whitespace()) {
                &err
            } else {
                &out
            };
            let said = one_line(&String::from_utf8_lossy(said), DETAIL_EXCERPT_BYTES);
            if !said.is_empty() {
                detail.push_str(": ");
                detail.push_str(&said);
            }
            ProbeOutcome::unhealthy(detail)
        }
        Ok(Err(e)) => ProbeOutcome::unhealthy(format!("{what}: wait: {}", io_text(&e))),
        Err(_) => {
            // kill_on_drop would do it too; asking now makes the intent plain. The runtime
            // reaps the killed child.
            let _ = child.start_kill();
            ProbeOutcome::timeout(format!("{what} (killed)"))
        }
    }
}

/// Reads `pipe` to its end, keeping its first [`MAX_OUTPUT_BYTES`] in `kept`.
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, kept: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 1024];
    // A read error ends the output like an end of file: the exit status decides.
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

// ---------------------------------------------------------------------------------------
// Text

/// The host to connect to for an app listening on `host`: the wildcard addresses are not
/// connectable everywhere, loopback is.
fn probe_host(host: &str) -> &str {
    match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "::1",
        other => other,
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An IO error as text for a detail line: `connection refused`, not
/// `Connection refused (os error 111)`.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(i)) => &text[..i],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        // Only the first letter of a sentence-like message ("Connection refused").
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            let mut out: String = first.to_lowercase().collect();
            out.push_str(&text[first.len_utf8()..]);
            out
        }
        _ => text.to_owned(),
    }
}

fn quote_command(command: &str) -> String {
    one_line(command, DETAIL_COMMAND_BYTES)
}

/// `text` on one line: control characters (newlines included) become spaces, runs of
/// whitespace one space, and the result is cut at `max` bytes (on a character boundary,
/// marked with `…`).
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    for word in text
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > max {
            break;
        }
    }
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(200);

    /// Reads a request up to its blank line (bounded), returning it as text.
    async fn read_request(s: &mut TcpStream) -> String {
        let mut req = Vec::new();
        let mut b = [0u8; 512];
        while find(&req, b"\r\n\r\n").is_none() && req.len() < 8192 {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&b[..n]),
            }
        }
        String::from_utf8_lossy(&req).into_owned()
    }

    /// A server on 127.0.0.1 that answers each connection with `response` and closes;
    /// the first request it saw is sent on the returned channel.
    async fn serve(response: &'static [u8]) -> (u16, oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok((mut s, _)) = listener.accept().await {
                let req = read_request(&mut s).await;
                if let Some(tx) = tx.take() {
                    let _ = tx.send(req);
                }
                let _ = s.write_all(response).await;
            }
        });
        (port, rx)
    }

    /// A port nothing listens on (bound, then released).
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    }

    fn http(port: u16, path: &str) -> Probe {
        Probe::http("127.0.0.1", port, path)
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 500 Oops"), Some(500));
        assert_eq!(parse_status(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-x"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 Huh"), None);
        assert_eq!(parse_status(b"HTTP/1.1 abc"), None);
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
        assert_eq!(readiness_delay(u32::MAX, i), Duration::from_millis(250));
        let short = Duration::from_millis(50);
        assert_eq!(readiness_delay(FAST_PROBES + 30, short), short);
    }

    #[test]
    fn checks_map_to_probes() {
        let dir = Path::new("/srv/app");
        assert_eq!(
            Probe::for_check(&HealthCheck::http("/health"), "0.0.0.0", 4100, dir),
            Some(Probe::http("127.0.0.1", 4100, "/health"))
        );
        let mut tcp = HealthCheck::tcp();
        tcp.port = Some(9000);
        assert_eq!(
            Probe::for_check(&tcp, "10.0.0.5", 4100, dir),
            Some(Probe::tcp("10.0.0.5", 9000))
        );
        assert_eq!(
            Probe::for_check(&HealthCheck::process(), "127.0.0.1", 4100, dir),
            None
        );
        let Some(Probe::Command {
            command,
            dir: cwd,
            env,
        }) = Probe::for_check(&HealthCheck::command("true"), "0.0.0.0", 4100, dir)
        else {
            panic!("a command check makes a command probe");
        };
        assert_eq!(command, "true");
        assert_eq!(cwd, dir);
        assert_eq!(
            env,
            vec![
                ("PORT".to_owned(), "4100".to_owned()),
                ("HOST".to_owned(), "127.0.0.1".to_owned())
            ]
        );
        let mut empty = HealthCheck::command("x");
        empty.command = None;
        assert_eq!(Probe::for_check(&empty, "127.0.0.1", 1, dir), None);
    }

    #[test]
    fn text_helpers() {
        assert_eq!(one_line("a\r\n\tb\x1b[31m  c", 100), "a b [31m c");
        assert_eq!(one_line("ééé", 3), "é…");
        assert_eq!(authority("::1", 80), "[::1]:80");
        assert_eq!(
            io_text(&std::io::Error::from_raw_os_error(111)),
            "connection refused"
        );
        assert_eq!(
            Probe::http("0.0.0.0", 80, "/h").to_string(),
            "GET http://127.0.0.1:80/h"
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            (b"hello world".to_vec(), true)
        );
        assert_eq!(dechunk(b"5\r\nhel"), (b"hel".to_vec(), false));
    }

    #[tokio::test]
    async fn http_200_is_healthy_and_the_request_is_well_formed() {
        let (port, req) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let r = http(port, "/health").run(LIMIT).await;
        assert!(r.is_healthy(), "{r:?}");
        assert_eq!(r.detail(), "GET /health -> 200");
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.body_excerpt(), Some("ok"));
        assert!(!r.is_timed_out());
        let req = req.await.expect("request");
        assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
        assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
    }

    #[tokio::test]
    async fn http_500_is_unhealthy_with_the_body_in_the_detail() {
        let (port, _) = serve(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\ndatabase down\r\n\x1b[0mretrying",
        )
        .await;
        let r = http(port, "/health").run(LIMIT).await;
        assert!(!r.healthy);
        assert_eq!(r.status, Some(500));
        assert_eq!(r.detail, "GET /health -> 500: database down [0mretrying");
        assert_eq!(
            r.body_excerpt.as_deref(),
            Some("database down \n [0mretrying")
        );
    }

    #[tokio::test]
    async fn http_chunked_body_and_redirects() {
        let (port, _) = serve(
            b"HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nstarting\r\n0\r\n\r\n",
        )
        .await;
        let r = http(port, "/").run(LIMIT).await;
        assert_eq!(r.detail, "GET / -> 503: starting");

        let (port, _) = serve(b"HTTP/1.1 302 Found\r\nLocation: /login\r\n\r\n").await;
        let r = http(port, "/").run(LIMIT).await;
        assert!(!r.healthy);
        assert_eq!(r.detail, "GET / -> 302 (redirect to /login not followed)");
    }

    #[tokio::test]
    async fn http_status_without_headers_end_still_counts() {
        // The status line came, then the server closed mid-headers.
        let (port, _) = serve(b"HTTP/1.1 204 No Content\r\nX-A: b").await;
        let r = http(port, "/").run(LIMIT).await;
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.body_excerpt, None);
    }

    #[tokio::test]
    async fn http_silent_server_times_out_within_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let started = std::time::Instant::now();
        let r = http(port, "/health").run(SHORT).await;
        let took = started.elapsed();
        assert!(!r.healthy);
        assert!(r.timed_out, "{r:?}");
        assert_eq!(
            r.detail,
            format!("GET /health on 127.0.0.1:{port}: no answer within 200ms")
        );
        assert!(took >= SHORT && took < SHORT * 5, "took {took:?}");
        assert!(r.duration >= SHORT);
    }

    #[tokio::test]
    async fn http_connection_refused() {
        let port = closed_port().await;
        let r = http(port, "/health").run(LIMIT).await;
        assert!(!r.healthy);
        assert!(!r.timed_out);
        assert_eq!(
            r.detail,
            format!("GET /health: connect 127.0.0.1:{port}: connection refused")
        );
    }

    #[tokio::test]
    async fn http_endless_answers_stay_bounded() {
        // An endless body after a good status line: healthy, excerpt bounded, done quickly.
        // Then an endless answer that is not HTTP at all.
        for (head, healthy) in [
            (&b"HTTP/1.1 200 OK\r\n\r\n"[..], true),
            (
                &b"HTTP/1.1 500 Oops\r\nContent-Length: 99999999\r\n\r\n"[..],
                false,
            ),
            (&b""[..], false),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            tokio::spawn(async move {
                if let Ok((mut s, _)) = listener.accept().await {
                    let _ = read_request(&mut s).await;
                    let _ = s.write_all(head).await;
                    let filler = [b'x'; 1024];
                    while s.write_all(&filler).await.is_ok() {}
                }
            });
            let r = http(port, "/").run(LIMIT).await;
            assert_eq!(r.healthy, healthy, "{r:?}");
            assert!(!r.timed_out, "{r:?}");
            assert!(r.duration < Duration::from_secs(1), "{r:?}");
            assert!(r.detail.len() < 300, "{}", r.detail);
            if head.is_empty() {
                assert!(r.detail.contains("not an HTTP response"), "{}", r.detail);
            } else {
                let excerpt = r.body_excerpt.as_deref().expect("excerpt");
                assert!(excerpt.len() <= BODY_EXCERPT_BYTES, "{}", excerpt.len());
                assert!(excerpt.starts_with("xxx"));
            }
        }
    }

    #[tokio::test]
    async fn http_closed_at_once_and_bad_paths() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let r = http(port, "/").run(LIMIT).await;
        assert!(!r.healthy);
        assert!(!r.timed_out, "{r:?}");

        let r = http(1, "/a b\r\nX: y").run(LIMIT).await;
        assert!(!r.healthy);
        assert!(r.detail.contains("invalid path"), "{}", r.detail);
    }

    #[tokio::test]
    async fn tcp_ok_refused_and_held() {
        let (port, _) = serve(b"").await;
        let r = Probe::tcp("127.0.0.1", port).run(LIMIT).await;
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.detail, format!("connect 127.0.0.1:{port}: ok"));
        assert_eq!(r.status, None);

        let port = closed_port().await;
        let r = Probe::tcp("0.0.0.0", port).run(LIMIT).await;
        assert!(!r.healthy);
        assert_eq!(
            r.detail,
            format!("connect 127.0.0.1:{port}: connection refused")
        );

        // Like Docker's proxy with nothing behind it: accepts, then closes at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let hold = Duration::from_millis(100);
        let r = Probe::tcp("127.0.0.1", port)
            .with_hold(hold)
            .run(LIMIT)
            .await;
        assert!(!r.healthy, "{r:?}");
        assert!(r.detail.contains("closed at once"), "{}", r.detail);
        // A server that keeps the connection open passes the hold.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let r = Probe::tcp("127.0.0.1", port)
            .with_hold(hold)
            .run(LIMIT)
            .await;
        assert!(r.healthy, "{r:?}");
    }

    fn command(cmd: &str) -> Probe {
        Probe::command(cmd, std::env::temp_dir(), [])
    }

    #[tokio::test]
    async fn command_ok_fail_and_environment() {
        let r = command("true").run(LIMIT).await;
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.detail, "command `true` exited 0");

        let r = command("echo 'not ready:\n db' >&2; exit 3")
            .run(LIMIT)
            .await;
        assert!(!r.healthy);
        assert!(!r.timed_out);
        assert_eq!(
            r.detail,
            "command `echo 'not ready: db' >&2; exit 3` exited 3: not ready: db"
        );

        // Only the given environment (and PATH) reaches the command.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Probe::command(
            "test \"$PORT\" = 4100 && test -z \"$HOME\" && test -n \"$PATH\" && test \"$(pwd -P)\" = \"$WANT\"",
            dir.path(),
            [("PORT".to_owned(), "4100".to_owned())],
        )
        .with_env([(
            "WANT".to_owned(),
            dir.path()
                .canonicalize()
                .expect("canonical")
                .display()
                .to_string(),
        )]);
        let r = p.run(LIMIT).await;
        assert!(r.healthy, "{r:?}");

        let r = Probe::command("true", "/nonexistent/dir", [])
            .run(LIMIT)
            .await;
        assert!(!r.healthy);
        assert!(r.detail.contains("could not start"), "{}", r.detail);
    }

    #[tokio::test]
    async fn command_timeout_kills_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("survived");
        let started = std::time::Instant::now();
        let r = Probe::command("sleep 1 && touch survived", dir.path(), [])
            .run(SHORT)
            .await;
        let took = started.elapsed();
        assert!(!r.healthy);
        assert!(r.timed_out, "{r:?}");
        assert_eq!(
            r.detail,
            "command `sleep 1 && touch survived` (killed): no answer within 200ms"
        );
        assert!(took < SHORT * 5, "took {took:?}");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            !marker.exists(),
            "the command kept running after the timeout"
        );
    }

    #[tokio::test]
    async fn command_output_flood_stays_bounded() {
        let r = command("yes 'flood' | head -c 1000000 >&2; exit 1")
            .run(LIMIT)
            .await;
        assert!(!r.healthy);
        assert!(!r.timed_out, "{r:?}");
        assert!(r.detail.len() < 400, "{}", r.detail);
        assert!(r.detail.contains("exited 1: flood flood"), "{}", r.detail);

        // A background child holding the pipes open does not hold the probe.
        let r = command("sleep 5 & exit 0")
            .run(Duration::from_secs(3))
            .await;
        assert!(r.healthy, "{r:?}");
        assert!(r.duration < Duration::from_secs(1), "{r:?}");
    }
}
