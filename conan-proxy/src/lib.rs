//! # conan-proxy
//!
//! A reverse proxy that gives every deployment a stable endpoint, and the traffic layer
//! of a [`DeploymentManager`](conan_core::DeploymentManager) (it implements
//! [`Traffic`]; see [`conan_core::traffic`] for what the manager tells it and when).
//!
//! ```no_run
//! use conan_core::{DeploymentConfig, DeploymentManager};
//! use conan_proxy::Proxy;
//! # async fn run(provider: impl conan_core::Provider) -> conan_core::Result<()> {
//! let proxy = Proxy::new(Default::default())?;
//! let manager = DeploymentManager::builder()
//!     .provider(provider)
//!     .traffic(proxy.clone())
//!     .build()
//!     .await?;
//! let config = DeploymentConfig::builder("web")
//!     .listen("127.0.0.1:8080".parse().unwrap())
//!     .build()?;
//! manager.deploy(config).await?; // http://127.0.0.1:8080 answers, across updates
//! # Ok(()) }
//! ```
//!
//! # What it does
//!
//! - **HTTP/1.1** on both sides (hyper), keep-alive to clients and pooled keep-alive
//!   connections to each backend, bodies streamed both ways (never buffered), trailers
//!   passed. A backend connection is driven by the request that uses it (no task of its
//!   own), and one idle for 4 s is closed, below Node's 5 s `keepAliveTimeout`.
//! - **Upgrades** (WebSocket, anything with `Connection: upgrade`) on a connection of
//!   their own, spliced after `101`.
//! - **Headers**: hop-by-hop fields removed both ways, with every field `Connection`
//!   names (RFC 9110 §7.6.1); `X-Forwarded-For` appended, `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` set unless a proxy before us set them; `Host` passed unchanged.
//! - **Timeouts**, each answered clearly: connecting to a backend (`connect_timeout`, 502
//!   naming the instance), its response head (`header_timeout`, 504), a client's idle
//!   keep-alive connection or slow request head (`idle_timeout`: closed).
//! - **One retry** on another instance, only after a failed connect of an idempotent
//!   request without a body (see [`retry`]).
//! - **Balancing**: a revision by weight, then the instance with the fewest requests in
//!   flight (ties in rotation).
//! - **Drain**: a route change takes removed backends out of rotation at once and waits
//!   for their in-flight requests (and upgraded connections) up to `drain_timeout`.
//!   Client connections are not bound to a backend (each request is routed on its own),
//!   but every client connection that was open when backends were removed gets
//!   `Connection: close` on its next response, so clients reconnect after a switch.
//! - **Holding**: while a deployment has no backend but one is coming (a restart that
//!   stops before it starts, a first deploy), and while it is paused
//!   ([`Proxy::pause`]), requests wait (up to `hold_timeout`, or the pause's timeout), then
//!   go on or get 503. Maintenance ([`Proxy::maintenance`]) answers 503 with a body.
//! - **Counters** per deployment and revision ([`Traffic::stats`]): requests, status
//!   classes, the proxy's own 502/504, retries, in flight, a latency histogram.
//!
//! Responses the proxy makes itself carry `x-conan-proxy`, so a client can tell them from
//! the app's.

mod forward;
pub mod headers;
mod holder;
mod pool;
pub mod retry;
mod site;
mod stats;
mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use conan_core::config::ConfigProblem;
use conan_core::traffic::{Routes, Traffic, TrafficStats};
use conan_core::{DeploymentId, EndpointConfig, Error, Result};
use hyper_util::rt::TokioTimer;
use serde::Deserialize;

pub use forward::ResponseBody;
pub use holder::holder_of;

use forward::Conn;
use pool::Pool;
use site::{Pause, Site, write};

/// The proxy's settings (`[proxy]` in the daemon's `daemon.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// The address assigned endpoints listen on (default `127.0.0.1`).
    pub host: IpAddr,
    /// The ports assigned endpoints come from (default 18000–18999), as `"18000-18999"`.
    #[serde(deserialize_with = "de_range")]
    pub port_range: RangeInclusive<u16>,
    /// Connecting to a backend (default 5 s): a 502 after it.
    #[serde(with = "conan_core::time::serde_duration")]
    pub connect_timeout: Duration,
    /// A backend's response head (default 60 s, like nginx's `proxy_read_timeout`): a
    /// 504 after it.
    #[serde(with = "conan_core::time::serde_duration")]
    pub header_timeout: Duration,
    /// A client connection idle between requests, or slow to send a request head
    /// (default 60 s): closed after it.
    #[serde(with = "conan_core::time::serde_duration")]
    pub idle_timeout: Duration,
    /// How long a request waits while the deployment has no instance but one is coming
    /// (default 30 s): a 503 after it.
    #[serde(with = "conan_core::time::serde_duration")]
    pub hold_timeout: Duration,
    /// Idle keep-alive connections kept per backend (default 64).
    pub pool_idle_per_backend: usize,
}

