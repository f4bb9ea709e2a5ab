//! What a query answers: [`Series`] of [`Point`]s, and how stored samples and buckets are
//! aggregated into them.

use std::time::Duration;

use conan_core::{DeploymentId, Timestamp};
use serde::{Deserialize, Serialize};

use super::track::{BUCKET, BUCKET_MICROS, Bucket, Sample, Track, increase};

/// Which stored data a [`Series`] was computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Every sample (the last hour).
    Full,
    /// Five-minute min/avg/max buckets (the last day).
    Downsampled,
}

/// A range of a deployment's history and the step to aggregate it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryQuery {
    /// From (inclusive).
    pub since: Timestamp,
    /// To (inclusive).
    pub until: Timestamp,
    /// The width of a point; `None`: one point per stored sample or bucket.
    pub step: Option<Duration>,
}

impl HistoryQuery {
    /// The last `d`, up to now, at the stored resolution.
    #[must_use]
    pub fn last(d: Duration) -> Self {
        let now = Timestamp::now();
        Self::range(now.saturating_sub(d), now)
    }

    /// From `since` to `until`, at the stored resolution.
    #[must_use]
    pub fn range(since: Timestamp, until: Timestamp) -> Self {
        Self {
            since,
            until,
            step: None,
        }
    }

    /// The same range, aggregated into points `step` wide (aligned on multiples of `step`
    /// since the epoch, so that successive queries give the same points). A step finer
    /// than the data is the data's own.
    #[must_use]
    pub fn step(mut self, step: Duration) -> Self {
        self.step = (!step.is_zero()).then_some(step);
        self
    }
}

/// A deployment's metrics over a range: one [`Point`] per step that has samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Series {
    /// The deployment.
    pub deployment: DeploymentId,
    /// What it was computed from: every sample, or the five-minute buckets (for a range
    /// reaching back past what full resolution keeps).
    pub resolution: Resolution,
    /// The range asked for.
    pub since: Timestamp,
    /// The range asked for.
    pub until: Timestamp,
    /// The width of a point, in milliseconds (the sample interval or the bucket width
    /// when no step was asked, or a finer step than the data's).
    pub step_ms: u64,
    /// Oldest first; steps without a sample are absent.
    pub points: Vec<Point>,
}

/// Min, average and max of a gauge's samples within one point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gauge<T> {
    /// Smallest sample.
    pub min: T,
    /// Mean of the samples.
    pub avg: f64,
    /// Largest sample.
    pub max: T,
}

/// A cumulative counter within one point: its value at the end of the point and how much
/// it grew during it (from the sample before the point's first; a counter that went down
/// was reset and counts its new value as growth). The rate is `increase / step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// The counter's value at the point's last sample.
    pub total: u64,
    /// Growth within the point.
    pub increase: u64,
}

/// The samples of one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Point {
    /// The start of the step (the sample's time at full resolution without a step).
    pub time: Timestamp,
    /// Samples aggregated.
    pub samples: u32,
    /// CPU in percent of one core (200 = two cores busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<Gauge<f64>>,
    /// Resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<Gauge<u64>>,
    /// The memory limit at the point's last sample that had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_rx_bytes: Option<Counter>,
    /// Bytes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_tx_bytes: Option<Counter>,
    /// Restarts by the supervisor since the deploy.
    pub restarts: Counter,
    /// Number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Gauge<u64>>,
}

/// One gauge being aggregated.
#[derive(Clone, Copy, Default)]
struct GaugeAcc<T> {
    n: u64,
    min: T,
    max: T,
    sum: f64,
}

impl<T: Copy + PartialOrd> GaugeAcc<T> {
    /// Adds `n` values with these min, max and sum.
    fn merge(&mut self, n: u64, min: T, max: T, sum: f64) {
        if n == 0 {
            return;
        }
        if self.n == 0 || min < self.min {
            self.min = min;
        }
        if self.n == 0 || max > self.max {
            self.max = max;
        }
        self.n += n;
        self.sum += sum;
    }

    #[allow(clippy::cast_precision_loss, reason = "an average")]
    fn finish<U>(&self, convert: impl Fn(T) -> U) -> Option<Gauge<U>> {
        (self.n > 0).then(|| Gauge {
            min: convert(self.min),
            avg: self.sum / self.n as f64,
            max: convert(self.max),
        })
    }
}

#[allow(clippy::cast_precision_loss, reason = "for averages of byte counts")]
fn float(v: u64) -> f64 {
    v as f64
}

#[derive(Clone, Copy, Default)]
struct CounterAcc {
    total: Option<u64>,
    increase: u64,
}

impl CounterAcc {
    fn add(&mut self, total: Option<u64>, increase: u64) {
        if total.is_some() {
            self.total = total;
        }
        self.increase = self.increase.saturating_add(increase);
    }

    fn finish(&self) -> Option<Counter> {
        self.total.map(|total| Counter {
            total,
            increase: self.increase,
        })
    }
}

/// The point being aggregated.
#[derive(Clone, Copy, Default)]
struct Acc {
    samples: u64,
    cpu: GaugeAcc<f64>,
    memory: GaugeAcc<u64>,
    pids: GaugeAcc<u32>,
    memory_limit: Option<u64>,
    rx: CounterAcc,
    tx: CounterAcc,
    restarts: CounterAcc,
}

