//! `GET /metrics`: the Prometheus exposition ([`conan::monitor::exporter`]) on its own TCP
//! listener at `metrics_addr` (`CONAN_METRICS_ADDR`; off by default), apart from the API's
//! Unix socket so a Prometheus server can scrape it without access to the API.
//!
//! The listener runs the API's accept loop ([`super::server::serve_with`]): the same
//! accept backoff and header timeout, at most 64 connections at once. It answers only
//! `GET`/`HEAD /metrics` (`405` for other methods, `404` elsewhere) and never reads a
//! body. A bind failure does not stop the daemon: it is logged and shown by
//! `conan daemon status`.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::http::Body;
use super::server::{Limits, serve_with};
use conan::monitor::Monitor;

/// The most scrapes served at once.
const MAX_CONNECTIONS: usize = 64;

/// Binds `addr`; the error says what to change.
///
/// # Errors
/// Why it cannot listen there, as one line for `daemon.log` and `conan daemon status`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!(
            "cannot serve /metrics on {addr}: {e} (set another metrics_addr in daemon.toml or CONAN_METRICS_ADDR, or `off`)"
        )
    })
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, monitor: Monitor, limits: Limits) {
    let limits = Limits {
        max_connections: limits.max_connections.min(MAX_CONNECTIONS),
        ..limits
    };
    serve_with(&listener, limits, std::future::pending(), move |req| {
        let answer = handle(&monitor, &req);
        async move { answer }
    })
    .await;
}

fn handle(monitor: &Monitor, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    match *req.method() {
        Method::GET | Method::HEAD => {
            let body = monitor.render_prometheus();
            let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(conan::monitor::exporter::CONTENT_TYPE),
            );
            response
        }
        _ => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
