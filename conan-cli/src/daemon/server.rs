//! Serving the API on the Unix socket: the accept loop and the limits of each connection.
//!
//! - **Accept errors back off.** When `accept` fails for want of resources (`EMFILE`,
//!   `ENFILE`, `ENOBUFS`, `ENOMEM`, or anything unexpected) the pending connection stays in
//!   the kernel's queue and the listener stays readable, so retrying at once would spin:
//!   the loop waits 10 ms, doubling up to 1 s, and starts again at 10 ms after the next
//!   accepted connection. Errors of one connection (`ECONNABORTED`, `EPROTO`, `EINTR`) are
//!   skipped at once. The warning is rate-limited like every log line ([`super::log::limit`]).
//! - **Connections are capped**: at most [`Limits::max_connections`] at once (1024, or a
//!   quarter of the fd limit when that is lower; `CONAN_MAX_CONNECTIONS` overrides it);
//!   beyond it new connections wait in the socket's queue until one ends.
//! - **Reading a request is timed, answering is not.** A request's head must arrive within
//!   [`Limits::header_timeout`] (2 s: ample for a local client, which writes its request
//!   as soon as it is connected) of the connection being ready for one — which also
//!   closes an idle keep-alive connection after 2 s — and its body within
//!   [`Limits::body_timeout`] (10 s, answered `408`). `CONAN_REQUEST_TIMEOUT_MS` sets both.
//!   A response stream (`logs -f`, events, deploy progress) runs as long as the client
//!   reads it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use super::{Daemon, routes};
use crate::error::{CliError, CliResult};

/// The first pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause between accept attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Default cap on concurrent connections.
const MAX_CONNECTIONS: usize = 1024;
/// Default time for a request's head to arrive. With [`MAX_CONNECTIONS`], 2,000 half-sent
/// requests are all closed within two rounds, about 4 s.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time for a request's body to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections the daemon serves at once, and how long it waits for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait in the socket's queue.
    pub max_connections: usize,
    /// Time for a request's head to arrive (and for an idle connection to send another).
    pub header_timeout: Duration,
    /// Time for a request's body to arrive once its head did.
    pub body_timeout: Duration,
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

impl Limits {
    /// The defaults of the module docs for a soft fd limit of `fd_limit`, overridden by
    /// `CONAN_MAX_CONNECTIONS` and `CONAN_REQUEST_TIMEOUT_MS`.
    ///
    /// # Errors
    /// A usage error when a variable is not a positive number.
    pub fn from_env(fd_limit: Option<u64>) -> CliResult<Self> {
        let by_fds = fd_limit
            .and_then(|n| usize::try_from(n / 4).ok())
            .unwrap_or(MAX_CONNECTIONS)
            .max(16);
        let mut limits = Self {
            max_connections: MAX_CONNECTIONS.min(by_fds),
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
        };
        if let Some(n) = positive("CONAN_MAX_CONNECTIONS")? {
            limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(ms) = positive("CONAN_REQUEST_TIMEOUT_MS")? {
            limits.header_timeout = Duration::from_millis(ms);
            limits.body_timeout = Duration::from_millis(ms);
        }
        Ok(limits)
    }

    /// The limits in force (set once by [`serve`]; the defaults before).
    pub fn current() -> Self {
        *LIMITS.get_or_init(|| Self {
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
        })
    }
}

fn positive(name: &str) -> CliResult<Option<u64>> {
    let Ok(text) = std::env::var(name) else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(CliError::usage(format!(
            "{name}={text}: expected a positive whole number"
        ))),
    }
}

/// Exponential backoff between failed accepts: 10 ms doubling to 1 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The pause before the next attempt.
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(BACKOFF_MAX);
        pause
    }

    /// After a success: the next failure waits 10 ms again.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Whether an accept error concerns only the connection being accepted (retry at once),
/// as opposed to the daemon's resources (back off).
#[must_use]
pub fn is_connection_error(e: &io::Error) -> bool {
    use nix::errno::Errno;
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) {
        return true;
    }
    e.raw_os_error()
        .is_some_and(|n| matches!(Errno::from_raw(n), Errno::EPROTO | Errno::ECONNABORTED))
}