fn de_range<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<RangeInclusive<u16>, D::Error> {
    let text = String::deserialize(d)?;
    parse_range(&text).map_err(serde::de::Error::custom)
}

/// Parses `"18000-18999"`.
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_range(text: &str) -> std::result::Result<RangeInclusive<u16>, String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("expected FIRST-LAST, like 18000-18999 (got '{text}')"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("'{a}' is not a port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("'{b}' is not a port"))?;
    if a == 0 || b < a {
        return Err(format!("'{text}' is empty or starts at 0"));
    }
    Ok(a..=b)
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port_range: 18000..=18999,
            connect_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(30),
            pool_idle_per_backend: 64,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) settings: ProxySettings,
    pub(crate) pool: Arc<pool::Pool>,
    sites: Mutex<foldhash::HashMap<DeploymentId, Arc<Site>>>,
}

/// The reverse proxy. Cheap to clone; its tasks run on the Tokio runtime that calls
/// [`Traffic::open`].
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("settings", &self.shared.settings)
            .field("endpoints", &self.sites().len())
            .finish()
    }
}

impl Proxy {
    /// A proxy with `settings`, no endpoint open yet.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty port range.
    pub fn new(settings: ProxySettings) -> Result<Self> {
        if settings.port_range.is_empty() || *settings.port_range.start() == 0 {
            return Err(Error::InvalidConfig {
                problems: vec![ConfigProblem::new(
                    "proxy.port_range",
                    "must be a non-empty range of ports above 0",
                )],
            });
        }
        let pool = Pool::new(settings.pool_idle_per_backend, settings.connect_timeout);
        Ok(Self {
            shared: Arc::new(Shared {
                settings,
                pool,
                sites: Mutex::new(foldhash::HashMap::default()),
            }),
        })
    }

    fn sites(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<DeploymentId, Arc<Site>>> {
        self.shared
            .sites
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn site(&self, deployment: &DeploymentId) -> Result<Arc<Site>> {
        self.sites()
            .get(deployment)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: "endpoint",
                id: deployment.to_string(),
            })
    }

    /// The endpoints open now: deployment, listening address.
    #[must_use]
    pub fn endpoints(&self) -> Vec<(DeploymentId, SocketAddr)> {
        self.sites()
            .values()
            .map(|s| (s.id.clone(), s.addr))
            .collect()
    }

    /// Holds new requests of `deployment` (each up to `timeout`, then 503) until
    /// [`resume`](Self::resume). Requests in flight go on.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it has no endpoint.
    pub fn pause(&self, deployment: &DeploymentId, timeout: Duration) -> Result<()> {
        let site = self.site(deployment)?;
        *write(&site.paused) = Some(Pause { timeout });
        site.is_paused.store(true, Ordering::Release);
        site.notify();
        tracing::info!(deployment = %deployment, ?timeout, "endpoint paused");
        Ok(())
    }

    /// Releases the requests held by [`pause`](Self::pause).
    ///
    /// # Errors
    /// [`Error::NotFound`] when it has no endpoint.
    pub fn resume(&self, deployment: &DeploymentId) -> Result<()> {
        let site = self.site(deployment)?;
        *write(&site.paused) = None;
        site.is_paused.store(false, Ordering::Release);
        site.notify();
        tracing::info!(deployment = %deployment, "endpoint resumed");
        Ok(())
    }

    /// Maintenance mode: with `Some(body)` every request of `deployment` is answered 503
    /// with `body` (as HTML when it starts with `<`, else plain text) and `Retry-After:
    /// 30`; `None` ends it.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it has no endpoint.
    pub fn maintenance(&self, deployment: &DeploymentId, body: Option<Bytes>) -> Result<()> {
        let site = self.site(deployment)?;
        let on = body.is_some();
        *write(&site.maintenance) = body;
        site.in_maintenance.store(on, Ordering::Release);
        site.notify();
        tracing::info!(deployment = %deployment, on, "maintenance mode");
        Ok(())
    }

