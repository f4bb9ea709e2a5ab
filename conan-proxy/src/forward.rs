//! The request path: maintenance and pause, picking a backend, forwarding with streamed
//! bodies through the shared connection pool, one retry on a failed connect, upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::Shared;
use crate::headers::{is_upgrade, set_forwarded, strip_hop_by_hop};
use crate::pool::{Link, Pool, SendFailure};
use crate::retry::{AttemptFailure, may_retry};
use crate::site::{InFlight, RouteSet, Site, read_lock};

/// A request body as sent to a backend: the client's, streamed, or none (a retry).
pub(crate) enum RequestBody {
    Client(Incoming),
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Client(b) => Pin::new(b).poll_frame(cx),
            Self::Empty => Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Client(b) => b.is_end_stream(),
            Self::Empty => true,
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Client(b) => b.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A response body as sent to the client: the backend's, streamed, counting as in flight
/// until its end; or one the proxy made.
pub enum ResponseBody {
    /// Streamed from a backend.
    Backend {
        /// The backend's body.
        body: Incoming,
        /// Released at the end of the body.
        guard: Option<InFlightGuard>,
        /// The pooled connection the body comes over: driven while the body streams,
        /// given back to the pool at its end (closed if the body ends early).
        lease: Option<Lease>,
    },
    /// Made by the proxy.
    Own(Option<Bytes>),
}

/// Keeps a request counted in flight (opaque).
pub struct InFlightGuard(#[allow(dead_code)] pub(crate) InFlight);

/// A pooled backend connection lent to a response body (opaque).
pub struct Lease {
    link: Link,
    pool: Arc<Pool>,
}

impl Lease {
    fn give_back(self) {
        self.pool.put(self.link);
    }
}

impl ResponseBody {
    fn own(text: impl Into<Bytes>) -> Self {
        Self::Own(Some(text.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Backend { body, guard, lease } => {
                if let Some(lease) = lease {
                    lease.link.drive(cx);
                }
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        guard.take();
                        if let Some(lease) = lease.take() {
                            lease.give_back();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        guard.take();
                        lease.take();
                    }
                    _ => {}
                }
                polled
            }
            Self::Own(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Backend { body, .. } => body.is_end_stream(),
            Self::Own(b) => b.is_none(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Backend { body, .. } => body.size_hint(),
            Self::Own(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body the server did not read to its end because it knew it was over (a
        // `Content-Length` reached, a bodiless status) leaves its connection reusable.
        if let Self::Backend { body, lease, .. } = self
            && body.is_end_stream()
            && let Some(lease) = lease.take()
        {
            lease.give_back();
        }
    }
}

/// What a client connection remembers.
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    /// The site's epoch when the connection opened.
    pub(crate) epoch: u64,
}

pub(crate) fn proxy_answer(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::own(text));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut()
        .insert("x-conan-proxy", HeaderValue::from_static("1"));
    res
}

/// Handles one client request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    site: Arc<Site>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let mut res = serve(&shared, &site, &conn, req).await;
    if site.epoch.load(Ordering::Acquire) > conn.epoch {
        // The backends this connection may have been used with drained: end it gracefully.
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(res)
}

async fn serve(
    shared: &Arc<Shared>,
    site: &Arc<Site>,
    conn: &Conn,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    if site.in_maintenance.load(Ordering::Acquire)
        && let Some(body) = read_lock(&site.maintenance).clone()
    {
        let mut res = Response::new(ResponseBody::Own(Some(body.clone())));
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let html = body.first() == Some(&b'<');
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(if html {
                "text/html; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            }),
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        res.headers_mut()
            .insert("x-conan-proxy", HeaderValue::from_static("maintenance"));
        return res;
    }
    let routes = match wait_for_routes(shared, site).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Some(first) = site.pick(&routes, None) else {
        return proxy_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("conan-proxy: no instance of '{}' is serving\n", site.name),
        );
    };
    if is_upgrade(req.headers()) {
        let client_upgrade = hyper::upgrade::on(&mut req);
        return crate::upgrade::forward(shared, site, conn, req, client_upgrade, first, start)
            .await;
    }
    let (mut parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers, false);
    set_forwarded(&mut parts.headers, conn.peer.ip(), host.as_ref());
    parts.version = hyper::Version::HTTP_11;
    to_origin_form(&mut parts.uri);
    // Kept only when a retry is possible at all (another instance, an idempotent
    // bodiless request).
    let others = routes.backends.len().saturating_sub(1);
    let spare = may_retry(&parts.method, has_body, AttemptFailure::Connect, 1, others)
        .then(|| (parts.method.clone(), parts.headers.clone()));
    let mut body = Some(RequestBody::Client(body));
    let mut head = Some(parts);
    let mut live = first;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let guard = InFlight::new(live.clone());
        let Some(parts) = head.take() else {
            return proxy_answer(StatusCode::INTERNAL_SERVER_ERROR, String::new());
        };
        let mut parts = parts;
        if !parts.headers.contains_key(header::HOST) {
            // An HTTP/1.0 client may send none; HTTP/1.1 requires one.
            if let Ok(v) = HeaderValue::from_str(&live.backend.addr.to_string()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        let out = Request::from_parts(parts, body.take().unwrap_or(RequestBody::Empty));
        let sent = tokio::time::timeout(
            shared.settings.header_timeout,
            shared.pool.send(live.backend.addr, out),
        )
        .await;
        let failure = match sent {
            Ok(Ok((res, link))) => {
                let (mut head, incoming) = res.into_parts();
                strip_hop_by_hop(&mut head.headers, false);
                live.counters
                    .answered(head.status.as_u16(), start.elapsed(), false);
                return Response::from_parts(
                    head,
                    ResponseBody::Backend {
                        body: incoming,
                        guard: Some(InFlightGuard(guard)),
                        lease: Some(Lease {
                            link,
                            pool: shared.pool.clone(),
                        }),
                    },
                );
            }
            Ok(Err(SendFailure::Connect(why))) => (AttemptFailure::Connect, why),
            Ok(Err(SendFailure::AfterSend(why))) => (AttemptFailure::AfterSend, why),
            Err(_) => (AttemptFailure::Timeout, String::new()),
        };
        drop(guard);
        if let Some((method, headers)) = &spare
            && may_retry(method, false, failure.0, attempts, others)
            && let Some(next) = site.pick(&routes, Some(&live))
        {
            tracing::debug!(deployment = %site.id, from = %live.backend.addr, to = %next.backend.addr, error = %failure.1, "the instance failed before answering; retrying on another instance");
            live.counters.retried();
            let mut again = Request::new(());
            *again.method_mut() = method.clone();
            *again.headers_mut() = headers.clone();
            head = Some(again.into_parts().0);
            live = next;
            continue;
        }
        let (status, text) = match failure.0 {
            AttemptFailure::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "conan-proxy: instance {} of '{}' ({}) sent no response within {}\n",
                    live.backend.instance,
                    site.name,
                    live.backend.addr,
                    conan_core::time::format_duration(shared.settings.header_timeout)
                ),
            ),
            AttemptFailure::Connect => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "conan-proxy: cannot connect to instance {} of '{}' ({}): {}\n",
                    live.backend.instance, site.name, live.backend.addr, failure.1
                ),
            ),
            AttemptFailure::AfterSend => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "conan-proxy: instance {} of '{}' ({}) failed before answering: {}\n",
                    live.backend.instance, site.name, live.backend.addr, failure.1
                ),
            ),
        };
        tracing::warn!(deployment = %site.id, backend = %live.backend.addr, %status, error = %failure.1, "proxy error");
        live.counters
            .answered(status.as_u16(), start.elapsed(), true);
        return proxy_answer(status, text);
    }
}

/// Makes `uri` origin-form (`/path?query`), as a request to a backend is sent: a client
/// may have sent absolute-form (`http://host/path`) to the proxy.
pub(crate) fn to_origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *uri = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
}

