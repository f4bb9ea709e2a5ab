//! The canary plan of `update.strategy = "canary"` (`[update.canary]`).
//!
//! ```toml
//! [update]
//! strategy = "canary"
//!
//! [update.canary]
//! max_error_ratio_increase = 0.01   # 5xx ratio at most 1 point above the old revision's
//! max_latency_ratio = 1.5           # mean latency at most 1.5 x the old revision's ...
//! latency_slack = "5ms"             # ... plus 5 ms (noise at sub-millisecond latencies)
//! min_requests = 20                 # a step judges no fewer canary requests
//!
//! [[update.canary.steps]]
//! share = 10                        # percent of requests to the new revision
//! duration = "30s"
//!
//! [[update.canary.steps]]
//! share = 50
//! duration = "30s"
//! ```
//!
//! How it is judged is in [`crate::support::canary`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::serde_duration;

/// One step of a canary: a share of the requests to the new revision for a while.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// Percent of requests routed to the new revision (1–99).
    pub share: u8,
    /// How long the step lasts before it is judged.
    #[serde(with = "serde_duration")]
    pub duration: Duration,
}

impl CanaryStep {
    /// A step of `share` percent for `duration`.
    #[must_use]
    pub fn new(share: u8, duration: Duration) -> Self {
        Self { share, duration }
    }
}

/// How a canary proceeds and what makes it fail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// The steps, in order; shares must grow. After the last one passes the new revision
    /// is promoted (100 %). Default: 10 % for 30 s, then 50 % for 30 s.
    #[serde(default = "CanaryPlan::default_steps")]
    pub steps: Vec<CanaryStep>,
    /// How far the new revision's 5xx ratio may exceed the old one's in a step (an
    /// absolute difference of ratios: 0.01 is one percentage point). Default 0.01.
    #[serde(default = "CanaryPlan::default_error_increase")]
    pub max_error_ratio_increase: f64,
    /// How many times the old revision's mean latency the new one's may be. Default 1.5.
    #[serde(default = "CanaryPlan::default_latency_ratio")]
    pub max_latency_ratio: f64,
    /// Added to the latency allowance, so noise at sub-millisecond latencies never fails
    /// a canary. Default 5 ms.
    #[serde(default = "CanaryPlan::default_latency_slack", with = "serde_duration")]
    pub latency_slack: Duration,
    /// The fewest canary requests a step judges: a step that saw fewer goes on (up to
    /// three times its duration). Default 20.
    #[serde(default = "CanaryPlan::default_min_requests")]
    pub min_requests: u64,
}

impl CanaryPlan {
    fn default_steps() -> Vec<CanaryStep> {
        vec![
            CanaryStep::new(10, Duration::from_secs(30)),
            CanaryStep::new(50, Duration::from_secs(30)),
        ]
    }
    fn default_error_increase() -> f64 {
        0.01
    }
    fn default_latency_ratio() -> f64 {
        1.5
    }
    fn default_latency_slack() -> Duration {
        Duration::from_millis(5)
    }
    fn default_min_requests() -> u64 {
        20
    }

    /// Every problem of the plan, each with its path under `update.canary`.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |path: String, message: String| out.push((path, message));
        if self.steps.is_empty() {
            push(
                "update.canary.steps".into(),
                "needs at least one step (a share and a duration)".into(),
            );
        }
        if self.steps.len() > 20 {
            push(
                "update.canary.steps".into(),
                format!("at most 20 steps (got {})", self.steps.len()),
            );
        }
        let mut last = 0u8;
        for (i, s) in self.steps.iter().enumerate() {
            let at = format!("update.canary.steps[{i}]");
            if !(1..=99).contains(&s.share) {
                push(
                    format!("{at}.share"),
                    format!("must be a percentage from 1 to 99 (got {})", s.share),
                );
            } else if s.share <= last {
                push(
                    format!("{at}.share"),
                    format!(
                        "shares must grow from step to step ({} after {last})",
                        s.share
                    ),
                );
            }
            last = last.max(s.share);
            if s.duration < Duration::from_secs(1) {
                push(
                    format!("{at}.duration"),
                    "must be at least 1s (a step needs time to see traffic)".into(),
                );
            } else if s.duration > super::limits::CANARY_STEP {
                push(
                    format!("{at}.duration"),
                    format!(
                        "at most {}",
                        crate::time::format_duration(super::limits::CANARY_STEP)
                    ),
                );
            }
        }
        let r = self.max_error_ratio_increase;
        if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
            push(
                "update.canary.max_error_ratio_increase".into(),
                format!("must be a ratio between 0.0 and 1.0 (got {r})"),
            );
        }
        let l = self.max_latency_ratio;
        if !(l.is_finite() && (1.0..=100.0).contains(&l)) {
            push(
                "update.canary.max_latency_ratio".into(),
                format!("must be a factor between 1.0 and 100.0 (got {l})"),
            );
        }
        if self.latency_slack > Duration::from_secs(60) {
            push("update.canary.latency_slack".into(), "at most 1m".into());
        }
        if self.min_requests == 0 {
            push(
                "update.canary.min_requests".into(),
                "must be at least 1".into(),
            );
        }
        out
    }

    /// The longest a canary of this plan can take (each step extended to three times its
    /// duration when traffic is thin).
    #[must_use]
    pub fn longest(&self) -> Duration {
        self.steps.iter().fold(Duration::ZERO, |acc, s| {
            acc.saturating_add(s.duration.saturating_mul(3))
        })
    }
}

impl Default for CanaryPlan {
    fn default() -> Self {
        Self {
            steps: Self::default_steps(),
            max_error_ratio_increase: Self::default_error_increase(),
            max_latency_ratio: Self::default_latency_ratio(),
            latency_slack: Self::default_latency_slack(),
            min_requests: Self::default_min_requests(),
        }
    }
}