    fn bind(
        &self,
        deployment: &DeploymentId,
        config: &EndpointConfig,
        want: Option<SocketAddr>,
    ) -> Result<std::net::TcpListener> {
        // A port that is taken (or not ours to bind) is the config's problem; any other
        // failure (no file descriptor left, no memory) is the machine's, and says so.
        let config_problem = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::AddrInUse
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::PermissionDenied
            )
        };
        let failed = |addr: SocketAddr, e: std::io::Error| {
            if !config_problem(&e) {
                return Error::provider_with_source(
                    "proxy",
                    format!("cannot listen on {addr}"),
                    true,
                    e,
                );
            }
            let field = if config.listen.is_some() {
                "endpoint.listen"
            } else {
                "endpoint"
            };
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "{addr} is in use by {}",
                    holder_of(addr).unwrap_or_else(|| "another process".to_owned())
                )
            } else {
                format!("cannot listen on {addr}: {e}")
            };
            Error::InvalidConfig {
                problems: vec![ConfigProblem::new(field, why)],
            }
        };
        if let Some(addr) = want {
            return std::net::TcpListener::bind(addr).map_err(|e| failed(addr, e));
        }
        let used: Vec<u16> = self.sites().values().map(|s| s.addr.port()).collect();
        let range = self.shared.settings.port_range.clone();
        let len = u32::from(*range.end() - *range.start()) + 1;
        // Start at a spot derived from the id, so assignments spread without a scan from
        // the bottom each time.
        let offset = deployment
            .as_str()
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % len;
        for i in 0..len {
            let Ok(port) = u16::try_from(u32::from(*range.start()) + (offset + i) % len) else {
                continue;
            };
            if used.contains(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.shared.settings.host, port);
            match std::net::TcpListener::bind(addr) {
                Ok(l) => return Ok(l),
                Err(e) if config_problem(&e) => {}
                Err(e) => return Err(failed(addr, e)),
            }
        }
        Err(Error::InvalidConfig {
            problems: vec![ConfigProblem::new(
                "endpoint",
                format!(
                    "no free port left in the proxy's range {}-{}; set endpoint.listen or widen proxy.port_range",
                    range.start(),
                    range.end()
                ),
            )],
        })
    }

    fn serve(&self, site: Arc<Site>, listener: std::net::TcpListener) -> Result<()> {
        let setup = |e: std::io::Error| {
            Error::provider_with_source("proxy", format!("cannot set up {}", site.addr), true, e)
        };
        listener.set_nonblocking(true).map_err(setup)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(setup)?;
        let shared = self.shared.clone();
        tokio::spawn(accept_loop(shared, site, listener));
        Ok(())
    }
}

async fn accept_loop(shared: Arc<Shared>, site: Arc<Site>, listener: tokio::net::TcpListener) {
    tracing::info!(deployment = %site.id, addr = %site.addr, "endpoint open");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = site.close.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(deployment = %site.id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(shared.clone(), site.clone(), stream, peer));
    }
    tracing::info!(deployment = %site.id, addr = %site.addr, "endpoint closed");
}

async fn connection(
    shared: Arc<Shared>,
    site: Arc<Site>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    site.connections.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(Conn {
        peer,
        epoch: site.epoch.load(Ordering::Acquire),
    });
    let service = {
        let (shared, site) = (shared.clone(), site.clone());
        hyper::service::service_fn(move |req| {
            forward::handle(shared.clone(), site.clone(), conn.clone(), req)
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.settings.idle_timeout)
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        () = site.close.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(deployment = %site.id, %peer, error = %e, "client connection ended");
    }
    site.connections.fetch_sub(1, Ordering::Relaxed);
}

#[async_trait]
impl Traffic for Proxy {
    async fn open(
        &self,
        deployment: &DeploymentId,
        name: &str,
        config: &EndpointConfig,
        kept: Option<SocketAddr>,
    ) -> Result<SocketAddr> {
        let want = config.listen.or(kept);
        let existing = self.sites().get(deployment).cloned();
        if let Some(site) = &existing
            && want.is_none_or(|w| w == site.addr)
        {
            return Ok(site.addr);
        }
        let listener = self.bind(deployment, config, want)?;
        let addr = listener.local_addr().map_err(|e| {
            Error::provider(
                "proxy",
                format!("cannot read the bound address: {e}"),
                false,
            )
        })?;
        let site = Arc::new(match &existing {
            Some(old) => old.moved(addr),
            None => Site::new(deployment.clone(), name.to_owned(), addr),
        });
        self.serve(site.clone(), listener)?;
        if let Some(old) = self.sites().insert(deployment.clone(), site) {
            old.close.cancel();
        }
        Ok(addr)
    }

    async fn route(&self, deployment: &DeploymentId, routes: Routes) -> Result<()> {
        let Some(site) = self.sites().get(deployment).cloned() else {
            return Ok(());
        };
        let removed = site.set_routes(&routes);
        if removed.is_empty() {
            return Ok(());
        }
        tracing::debug!(deployment = %deployment, removed = removed.len(), "draining");
        let left = site::drain(&removed, routes.drain_timeout).await;
        if left > 0 {
            tracing::warn!(deployment = %deployment, in_flight = left, timeout = ?routes.drain_timeout, "drain timed out; the rest is cut when the instances stop");
        }
        Ok(())
    }

    async fn close(&self, deployment: &DeploymentId) {
        if let Some(site) = self.sites().remove(deployment) {
            site.close.cancel();
            site.notify();
        }
    }

    fn stats(&self, deployment: &DeploymentId) -> Option<TrafficStats> {
        self.sites().get(deployment).map(|s| s.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_settings_read_from_toml() {
        assert_eq!(parse_range("18000-18999").unwrap(), 18000..=18999);
        assert!(parse_range("2-1").is_err());
        assert!(parse_range("x").is_err());
        let s: ProxySettings =
            toml::from_str("port_range = \"20000-20010\"\nhold_timeout = \"5s\"\n").unwrap();
        assert_eq!(s.port_range, 20000..=20010);
        assert_eq!(s.hold_timeout, Duration::from_secs(5));
    }
}
