//! Human renderings of deployments, log lines, events and failure bundles.

use std::fmt::Write as _;

use conan::{Event, EventEnvelope, FailureReport, LogLine, OutputStream, Timestamp};

use super::{Color, Style, bytes, short_duration};
use crate::api::{DeploymentView, StatusView};

/// A timestamp to the millisecond (`2026-05-01T10:00:00.123Z`).
#[must_use]
pub fn short_time(ts: Timestamp) -> String {
    let s = ts.to_string();
    match s.find('.') {
        Some(dot) if s.len() >= dot + 4 => format!("{}Z", &s[..dot + 4]),
        _ => s,
    }
}

/// One log line: time, stream, text (stderr in red on a terminal).
#[must_use]
pub fn log_line(line: &LogLine, style: Style) -> String {
    let stream = match line.stream {
        OutputStream::Stdout => "out",
        OutputStream::Stderr => "err",
        OutputStream::System => "sys",
    };
    let text = if line.stream == OutputStream::Stderr {
        style.paint(Color::Red, &line.message)
    } else {
        line.message.clone()
    };
    format!(
        "{} {} {text}",
        style.paint(Color::Dim, &short_time(line.timestamp)),
        style.paint(Color::Dim, stream)
    )
}

/// The failure bundle as indented lines: reason, exit status, last probe, last log lines.
#[must_use]
pub fn failure_lines(failure: &FailureReport) -> Vec<String> {
    let mut lines = vec![format!("  reason: {}", failure.reason)];
    if let Some(exit) = failure.exit {
        lines.push(format!("  exit:   {exit}"));
    }
    if let Some(probe) = &failure.probe {
        lines.push(format!("  probe:  {probe}"));
    }
    if !failure.probe_history.is_empty() {
        lines.push(format!("  last {} probes:", failure.probe_history.len()));
        for p in &failure.probe_history {
            let verdict = if p.healthy { "pass" } else { "FAIL" };
            lines.push(format!(
                "    {} {verdict} {:>5} ms  {}",
                short_time(p.at),
                p.duration_ms,
                p.detail
            ));
        }
    }
    if !failure.last_logs.is_empty() {
        lines.push(format!("  last {} log lines:", failure.last_logs.len()));
        for line in &failure.last_logs {
            lines.push(format!("    {}", log_line(line, Style::plain())));
        }
    }
    lines
}

/// One event as a line; `name` is the deployment's name when known.
#[must_use]
pub fn event_line(envelope: &EventEnvelope, name: &str, style: Style) -> String {
    let what = match &envelope.event {
        Event::Queued { kind, .. } => format!("{kind} queued"),
        Event::Started { kind, .. } => format!("{kind} started"),
        Event::Retrying {
            attempt,
            delay_ms,
            error,
            ..
        } => format!("attempt {attempt} failed ({error}); retrying in {delay_ms} ms"),
        Event::Finished { kind, outcome, .. } => match outcome {
            conan::Outcome::Succeeded => {
                format!("{kind} {}", style.paint(Color::Green, "succeeded"))
            }
            conan::Outcome::Failed { error } => {
                format!("{kind} {}: {error}", style.paint(Color::Red, "failed"))
            }
            conan::Outcome::Cancelled => format!("{kind} cancelled"),
        },
        Event::StatusChanged {
            from, to, revision, ..
        } => match to {
            conan::DeploymentStatus::Restarting { attempt, exit, .. } => format!(
                "{from} -> {} (revision {}, attempt {attempt}, {exit})",
                style.status(to.kind().as_str()),
                revision.0
            ),
            _ => format!(
                "{from} -> {} (revision {})",
                style.status(to.kind().as_str()),
                revision.0
            ),
        },
        Event::Progress { phase, message, .. } => format!("{}: {message}", phase.label()),
        Event::Healthy { .. } => style.paint(Color::Green, "healthy"),
        Event::Unhealthy { reason, .. } => {
            format!("{}: {reason}", style.paint(Color::Red, "unhealthy"))
        }
        Event::Restarted {
            attempt,
            exit,
            delay_ms,
            ..
        } => format!("restarting (attempt {attempt}, {exit}, in {delay_ms} ms)"),
        Event::MonitorRestart {
            attempt,
            delay_ms,
            cause,
            ..
        } => format!(
            "{} (attempt {attempt}, in {delay_ms} ms): {cause}",
            style.paint(Color::Yellow, "restarting")
        ),
        Event::Failed { failure, .. } => {
            format!("{}: {failure}", style.paint(Color::Red, "failed"))
        }
        Event::RolledBack {
            failed,
            serving,
            reason,
            ..
        } => format!(
            "revision {} failed ({reason}); revision {} keeps serving",
            failed.0, serving.0
        ),
        Event::Scaled {
            from, to, reason, ..
        } => format!(
            "{} {from} -> {to} replicas: {reason}",
            style.paint(Color::Bold, "scaled")
        ),
        Event::Recovered { status, .. } => format!("recovered as {}", status.kind()),
        Event::Removed { .. } => "removed".to_owned(),
        Event::Alert {
            rule, state, value, ..
        } => match state {
            conan::AlertState::Firing => format!(
                "alert {} {} (value {})",
                style.paint(Color::Bold, rule),
                style.paint(Color::Red, "firing"),
                format_value(*value)
            ),
            conan::AlertState::Resolved => format!(
                "alert {} {} (value {})",
                style.paint(Color::Bold, rule),
                style.paint(Color::Green, "resolved"),
                format_value(*value)
            ),
        },
        other => format!("{other:?}"),
    };
    format!(
        "{} {} {what}",
        style.paint(Color::Dim, &short_time(envelope.at)),
        style.paint(Color::Bold, name)
    )
}

