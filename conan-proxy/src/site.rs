//! One deployment's endpoint: its routes (the live backends with their in-flight
//! counts), pause and maintenance state, and counters. The request path reads it with
//! one lock-free-ish snapshot (an `Arc` clone under a read lock).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use conan_core::traffic::{Backend, Routes, TrafficStats};
use conan_core::{DeploymentId, Revision};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::stats::RevisionCounters;

/// A backend as the proxy routes to it: its in-flight count survives route changes that
/// keep it.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) backend: Backend,
    pub(crate) weight: AtomicU32,
    pub(crate) in_flight: AtomicU64,
    pub(crate) counters: Arc<RevisionCounters>,
    /// Notified when `in_flight` drops to zero.
    pub(crate) idle: Notify,
}

impl Live {
    fn same(&self, b: &Backend) -> bool {
        self.backend.instance == b.instance
            && self.backend.addr == b.addr
            && self.backend.revision == b.revision
    }
}

/// Counts a request (or an upgraded connection) in flight to a backend until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) live: Arc<Live>,
}

impl InFlight {
    pub(crate) fn new(live: Arc<Live>) -> Self {
        live.in_flight.fetch_add(1, Ordering::AcqRel);
        live.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { live }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.live.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.live.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.live.idle.notify_waiters();
        }
    }
}

/// The routes as the request path sees them.
#[derive(Debug, Default)]
pub(crate) struct RouteSet {
    pub(crate) backends: Vec<Arc<Live>>,
    pub(crate) hold: bool,
}

/// Pause state: held requests wait up to `timeout` each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pause {
    pub(crate) timeout: Duration,
}

/// One deployment's endpoint.
#[derive(Debug)]
pub(crate) struct Site {
    pub(crate) id: DeploymentId,
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    routes: RwLock<Arc<RouteSet>>,
    /// Bumped on every change a held request may wait for (routes, pause, maintenance).
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) paused: RwLock<Option<Pause>>,
    pub(crate) is_paused: AtomicBool,
    pub(crate) maintenance: RwLock<Option<Bytes>>,
    pub(crate) in_maintenance: AtomicBool,
    /// Bumped when a route change removes backends: client connections opened before get
    /// `Connection: close` on their next response.
    pub(crate) epoch: AtomicU64,
    pub(crate) connections: AtomicU64,
    revisions: Mutex<Vec<Arc<RevisionCounters>>>,
    rotation: AtomicUsize,
    /// Cancelled when the endpoint closes.
    pub(crate) close: CancellationToken,
}

impl Site {
    pub(crate) fn new(id: DeploymentId, name: String, addr: SocketAddr) -> Self {
        Self {
            id,
            name,
            addr,
            routes: RwLock::new(Arc::new(RouteSet {
                backends: Vec::new(),
                hold: true,
            })),
            changed: watch::Sender::new(0),
            paused: RwLock::new(None),
            is_paused: AtomicBool::new(false),
            maintenance: RwLock::new(None),
            in_maintenance: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            revisions: Mutex::new(Vec::new()),
            rotation: AtomicUsize::new(0),
            close: CancellationToken::new(),
        }
    }

    /// The same deployment on another address (an `endpoint.listen` changed by an update):
    /// routes, state and counters carry over.
    pub(crate) fn moved(&self, addr: SocketAddr) -> Self {
        let site = Self::new(self.id.clone(), self.name.clone(), addr);
        *write(&site.routes) = self.routes();
        *write(&site.paused) = *read(&self.paused);
        site.is_paused
            .store(self.is_paused.load(Ordering::Acquire), Ordering::Release);
        *write(&site.maintenance) = read(&self.maintenance).clone();
        site.in_maintenance.store(
            self.in_maintenance.load(Ordering::Acquire),
            Ordering::Release,
        );
        *lock(&site.revisions) = lock(&self.revisions).clone();
        site
    }

    pub(crate) fn routes(&self) -> Arc<RouteSet> {
        read(&self.routes).clone()
    }

    pub(crate) fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn counters(&self, revision: Revision) -> Arc<RevisionCounters> {
        let mut all = lock(&self.revisions);
        if let Some(c) = all.iter().find(|c| c.revision == revision) {
            return c.clone();
        }
        let c = Arc::new(RevisionCounters::new(revision));
        all.push(c.clone());
        all.sort_by_key(|c| c.revision);
        c
    }

    /// Installs `routes`; answers the backends it removed (to drain).
    pub(crate) fn set_routes(&self, routes: &Routes) -> Vec<Arc<Live>> {
        let old = self.routes();
        let mut backends = Vec::with_capacity(routes.backends.len());
        for b in &routes.backends {
            let live = match old.backends.iter().find(|l| l.same(b)) {
                Some(l) => {
                    l.weight.store(b.weight, Ordering::Relaxed);
                    l.clone()
                }
                None => Arc::new(Live {
                    backend: b.clone(),
                    weight: AtomicU32::new(b.weight),
                    in_flight: AtomicU64::new(0),
                    counters: self.counters(b.revision),
                    idle: Notify::new(),
                }),
            };
            backends.push(live);
        }
        let removed: Vec<Arc<Live>> = old
            .backends
            .iter()
            .filter(|l| !backends.iter().any(|n| Arc::ptr_eq(n, l)))
            .cloned()
            .collect();
        *write(&self.routes) = Arc::new(RouteSet {
            backends,
            hold: routes.hold,
        });
        if !removed.is_empty() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.notify();
        removed
    }

