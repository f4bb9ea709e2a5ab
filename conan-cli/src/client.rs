//! The CLI's side of the API: HTTP/1.1 over the daemon's Unix socket, one connection per
//! request, JSON answers or NDJSON streams. [`Client::connect`] starts a daemon in the
//! background when none answers.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::api::ApiError;
use crate::daemon::lock::DaemonLock;
use crate::error::{CliError, CliResult};
use crate::home::Home;
use crate::launch;

/// How long a command waits for an auto-started daemon to answer.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long the connection [`Client::connect`] opened is used for a first request.
const KEPT_FOR: Duration = Duration::from_secs(1);

/// A connection factory to one daemon.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    /// The connection [`Client::connect`] opened to see that a daemon answers and when,
    /// kept for a first request made soon after rather than opening another.
    first: std::sync::Arc<std::sync::Mutex<Option<(Instant, UnixStream)>>>,
    /// Sent as [`REQUESTED_BY`] with every request: the daemon records it in the audit
    /// entry of each operation it causes.
    requested_by: Option<String>,
}

/// The settings check of this command ([`Client::check_settings`]), once started.
static SETTINGS_CHECK: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>> =
    std::sync::Mutex::new(None);

/// Waits (up to 2 s) for the settings check a command started, so its warning is printed
/// before the command exits.
pub async fn settings_checked() {
    let pending = SETTINGS_CHECK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(check) = pending {
        let _ = tokio::time::timeout(Duration::from_secs(2), check).await;
    }
}

/// The request header that names who asks (`mcp:claude-desktop 1.2`).
pub const REQUESTED_BY: &str = "x-conan-requested-by";

/// Whether a connect error means "no daemon there" (rather than a real problem).
fn nobody_home(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
    )
}

