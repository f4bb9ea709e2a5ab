//! The largest value [`DeploymentConfig::validate`](super::DeploymentConfig::validate)
//! accepts for each duration of a config.
//!
//! Providers add these durations to clocks (`Instant + interval`); bounding them at
//! validation means no accepted config can overflow a timer. The bounds sit far above any
//! sensible setting; a config beyond them is a typo or an attack.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;

/// `health_check.interval`: at most 1 h.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(HOUR);
/// `health_check.timeout`: at most 10 min.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10 * MINUTE);
/// `health_check.start_period`: at most 1 h.
pub const HEALTH_CHECK_START_PERIOD: Duration = Duration::from_secs(HOUR);
/// `restart.window`: at most 24 h.
pub const RESTART_WINDOW: Duration = Duration::from_secs(24 * HOUR);
/// `restart.backoff_initial` and `restart.backoff_max`: at most 1 h.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(HOUR);
/// `restart.reset_after`: at most 24 h.
pub const RESTART_RESET_AFTER: Duration = Duration::from_secs(24 * HOUR);
/// `restart.min_uptime`: at most 1 h.
pub const RESTART_MIN_UPTIME: Duration = Duration::from_secs(HOUR);
/// `stop.timeout`: at most 1 h.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(HOUR);
/// `update.min_healthy_time`: at most 1 h.
pub const UPDATE_MIN_HEALTHY_TIME: Duration = Duration::from_secs(HOUR);
/// `update.healthy_deadline`: at most 24 h.
pub const UPDATE_HEALTHY_DEADLINE: Duration = Duration::from_secs(24 * HOUR);

/// Most `endpoint.drain_timeout`.
pub const ENDPOINT_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// `update.canary.steps[].duration`.
pub const CANARY_STEP: Duration = Duration::from_secs(HOUR);
/// `replicas.scale_out_cooldown` and `replicas.scale_in_cooldown`: at most 24 h.
pub const AUTOSCALE_COOLDOWN: Duration = Duration::from_secs(24 * HOUR);