    /// Picks a backend: a revision by weight, then the one with the fewest requests in
    /// flight within it (ties in rotation). `except` is skipped (a retry).
    pub(crate) fn pick(&self, routes: &RouteSet, except: Option<&Arc<Live>>) -> Option<Arc<Live>> {
        let usable = |l: &&Arc<Live>| {
            l.weight.load(Ordering::Relaxed) > 0 && except.is_none_or(|e| !Arc::ptr_eq(e, l))
        };
        let first = routes.backends.iter().find(usable)?;
        let single_revision = routes
            .backends
            .iter()
            .filter(usable)
            .all(|l| l.backend.revision == first.backend.revision);
        let revision = if single_revision {
            first.backend.revision
        } else {
            let total: u64 = routes
                .backends
                .iter()
                .filter(usable)
                .map(|l| u64::from(l.weight.load(Ordering::Relaxed)))
                .sum();
            let mut ticket = fastrand::u64(0..total.max(1));
            let mut chosen = first.backend.revision;
            for l in routes.backends.iter().filter(usable) {
                let w = u64::from(l.weight.load(Ordering::Relaxed));
                if ticket < w {
                    chosen = l.backend.revision;
                    break;
                }
                ticket -= w;
            }
            chosen
        };
        let candidates: Vec<&Arc<Live>> = routes
            .backends
            .iter()
            .filter(usable)
            .filter(|l| l.backend.revision == revision)
            .collect();
        let n = candidates.len();
        if n == 1 {
            return Some(candidates[0].clone());
        }
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| candidates[(start + i) % n])
            .min_by_key(|l| l.in_flight.load(Ordering::Relaxed))
            .cloned()
    }

    pub(crate) fn stats(&self) -> TrafficStats {
        let mut s = TrafficStats::default();
        s.endpoint = Some(self.addr);
        s.paused = self.is_paused.load(Ordering::Acquire);
        s.maintenance = self.in_maintenance.load(Ordering::Acquire);
        s.connections = self.connections.load(Ordering::Relaxed);
        s.revisions = lock(&self.revisions).iter().map(|c| c.snapshot()).collect();
        s
    }
}

/// Waits until every backend of `removed` has nothing in flight, or `timeout` passed.
/// Answers how many requests were still in flight then.
pub(crate) async fn drain(removed: &[Arc<Live>], timeout: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + timeout;
    for live in removed {
        loop {
            let idle = live.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if live.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return removed
                    .iter()
                    .map(|l| l.in_flight.load(Ordering::Acquire))
                    .sum();
            }
        }
    }
    0
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    read(l)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site::new(
            DeploymentId::new("d".to_owned()),
            "web".into(),
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    fn b(id: &str, rev: u64, port: u16) -> Backend {
        Backend::new(id, Revision(rev), SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn route_changes_keep_live_backends_and_answer_the_removed() {
        let s = site();
        assert!(
            s.set_routes(&Routes::new(vec![b("1", 1, 1)], Duration::ZERO))
                .is_empty()
        );
        let first = s.pick(&s.routes(), None).unwrap();
        let _busy = InFlight::new(first.clone());
        let removed = s.set_routes(&Routes::new(
            vec![b("1", 1, 1), b("2", 2, 2)],
            Duration::ZERO,
        ));
        assert!(removed.is_empty());
        assert_eq!(s.epoch.load(Ordering::Acquire), 0);
        // The busy one keeps its count: the idle one is picked within revision... by weight
        let routes = s.routes();
        assert!(Arc::ptr_eq(&routes.backends[0], &first));
        let removed = s.set_routes(&Routes::new(vec![b("2", 2, 2)], Duration::ZERO));
        assert_eq!(removed.len(), 1);
        assert!(Arc::ptr_eq(&removed[0], &first));
        assert_eq!(s.epoch.load(Ordering::Acquire), 1);
    }

    #[test]
    fn least_in_flight_within_a_revision_and_weights_between_revisions() {
        let s = site();
        s.set_routes(&Routes::new(
            vec![b("1", 1, 1), b("2", 1, 2)],
            Duration::ZERO,
        ));
        let routes = s.routes();
        let _busy = InFlight::new(routes.backends[0].clone());
        for _ in 0..10 {
            let p = s.pick(&routes, None).unwrap();
            assert_eq!(p.backend.instance, "2");
        }
        assert_eq!(
            s.pick(&routes, Some(&routes.backends[1]))
                .unwrap()
                .backend
                .instance,
            "1"
        );

        s.set_routes(&Routes::new(
            vec![b("a", 1, 1).with_weight(9), b("b", 2, 2).with_weight(1)],
            Duration::ZERO,
        ));
        let routes = s.routes();
        let new = (0..10_000)
            .filter(|_| s.pick(&routes, None).unwrap().backend.revision == Revision(2))
            .count();
        assert!(
            (700..1300).contains(&new),
            "{new} of 10000 to the 10 % revision"
        );
        s.set_routes(&Routes::new(
            vec![b("a", 1, 1).with_weight(0)],
            Duration::ZERO,
        ));
        assert!(s.pick(&s.routes(), None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_in_flight_up_to_the_timeout() {
        let s = site();
        s.set_routes(&Routes::new(vec![b("1", 1, 1)], Duration::ZERO));
        let live = s.routes().backends[0].clone();
        let busy = InFlight::new(live.clone());
        let removed = s.set_routes(&Routes::new(vec![], Duration::ZERO));
        let waiter = tokio::spawn(async move { drain(&removed, Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        drop(busy);
        assert_eq!(waiter.await.unwrap(), 0);

        let busy = InFlight::new(live.clone());
        let left = drain(std::slice::from_ref(&live), Duration::from_secs(30)).await;
        assert_eq!(left, 1, "cut after the timeout");
        drop(busy);
    }
}
