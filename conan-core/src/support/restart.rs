//! Restart decisions as a pure state machine: given exits and times, when to restart and
//! when to give up. Supervisors (the local provider's, the Docker provider's) feed it
//! observations; it performs no IO and reads no clock, so tests need no runtime.
//!
//! - The delay before restart `n` (1-based, counted since the last reset) is
//!   `backoff_initial × backoff_multiplier^(n-1)`, capped at `backoff_max`, then spread by
//!   ±`jitter` (a fraction) with the random number the caller supplies.
//! - After `reset_after` of continuous uptime the next crash starts again at `backoff_initial`.
//! - More than `max_restarts` restarts within the sliding `window` give up: the deployment
//!   is Failed ("crash loop").

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::{RestartMode, RestartPolicy};
use crate::failure::ExitStatus;

/// What to do after an instance exited.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum RestartDecision {
    /// Restart after `delay`; this is restart number `attempt` in the window.
    Restart {
        /// Wait this long first.
        delay: Duration,
        /// Restart count within the window (1-based).
        attempt: u32,
    },
    /// The policy says not to restart this exit (clean exit under `on-failure`, or `never`).
    Stay,
    /// Too many restarts in the window: give up and mark the deployment Failed.
    GiveUp {
        /// Restarts counted in the window.
        restarts: u32,
    },
}

/// Tracks restarts of one deployment. Times are durations since any fixed origin the
/// caller chooses (e.g. a `tokio::time::Instant` taken at deploy).
#[derive(Clone, Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    restarts: VecDeque<Duration>,
    consecutive: u32,
    total: u32,
}

impl RestartTracker {
    /// A tracker for `policy`.
    #[must_use]
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            restarts: VecDeque::new(),
            consecutive: 0,
            total: 0,
        }
    }

    /// Restarts performed since the tracker was created.
    #[must_use]
    pub fn total_restarts(&self) -> u32 {
        self.total
    }

    /// Decides what to do about an exit at `now` of an instance that had been up for
    /// `uptime`. `random` is a number in `[0, 1)` used for jitter.
    pub fn on_exit(
        &mut self,
        now: Duration,
        uptime: Duration,
        exit: ExitStatus,
        random: f64,
    ) -> RestartDecision {
        let restart = match self.policy.policy {
            RestartMode::Always => true,
            RestartMode::OnFailure => !exit.success(),
            RestartMode::Never => false,
        };
        if !restart {
            return RestartDecision::Stay;
        }
        if uptime >= self.policy.reset_after {
            self.consecutive = 0;
        }
        let window = self.policy.window;
        while self
            .restarts
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= window)
        {
            self.restarts.pop_front();
        }
        let in_window = u32::try_from(self.restarts.len()).unwrap_or(u32::MAX);
        if in_window >= self.policy.max_restarts {
            return RestartDecision::GiveUp {
                restarts: in_window,
            };
        }
        self.consecutive += 1;
        self.total += 1;
        self.restarts.push_back(now);
        RestartDecision::Restart {
            delay: self.delay(self.consecutive, random),
            attempt: in_window + 1,
        }
    }

    /// The backoff before consecutive restart `n` (1-based) with jitter from `random` in `[0, 1)`.
    #[must_use]
    pub fn delay(&self, n: u32, random: f64) -> Duration {
        let p = &self.policy;
        let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = p.backoff_initial.as_secs_f64() * p.backoff_multiplier.powi(exp);
        let capped = base.min(p.backoff_max.as_secs_f64());
        let spread = 1.0 + p.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        // Checked: a huge `backoff_max` (u64::MAX seconds) must not panic the supervisor.
        Duration::try_from_secs_f64((capped * spread).max(0.0)).unwrap_or(p.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RestartPolicy {
        RestartPolicy {
            jitter: 0.0,
            ..RestartPolicy::default()
        }
    }

    const MID: f64 = 0.5;
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_doubles_from_100ms_to_30s() {
        let t = RestartTracker::new(no_jitter());
        let delays: Vec<_> = (1..=11).map(|n| t.delay(n, MID).as_millis()).collect();
        assert_eq!(
            delays,
            vec![
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000
            ]
        );
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let t = RestartTracker::new(RestartPolicy::default());
        assert_eq!(t.delay(1, 0.0), Duration::from_millis(80));
        assert_eq!(t.delay(1, 0.5), Duration::from_millis(100));
        assert!(t.delay(1, 0.999_999) <= Duration::from_millis(120));
    }

    #[test]
    fn crash_loop_gives_up_after_max_restarts_in_window() {
        let mut t = RestartTracker::new(no_jitter());
        let mut now = S(0);
        for i in 1..=10 {
            match t.on_exit(now, Duration::from_millis(10), ExitStatus::Code(1), MID) {
                RestartDecision::Restart { attempt, .. } => assert_eq!(attempt, i),
                other => panic!("restart {i}: {other:?}"),
            }
            now += S(1);
        }
        assert_eq!(
            t.on_exit(now, Duration::from_millis(10), ExitStatus::Code(1), MID),
            RestartDecision::GiveUp { restarts: 10 }
        );
    }

    #[test]
    fn window_slides() {
        let mut t = RestartTracker::new(no_jitter());
        for i in 0..10 {
            t.on_exit(S(i), Duration::ZERO, ExitStatus::Code(1), MID);
        }
        // Ten minutes after the first restart it leaves the window.
        let d = t.on_exit(S(600), Duration::ZERO, ExitStatus::Code(1), MID);
        assert!(
            matches!(d, RestartDecision::Restart { attempt: 10, .. }),
            "{d:?}"
        );
    }

    #[test]
    fn healthy_period_resets_backoff() {
        let mut t = RestartTracker::new(no_jitter());
        for i in 0..4 {
            t.on_exit(S(i), Duration::ZERO, ExitStatus::Code(1), MID);
        }
        let d = t.on_exit(S(100), S(31), ExitStatus::Code(1), MID);
        assert_eq!(
            d,
            RestartDecision::Restart {
                delay: Duration::from_millis(100),
                attempt: 5
            }
        );
    }

    #[test]
    fn policies() {
        let mut on_failure = RestartTracker::new(RestartPolicy {
            policy: RestartMode::OnFailure,
            ..no_jitter()
        });
        assert_eq!(
            on_failure.on_exit(S(0), S(1), ExitStatus::Code(0), MID),
            RestartDecision::Stay
        );
        assert!(matches!(
            on_failure.on_exit(S(0), S(1), ExitStatus::Signal(9), MID),
            RestartDecision::Restart { .. }
        ));
        let mut never = RestartTracker::new(RestartPolicy {
            policy: RestartMode::Never,
            ..no_jitter()
        });
        assert_eq!(
            never.on_exit(S(0), S(1), ExitStatus::Code(1), MID),
            RestartDecision::Stay
        );
        let mut always = RestartTracker::new(no_jitter());
        assert!(matches!(
            always.on_exit(S(0), S(1), ExitStatus::Code(0), MID),
            RestartDecision::Restart { .. }
        ));
    }

    /// Issue 10, finding 2: durations that pass validation must not panic the supervisor.
    #[test]
    fn huge_backoff_does_not_panic() {
        let t = RestartTracker::new(RestartPolicy {
            backoff_initial: Duration::from_secs(u64::MAX),
            backoff_max: Duration::from_secs(u64::MAX),
            jitter: 0.5,
            ..RestartPolicy::default()
        });
        assert_eq!(t.delay(1, 0.99), Duration::from_secs(u64::MAX));
        assert_eq!(t.delay(40, MID), Duration::from_secs(u64::MAX));
    }
}
