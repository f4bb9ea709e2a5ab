//! A webhook POST over plain HTTP/1.1 with hyper's connection API: one connection per
//! attempt (notifications are rare), no redirects, no TLS (see [`check_url`]).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;

use super::rules::Webhook;

/// How much of a response body is read (to log a receiver's complaint).
const BODY_LIMIT: usize = 512;

/// Why a URL cannot be posted to.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    parse(url).map(drop)
}

struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn parse(url: &str) -> Result<Target, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("the url needs a scheme, like http://127.0.0.1:9000/hook".to_owned());
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {}
        "https" => {
            return Err(
                "https is not supported (Conan posts plain http; put a local TLS proxy such as nginx in front of the receiver)"
                    .to_owned(),
            );
        }
        other => return Err(format!("scheme `{other}` is not supported (use http)")),
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err("user info in the url is not supported (use `headers`)".to_owned());
    }
    if authority.is_empty() {
        return Err("the url has no host".to_owned());
    }
    let bad_port = || "the url's port is not a number".to_owned();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "the url's IPv6 address lacks its `]`".to_owned())?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad_port())?,
            None if after.is_empty() => 80,
            None => return Err(bad_port()),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, p)) => (host.to_owned(), p.parse::<u16>().map_err(|_| bad_port())?),
            None => (authority.to_owned(), 80),
        }
    };
    let path = if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok(Target {
        host,
        port,
        authority: authority.to_owned(),
        path,
    })
}

/// POSTs `body` (JSON) to `hook`; `Ok` for a 2xx answer. The error never contains the URL
/// or a header value.
pub(crate) async fn post(hook: &Webhook, body: String) -> Result<(), String> {
    match tokio::time::timeout(hook.timeout, send(hook, body)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            conan_core::time::format_duration(hook.timeout)
        )),
    }
}

async fn send(hook: &Webhook, body: String) -> Result<(), String> {
    let target = parse(&hook.url)?;
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::post(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("conan-monitor/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    for (name, value) in &hook.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("header name `{name}` is not valid"))?;
        let mut value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("the value of header `{name}` is not valid"))?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
    }
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // A short piece of the answer helps whoever reads the log.
        let mut body = response.into_body();
        let mut text = Vec::new();
        while text.len() < BODY_LIMIT {
            match tokio::time::timeout(Duration::from_secs(1), body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        text.extend_from_slice(data);
                    }
                }
                _ => break,
            }
        }
        text.truncate(BODY_LIMIT);
        let text = String::from_utf8_lossy(&text);
        let text = text.trim();
        Err(if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let t = parse("http://127.0.0.1:9000/hooks/a?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9000));
        assert_eq!(t.path, "/hooks/a?x=1");
        let t = parse("http://example.test").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.test", 80, "/")
        );
        let t = parse("http://[::1]:8080/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        let t = parse("http://[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert!(
            check_url("https://x/")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(check_url("ftp://x/").is_err());
        assert!(check_url("127.0.0.1:9000").is_err());
        assert!(
            check_url("http://u:p@x/")
                .unwrap_err()
                .contains("user info")
        );
        assert!(check_url("http://x:port/").is_err());
    }
}
