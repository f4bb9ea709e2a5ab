//! The seam between the [`DeploymentManager`](crate::DeploymentManager) and a traffic layer
//! (a reverse proxy such as `conan-proxy`) that gives every deployment a stable endpoint.
//!
//! The manager tells the traffic layer which instances of which revision serve a
//! deployment ([`Traffic::route`]); the traffic layer answers its own counters per revision
//! ([`Traffic::stats`]). The manager never sees a socket; this crate has no HTTP code.
//!
//! # What the manager does (with [`DeploymentManagerBuilder::traffic`](crate::DeploymentManagerBuilder::traffic))
//!
//! Only for deployments with `endpoint.enabled` (the default):
//!
//! - **deploy** first [`open`](Traffic::open)s the endpoint (the configured
//!   `endpoint.listen`, else one the traffic layer assigns). A refusal (the address is
//!   taken) fails the deploy before anything is started or stored. The address is kept in
//!   [`RuntimeInfo::endpoint`] for the deployment's life, across updates, restarts,
//!   rollbacks and manager restarts ([`recover`](crate::DeploymentManager::recover) opens it
//!   again).
//! - **every status change** sends the routes that status implies ([`Routes::of`]): the
//!   instances of the runtime while `running`, `restarting` or `updating` (the old revision
//!   serves during an update), none otherwise. `Stopping`, `Deploying` and `Restarting`
//!   with no instance ask the traffic layer to *hold* requests ([`Routes::hold`]) rather
//!   than refuse them: something is coming back. A route change waits for the backends it
//!   removes to drain (up to `endpoint.drain_timeout`), so a `stop` reaches the provider
//!   only once in-flight requests finished.
//! - **blue-green update and rollback**: the provider starts the new revision beside the
//!   old one, waits for its readiness gate, then calls
//!   [`OperationContext::cutover`](crate::OperationContext::cutover) with the new runtime:
//!   the manager routes to the new instances only and waits for the old ones to drain. Only then does the provider stop the old instances. A new revision that
//!   fails its gate never reaches `cutover`, so it never serves. (A provider that does not
//!   call `cutover` is switched when its `update` returns, after it stopped the old side:
//!   correct, but not zero-downtime.)
//! - **restart** (also a monitor's heal) of a running deployment calls
//!   [`Provider::replace`](crate::Provider::replace): a fresh instance of the same
//!   revision beside the old one, the same gate and `cutover`. A provider that answers
//!   `NotSupported` is stopped and started, and the traffic layer holds requests meanwhile.
//! - **remove** [`close`](Traffic::close)s the endpoint once the provider removed the
//!   instances.
//!
//! Route changes are made from the deployment's operation queue, so they are ordered like
//! the operations themselves. A traffic layer's error on `route` is logged and does not
//! fail the operation (the instances run; the endpoint is what misbehaves).
//!
//! # Weights
//!
//! Each [`Backend`] carries a weight. A request first picks a revision with probability
//! proportional to the sum of its backends' weights, then, within it, the backend with the
//! fewest requests in flight. The manager sends weight 1 for every instance (so revisions
//! share by instance count); a canary rollout sends other weights through
//! [`Traffic::route`] itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::EndpointConfig;
use crate::error::Result;
use crate::id::{DeploymentId, Revision};
use crate::provider::RuntimeInfo;
use crate::status::StatusKind;

/// One instance a traffic layer may send requests to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Backend {
    /// The provider's instance id (a pid, a container id).
    pub instance: String,
    /// The revision it runs.
    pub revision: Revision,
    /// Where it answers HTTP.
    pub addr: SocketAddr,
    /// Its share of requests (see the module docs); 0 takes it out of rotation.
    pub weight: u32,
}

impl Backend {
    /// A backend of weight 1.
    #[must_use]
    pub fn new(instance: impl Into<String>, revision: Revision, addr: SocketAddr) -> Self {
        Self {
            instance: instance.into(),
            revision,
            addr,
            weight: 1,
        }
    }