impl Acc {
    fn add_sample(&mut self, s: &Sample, prev: Option<&Sample>) {
        self.samples += 1;
        if let Some(v) = s.cpu() {
            self.cpu.merge(1, v, v, v);
        }
        if let Some(v) = s.memory() {
            self.memory.merge(1, v, v, float(v));
        }
        if let Some(v) = s.pids() {
            self.pids.merge(1, v, v, f64::from(v));
        }
        if let Some(l) = s.memory_limit() {
            self.memory_limit = Some(l);
        }
        self.rx
            .add(s.rx(), increase(prev.and_then(Sample::rx), s.rx()));
        self.tx
            .add(s.tx(), increase(prev.and_then(Sample::tx), s.tx()));
        self.restarts.add(
            Some(u64::from(s.restarts)),
            increase(
                prev.map(|p| u64::from(p.restarts)),
                Some(u64::from(s.restarts)),
            ),
        );
    }

    fn add_bucket(&mut self, b: &Bucket) {
        self.samples += u64::from(b.samples);
        self.cpu.merge(
            u64::from(b.cpu_n),
            f64::from(b.cpu.min),
            f64::from(b.cpu.max),
            f64::from(b.cpu.sum),
        );
        self.memory.merge(
            u64::from(b.memory_n),
            b.memory.min,
            b.memory.max,
            float(b.memory.sum),
        );
        self.pids.merge(
            u64::from(b.pids_n),
            b.pids.min,
            b.pids.max,
            f64::from(b.pids.sum),
        );
        if let Some(l) = b.memory_limit() {
            self.memory_limit = Some(l);
        }
        self.rx.add(b.rx_last(), b.rx_increase);
        self.tx.add(b.tx_last(), b.tx_increase);
        self.restarts.add(
            Some(u64::from(b.restarts_last)),
            u64::from(b.restarts_increase),
        );
    }

    fn finish(&self, time: i64) -> Point {
        Point {
            time: Timestamp::from_unix_micros(time),
            samples: u32::try_from(self.samples).unwrap_or(u32::MAX),
            cpu_percent: self.cpu.finish(|v| v),
            memory_bytes: self.memory.finish(|v| v),
            memory_limit_bytes: self.memory_limit,
            network_rx_bytes: self.rx.finish(),
            network_tx_bytes: self.tx.finish(),
            restarts: self.restarts.finish().unwrap_or(Counter {
                total: 0,
                increase: 0,
            }),
            pids: self.pids.finish(u64::from),
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

fn millis(micros: i64) -> u64 {
    u64::try_from(micros / 1000).unwrap_or(0)
}

/// Groups `items` (oldest first, with their times) into points `step` wide, or one point
/// each without a step.
fn group<T>(
    items: impl Iterator<Item = (i64, T)>,
    step: Option<i64>,
    mut add: impl FnMut(&mut Acc, T),
) -> Vec<Point> {
    let mut points = Vec::new();
    let mut current: Option<(i64, Acc)> = None;
    for (at, item) in items {
        let start = step.map_or(at, |s| at - at.rem_euclid(s));
        match &mut current {
            Some((t, acc)) if *t == start => add(acc, item),
            _ => {
                if let Some((t, acc)) = current.take() {
                    points.push(acc.finish(t));
                }
                let mut acc = Acc::default();
                add(&mut acc, item);
                current = Some((start, acc));
            }
        }
    }
    if let Some((t, acc)) = current {
        points.push(acc.finish(t));
    }
    points
}

/// Answers `query` from `track`: from the full-resolution samples when they reach back to
/// `since` (or nothing older was ever dropped), else from the buckets.
pub(super) fn query(
    deployment: &DeploymentId,
    track: Option<&Track>,
    query: &HistoryQuery,
    sample_interval: Duration,
) -> Series {
    let (since, until) = (query.since.as_unix_micros(), query.until.as_unix_micros());
    let fine_reaches = track.is_none_or(|t| {
        !t.fine.is_full()
            || t.fine
                .first()
                .is_some_and(|f| f.at <= since + micros(sample_interval))
    });
    let step = query.step.map(micros);
    let mut series = Series {
        deployment: deployment.clone(),
        resolution: Resolution::Full,
        since: query.since,
        until: query.until,
        step_ms: 0,
        points: Vec::new(),
    };
    if fine_reaches {
        let native = micros(sample_interval);
        let step = step.filter(|&s| s > native);
        series.step_ms = millis(step.unwrap_or(native));
        if let Some(t) = track {
            let mut prev: Option<&Sample> = None;
            let items = t.fine.iter().filter_map(|s| {
                let before = prev.replace(s);
                (s.at >= since && s.at <= until).then_some((s.at, (s, before)))
            });
            series.points = group(items, step, |acc, (s, before)| acc.add_sample(s, before));
        }
    } else {
        series.resolution = Resolution::Downsampled;
        // A multiple of the bucket width, so that every bucket falls in one point.
        let step = step
            .map(|s| ((s + BUCKET_MICROS - 1) / BUCKET_MICROS).max(1) * BUCKET_MICROS)
            .filter(|&s| s > BUCKET_MICROS);
        series.step_ms = millis(step.unwrap_or(micros(BUCKET)));
        if let Some(t) = track {
            let first = since - since.rem_euclid(BUCKET_MICROS);
            series.points = group(
                t.coarse
                    .iter()
                    .filter(|b| b.start >= first && b.start <= until)
                    .map(|b| (b.start, b)),
                step,
                Acc::add_bucket,
            );
        }
    }
    series
}
