//! The built-in HTTP/1.1 server: `GET` and `HEAD` of the files under one root directory,
//! one request per connection (`Connection: close`).
//!
//! - The request head (request line and headers) may be at most [`MAX_HEAD_BYTES`] and
//!   must arrive within [`HEAD_TIMEOUT`]; bodies are not read (GET and HEAD have none).
//! - The target's path is percent-decoded, joined to the root and canonicalized (which
//!   resolves `..` and symlinks); anything that ends up outside the root is refused with
//!   403. A directory serves its `index.html`.
//! - Nothing is special-cased: `/health` answers 200 only if the root has a `health` file,
//!   so a health check of `/` (the site's `index.html`) is the natural one.
//! - Every request writes one access-log line to the deployment's [`LogBook`].

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conan_core::{LogLevel, LogLine, OutputStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::logbook::LogBook;
use crate::registry::BoundListener;

/// The most bytes of a request head the server reads; a longer one gets 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// How long a client may take to send its request head; a slower one gets 408.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes of a request target quoted in an access-log line.
const LOGGED_TARGET_BYTES: usize = 200;

/// Counters of one server.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    /// Connections being served now.
    pub(crate) open: AtomicU64,
}

/// Approximate bytes one open connection holds: the socket's task, the request head
/// buffer and the read chunk, and the file copy buffer.
pub(crate) const CONNECTION_BYTES: u64 = 16 * 1024;

/// Counts a connection as open for as long as it lives.
struct OpenConnection<'a>(&'a Stats);

