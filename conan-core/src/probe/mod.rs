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

mod command;
mod http;
mod runtime;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::{HealthCheck, HealthCheckKind};
use crate::time::format_duration;

pub use runtime::{probe_runtime, runtime_address};

use command::command_probe;
use http::http_probe;

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
        // A timeout too large for the clock means "no deadline" (about 30 years), not a
        // panic: a caller's absurd timeout must not take the supervisor down.
        let deadline = started
            .checked_add(timeout)
            .unwrap_or_else(|| started + Duration::from_secs(1 << 30));
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
