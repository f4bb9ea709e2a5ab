//! One deployment's stored series: full-resolution samples and downsampled buckets, in
//! compact numeric fields.

use std::time::Duration;

use conan_core::{Metrics, Timestamp};

use super::ring::Ring;

/// "Not measured" in a `u64` field.
const NO_U64: u64 = u64::MAX;
/// "Not measured" in a `u32` field.
const NO_U32: u32 = u32::MAX;

/// Width of a downsampled bucket.
pub(super) const BUCKET: Duration = Duration::from_secs(300);
pub(super) const BUCKET_MICROS: i64 = 300 * 1_000_000;
/// Downsampled buckets kept: a day of them, plus the one being filled.
pub(super) const BUCKETS: usize = 24 * 12 + 1;

fn opt_u64(v: u64) -> Option<u64> {
    (v != NO_U64).then_some(v)
}

fn opt_u32(v: u32) -> Option<u32> {
    (v != NO_U32).then_some(v)
}

/// Growth of a cumulative counter from `prev` to `cur`. A counter that went down was reset
/// (the process restarted, a container was re-created): it grew by its new value since.
pub(super) fn increase(prev: Option<u64>, cur: Option<u64>) -> u64 {
    match (prev, cur) {
        (Some(p), Some(c)) if c >= p => c - p,
        (Some(_), Some(c)) => c,
        _ => 0,
    }
}

/// One sample at full resolution (56 bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Sample {
    /// Microseconds since the Unix epoch.
    pub(super) at: i64,
    /// Percent of one core; NaN when not measured.
    pub(super) cpu: f32,
    pub(super) pids: u32,
    pub(super) restarts: u32,
    pub(super) memory: u64,
    pub(super) memory_limit: u64,
    pub(super) rx: u64,
    pub(super) tx: u64,
}

impl Sample {
    pub(super) fn new(at: i64, m: &Metrics) -> Self {
        Self {
            at,
            #[allow(
                clippy::cast_possible_truncation,
                reason = "f32 holds a CPU percentage"
            )]
            cpu: m.cpu_percent.map_or(f32::NAN, |c| c as f32),
            pids: m
                .pids
                .map_or(NO_U32, |p| u32::try_from(p).unwrap_or(NO_U32 - 1)),
            restarts: m.restarts,
            memory: m.memory_bytes.map_or(NO_U64, |v| v.min(NO_U64 - 1)),
            memory_limit: m.memory_limit_bytes.map_or(NO_U64, |v| v.min(NO_U64 - 1)),
            rx: m.network_rx_bytes.map_or(NO_U64, |v| v.min(NO_U64 - 1)),
            tx: m.network_tx_bytes.map_or(NO_U64, |v| v.min(NO_U64 - 1)),
        }
    }

    pub(super) fn cpu(&self) -> Option<f64> {
        (!self.cpu.is_nan()).then_some(f64::from(self.cpu))
    }
    pub(super) fn memory(&self) -> Option<u64> {
        opt_u64(self.memory)
    }
    pub(super) fn memory_limit(&self) -> Option<u64> {
        opt_u64(self.memory_limit)
    }
    pub(super) fn rx(&self) -> Option<u64> {
        opt_u64(self.rx)
    }
    pub(super) fn tx(&self) -> Option<u64> {
        opt_u64(self.tx)
    }
    pub(super) fn pids(&self) -> Option<u32> {
        opt_u32(self.pids)
    }
}

/// Min, max and sum of the measured values of one gauge in a bucket (their count is kept
/// by the bucket, packed with the others).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Agg<T> {
    pub(super) min: T,
    pub(super) max: T,
    pub(super) sum: T,
}

/// `Agg` of an integer gauge; sums saturate.
macro_rules! agg_int {
    ($t:ty) => {
        impl Agg<$t> {
            const EMPTY: Self = Self {
                min: <$t>::MAX,
                max: 0,
                sum: 0,
            };
            /// Adds a measured value to `n` of them.
            fn add(&mut self, n: &mut u16, v: Option<$t>) {
                if let Some(v) = v {
                    *n = n.saturating_add(1);
                    self.min = self.min.min(v);
                    self.max = self.max.max(v);
                    self.sum = self.sum.saturating_add(v);
                }
            }
        }
    };
}
agg_int!(u64);
agg_int!(u32);

impl Agg<f32> {
    const EMPTY: Self = Self {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };
    /// Adds a measured (not NaN) value to `n` of them.
    fn add(&mut self, n: &mut u16, v: f32) {
        if !v.is_nan() {
            *n = n.saturating_add(1);
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.sum += v;
        }
    }
}

