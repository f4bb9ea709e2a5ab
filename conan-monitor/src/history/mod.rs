//! Metrics history: bounded per-deployment series of `metrics()` samples.
//!
//! # Model
//!
//! The sampler (one task for all deployments) asks the manager for the
//! [`Metrics`] of every `Running` deployment every
//! [`sample_interval`](crate::MonitorSettings::sample_interval) (default 10 s), at most
//! [`SAMPLE_CONCURRENCY`] calls at a time, each cut off after
//! [`sample_timeout`](crate::MonitorSettings::sample_timeout). A call still running when
//! the next tick comes is not started twice, and it holds up nobody else: a hung provider
//! costs its own deployments their samples, not the others. Each sample is stored and
//! handed to the health monitor's memory-limit check. A deployment that is removed loses
//! its series (at the next tick); a stopped one keeps it.
//!
//! Each deployment's series is two preallocated ring buffers of compact numeric fields
//! (CPU, memory, memory limit, network bytes in and out, restarts, processes):
//!
//! - **full resolution**: every sample of the last hour (`3600 s / sample_interval + 1`
//!   samples, at most 3,601: at intervals under a second it covers the last 3,601
//!   samples), 56 bytes each;
//! - **downsampled**: min, sum (for the average) and max of every gauge over five-minute
//!   buckets aligned on the epoch, for the last day (289 buckets that had samples), 112
//!   bytes each.
//!
//! Recording a sample writes in place: no allocation after a deployment's first sample.
//!
//! Cumulative counters (network bytes, restarts) are stored as sampled; a query answers
//! each as a [`Counter`]: its value at the end of the point and its growth within it,
//! counted from sample to sample, a counter that went down having been reset (growth =
//! its new value). Buckets keep the last value and the growth.
//!
//! # Memory bound
//!
//! Per deployment: `56 × full-resolution samples + 112 × 289 + 1024` bytes (the map entry and its
//! key included): **at the default 10 s interval, 361 samples, at most 54 KiB (55,296
//! bytes)**, so 1,000 deployments hold at most 54 MiB (measured by the
//! `history_memory` test with a counting allocator: see its output). At 1 s or faster,
//! 234 KiB. [`MetricsHistory::bytes_per_deployment`] computes it for the settings in
//! force and [`MetricsHistory::memory_bytes`] what is held now.
//!
//! # Queries
//!
//! [`MetricsHistory::query`] answers a [`HistoryQuery`] (range and step) with a
//! [`Series`]: from the full-resolution samples when they reach back to the start of the
//! range, else from the buckets (a step of at least five minutes then). Points are
//! aligned on multiples of the step since the epoch.

mod ring;
mod sampler;
mod series;
mod track;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use conan_core::{DeploymentId, Metrics, Timestamp};

use crate::MonitorSettings;
use track::Track;

pub use sampler::SAMPLE_CONCURRENCY;
pub(crate) use sampler::run;
pub use series::{Counter, Gauge, HistoryQuery, Point, Resolution, Series};

/// How far back full resolution reaches.
pub const FULL_RESOLUTION: Duration = Duration::from_secs(3600);
/// How far back the downsampled buckets reach.
pub const DOWNSAMPLED: Duration = Duration::from_secs(24 * 3600);
/// The width of a downsampled bucket.
pub const BUCKET: Duration = track::BUCKET;
/// The most full-resolution samples kept per deployment.
pub const MAX_FULL_SAMPLES: usize = 3601;
/// Per-entry allowance of the bound: the map's entry, its share of the table's spare
/// slots and the key.
const ENTRY_ALLOWANCE: usize = 1024;

/// Bounded per-deployment metrics series (see the [module docs](self)). Shared by the
/// sampler and the readers; every method takes a short lock.
#[derive(Debug)]
pub struct MetricsHistory {
    tracks: Mutex<HashMap<DeploymentId, Track, foldhash::fast::RandomState>>,
    sample_interval: Duration,
    fine_capacity: usize,
}

