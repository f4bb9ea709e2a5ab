//! `Upgrade` requests (WebSocket and others): forwarded on a connection of their own
//! (never the pool's), and on `101 Switching Protocols` both upgraded connections are
//! spliced until either side closes. The spliced pair counts as in flight to its backend,
//! so a drain waits for it (up to `drain_timeout`; after that the backend is stopped,
//! which ends it).

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};

use crate::Shared;
use crate::forward::{
    Conn, InFlightGuard, RequestBody, ResponseBody, error_text, io, proxy_answer,
};
use crate::headers::{set_forwarded, strip_hop_by_hop};
use crate::site::{InFlight, Live, Site};

pub(crate) async fn forward(
    shared: &Arc<Shared>,
    site: &Arc<Site>,
    conn: &Conn,
    req: Request<Incoming>,
    client_upgrade: OnUpgrade,
    live: Arc<Live>,
    start: Instant,
) -> Response<ResponseBody> {
    let guard = InFlight::new(live.clone());
    let addr = live.backend.addr;
    let fail = |status: StatusCode, what: String| {
        tracing::warn!(deployment = %site.id, backend = %addr, %status, error = %what, "upgrade failed");
        live.counters
            .answered(status.as_u16(), start.elapsed(), true);
        proxy_answer(
            status,
            format!(
                "conan-proxy: upgrade to instance {} of '{}' ({addr}) failed: {what}\n",
                live.backend.instance, site.name
            ),
        )
    };
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers, true);
    set_forwarded(&mut parts.headers, conn.peer.ip(), host.as_ref());
    let stream = match tokio::time::timeout(
        shared.settings.connect_timeout,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(StatusCode::BAD_GATEWAY, format!("cannot connect: {e}")),
        Err(_) => return fail(StatusCode::GATEWAY_TIMEOUT, "connect timed out".into()),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(io(stream)).await {
        Ok(pair) => pair,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, error_text(&e)),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade connection to a backend ended");
        }
    });
    let mut out = Request::from_parts(parts, RequestBody::Client(body));
    crate::forward::to_origin_form(out.uri_mut());
    let mut res = match tokio::time::timeout(
        shared.settings.header_timeout,
        sender.send_request(out),
    )
    .await
    {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => return fail(StatusCode::BAD_GATEWAY, error_text(&e)),
        Err(_) => return fail(StatusCode::GATEWAY_TIMEOUT, "no response".into()),
    };
    live.counters
        .answered(res.status().as_u16(), start.elapsed(), false);
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut head, incoming) = res.into_parts();
        strip_hop_by_hop(&mut head.headers, false);
        return Response::from_parts(
            head,
            ResponseBody::Backend {
                body: incoming,
                guard: Some(InFlightGuard(guard)),
                lease: None,
            },
        );
    }
    let backend_upgrade = hyper::upgrade::on(&mut res);
    let (head, _) = res.into_parts();
    let closing = site.close.clone();
    let id = site.id.clone();
    tokio::spawn(async move {
        let _in_flight = guard;
        let (client, backend) = tokio::join!(client_upgrade, backend_upgrade);
        let (Ok(client), Ok(backend)) = (client, backend) else {
            tracing::debug!(deployment = %id, "an upgrade did not complete");
            return;
        };
        let (mut client, mut backend) = (io(client), io(backend));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                if let Err(e) = r {
                    tracing::debug!(deployment = %id, error = %e, "an upgraded connection ended");
                }
            }
            () = closing.cancelled() => {}
        }
    });
    Response::from_parts(head, ResponseBody::Own(None))
}
