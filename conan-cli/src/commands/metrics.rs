//! `conan metrics NAME`: the deployment's metrics history as a table.

use std::time::Duration;

use conan::Timestamp;

use crate::api::metrics::{
    DEFAULT_SINCE, Gauge, MetricsView, Point, Resolution, parse_since, parse_step,
};
use crate::api::query;
use crate::client::Client;
use crate::error::{CliError, CliResult};
use crate::home::Home;
use crate::output::table::{Cell, Table};
use crate::output::{self, Style};

/// The default step: a sixtieth of the range, at least a minute.
fn default_step(since: Duration) -> Duration {
    (since / 60).max(Duration::from_secs(60))
}

/// `conan metrics NAME [--since 1h] [--step 1m] [--json]`.
pub async fn run(
    home: &Home,
    name: &str,
    since: Option<&str>,
    step: Option<&str>,
    json: bool,
) -> CliResult {
    let since_d = since
        .map(|s| parse_since(s).map_err(|e| CliError::usage(format!("--{e}"))))
        .transpose()?
        .unwrap_or(DEFAULT_SINCE);
    let step_d = step
        .map(|s| parse_step(s).map_err(|e| CliError::usage(format!("--{e}"))))
        .transpose()?
        .unwrap_or_else(|| default_step(since_d));
    let params = [
        ("since", format!("{}s", since_d.as_secs().max(1))),
        ("step", format!("{}ms", step_d.as_millis().max(1))),
    ];
    let target = query::encode(&[("", name.to_owned())]);
    let path = format!(
        "/deployments/{}/metrics?{}",
        target.trim_start_matches('='),
        query::encode(&params)
    );
    let client = Client::connect(home).await?;
    let view: MetricsView = client.get(&path).await?;
    if json {
        output::print_json(&view);
        return Ok(());
    }
    print!("{}", render(&view, Style::stdout()));
    Ok(())
}

/// The table (or a line saying there is nothing yet).
fn render(view: &MetricsView, style: Style) -> String {
    let s = &view.series;
    if s.points.is_empty() {
        return format!(
            "no samples of {} in that range yet (the daemon samples running deployments \
             every sample_interval, 10s by default)\n",
            view.name
        );
    }
    let ranged = s.points.iter().any(|p| p.samples > 1);
    let suffix = if ranged { " MIN/AVG/MAX" } else { "" };
    let cpu_header = format!("CPU %{suffix}");
    let mem_header = format!("MEMORY{suffix}");
    let mut table = Table::new(&["TIME", &cpu_header, &mem_header, "NET IN/OUT", "RESTARTS"]);
    let step = Duration::from_millis(s.step_ms.max(1));
    for p in &s.points {
        table.row(vec![
            Cell::new(clock(p.time, step)),
            Cell::new(gauge(p.cpu_percent, ranged, |v| format!("{v:.1}"))),
            Cell::new(gauge(p.memory_bytes.map(as_float), ranged, bytes)),
            Cell::new(network(p, step)),
            Cell::new(p.restarts.total.to_string()),
        ]);
    }
    let resolution = match s.resolution {
        Resolution::Full => "every sample",
        Resolution::Downsampled => "5-minute buckets",
    };
    format!(
        "{}{}\n",
        table.render(style),
        style.paint(
            output::Color::Dim,
            &format!(
                "{} points of {} from {}, {} each",
                s.points.len(),
                view.name,
                resolution,
                output::short_duration(step)
            )
        )
    )
}

#[allow(clippy::cast_precision_loss, reason = "for display")]
fn as_float(g: Gauge<u64>) -> Gauge<f64> {
    Gauge {
        min: g.min as f64,
        avg: g.avg,
        max: g.max as f64,
    }
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a rounded byte count"
)]
fn bytes(v: f64) -> String {
    output::bytes(v.max(0.0).round() as u64)
}

fn gauge(g: Option<Gauge<f64>>, ranged: bool, show: impl Fn(f64) -> String) -> String {
    match g {
        None => "-".to_owned(),
        // A steady value reads better once.
        Some(g) if ranged && show(g.min) != show(g.max) => {
            format!("{}/{}/{}", show(g.min), show(g.avg), show(g.max))
        }
        Some(g) => show(g.avg),
    }
}

