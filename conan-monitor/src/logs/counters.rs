//! Log-derived counters per deployment and level: totals since the monitor started
//! following, and lines and errors in a sliding minute.

use std::collections::HashMap;
use std::sync::Mutex;

use conan_core::{DeploymentId, LogLevel};
use tokio::time::Instant;

/// Every level, in order: the index of a level in the counters.
pub const LEVELS: [LogLevel; 6] = [
    LogLevel::Trace,
    LogLevel::Debug,
    LogLevel::Info,
    LogLevel::Warn,
    LogLevel::Error,
    LogLevel::Fatal,
];

/// The sliding window: one bucket per second over the last minute.
const WINDOW_SECONDS: u64 = 60;

fn index(level: LogLevel) -> usize {
    match level {
        LogLevel::Trace => 0,
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
        LogLevel::Fatal => 5,
    }
}

/// One second of a deployment's lines.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Seconds since the counters' origin this bucket holds (buckets of older seconds are
    /// stale and count nothing).
    second: u64,
    lines: u64,
    errors: u64,
}

#[derive(Debug)]
struct Counts {
    totals: [u64; LEVELS.len()],
    window: [Bucket; WINDOW_SECONDS as usize],
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            totals: [0; LEVELS.len()],
            window: [Bucket::default(); WINDOW_SECONDS as usize],
        }
    }
}

/// Log-derived counters per deployment and level, fed by the monitor's log follower
/// ([`crate::logs`]): totals by level (for Prometheus' `conan_log_lines_total`) and, over
/// a sliding minute (one-second buckets, Tokio time), lines and error lines (`error` and
/// `fatal`) per minute (for alerts). A deployment's counters start when the monitor
/// begins following it and are dropped when it is removed.
#[derive(Debug)]
pub struct LogCounters {
    origin: Instant,
    by_deployment: Mutex<HashMap<DeploymentId, Counts, foldhash::fast::RandomState>>,
}

impl Default for LogCounters {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            by_deployment: Mutex::default(),
        }
    }
}

impl LogCounters {
    /// Error (and worse) lines of a deployment in the last minute.
    #[must_use]
    pub fn errors_per_minute(&self, deployment: &DeploymentId) -> u64 {
        self.in_window(deployment, |b| b.errors)
    }

    /// Lines of a deployment in the last minute.
    #[must_use]
    pub fn lines_per_minute(&self, deployment: &DeploymentId) -> u64 {
        self.in_window(deployment, |b| b.lines)
    }

    /// Lines of a deployment by level (in the order of [`LEVELS`]) since the monitor began
    /// following it; `None` when it never did.
    #[must_use]
    pub fn lines_by_level(&self, deployment: &DeploymentId) -> Option<[u64; LEVELS.len()]> {
        self.lock().get(deployment).map(|c| c.totals)
    }

    /// Counts one line of `deployment`.
    pub fn record(&self, deployment: &DeploymentId, level: LogLevel) {
        let second = self.second();
        let mut map = self.lock();
        let counts = match map.get_mut(deployment) {
            Some(c) => c,
            None => map.entry(deployment.clone()).or_default(),
        };
        counts.totals[index(level)] += 1;
        let bucket = &mut counts.window[(second % WINDOW_SECONDS) as usize];
        if bucket.second != second {
            *bucket = Bucket {
                second,
                ..Bucket::default()
            };
        }
        bucket.lines += 1;
        if level >= LogLevel::Error {
            bucket.errors += 1;
        }
    }

    /// Starts the counters of `deployment` at zero (so it shows in the exposition before
    /// its first line), keeping them if it has some.
    pub(crate) fn track(&self, deployment: &DeploymentId) {
        self.lock().entry(deployment.clone()).or_default();
    }

    /// Drops the counters of deployments `keep` says no to (removed ones).
    pub(crate) fn retain(&self, mut keep: impl FnMut(&DeploymentId) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    fn in_window(&self, deployment: &DeploymentId, field: impl Fn(&Bucket) -> u64) -> u64 {
        let now = self.second();
        let oldest = now.saturating_sub(WINDOW_SECONDS - 1);
        self.lock().get(deployment).map_or(0, |c| {
            c.window
                .iter()
                .filter(|b| b.second >= oldest && b.second <= now && (b.lines > 0))
                .map(&field)
                .sum()
        })
    }

    fn second(&self) -> u64 {
        Instant::now().duration_since(self.origin).as_secs()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<DeploymentId, Counts, foldhash::fast::RandomState>> {
        self.by_deployment
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