impl<'a> OpenConnection<'a> {
    fn new(stats: &'a Stats) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a server serves and where it reports.
#[derive(Debug)]
pub(crate) struct Site {
    /// Canonical root directory.
    pub(crate) root: PathBuf,
    pub(crate) log: Arc<LogBook>,
    pub(crate) stats: Arc<Stats>,
    /// The instance id, as the access log's source.
    pub(crate) instance: String,
}

/// Accepts connections forever (the task is aborted to stop it); each is served by its own
/// task in a set owned here, so aborting this future ends them all. Waits `startup_delay`
/// before accepting (connections queue in the backlog meanwhile).
pub(crate) async fn serve(bound: BoundListener, site: Arc<Site>, startup_delay: Duration) {
    if !startup_delay.is_zero() {
        tokio::time::sleep(startup_delay).await;
    }
    let mut connections = JoinSet::new();
    loop {
        match bound.listener().accept().await {
            Ok((stream, peer)) => {
                connections.spawn(handle(stream, peer, site.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "static server: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

enum HeadError {
    TooLarge,
    Closed,
    Io,
}

/// Reads until the blank line ending the head; answers the head's bytes.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_blank_line(&buf[scan_from..]) {
            buf.truncate(scan_from + end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// One response's status and, for a file, what to send.
struct Answer {
    status: u16,
    file: Option<(PathBuf, u64)>,
}

impl Answer {
    fn error(status: u16) -> Self {
        Self { status, file: None }
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, site: Arc<Site>) {
    let started = Instant::now();
    let _open = OpenConnection::new(&site.stats);
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::TooLarge)) => {
            site.stats
                .rx_bytes
                .fetch_add(MAX_HEAD_BYTES as u64, Ordering::Relaxed);
            finish(
                &mut stream,
                peer,
                &site,
                "-",
                Answer::error(431),
                false,
                started,
            )
            .await;
            return;
        }
        Ok(Err(HeadError::Closed | HeadError::Io)) => return,
        Err(_) => {
            finish(
                &mut stream,
                peer,
                &site,
                "-",
                Answer::error(408),
                false,
                started,
            )
            .await;
            return;
        }
    };
    site.stats
        .rx_bytes
        .fetch_add(head.len() as u64, Ordering::Relaxed);
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let answer = if parts.next().is_some() || !version.starts_with("HTTP/1.") || target.is_empty() {
        Answer::error(400)
    } else if method != "GET" && method != "HEAD" {
        Answer::error(405)
    } else {
        resolve(&site.root, target).await
    };
    let is_head = method == "HEAD";
    finish(
        &mut stream,
        peer,
        &site,
        request_line,
        answer,
        is_head,
        started,
    )
    .await;
}

/// Sends the answer, counts it and writes its access-log line.
async fn finish(
    stream: &mut TcpStream,
    peer: SocketAddr,
    site: &Site,
    request_line: &str,
    answer: Answer,
    is_head: bool,
    started: Instant,
) {
    let status = answer.status;
    let sent = match respond(stream, answer, is_head).await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, "static server: response not delivered");
            0
        }
    };
    let _ = stream.shutdown().await;
    site.stats.requests.fetch_add(1, Ordering::Relaxed);
    site.stats.tx_bytes.fetch_add(sent, Ordering::Relaxed);
    let mut line = LogLine::new(
        OutputStream::Stdout,
        format!(
            "{peer} \"{}\" {status} {sent} {:.1}ms",
            printable(request_line),
            started.elapsed().as_secs_f64() * 1000.0
        ),
    )
    .with_source(site.instance.clone());
    line.level = match status {
        500.. => LogLevel::Error,
        400.. => LogLevel::Warn,
        _ => LogLevel::Info,
    };
    site.log.push(line);
}

/// The request line as logged: control characters escaped, length bounded.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LOGGED_TARGET_BYTES) + 8);
    for c in text.chars() {
        if out.len() >= LOGGED_TARGET_BYTES {
            out.push_str("...");
            break;
        }
        if c.is_control() || c == '"' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes status line, headers and (unless HEAD) the body; answers the bytes written.
async fn respond(stream: &mut TcpStream, answer: Answer, is_head: bool) -> io::Result<u64> {
    let status = answer.status;
    let reason = reason(status);
    let (content_type, length, file) = match answer.file {
        Some((path, len)) => (content_type(&path), len, Some(path)),
        None => ("text/plain; charset=utf-8", (reason.len() + 5) as u64, None),
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\nServer: conan-static\r\n"
    );
    if status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut sent = head.len() as u64;
    if is_head {
        return Ok(sent);
    }
    match file {
        Some(path) => {
            let file = tokio::fs::File::open(&path).await?;
            // A file that shrank since its metadata was read ends the body early; the
            // client sees a short body, never more than Content-Length.
            let mut body = file.take(length);
            sent += tokio::io::copy(&mut body, stream).await?;
        }
        None => {
            let body = format!("{status} {reason}\n");
            stream.write_all(body.as_bytes()).await?;
            sent += body.len() as u64;
        }
    }
    stream.flush().await?;
    Ok(sent)
}

/// Maps a request target to a file under `root` (canonical), or to an error status.
async fn resolve(root: &Path, target: &str) -> Answer {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Answer::error(400);
    }
    let Some(decoded) = percent_decode(path) else {
        return Answer::error(400);
    };
    if decoded.contains('\0') {
        return Answer::error(400);
    }
    let candidate = root.join(decoded.trim_start_matches('/'));
    let Ok(mut resolved) = tokio::fs::canonicalize(&candidate).await else {
        return Answer::error(404);
    };
    if !resolved.starts_with(root) {
        return Answer::error(403);
    }
    let Ok(mut meta) = tokio::fs::metadata(&resolved).await else {
        return Answer::error(404);
    };
    if meta.is_dir() {
        let Ok(index) = tokio::fs::canonicalize(resolved.join("index.html")).await else {
            return Answer::error(404);
        };
        if !index.starts_with(root) {
            return Answer::error(403);
        }
        let Ok(index_meta) = tokio::fs::metadata(&index).await else {
            return Answer::error(404);
        };
        resolved = index;
        meta = index_meta;
    }
    if !meta.is_file() {
        return Answer::error(404);
    }
    Answer {
        status: 200,
        file: Some((resolved, meta.len())),
    }
}

/// `%XX` decoding; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// The `Content-Type` of a file, by its extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/%2e%2e/x").as_deref(), Some("/../x"));
        assert_eq!(percent_decode("/%2"), None);
        assert_eq!(percent_decode("/%zz"), None);
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type(Path::new("a/index.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("app.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
    }

    #[test]
    fn blank_line_search() {
        assert_eq!(find_blank_line(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(find_blank_line(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn logged_request_lines_are_printable_and_bounded() {
        assert_eq!(printable("GET /\u{1b}[31m"), "GET /\\u{1b}[31m");
        assert!(printable(&"x".repeat(1000)).len() <= LOGGED_TARGET_BYTES + 3);
    }
}