impl MetricsHistory {
    /// An empty history for samples every `settings.sample_interval`. The monitor keeps
    /// one ([`Monitor::history`](crate::Monitor::history)); a host that samples on its own
    /// can keep another and [`record`](Self::record) into it.
    #[must_use]
    pub fn new(settings: &MonitorSettings) -> Self {
        let interval = settings.sample_interval.max(Duration::from_millis(1));
        let per_hour = FULL_RESOLUTION.as_micros().div_ceil(interval.as_micros());
        let fine_capacity = usize::try_from(per_hour)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .clamp(2, MAX_FULL_SAMPLES);
        Self {
            tracks: Mutex::new(HashMap::default()),
            sample_interval: interval,
            fine_capacity,
        }
    }

    fn tracks(&self) -> MutexGuard<'_, HashMap<DeploymentId, Track, foldhash::fast::RandomState>> {
        self.tracks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a sample of `deployment` taken at `at`. The first sample of a deployment
    /// allocates its buffers; later ones write in place.
    pub fn record(&self, deployment: &DeploymentId, at: Timestamp, metrics: &Metrics) {
        let mut tracks = self.tracks();
        if let Some(track) = tracks.get_mut(deployment) {
            track.record(at, metrics);
        } else {
            let mut track = Track::new(self.fine_capacity);
            track.record(at, metrics);
            tracks.insert(deployment.clone(), track);
        }
    }

    /// The latest sample of a deployment, if one was taken.
    #[must_use]
    pub fn latest(&self, deployment: &DeploymentId) -> Option<(Timestamp, Metrics)> {
        self.tracks().get(deployment).and_then(|t| t.latest.clone())
    }

    /// The deployment's metrics over `query`'s range (no points when it has no history).
    #[must_use]
    pub fn query(&self, deployment: &DeploymentId, query: &HistoryQuery) -> Series {
        let tracks = self.tracks();
        series::query(
            deployment,
            tracks.get(deployment),
            query,
            self.sample_interval,
        )
    }

    /// Drops a deployment's series; whether it had one.
    pub fn remove(&self, deployment: &DeploymentId) -> bool {
        self.tracks().remove(deployment).is_some()
    }

    /// Keeps only the series of deployments for which `keep` holds.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&DeploymentId) -> bool) {
        self.tracks().retain(|id, _| keep(id));
    }

    /// How many deployments have a series.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tracks().len()
    }

    /// Whether no deployment has a series.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tracks().is_empty()
    }

    /// The samples kept at full resolution per deployment.
    #[must_use]
    pub fn full_resolution_samples(&self) -> usize {
        self.fine_capacity
    }

    /// The bound on the bytes one deployment's series holds, with these settings.
    #[must_use]
    pub fn bytes_per_deployment(&self) -> usize {
        self.fine_capacity * size_of::<track::Sample>()
            + track::BUCKETS * size_of::<track::Bucket>()
            + ENTRY_ALLOWANCE
    }

    /// The bytes held now, computed from the capacities: the buffers, the map's table and
    /// the keys (counted as if not shared with the manager's records).
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        let tracks = self.tracks();
        // The table's slots (a capacity of `7/8` of them), a control byte each and a group.
        let capacity = tracks.capacity();
        let slots = if capacity < 7 {
            capacity + 1
        } else {
            capacity / 7 * 8
        };
        let table = slots * (size_of::<(DeploymentId, Track)>() + 1) + 16;
        let owned: usize = tracks
            .iter()
            .map(|(id, t)| t.heap_bytes() + 16 + id.as_str().len())
            .sum();
        table + owned
    }
}

impl crate::Monitor {
    /// The metrics history the monitor's sampler fills.
    #[must_use]
    pub fn history(&self) -> &MetricsHistory {
        &self.shared.history
    }
}
