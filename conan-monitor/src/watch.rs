//! `monitor_deployment`: a deployment's current values and recent series in one call
//! ([`Monitor::watch`]), or an update every interval ([`Monitor::watch_stream`]).
//!
//! A [`WatchRequest`] names the deployment, the metrics wanted ([`MetricName`]: `cpu`,
//! `memory`, `network`, `health`, `restarts`, `requests`; none = all), the interval and
//! the window of the recent series. The answer, [`Monitoring`], holds for each metric
//! asked its current value — measured now (`metrics()` and `health()` of the manager,
//! the health being the monitor's own observation once it probes) — and, for the
//! gauges, the series of the last `window` from the [history](crate::history), one point
//! per `interval`. Metrics that were not asked are absent. A deployment that runs nothing
//! answers its status and no values.
//!
//! The agent tools answer `{ monitoring: { deploymentId, status, metrics: { cpu: { usage
//! }, memory: { usage, limit }, health: { status, lastCheck } }, interval } }` from a
//! [`Monitoring`] (`deployment_id`, `status`, `metrics.cpu.usage`, `metrics.memory.usage`
//! and `.limit`, `metrics.health.status` and `.last_check`, `interval_ms`).

use std::str::FromStr;
use std::time::Duration;

use conan_core::time::serde_duration;
use conan_core::{DeploymentId, HealthReport, HealthStatus, Metrics, Timestamp};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::Monitor;
use crate::history::{HistoryQuery, Point};

/// A metric [`Monitor::watch`] can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MetricName {
    /// CPU use, percent of one core.
    Cpu,
    /// Resident memory and its limit.
    Memory,
    /// Bytes received and sent, and their rates.
    Network,
    /// The latest health observation.
    Health,
    /// Restarts by the supervisor.
    Restarts,
    /// Requests per second, where a provider reports them (none does yet: always absent).
    Requests,
}

impl MetricName {
    /// Every metric, in the order answers list them.
    pub const ALL: [MetricName; 6] = [
        MetricName::Cpu,
        MetricName::Memory,
        MetricName::Network,
        MetricName::Health,
        MetricName::Restarts,
        MetricName::Requests,
    ];

    /// The name (`"cpu"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::Cpu => "cpu",
            MetricName::Memory => "memory",
            MetricName::Network => "network",
            MetricName::Health => "health",
            MetricName::Restarts => "restarts",
            MetricName::Requests => "requests",
        }
    }

    /// Reads a comma-separated list (`"cpu,memory"`); an empty text is every metric.
    ///
    /// # Errors
    /// [`WatchError::UnknownMetric`] for a name that is none of [`MetricName::ALL`].
    pub fn parse_list(text: &str) -> Result<Vec<MetricName>, WatchError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }

    /// The known names, comma-separated.
    #[must_use]
    pub fn known() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl FromStr for MetricName {
    type Err = WatchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == lower)
            .ok_or_else(|| WatchError::UnknownMetric { name: s.to_owned() })
    }
}

impl std::fmt::Display for MetricName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`Monitor::watch`] could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A metric name that is none of [`MetricName::ALL`].
    #[error("unknown metric '{name}'; known metrics: {}", MetricName::known())]
    UnknownMetric {
        /// The name given.
        name: String,
    },
    /// An interval or window out of range.
    #[error("{what} {}: must be between {} and {}", conan_core::time::format_duration(*value), conan_core::time::format_duration(*min), conan_core::time::format_duration(*max))]
    OutOfRange {
        /// `interval` or `window`.
        what: &'static str,
        /// The value given.
        value: Duration,
        /// The smallest accepted.
        min: Duration,
        /// The largest accepted.
        max: Duration,
    },
    /// The deployment is unknown ([`conan_core::Error::NotFound`]) or the manager failed.
    #[error(transparent)]
    Manager(#[from] conan_core::Error),
}

/// The accepted intervals.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The accepted intervals.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest window: what the history keeps.
pub const MAX_WINDOW: Duration = crate::history::DOWNSAMPLED;

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_window() -> Duration {
    Duration::from_secs(600)
}

/// What to watch: a deployment, metrics, an interval and the window of the series.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WatchRequest {
    /// The deployment's name or id.
    pub target: String,
    /// The metrics wanted; empty: all of them.
    #[serde(default)]
    pub metrics: Vec<MetricName>,
    /// How often the stream updates, and the width of a series point (default 5 s;
    /// 100 ms to 1 h).
    #[serde(default = "default_interval", with = "serde_duration")]
    pub interval: Duration,
    /// How far back the series reach (default 10 min; at most 24 h).
    #[serde(default = "default_window", with = "serde_duration")]
    pub window: Duration,
}