/// A listening socket the accept loop serves: the API's Unix socket or the `/metrics`
/// TCP listener.
pub trait Listener {
    /// A connection.
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;

    /// Accepts the next connection.
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>>;
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts and serves connections on `listener` until `stop` completes; see the module
/// docs for the limits.
pub async fn serve(
    listener: &UnixListener,
    daemon: &Arc<Daemon>,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let _ = LIMITS.set(limits);
    tracing::info!(
        max_connections = limits.max_connections,
        header_timeout_ms = limits.header_timeout.as_millis(),
        body_timeout_ms = limits.body_timeout.as_millis(),
        "connection limits"
    );
    let daemon = Arc::clone(daemon);
    serve_with(listener, limits, stop, move |req| {
        routes::handle(Arc::clone(&daemon), req)
    })
    .await;
}

/// The accept loop of [`serve`] for any [`Listener`] and request handler: the same
/// backoff, connection cap and header timeout.
pub async fn serve_with<L, H, F>(
    listener: &L,
    limits: Limits,
    stop: impl Future<Output = ()>,
    handle: H,
) where
    L: Listener,
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = hyper::Response<super::http::Body>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Backoff::default();
    tokio::pin!(stop);
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached; new connections wait until one ends"
                );
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                    () = &mut stop => return,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept_stream() => accepted,
            () = &mut stop => return,
        };
        match accepted {
            Ok(stream) => {
                backoff.reset();
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    serve_connection(stream, handle, limits).await;
                });
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "a connection failed before it was accepted");
            }
            Err(e) => {
                let pause = backoff.pause();
                tracing::warn!(
                    error = %e,
                    fd_limit = super::fdlimit::current(),
                    "cannot accept connections; retrying with a backoff of up to 1 s"
                );
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut stop => return,
                }
            }
        }
    }
}

async fn serve_connection<S, H, F>(stream: S, handle: H, limits: Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Send + 'static,
    F: Future<Output = hyper::Response<super::http::Body>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let answer = handle(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        let e: &(dyn std::error::Error + 'static) = &e;
        tracing::debug!(error = %conan::error::DisplayChain(e), "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets_after_a_success() {
        let mut b = Backoff::default();
        let pauses: Vec<u128> = (0..9).map(|_| b.pause().as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(10));
    }

    #[test]
    fn resource_errors_back_off_and_connection_errors_do_not() {
        for errno in [
            libc_errno::EMFILE,
            libc_errno::ENFILE,
            libc_errno::ENOBUFS,
            libc_errno::ENOMEM,
        ] {
            assert!(
                !is_connection_error(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [
            libc_errno::ECONNABORTED,
            libc_errno::EPROTO,
            libc_errno::EINTR,
        ] {
            assert!(
                is_connection_error(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }

    mod libc_errno {
        use nix::errno::Errno;
        pub const EMFILE: i32 = Errno::EMFILE as i32;
        pub const ENFILE: i32 = Errno::ENFILE as i32;
        pub const ENOBUFS: i32 = Errno::ENOBUFS as i32;
        pub const ENOMEM: i32 = Errno::ENOMEM as i32;
        pub const ECONNABORTED: i32 = Errno::ECONNABORTED as i32;
        pub const EPROTO: i32 = Errno::EPROTO as i32;
        pub const EINTR: i32 = Errno::EINTR as i32;
    }

    #[test]
    fn the_connection_cap_follows_a_low_fd_limit() {
        // Read from the environment: only meaningful when the test runs without overrides.
        if std::env::var_os("CONAN_MAX_CONNECTIONS").is_some() {
            return;
        }
        assert_eq!(
            Limits::from_env(Some(1 << 20)).unwrap().max_connections,
            1024
        );
        assert_eq!(Limits::from_env(Some(1024)).unwrap().max_connections, 256);
        assert_eq!(Limits::from_env(Some(32)).unwrap().max_connections, 16);
    }
}