/// The error and its causes on one line.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Waits while the site is paused, or has no backend but expects one (`hold`), up to the
/// pause's or the hold timeout. Answers the routes to use, or the response to give.
async fn wait_for_routes(
    shared: &Shared,
    site: &Site,
) -> Result<Arc<RouteSet>, Response<ResponseBody>> {
    let routes = site.routes();
    if !site.is_paused.load(Ordering::Acquire) && (!routes.backends.is_empty() || !routes.hold) {
        return Ok(routes);
    }
    let mut rx = site.changed.subscribe();
    let started = tokio::time::Instant::now();
    loop {
        let paused = *read_lock(&site.paused);
        let routes = site.routes();
        let limit = match paused {
            Some(p) => p.timeout,
            None if routes.backends.is_empty() && routes.hold => shared.settings.hold_timeout,
            None => return Ok(routes),
        };
        let deadline = started + limit;
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            let why = if paused.is_some() {
                "is paused"
            } else {
                "has no instance ready"
            };
            return Err(proxy_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "conan-proxy: '{}' {why}; gave up after {}\n",
                    site.name,
                    conan_core::time::format_duration(limit)
                ),
            ));
        }
        if site.close.is_cancelled() {
            return Err(proxy_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("conan-proxy: '{}' is closing\n", site.name),
            ));
        }
    }
}

pub(crate) fn io<T>(t: T) -> TokioIo<T> {
    TokioIo::new(t)
}