/// The samples of one [`BUCKET`]-wide stretch of time, downsampled (112 bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Bucket {
    /// Start, in microseconds since the epoch (a multiple of the bucket width).
    pub(super) start: i64,
    pub(super) samples: u16,
    /// How many samples measured each gauge.
    pub(super) cpu_n: u16,
    pub(super) pids_n: u16,
    pub(super) memory_n: u16,
    pub(super) cpu: Agg<f32>,
    pub(super) pids: Agg<u32>,
    pub(super) memory: Agg<u64>,
    /// The last measured limit.
    pub(super) memory_limit: u64,
    /// Counters: the last value, and the growth within the bucket (from the sample before
    /// the bucket's first, reset-aware).
    pub(super) rx_last: u64,
    pub(super) rx_increase: u64,
    pub(super) tx_last: u64,
    pub(super) tx_increase: u64,
    pub(super) restarts_last: u32,
    pub(super) restarts_increase: u32,
}

impl Bucket {
    fn new(start: i64) -> Self {
        Self {
            start,
            samples: 0,
            cpu_n: 0,
            pids_n: 0,
            memory_n: 0,
            cpu: Agg::<f32>::EMPTY,
            pids: Agg::<u32>::EMPTY,
            memory: Agg::<u64>::EMPTY,
            memory_limit: NO_U64,
            rx_last: NO_U64,
            rx_increase: 0,
            tx_last: NO_U64,
            tx_increase: 0,
            restarts_last: 0,
            restarts_increase: 0,
        }
    }

    fn add(&mut self, s: &Sample, prev: Option<&Sample>) {
        self.samples = self.samples.saturating_add(1);
        self.cpu.add(&mut self.cpu_n, s.cpu);
        self.pids.add(&mut self.pids_n, s.pids());
        self.memory.add(&mut self.memory_n, s.memory());
        if s.memory_limit != NO_U64 {
            self.memory_limit = s.memory_limit;
        }
        if s.rx != NO_U64 {
            self.rx_last = s.rx;
        }
        if s.tx != NO_U64 {
            self.tx_last = s.tx;
        }
        self.restarts_last = s.restarts;
        if let Some(p) = prev {
            self.rx_increase = self.rx_increase.saturating_add(increase(p.rx(), s.rx()));
            self.tx_increase = self.tx_increase.saturating_add(increase(p.tx(), s.tx()));
            let r = increase(Some(u64::from(p.restarts)), Some(u64::from(s.restarts)));
            self.restarts_increase = self
                .restarts_increase
                .saturating_add(u32::try_from(r).unwrap_or(u32::MAX));
        }
    }

    pub(super) fn memory_limit(&self) -> Option<u64> {
        opt_u64(self.memory_limit)
    }
    pub(super) fn rx_last(&self) -> Option<u64> {
        opt_u64(self.rx_last)
    }
    pub(super) fn tx_last(&self) -> Option<u64> {
        opt_u64(self.tx_last)
    }
}

/// One deployment's history.
#[derive(Debug)]
pub(super) struct Track {
    pub(super) fine: Ring<Sample>,
    pub(super) coarse: Ring<Bucket>,
    /// The last sample as the provider answered it (uptime and port included).
    pub(super) latest: Option<(Timestamp, Metrics)>,
}

impl Track {
    pub(super) fn new(fine_capacity: usize) -> Self {
        Self {
            fine: Ring::with_capacity(fine_capacity),
            coarse: Ring::with_capacity(BUCKETS),
            latest: None,
        }
    }

    /// Bytes this track holds, from its capacities (its own size counted by the map).
    pub(super) fn heap_bytes(&self) -> usize {
        self.fine.capacity() * size_of::<Sample>() + self.coarse.capacity() * size_of::<Bucket>()
    }

    /// Records a sample taken at `at`. Time never goes back within a series: a sample
    /// stamped before the newest one (the wall clock was set back) is stamped with the
    /// newest one's time.
    pub(super) fn record(&mut self, at: Timestamp, metrics: &Metrics) {
        let mut micros = at.as_unix_micros();
        let prev = self.fine.last().copied();
        if let Some(p) = prev {
            micros = micros.max(p.at);
        }
        let sample = Sample::new(micros, metrics);
        let start = micros - micros.rem_euclid(BUCKET_MICROS);
        match self.coarse.last_mut() {
            Some(b) if b.start == start => b.add(&sample, prev.as_ref()),
            _ => {
                let mut b = Bucket::new(start);
                b.add(&sample, prev.as_ref());
                self.coarse.push(b);
            }
        }
        self.fine.push(sample);
        self.latest = Some((Timestamp::from_unix_micros(micros), metrics.clone()));
    }
}
