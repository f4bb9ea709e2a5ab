//! From the core's and the monitor's types to the tools' (public so a backend over another
//! transport, such as the daemon client, converts the same way).

use conan_core::{DeploymentRecord, DeploymentStatus, LogLine};
use conan_monitor::watch;

use crate::types::{
    CpuMetric, Deployment, HealthMetric, LogEntry, MemoryMetric, Metrics, Monitoring,
    NetworkMetric, RequestsMetric, RestartsMetric, SeriesPoint,
};

/// The tools' view of a log line.
#[must_use]
pub fn log_entry(line: &LogLine) -> LogEntry {
    LogEntry {
        timestamp: line.timestamp.to_string(),
        stream: line.stream.as_str().to_owned(),
        level: line.level.as_str().to_owned(),
        message: line.message.clone(),
    }
}

/// The tools' view of a deployment record (env values dropped: names only).
#[must_use]
pub fn deployment(record: &DeploymentRecord) -> Deployment {
    let runtime = record.runtime.as_deref();
    let first = runtime.and_then(|r| r.instances.first());
    let (pid, container) = match first {
        Some(i) if &*record.provider == "local" => (i.id.parse().ok(), None),
        Some(i) => (None, Some(i.id.clone())),
        None => (None, None),
    };
    let reason = match &record.status {
        DeploymentStatus::Failed { reason } => Some(reason.clone()),
        _ => None,
    };
    Deployment {
        id: record.id.to_string(),
        name: record.name.to_string(),
        provider: record.provider.to_string(),
        status: record.status.kind().as_str().to_owned(),
        reason,
        url: runtime.and_then(|r| r.url.clone()),
        start_time: first.and_then(|i| i.started_at).map(|t| t.to_string()),
        pid,
        container,
        port: runtime.and_then(conan_core::RuntimeInfo::port),
        revision: record.revision.0,
        project_path: record.config.source.display().to_string(),
        env: record.config.env.keys().map(str::to_owned).collect(),
    }
}

fn series(points: &[watch::SeriesPoint]) -> Vec<SeriesPoint> {
    points
        .iter()
        .map(|p| SeriesPoint {
            time: p.time.to_string(),
            min: p.min,
            avg: p.avg,
            max: p.max,
        })
        .collect()
}

/// The tools' view of a monitor's answer.
#[must_use]
pub fn monitoring(m: &watch::Monitoring) -> Monitoring {
    let metrics = &m.metrics;
    Monitoring {
        deployment_id: m.deployment_id.to_string(),
        name: m.name.clone(),
        status: m.status.clone(),
        sampled_at: m.sampled_at.map(|t| t.to_string()),
        interval: m.interval_ms,
        metrics: Metrics {
            cpu: metrics.cpu.as_ref().map(|c| CpuMetric {
                usage: c.usage,
                series: series(&c.series),
            }),
            memory: metrics.memory.as_ref().map(|c| MemoryMetric {
                usage: c.usage,
                limit: c.limit,
                series: series(&c.series),
            }),
            network: metrics.network.as_ref().map(|n| NetworkMetric {
                rx_bytes: n.rx_bytes,
                tx_bytes: n.tx_bytes,
                rx_bytes_per_second: n.rx_bytes_per_second,
                tx_bytes_per_second: n.tx_bytes_per_second,
            }),
            health: metrics.health.as_ref().map(|h| HealthMetric {
                status: health_name(h.status).to_owned(),
                last_check: h.last_check.map(|t| t.to_string()),
                consecutive_failures: h.consecutive_failures,
                detail: h.detail.clone(),
            }),
            restarts: metrics.restarts.as_ref().map(|r| RestartsMetric {
                total: r.total,
                in_window: r.in_window,
            }),
            requests: metrics.requests.as_ref().map(|r| RequestsMetric {
                per_second: r.per_second,
            }),
        },
    }
}

/// `healthy`, `unhealthy`, `starting` or `unknown`.
#[must_use]
pub fn health_name(status: conan_core::HealthStatus) -> &'static str {
    status.as_str()
}

/// One line describing an event of an operation in progress (`None` for events not worth a
/// progress notification).
#[must_use]
pub fn describe(event: &conan_core::Event) -> Option<String> {
    use conan_core::Event;
    Some(match event {
        Event::Queued { kind, .. } => format!("{kind}: queued"),
        Event::Progress { phase, message, .. } if message.is_empty() => phase.label().to_owned(),
        Event::Progress { phase, message, .. } => format!("{}: {message}", phase.label()),
        Event::StatusChanged { to, .. } => format!("status: {}", to.kind()),
        Event::Retrying { attempt, error, .. } => {
            format!("attempt {attempt} failed ({error}); retrying")
        }
        Event::Healthy { .. } => "healthy".to_owned(),
        Event::Unhealthy { reason, .. } => format!("unhealthy: {reason}"),
        _ => return None,
    })
}
