//! Writing the exposition: one collector that walks the manager's records once per scrape.

use std::fmt;
use std::sync::Arc;

use conan_core::{DeploymentRecord, Metrics, StatusKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::DeploymentInstruments;
use crate::Shared;
use crate::logs::LEVELS;

/// The `Content-Type` of the exposition: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What one scrape knows of one deployment.
struct Row {
    record: DeploymentRecord,
    latest: Option<Metrics>,
    instruments: Option<Arc<DeploymentInstruments>>,
    log_lines: Option<[u64; LEVELS.len()]>,
    health: Option<conan_core::HealthStatus>,
}

impl Row {
    fn name(&self) -> &str {
        &self.record.name
    }

    /// Running, and not unhealthy by the health monitor's verdict (its thresholds and start
    /// period; a deployment without a check, or not probed yet, counts as up).
    fn up(&self) -> bool {
        self.record.status.kind() == StatusKind::Running
            && self.health != Some(conan_core::HealthStatus::Unhealthy)
    }
}

/// The per-scrape collector: borrows nothing, reads the shared state when encoded.
struct Exposition {
    shared: Arc<Shared>,
}

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposition").finish_non_exhaustive()
    }
}

/// Renders the exposition of `shared` into `out`.
pub(crate) fn render(shared: &Arc<Shared>, out: &mut String) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        shared: Arc::clone(shared),
    }));
    // Writing into a String cannot fail, and every encoder of ours only writes.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(out, &registry) {
        tracing::warn!(error = %e, "encoding the Prometheus exposition failed");
    }
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let shared = &self.shared;
        let rows: Vec<Row> = shared
            .manager
            .list()
            .into_iter()
            .map(|record| Row {
                latest: shared.history.latest(&record.id).map(|(_, m)| m),
                instruments: shared.instruments.get(&record.name),
                log_lines: shared.log_counters.lines_by_level(&record.id),
                health: shared.health.status(&record.id),
                record,
            })
            .collect();
        let e = &mut enc;

        gauges(
            e,
            "conan_deployment_up",
            "Whether the deployment is running and passes its health check (1) or not (0).",
            rows.iter().map(|r| {
                (
                    [("deployment", r.name()), ("provider", &*r.record.provider)],
                    i64::from(r.up()),
                )
            }),
        )?;
        gauges(
            e,
            "conan_deployment_status",
            "The deployment's status as a state set: 1 for the current status, 0 otherwise.",
            rows.iter().flat_map(|r| {
                let current = r.record.status.kind();
                StatusKind::ALL.into_iter().map(move |s| {
                    (
                        [("deployment", r.name()), ("status", s.as_str())],
                        i64::from(s == current),
                    )
                })
            }),
        )?;
        counters(
            e,
            "conan_deployment_restarts",
            "Restarts of the deployment (by its supervisor or a restart operation) since the monitor started.",
            rows.iter().map(|r| {
                (
                    [("deployment", r.name())],
                    r.instruments.as_ref().map_or(0, |i| i.restarts.get()),
                )
            }),
        )?;
        gauges(
            e,
            "conan_deployment_memory_bytes",
            "Resident memory of the deployment's instances, at the latest sample.",
            latest(&rows, |m| m.memory_bytes),
        )?;
        gauges(
            e,
            "conan_deployment_memory_limit_bytes",
            "The memory limit of the deployment, when one is set.",
            latest(&rows, |m| m.memory_limit_bytes),
        )?;
        gauges(
            e,
            "conan_deployment_cpu_usage_ratio",
            "CPU use of the deployment's instances in cores (2 = two cores busy), at the latest sample.",
            latest(&rows, |m| m.cpu_percent.map(|p| p / 100.0)),
        )?;
        counters(
            e,
            "conan_deployment_network_receive_bytes",
            "Bytes received by the deployment's instances, at the latest sample.",
            latest(&rows, |m| m.network_rx_bytes),
        )?;
        counters(
            e,
            "conan_deployment_network_transmit_bytes",
            "Bytes sent by the deployment's instances, at the latest sample.",
            latest(&rows, |m| m.network_tx_bytes),
        )?;
        gauges(
            e,
            "conan_deployment_uptime_seconds",
            "Time since the deployment's current instance started, at the latest sample.",
            latest(&rows, |m| m.uptime.map(|u| u.as_secs_f64())),
        )?;

        let probed: Vec<(&Row, &DeploymentInstruments)> = rows
            .iter()
            .filter_map(|r| {
                let i = r.instruments.as_deref()?;
                i.probed().then_some((r, i))
            })
            .collect();
        if !probed.is_empty() {
            let mut metric = e.encode_descriptor(
                "conan_health_check_duration_seconds",
                "How long the deployment's health probes took.",
                None,
                MetricType::Histogram,
            )?;
            for (r, i) in &probed {
                let labels = [("deployment", r.name())];
                i.probe_duration.encode(metric.encode_family(&labels)?)?;
            }
        }
        counters(
            e,
            "conan_health_checks",
            "Health probes of the deployment by result.",
            probed.iter().flat_map(|(r, i)| {
                [
                    ("healthy", i.checks_healthy.get()),
                    ("unhealthy", i.checks_unhealthy.get()),
                ]
                .map(|(result, n)| ([("deployment", r.name()), ("result", result)], n))
            }),
        )?;
        counters(
            e,
            "conan_log_lines",
            "Log lines the deployment wrote, by level, since the monitor started following it.",
            rows.iter().flat_map(|r| {
                r.log_lines.into_iter().flat_map(move |counts| {
                    LEVELS.iter().zip(counts).map(move |(level, n)| {
                        ([("deployment", r.name()), ("level", level.as_str())], n)
                    })
                })
            }),
        )?;

        let instruments = &shared.instruments;
        if !instruments.operations.is_empty() {
            instruments.operations.encode(e.encode_descriptor(
                "conan_operations",
                "Operations the manager finished, by kind and outcome.",
                None,
                MetricType::Counter,
            )?)?;
        }
        if !instruments.operation_duration.is_empty() {
            instruments.operation_duration.encode(e.encode_descriptor(
                "conan_operation_duration_seconds",
                "How long operations ran, from leaving the queue to their end (retries included).",
                None,
                MetricType::Histogram,
            )?)?;
        }
        traffic(e, shared, &rows)?;
        let queue = shared.manager.queue_stats();
        gauges(
            e,
            "conan_operations_pending",
            "Operations submitted and waiting in the queue.",
            [(NO_LABELS, queue.pending)],
        )?;
        gauges(
            e,
            "conan_operations_in_progress",
            "Operations running now.",
            [(NO_LABELS, queue.processing)],
        )?;
        Ok(())
    }
}

