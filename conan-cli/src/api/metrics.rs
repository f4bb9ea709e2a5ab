//! The wire format of the metrics history (`GET /v1/deployments/{name}/metrics`) and its
//! parameters, shared by the daemon and `conan metrics`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use conan::monitor::history::{Counter, Gauge, Point, Resolution, Series};
/// What `GET /v1/deployments/{name}/monitor` answers (one per line with `follow=1`).
pub use conan::monitor::watch::{MonitoredMetrics, Monitoring};

/// How far back `since` may reach: what the history keeps.
pub const MAX_SINCE: Duration = conan::monitor::history::DOWNSAMPLED;
/// `since` when none is given.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(3600);

/// `GET /v1/deployments/{name}/metrics?since=1h&step=1m`: the deployment's name and its
/// [`Series`] (`deployment` id, `resolution` `full`/`downsampled`, `since`, `until`,
/// `step_ms`, `points`), flattened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsView {
    /// The deployment's name.
    pub name: String,
    /// The series.
    #[serde(flatten)]
    pub series: Series,
}

/// Reads `since`: a duration ago (`90s`, `1h`, `1d`), more than zero and at most a day.
///
/// # Errors
/// A message naming the accepted range.
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let d = conan::time::parse_duration(text).map_err(|e| format!("since: {e}"))?;
    if d.is_zero() || d > MAX_SINCE {
        return Err(format!(
            "since {text}: out of range; the history keeps the last 24h (use 1m to 24h)"
        ));
    }
    Ok(d)
}

/// Reads `step`: a duration more than zero.
///
/// # Errors
/// A message saying what a step looks like.
pub fn parse_step(text: &str) -> Result<Duration, String> {
    let d = conan::time::parse_duration(text).map_err(|e| format!("step: {e}"))?;
    if d.is_zero() {
        return Err(format!(
            "step {text}: must be more than zero (like 10s or 1m)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_up_to_a_day() {
        assert_eq!(parse_since("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_since("24h"), Ok(MAX_SINCE));
        assert!(parse_since("25h").unwrap_err().contains("out of range"));
        assert!(parse_since("0s").is_err());
        assert!(parse_since("yesterday").is_err());
        assert!(parse_step("0s").is_err());
        assert_eq!(parse_step("1m"), Ok(Duration::from_secs(60)));
    }
}
