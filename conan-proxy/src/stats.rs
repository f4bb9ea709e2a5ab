//! Per-revision counters, updated with relaxed atomics on the request path and read as
//! [`RevisionTraffic`] snapshots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use conan_core::Revision;
use conan_core::traffic::{LATENCY_BUCKETS, LatencyHistogram, RevisionTraffic};

/// The live counters of one revision.
#[derive(Debug)]
pub(crate) struct RevisionCounters {
    pub(crate) revision: Revision,
    requests: AtomicU64,
    classes: [AtomicU64; 5],
    proxy_errors: AtomicU64,
    retries: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl RevisionCounters {
    pub(crate) fn new(revision: Revision) -> Self {
        Self {
            revision,
            requests: AtomicU64::new(0),
            classes: Default::default(),
            proxy_errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// One answered request: its status and the time to its response head.
    pub(crate) fn answered(&self, status: u16, latency: Duration, by_proxy: bool) {
        self.requests.fetch_add(1, Relaxed);
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.classes[class].fetch_add(1, Relaxed);
        if by_proxy {
            self.proxy_errors.fetch_add(1, Relaxed);
        }
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RevisionTraffic {
        let mut r = RevisionTraffic::new(self.revision);
        r.requests = self.requests.load(Relaxed);
        for (i, c) in self.classes.iter().enumerate() {
            r.status_classes[i] = c.load(Relaxed);
        }
        r.proxy_errors = self.proxy_errors.load(Relaxed);
        r.retries = self.retries.load(Relaxed);
        r.in_flight = self.in_flight.load(Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        r.latency =
            LatencyHistogram::new(self.buckets.iter().map(|b| b.load(Relaxed)).collect(), sum);
        r
    }
}