    /// The same backend with another weight.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// What a deployment's endpoint forwards to now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Routes {
    /// The serving backends (empty: nothing serves).
    pub backends: Vec<Backend>,
    /// With no backend: hold requests (up to the traffic layer's hold timeout) instead of
    /// answering 503, because instances are coming (a restart, a deploy, a stop that may
    /// be a restart's first half).
    pub hold: bool,
    /// How long requests in flight to a backend this change removes may take.
    pub drain_timeout: Duration,
}

impl Routes {
    /// Routes to `backends`, draining removed ones for up to `drain_timeout`.
    #[must_use]
    pub fn new(backends: Vec<Backend>, drain_timeout: Duration) -> Self {
        Self {
            backends,
            hold: false,
            drain_timeout,
        }
    }

    /// The same routes, holding requests while there is no backend.
    #[must_use]
    pub fn with_hold(mut self, hold: bool) -> Self {
        self.hold = hold;
        self
    }

    /// The routes a deployment in `status` with `runtime` has: its instances while
    /// running, restarting or updating; none otherwise (held while `Stopping`, `Deploying`,
    /// `Restarting`).
    #[must_use]
    pub fn of(
        status: StatusKind,
        runtime: Option<&RuntimeInfo>,
        endpoint: &EndpointConfig,
    ) -> Self {
        let serving = matches!(
            status,
            StatusKind::Running | StatusKind::Restarting | StatusKind::Updating
        );
        let backends = match runtime {
            Some(r) if serving => backends_of(r),
            _ => Vec::new(),
        };
        let hold = matches!(
            status,
            StatusKind::Stopping | StatusKind::Deploying | StatusKind::Restarting
        );
        Self::new(backends, endpoint.drain_timeout).with_hold(hold)
    }
}

/// The backends of a runtime: every instance with a port, on the host of the runtime's URL
/// (default `127.0.0.1`), weight 1.
#[must_use]
pub fn backends_of(runtime: &RuntimeInfo) -> Vec<Backend> {
    let host = runtime
        .url
        .as_deref()
        .and_then(|u| u.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.rsplit_once(':').map(|(host, _)| host))
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .map(|ip| {
            if ip.is_unspecified() {
                [127, 0, 0, 1].into()
            } else {
                ip
            }
        })
        .unwrap_or_else(|| [127, 0, 0, 1].into());
    let url_port = runtime
        .url
        .as_deref()
        .and_then(|u| u.rsplit_once(':'))
        .and_then(|(_, p)| p.trim_end_matches('/').parse::<u16>().ok());
    runtime
        .instances
        .iter()
        .filter_map(|i| {
            let port = i.port.or(url_port)?;
            Some(Backend::new(
                i.id.clone(),
                i.revision,
                SocketAddr::new(host, port),
            ))
        })
        .collect()
}

/// Latency bucket bounds of [`LatencyHistogram`], in seconds (Prometheus' defaults,
/// refined below 5 ms for a local proxy).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Request latency (first byte of the request to the response head), cumulative from the
/// start of the traffic layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LatencyHistogram {
    /// Requests at or below each bound of [`LATENCY_BUCKETS`] (not cumulative: each
    /// counts its own bucket; the last entry counts those above 10 s).
    pub buckets: Vec<u64>,
    /// Sum of all latencies, in seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// A histogram from per-bucket counts (`LATENCY_BUCKETS.len() + 1` of them).
    #[must_use]
    pub fn new(buckets: Vec<u64>, sum_seconds: f64) -> Self {
        let count = buckets.iter().sum();
        Self {
            buckets,
            sum_seconds,
            count,
        }
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in seconds; `None` when
    /// empty. An upper estimate, good to the bucket.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        // Rank of the q-quantile, at least the first observation.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }

    /// The difference `self - earlier` (for a window between two snapshots).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        Self::new(buckets, (self.sum_seconds - earlier.sum_seconds).max(0.0))
    }
}

