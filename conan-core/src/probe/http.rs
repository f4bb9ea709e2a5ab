//! The HTTP probe: one `GET` over a [`TcpStream`], the status line parsed by hand, and
//! an excerpt of the body.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::{
    BODY_EXCERPT_BYTES, DETAIL_EXCERPT_BYTES, MAX_RESPONSE_BYTES, ProbeOutcome, authority, io_text,
    one_line,
};

pub(super) async fn http_probe(
    host: &str,
    port: u16,
    path: &str,
    deadline: Instant,
) -> ProbeOutcome {
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
pub(super) fn parse_status(line: &[u8]) -> Option<u16> {
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
pub(super) fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
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

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