impl WatchRequest {
    /// Every metric of `target`, every 5 s, with the last 10 minutes.
    #[must_use]
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            metrics: Vec::new(),
            interval: default_interval(),
            window: default_window(),
        }
    }

    /// Only these metrics.
    #[must_use]
    pub fn metrics(mut self, metrics: impl IntoIterator<Item = MetricName>) -> Self {
        self.metrics = metrics.into_iter().collect();
        self
    }

    /// Another interval.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Another window.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    fn wants(&self, m: MetricName) -> bool {
        self.metrics.is_empty() || self.metrics.contains(&m)
    }

    /// Checks the interval and the window.
    ///
    /// # Errors
    /// [`WatchError::OutOfRange`].
    pub fn validate(&self) -> Result<(), WatchError> {
        let check = |what, value: Duration, min, max| {
            if value < min || value > max {
                Err(WatchError::OutOfRange {
                    what,
                    value,
                    min,
                    max,
                })
            } else {
                Ok(())
            }
        };
        check("interval", self.interval, MIN_INTERVAL, MAX_INTERVAL)?;
        check("window", self.window, self.interval, MAX_WINDOW)
    }
}

/// A deployment's metrics now, with their recent series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Monitoring {
    /// The deployment's id.
    pub deployment_id: DeploymentId,
    /// Its name.
    pub name: String,
    /// Its status (`running`, `stopped`, `failed`, ...).
    pub status: String,
    /// When this answer was made.
    pub at: Timestamp,
    /// When the current values were measured (absent when none could be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<Timestamp>,
    /// The interval asked, in milliseconds (the width of a series point).
    pub interval_ms: u64,
    /// The window of the series, in milliseconds.
    pub window_ms: u64,
    /// The metrics asked.
    pub metrics: MonitoredMetrics,
}

/// One field per metric; those not asked are absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MonitoredMetrics {
    /// `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuReading>,
    /// `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReading>,
    /// `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkReading>,
    /// `health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReading>,
    /// `restarts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<RestartsReading>,
    /// `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestsReading>,
}

/// One point of a gauge's recent series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The start of the point.
    pub time: Timestamp,
    /// Smallest sample.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Largest sample.
    pub max: f64,
}

/// CPU now and recently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CpuReading {
    /// Percent of one core (200 = two cores busy); absent when not measured.
    pub usage: Option<f64>,
    /// The window, one point per interval.
    pub series: Vec<SeriesPoint>,
}

/// Memory now and recently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemoryReading {
    /// Resident bytes; absent when not measured.
    pub usage: Option<u64>,
    /// The enforced limit in bytes, if any.
    pub limit: Option<u64>,
    /// The window, one point per interval (bytes).
    pub series: Vec<SeriesPoint>,
}

/// Network bytes and rates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NetworkReading {
    /// Bytes received so far.
    pub rx_bytes: Option<u64>,
    /// Bytes sent so far.
    pub tx_bytes: Option<u64>,
    /// Received per second over the last point of the series.
    pub rx_bytes_per_second: Option<f64>,
    /// Sent per second over the last point of the series.
    pub tx_bytes_per_second: Option<f64>,
    /// The window, one point per interval: bytes per second received (`min` = `max` =
    /// `avg`: rates are computed per point).
    pub rx_series: Vec<SeriesPoint>,
    /// The same, sent.
    pub tx_series: Vec<SeriesPoint>,
}

/// The latest health observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthReading {
    /// `healthy`, `unhealthy`, `starting` or `unknown`.
    pub status: HealthStatus,
    /// When the last probe ran.
    pub last_check: Option<Timestamp>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// What the last probe saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RestartsReading {
    /// By the supervisor since the deploy.
    pub total: u32,
    /// Within the window.
    pub in_window: u64,
}

/// Requests, where known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RequestsReading {
    /// Requests per second; absent: no provider reports request counts (yet).
    pub per_second: Option<f64>,
}

/// The points of one gauge: `pick` gives its `(min, avg, max)` in a point, if measured.
fn gauge_points(
    points: &[Point],
    pick: impl Fn(&Point) -> Option<(f64, f64, f64)>,
) -> Vec<SeriesPoint> {
    points
        .iter()
        .filter_map(|p| {
            let (min, avg, max) = pick(p)?;
            Some(SeriesPoint {
                time: p.time,
                min,
                avg,
                max,
            })
        })
        .collect()
}