/// A traffic layer's counters for one revision of one deployment, cumulative.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RevisionTraffic {
    /// The revision.
    pub revision: Revision,
    /// Requests answered (by the app or by the traffic layer for it).
    pub requests: u64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub status_classes: [u64; 5],
    /// 502 and 504 answers the traffic layer made itself (the backend failed to connect,
    /// reset, or timed out); also counted in the 5xx class.
    pub proxy_errors: u64,
    /// Requests sent again to another backend after a connect failure.
    pub retries: u64,
    /// Requests in flight now (upgraded connections included).
    pub in_flight: u64,
    /// Latency of the answered requests.
    pub latency: LatencyHistogram,
}

impl RevisionTraffic {
    /// Counters of `revision`, all zero.
    #[must_use]
    pub fn new(revision: Revision) -> Self {
        Self {
            revision,
            requests: 0,
            status_classes: [0; 5],
            proxy_errors: 0,
            retries: 0,
            in_flight: 0,
            latency: LatencyHistogram::new(vec![0; LATENCY_BUCKETS.len() + 1], 0.0),
        }
    }

    /// Share of 5xx answers among the answered requests (0 when none).
    #[must_use]
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let ratio = self.status_classes[4] as f64 / self.requests as f64;
        ratio
    }

    /// The difference `self - earlier` of the cumulative counters (`in_flight` is
    /// `self`'s).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut classes = [0; 5];
        for (i, c) in classes.iter_mut().enumerate() {
            *c = self.status_classes[i].saturating_sub(earlier.status_classes[i]);
        }
        Self {
            revision: self.revision,
            requests: self.requests.saturating_sub(earlier.requests),
            status_classes: classes,
            proxy_errors: self.proxy_errors.saturating_sub(earlier.proxy_errors),
            retries: self.retries.saturating_sub(earlier.retries),
            in_flight: self.in_flight,
            latency: self.latency.since(&earlier.latency),
        }
    }
}

/// A deployment's endpoint and its counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrafficStats {
    /// The listening address.
    pub endpoint: Option<SocketAddr>,
    /// Whether new requests are held (`conan pause`).
    pub paused: bool,
    /// Whether requests are answered 503 with the maintenance body.
    pub maintenance: bool,
    /// Client connections open now.
    pub connections: u64,
    /// Per revision, oldest first (revisions that served since the traffic layer started).
    pub revisions: Vec<RevisionTraffic>,
}

impl TrafficStats {
    /// The counters of `revision`, if it served.
    #[must_use]
    pub fn revision(&self, revision: Revision) -> Option<&RevisionTraffic> {
        self.revisions.iter().find(|r| r.revision == revision)
    }
}

/// A traffic layer: stable endpoints in front of deployments. See the module docs for
/// when the manager calls each method. Object safe ([`DynTraffic`]).
#[async_trait]
pub trait Traffic: Send + Sync + 'static {
    /// Opens (binds) the endpoint of `deployment` (named `name`), or answers the one it has
    /// open already. The address is `config.listen`, else `kept` (the one the deployment
    /// had before a manager restart), else one the traffic layer assigns. Until routes
    /// arrive the endpoint holds requests.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) at `endpoint.listen` when the
    /// address is taken (naming the holder when it can be found) or cannot be bound; then
    /// nothing is left open.
    async fn open(
        &self,
        deployment: &DeploymentId,
        name: &str,
        config: &EndpointConfig,
        kept: Option<SocketAddr>,
    ) -> Result<SocketAddr>;

    /// Replaces the routes of `deployment`. New requests go to the new backends at once;
    /// returns once the backends no longer listed have no request in flight (or
    /// `routes.drain_timeout` passed, after which their remaining requests and upgraded
    /// connections are cut). A deployment not open is ignored.
    ///
    /// # Errors
    /// Implementation-specific; the manager logs them.
    async fn route(&self, deployment: &DeploymentId, routes: Routes) -> Result<()>;

    /// Closes the endpoint of `deployment` (its listener and client connections). A
    /// deployment not open is ignored.
    async fn close(&self, deployment: &DeploymentId);

    /// The counters of `deployment`, if its endpoint is open.
    fn stats(&self, deployment: &DeploymentId) -> Option<TrafficStats>;
}