impl Client {
    /// A client of the daemon of `home`, starting one in the background when none answers.
    ///
    /// # Errors
    /// When no daemon answers and none could be started.
    pub async fn connect(home: &Home) -> CliResult<Self> {
        let client = Self {
            socket: home.socket(),
            first: std::sync::Arc::default(),
            requested_by: None,
        };
        match UnixStream::connect(&client.socket).await {
            Ok(stream) => {
                client.keep_first(stream);
                client.check_settings();
                return Ok(client);
            }
            Err(e) if nobody_home(&e) => {}
            Err(e) => return Err(client.unreachable(&e)),
        }
        let spawning = home.clone();
        crate::blocking::run(move || launch::spawn_daemon(&spawning)).await?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match UnixStream::connect(&client.socket).await {
                Ok(stream) => {
                    client.keep_first(stream);
                    return Ok(client);
                }
                Err(e) if nobody_home(&e) && started.elapsed() < START_DEADLINE => {
                    // The daemon takes its lock first thing: no lock after a second means
                    // it died (its log says why), so fail now rather than at the deadline.
                    if started.elapsed() > Duration::from_secs(1)
                        && !DaemonLock::is_held_async(home.lock()).await
                    {
                        return Err(launch::did_not_start(home, started.elapsed()).await);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(_) => return Err(launch::did_not_start(home, START_DEADLINE).await),
            }
        }
    }

    /// When this command's environment sets a daemon setting (`CONAN_DOCKER_BASE_IMAGE`,
    /// ...) that differs from what the running daemon uses, says so on stderr: the daemon
    /// read its settings when it started. Asks the daemon only when such a variable is
    /// set, once per command, beside the command's own requests rather than before them
    /// (it is off a deploy's critical path); [`settings_checked`] waits for it.
    fn check_settings(&self) {
        let any = crate::daemon::settings::ENV_SETTINGS
            .iter()
            .any(|s| std::env::var_os(s.var).is_some());
        let mut pending = SETTINGS_CHECK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !any || pending.is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let client = self.clone();
        *pending = Some(tokio::spawn(async move {
            client.warn_about_settings().await;
        }));
    }

    async fn warn_about_settings(&self) {
        let Ok(info) = self.get::<crate::api::DaemonInfo>("/daemon").await else {
            return;
        };
        for (var, key, here, there) in
            crate::daemon::settings::DaemonSettings::env_differences(&info.settings)
        {
            eprintln!(
                "warning: {var}={here} is not what the running daemon uses ({key} = {there}); \
                 daemon settings are read when it starts: set {key} in CONAN_HOME/daemon.toml, \
                 then `conan daemon stop` (the next command starts it again)"
            );
        }
    }

    fn keep_first(&self, stream: UnixStream) {
        *self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), stream));
    }

    /// A client of a daemon that may or may not run (never starts one).
    #[must_use]
    pub fn existing(home: &Home) -> Self {
        Self {
            socket: home.socket(),
            first: std::sync::Arc::default(),
            requested_by: None,
        }
    }

    /// The same client, naming who asks in every request (header [`REQUESTED_BY`]; a
    /// header cannot carry control characters, so they are dropped).
    #[must_use]
    pub fn requested_by(mut self, who: &str) -> Self {
        let clean: String = who.chars().filter(|c| !c.is_control()).take(200).collect();
        self.requested_by = Some(clean);
        self
    }

    /// Whether a daemon answers on the socket.
    pub async fn answers(&self) -> bool {
        UnixStream::connect(&self.socket).await.is_ok()
    }

    fn unreachable(&self, e: &std::io::Error) -> CliError {
        CliError::failed(format!(
            "cannot reach the Conan daemon at {}: {e}",
            self.socket.display()
        ))
        .hint("`conan daemon stop` and retry; the daemon's log is daemon.log next to the socket")
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> CliResult<hyper::Response<Incoming>> {
        let kept = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let stream = match kept {
            // The daemon closes a connection that stays idle; a long-lived client (`conan
            // mcp`) opens a fresh one.
            Some((at, stream)) if at.elapsed() < KEPT_FOR => stream,
            _ => UnixStream::connect(&self.socket)
                .await
                .map_err(|e| self.unreachable(&e))?,
        };
        let broken = |e: hyper::Error| {
            CliError::failed(format!(
                "the Conan daemon broke the connection: {}",
                crate::error::chain(&e)
            ))
            .hint("see daemon.log in CONAN_HOME")
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(broken)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", crate::api::PREFIX))
            .header(hyper::header::HOST, "conan")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(who) = self
            .requested_by
            .as_deref()
            .and_then(|w| hyper::header::HeaderValue::from_str(w).ok())
        {
            request = request.header(REQUESTED_BY, who);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CliError::failed(format!("cannot build a request: {e}")))?;
        sender.send_request(request).await.map_err(broken)
    }

    /// Sends a request and decodes the JSON answer; an error status becomes a [`CliError`].
    ///
    /// # Errors
    /// The daemon's error, or a transport error.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> CliResult<T> {
        let body = body.map(encode).transpose()?;
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                CliError::failed(format!(
                    "cannot read the daemon's answer: {}",
                    crate::error::chain(&e)
                ))
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(decode_error(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::failed(format!("unexpected answer from the daemon: {e}")))
    }

    /// `GET path` decoded as JSON.
    ///
    /// # Errors
    /// See [`call`](Self::call).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> CliResult<T> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    /// Sends a request whose answer is an NDJSON stream.
    ///
    /// # Errors
    /// The daemon's error (before the stream starts), or a transport error.
    pub async fn stream<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> CliResult<Lines> {
        let body = body.map(encode).transpose()?;
        let response = self.send(method, path, body).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            return Err(decode_error(status, &bytes));
        }
        Ok(Lines {
            body: response.into_body(),
            buffer: BytesMut::new(),
            done: false,
        })
    }
}

fn encode<B: Serialize>(body: &B) -> CliResult<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| CliError::failed(format!("cannot encode a request: {e}")))
}

fn decode_error(status: StatusCode, bytes: &[u8]) -> CliError {
    match serde_json::from_slice::<ApiError>(bytes) {
        Ok(api) => CliError::from_api(api),
        Err(_) => CliError::failed(format!(
            "the daemon answered {status}: {}",
            String::from_utf8_lossy(bytes).trim()
        )),
    }
}

/// The lines of an NDJSON answer.
#[derive(Debug)]
pub struct Lines {
    body: Incoming,
    buffer: BytesMut,
    done: bool,
}

impl Lines {
    /// The next decoded line; `None` at the end of the stream.
    ///
    /// # Errors
    /// A transport error, or a line that does not decode as `T`.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Option<CliResult<T>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let line = &line[..end];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(line).map_err(|e| {
                    CliError::failed(format!("unexpected line from the daemon: {e}"))
                }));
            }
            if self.done {
                if self.buffer.is_empty() {
                    return None;
                }
                let rest = self.buffer.split();
                return Some(serde_json::from_slice(&rest).map_err(|e| {
                    CliError::failed(format!("unexpected line from the daemon: {e}"))
                }));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(CliError::failed(format!(
                        "the connection to the daemon broke: {}",
                        crate::error::chain(&e)
                    ))));
                }
                None => self.done = true,
            }
        }
    }
}