impl Monitor {
    /// The current values of `request.metrics` of the deployment, with their series of the
    /// last `request.window`, in one answer.
    ///
    /// # Errors
    /// [`WatchError::OutOfRange`], or [`WatchError::Manager`] with
    /// [`conan_core::Error::NotFound`] for an unknown deployment.
    pub async fn watch(&self, request: &WatchRequest) -> Result<Monitoring, WatchError> {
        request.validate()?;
        let manager = self.manager();
        let record = manager.get(&request.target)?;
        let wants_metrics = [
            MetricName::Cpu,
            MetricName::Memory,
            MetricName::Network,
            MetricName::Restarts,
        ]
        .into_iter()
        .any(|m| request.wants(m));
        let running = record.status.is_running();
        let timeout = self.settings().sample_timeout;
        let id = record.id.as_str();
        let metrics = async {
            if !(wants_metrics && running) {
                return None;
            }
            match tokio::time::timeout(timeout, manager.metrics(id)).await {
                Ok(Ok(m)) => Some((Timestamp::now(), m)),
                // Slow or failing: the sampler's latest, if any.
                _ => self.history().latest(&record.id),
            }
        };
        let health = async {
            if !request.wants(MetricName::Health) {
                return None;
            }
            let report = if running {
                tokio::time::timeout(timeout, manager.health(id))
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            Some(report.unwrap_or_else(|| HealthReport::new(HealthStatus::Unknown)))
        };
        let (current, health) = tokio::join!(metrics, health);
        let query = HistoryQuery::last(request.window).step(request.interval);
        let series = self.history().query(&record.id, &query);
        let now = current.as_ref().map(|(_, m)| m).cloned();
        Ok(Monitoring {
            deployment_id: record.id.clone(),
            name: record.name.to_string(),
            status: record.status.kind().as_str().to_owned(),
            at: Timestamp::now(),
            sampled_at: current.as_ref().map(|(t, _)| *t),
            interval_ms: millis(request.interval),
            window_ms: millis(request.window),
            metrics: readings(
                request,
                now.as_ref(),
                health,
                &series.points,
                series.step_ms,
            ),
        })
    }

    /// [`watch`](Self::watch) now and then every `request.interval`, until the deployment
    /// is removed (the stream then yields the `NotFound` error and ends) or the stream is
    /// dropped. Other errors are yielded and the stream goes on.
    ///
    /// # Errors
    /// [`WatchError::OutOfRange`] before the stream starts.
    pub fn watch_stream(
        &self,
        request: WatchRequest,
    ) -> Result<BoxStream<'static, Result<Monitoring, WatchError>>, WatchError> {
        request.validate()?;
        let mut tick = tokio::time::interval(request.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = (self.clone(), request, tick, false);
        Ok(
            futures::stream::unfold(state, |(monitor, request, mut tick, done)| async move {
                if done {
                    return None;
                }
                tick.tick().await;
                let answer = monitor.watch(&request).await;
                let gone = matches!(
                    answer,
                    Err(WatchError::Manager(conan_core::Error::NotFound { .. }))
                );
                Some((answer, (monitor, request, tick, gone)))
            })
            .boxed(),
        )
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[allow(clippy::cast_precision_loss, reason = "series values and rates")]
fn readings(
    request: &WatchRequest,
    now: Option<&Metrics>,
    health: Option<HealthReport>,
    points: &[Point],
    step_ms: u64,
) -> MonitoredMetrics {
    let step_secs = (step_ms.max(1) as f64) / 1000.0;
    let rate = |c: Option<crate::history::Counter>| c.map(|c| c.increase as f64 / step_secs);
    let rates = |pick: fn(&Point) -> Option<crate::history::Counter>| {
        gauge_points(points, |p| rate(pick(p)).map(|r| (r, r, r)))
    };
    let mut out = MonitoredMetrics::default();
    if request.wants(MetricName::Cpu) {
        out.cpu = Some(CpuReading {
            usage: now.and_then(|m| m.cpu_percent),
            series: gauge_points(points, |p| p.cpu_percent.map(|g| (g.min, g.avg, g.max))),
        });
    }
    if request.wants(MetricName::Memory) {
        out.memory = Some(MemoryReading {
            usage: now.and_then(|m| m.memory_bytes),
            limit: now
                .and_then(|m| m.memory_limit_bytes)
                .or_else(|| points.last().and_then(|p| p.memory_limit_bytes)),
            series: gauge_points(points, |p| {
                p.memory_bytes.map(|g| (g.min as f64, g.avg, g.max as f64))
            }),
        });
    }
    if request.wants(MetricName::Network) {
        let last = points.last();
        out.network = Some(NetworkReading {
            rx_bytes: now.and_then(|m| m.network_rx_bytes),
            tx_bytes: now.and_then(|m| m.network_tx_bytes),
            rx_bytes_per_second: rate(last.and_then(|p| p.network_rx_bytes)),
            tx_bytes_per_second: rate(last.and_then(|p| p.network_tx_bytes)),
            rx_series: rates(|p| p.network_rx_bytes),
            tx_series: rates(|p| p.network_tx_bytes),
        });
    }
    if let Some(report) = health {
        out.health = Some(HealthReading {
            status: report.status,
            last_check: report.checked_at,
            consecutive_failures: report.consecutive_failures,
            detail: report.detail,
        });
    }
    if request.wants(MetricName::Restarts) {
        out.restarts = Some(RestartsReading {
            total: now
                .map(|m| m.restarts)
                .or_else(|| {
                    points
                        .last()
                        .map(|p| u32::try_from(p.restarts.total).unwrap_or(u32::MAX))
                })
                .unwrap_or(0),
            in_window: points.iter().map(|p| p.restarts.increase).sum(),
        });
    }
    if request.wants(MetricName::Requests) {
        out.requests = Some(RequestsReading { per_second: None });
    }
    out
}

#[cfg(test)]
mod tests;