/// A shared traffic layer.
pub type DynTraffic = dyn Traffic;

#[async_trait]
impl<T: Traffic + ?Sized> Traffic for Arc<T> {
    async fn open(
        &self,
        deployment: &DeploymentId,
        name: &str,
        config: &EndpointConfig,
        kept: Option<SocketAddr>,
    ) -> Result<SocketAddr> {
        (**self).open(deployment, name, config, kept).await
    }
    async fn route(&self, deployment: &DeploymentId, routes: Routes) -> Result<()> {
        (**self).route(deployment, routes).await
    }
    async fn close(&self, deployment: &DeploymentId) {
        (**self).close(deployment).await;
    }
    fn stats(&self, deployment: &DeploymentId) -> Option<TrafficStats> {
        (**self).stats(deployment)
    }
}

/// What [`OperationContext::cutover`](crate::OperationContext::cutover) calls: set by the
/// manager for `update`, `deploy` and `replace` calls when the deployment has an endpoint.
#[derive(Clone)]
pub struct Cutover {
    switch: Arc<dyn Fn(RuntimeInfo) -> BoxFuture<'static, ()> + Send + Sync>,
}

impl std::fmt::Debug for Cutover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cutover")
    }
}

impl Cutover {
    /// A cutover that runs `switch` with the new runtime.
    #[must_use]
    pub fn new(
        switch: impl Fn(RuntimeInfo) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            switch: Arc::new(switch),
        }
    }

    /// Routes to `runtime`'s instances and waits for the replaced ones to drain.
    pub async fn run(&self, runtime: RuntimeInfo) {
        (self.switch)(runtime).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::InstanceInfo;

    fn _object_safe(_: &DynTraffic) {}

    #[test]
    fn backends_come_from_instances_on_the_url_host() {
        let rt = RuntimeInfo::new()
            .with_url("http://0.0.0.0:4000")
            .with_instance(InstanceInfo::new("1", Revision(2)).with_port(Some(4001)))
            .with_instance(InstanceInfo::new("2", Revision(2)));
        let b = backends_of(&rt);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].addr, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(b[1].addr, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(b[0].revision, Revision(2));
    }

    #[test]
    fn routes_follow_the_status() {
        let rt = RuntimeInfo::new()
            .with_instance(InstanceInfo::new("1", Revision(1)).with_port(Some(4001)));
        let ep = EndpointConfig::default();
        assert_eq!(
            Routes::of(StatusKind::Running, Some(&rt), &ep)
                .backends
                .len(),
            1
        );
        assert_eq!(
            Routes::of(StatusKind::Updating, Some(&rt), &ep)
                .backends
                .len(),
            1
        );
        let stopping = Routes::of(StatusKind::Stopping, Some(&rt), &ep);
        assert!(stopping.backends.is_empty() && stopping.hold);
        let failed = Routes::of(StatusKind::Failed, Some(&rt), &ep);
        assert!(failed.backends.is_empty() && !failed.hold);
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        buckets[1] = 90; // <= 1 ms
        buckets[5] = 10; // <= 25 ms
        let h = LatencyHistogram::new(buckets, 0.5);
        assert_eq!(h.quantile(0.5), Some(0.001));
        assert_eq!(h.quantile(0.95), Some(0.025));
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
        let r = RevisionTraffic {
            requests: 10,
            status_classes: [0, 8, 0, 0, 2],
            ..RevisionTraffic::new(Revision(1))
        };
        assert!((r.error_ratio() - 0.2).abs() < 1e-9);
        assert_eq!(r.since(&r).requests, 0);
    }
}