/// A deployment as `key  value` lines (used by `deploy`, `status` and friends).
pub fn print_deployment(view: &DeploymentView, status: Option<&StatusView>, style: Style) {
    print!("{}", deployment_text(view, status, style));
}

/// The `key  value` lines of [`print_deployment`], each ending in a newline: printed with
/// one write rather than one a line (stdout is line-buffered).
pub fn deployment_text(view: &DeploymentView, status: Option<&StatusView>, style: Style) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("name", style.paint(Color::Bold, &view.name)),
        ("id", view.id.clone()),
        ("provider", view.provider.clone()),
        ("status", style.status(&view.status)),
    ];
    if let Some(reason) = &view.reason {
        rows.push(("reason", reason.clone()));
    }
    let restarting = view.restart.as_ref();
    if let Some(r) = restarting {
        let due =
            r.at.as_system_time()
                .duration_since(std::time::SystemTime::now());
        let when = due.map_or_else(
            |_| "now".to_owned(),
            |d| format!("in {}", short_duration(d)),
        );
        rows.push((
            "restart",
            format!("attempt {} after {}, {when}", r.attempt, r.exit),
        ));
    }
    if let Some(health) = status.and_then(|s| s.health.as_ref()) {
        let mut text = format!("{:?}", health.status).to_lowercase();
        if let Some(detail) = &health.detail {
            text.push_str(&format!(" ({detail})"));
        }
        rows.push(("health", text));
    }
    rows.push(("revision", view.revision.to_string()));
    // While it waits to restart, the last pid is dead: not shown.
    if let Some(pid) = view.pid.filter(|_| restarting.is_none()) {
        rows.push(("pid", pid.to_string()));
    }
    if let Some(container) = &view.container {
        rows.push(("container", container.chars().take(12).collect()));
    }
    if let Some(url) = &view.url {
        rows.push(("url", url.clone()));
    }
    if view.endpoint.is_some() {
        // Behind the endpoint, the instances' own ports (each its `PORT`).
        if !view.ports.is_empty() {
            let ports: Vec<String> = view.ports.iter().map(u16::to_string).collect();
            rows.push(("instances", format!("port {}", ports.join(", "))));
        }
    } else if view.url.is_none()
        && let Some(port) = view.port
    {
        rows.push(("port", port.to_string()));
    }
    if view.replicas > 1 || view.instances.len() > 1 || view.autoscale.is_some() {
        let auto = view.autoscale.as_ref().map_or_else(String::new, |a| {
            let target = a.target().map_or_else(String::new, |t| match t {
                conan::config::ScaleTarget::InFlight(v) => format!(", target {v} in flight"),
                conan::config::ScaleTarget::Cpu(v) => format!(", target {v} % CPU"),
            });
            format!(" (autoscaled {}..{}{target})", a.min, a.max)
        });
        rows.push((
            "replicas",
            format!(
                "{} of {} in service{auto}",
                view.instances.len(),
                view.replicas
            ),
        ));
        for i in &view.instances {
            let port = i.port.map_or_else(|| "-".to_owned(), |p| p.to_string());
            rows.push((
                "instance",
                format!("{}  port {port}  revision {}", i.id, i.revision),
            ));
        }
    }
    if let Some(t) = status.and_then(|s| s.traffic.as_ref()) {
        let mut state = Vec::new();
        if t.maintenance {
            state.push("maintenance (503)".to_owned());
        }
        if t.paused {
            state.push("paused".to_owned());
        }
        state.push(format!("{} connections", t.connections));
        rows.push(("endpoint", state.join(", ")));
        for r in &t.revisions {
            let p99 = r
                .latency
                .quantile(0.99)
                .map_or_else(|| "-".to_owned(), |s| format!("{:.1} ms", s * 1000.0));
            rows.push((
                "traffic",
                format!(
                    "rev {}: {} requests (2xx {}, 4xx {}, 5xx {}, proxy errors {}), {} retries, {} in flight, p99 <= {p99}",
                    r.revision,
                    r.requests,
                    r.status_classes[1],
                    r.status_classes[3],
                    r.status_classes[4],
                    r.proxy_errors,
                    r.retries,
                    r.in_flight
                ),
            ));
        }
    }
    if let Some(m) = status.and_then(|s| s.metrics.as_ref()) {
        rows.push(("restarts", m.restarts.to_string()));
        // While it waits to restart nothing runs: no cpu, memory or uptime to speak of.
        if restarting.is_none() {
            if let Some(cpu) = m.cpu_percent {
                rows.push(("cpu", format!("{cpu:.1} %")));
            }
            if let Some(mem) = m.memory_bytes {
                rows.push(("memory", bytes(mem)));
            }
            if let Some(up) = m.uptime {
                rows.push(("uptime", short_duration(up)));
            }
        }
    } else if let Some(started) = view.started_at
        && view.status == "running"
    {
        rows.push(("uptime", short_duration(started.elapsed())));
    }
    rows.push(("source", view.source.display().to_string()));
    if !view.env.is_empty() {
        rows.push(("env", view.env.join(", ")));
    }
    let mut text = String::new();
    for (key, value) in rows {
        let _ = writeln!(
            text,
            "{}  {value}",
            style.paint(Color::Dim, &format!("{key:<9}"))
        );
    }
    text
}

/// An alert's value with at most three decimals and no trailing zeros (`3`, `0.912`).
pub fn format_value(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}