const NO_LABELS: [(&str, &str); 0] = [];

/// The traffic layer's counters (`conan-proxy`) per deployment and revision, when the
/// manager has one.
fn traffic(e: &mut DescriptorEncoder, shared: &Shared, rows: &[Row]) -> fmt::Result {
    let Some(layer) = shared.manager.traffic() else {
        return Ok(());
    };
    let stats: Vec<(&Row, Vec<(String, conan_core::traffic::RevisionTraffic)>)> = rows
        .iter()
        .filter_map(|r| {
            let s = layer.stats(&r.record.id)?;
            Some((
                r,
                s.revisions
                    .into_iter()
                    .map(|t| (t.revision.0.to_string(), t))
                    .collect(),
            ))
        })
        .collect();
    if stats.is_empty() {
        return Ok(());
    }
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    counters(
        e,
        "conan_proxy_requests",
        "Requests answered through the deployment's endpoint, by revision and status class (the proxy's own 502/504 included).",
        stats.iter().flat_map(|(r, revs)| {
            revs.iter().flat_map(move |(rev, t)| {
                CLASSES.iter().zip(t.status_classes).map(move |(class, n)| {
                    (
                        [
                            ("deployment", r.name()),
                            ("revision", rev.as_str()),
                            ("class", *class),
                        ],
                        n,
                    )
                })
            })
        }),
    )?;
    counters(
        e,
        "conan_proxy_errors",
        "502 and 504 answers the proxy made itself (an instance failed to connect, reset or timed out).",
        stats.iter().flat_map(|(r, revs)| {
            revs.iter().map(move |(rev, t)| {
                (
                    [("deployment", r.name()), ("revision", rev.as_str())],
                    t.proxy_errors,
                )
            })
        }),
    )?;
    counters(
        e,
        "conan_proxy_retries",
        "Requests sent again to another instance after a failed connect.",
        stats.iter().flat_map(|(r, revs)| {
            revs.iter().map(move |(rev, t)| {
                (
                    [("deployment", r.name()), ("revision", rev.as_str())],
                    t.retries,
                )
            })
        }),
    )?;
    gauges(
        e,
        "conan_proxy_in_flight",
        "Requests (and upgraded connections) in flight to the revision now.",
        stats.iter().flat_map(|(r, revs)| {
            revs.iter().map(move |(rev, t)| {
                (
                    [("deployment", r.name()), ("revision", rev.as_str())],
                    i64::try_from(t.in_flight).unwrap_or(i64::MAX),
                )
            })
        }),
    )?;
    let mut metric = e.encode_descriptor(
        "conan_proxy_request_duration_seconds",
        "Time from a request's arrival at the endpoint to its response head.",
        None,
        MetricType::Histogram,
    )?;
    for (r, revs) in &stats {
        for (rev, t) in revs {
            let buckets: Vec<(f64, u64)> = conan_core::traffic::LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(t.latency.buckets.iter().copied())
                .collect();
            let labels = [("deployment", r.name()), ("revision", rev.as_str())];
            metric
                .encode_family(&labels)?
                .encode_histogram::<[(&str, &str); 0]>(
                    t.latency.sum_seconds,
                    t.latency.count,
                    &buckets,
                    None,
                )?;
        }
    }
    Ok(())
}

/// The rows whose latest sample has a value for `field`.
fn latest<'a, V: 'a>(
    rows: &'a [Row],
    field: impl Fn(&Metrics) -> Option<V> + 'a,
) -> impl Iterator<Item = ([(&'static str, &'a str); 1], V)> + 'a {
    rows.iter().filter_map(move |r| {
        let value = field(r.latest.as_ref()?)?;
        Some(([("deployment", r.name())], value))
    })
}

/// One gauge family; nothing at all when it has no series.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue + fmt::Debug>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(e, name, help, MetricType::Gauge, series, |v, m| {
        ConstGauge::new(v).encode(m)
    })
}

/// One counter family (the encoder adds `_total` to `name`); nothing when it has no series.
fn counters<L: EncodeLabelSet, V: EncodeCounterValue + fmt::Debug>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(e, name, help, MetricType::Counter, series, |v, m| {
        ConstCounter::new(v).encode(m)
    })
}

fn family<L: EncodeLabelSet, V>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, V)>,
    mut write: impl FnMut(V, prometheus_client::encoding::MetricEncoder) -> fmt::Result,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut metric = e.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        write(value, metric.encode_family(&labels)?)?;
    }
    Ok(())
}