/// Bytes per second in and out over the point.
fn network(p: &Point, step: Duration) -> String {
    let rate = |c: Option<conan::monitor::history::Counter>| {
        #[allow(clippy::cast_precision_loss, reason = "for display")]
        c.map_or_else(
            || "-".to_owned(),
            |c| format!("{}/s", bytes(c.increase as f64 / step.as_secs_f64())),
        )
    };
    if p.network_rx_bytes.is_none() && p.network_tx_bytes.is_none() {
        return "-".to_owned();
    }
    format!(
        "{} / {}",
        rate(p.network_rx_bytes),
        rate(p.network_tx_bytes)
    )
}

/// `HH:MM:SS` (UTC), with the date when the step is an hour or more.
fn clock(t: Timestamp, step: Duration) -> String {
    let s = t.to_string();
    match (s.split_once('T'), step >= Duration::from_secs(3600)) {
        (Some((date, time)), true) => format!("{date} {}", &time[..time.len().min(5)]),
        (Some((_, time)), false) => time[..time.len().min(8)].to_owned(),
        (None, _) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(points: serde_json::Value, step_ms: u64) -> MetricsView {
        serde_json::from_value(serde_json::json!({
            "name": "web",
            "deployment": "dep-1",
            "resolution": "full",
            "since": "2026-01-01T00:00:00Z",
            "until": "2026-01-01T01:00:00Z",
            "step_ms": step_ms,
            "points": points,
        }))
        .unwrap()
    }

    #[test]
    fn rows_show_min_avg_max_when_points_aggregate_samples() {
        let v = view(
            serde_json::json!([{
                "time": "2026-01-01T00:01:00Z",
                "samples": 6,
                "cpu_percent": {"min": 1.0, "avg": 2.5, "max": 4.0},
                "memory_bytes": {"min": 1048576, "avg": 2097152.0, "max": 3145728},
                "network_rx_bytes": {"total": 9000, "increase": 6144},
                "network_tx_bytes": {"total": 100, "increase": 0},
                "restarts": {"total": 1, "increase": 0}
            }]),
            60_000,
        );
        let out = render(&v, Style::plain());
        assert!(out.starts_with("TIME"), "{out}");
        assert!(out.contains("CPU % MIN/AVG/MAX"), "{out}");
        assert!(out.contains("00:01:00"), "{out}");
        assert!(out.contains("1.0/2.5/4.0"), "{out}");
        assert!(out.contains("1.0 MiB/2.0 MiB/3.0 MiB"), "{out}");
        assert!(out.contains("102 B/s / 0 B/s"), "{out}");
        // A steady gauge shows once.
        let steady = view(
            serde_json::json!([{
                "time": "2026-01-01T00:01:00Z",
                "samples": 6,
                "cpu_percent": {"min": 1.0, "avg": 1.0, "max": 1.0},
                "restarts": {"total": 0, "increase": 0}
            }]),
            60_000,
        );
        let out = render(&steady, Style::plain());
        assert!(out.contains(" 1.0 ") && !out.contains("1.0/1.0"), "{out}");
        assert!(
            out.contains("1 points of web from every sample, 1m 0s each"),
            "{out}"
        );
    }

    #[test]
    fn single_samples_show_one_value_and_nothing_says_so() {
        let v = view(
            serde_json::json!([{
                "time": "2026-01-01T00:00:10Z",
                "samples": 1,
                "cpu_percent": {"min": 3.0, "avg": 3.0, "max": 3.0},
                "restarts": {"total": 0, "increase": 0}
            }]),
            10_000,
        );
        let out = render(&v, Style::plain());
        assert!(out.contains("CPU %  MEMORY"), "{out}");
        assert!(out.contains("3.0"), "{out}");
        let empty = render(&view(serde_json::json!([]), 10_000), Style::plain());
        assert!(empty.starts_with("no samples of web"), "{empty}");
    }

    #[test]
    fn the_default_step_gives_about_sixty_rows() {
        assert_eq!(
            default_step(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            default_step(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            default_step(Duration::from_secs(86_400)),
            Duration::from_secs(1440)
        );
    }
}
