//! Unit tests of the probes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::http::{dechunk, find, parse_status};
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

/// Issue 10, finding 2: a timeout too large for the clock panicked ("overflow when adding
/// duration to instant") in the supervisor's task.
#[tokio::test]
async fn a_timeout_too_large_for_the_clock_does_not_panic() {
    let (port, _) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let r = http(port, "/").run(Duration::MAX).await;
    assert!(r.is_healthy(), "{r:?}");
}
