//! Judging a canary from live traffic: the verdict of each step, and the loop that walks
//! a [`CanaryPlan`] through a traffic layer.
//!
//! # The verdict
//!
//! Each step routes `share` percent of the requests to the new revision for `duration`.
//! Over the step, the traffic layer's counters of both revisions are compared (their
//! increase since the step began, so each step is judged on its own traffic):
//!
//! - **5xx ratio:** the new revision's `5xx / requests` may exceed the old revision's by
//!   at most `max_error_ratio_increase` (an old revision that fails too is not the new
//!   one's fault);
//! - **latency:** the new revision's mean latency may be at most `max_latency_ratio`
//!   times the old one's plus `latency_slack`.
//!
//! A check is made only once the new revision saw `min_requests` requests in the step. The
//! step is checked every [`CHECK_EVERY`] (a failure ends the canary at once: no need to
//! wait out a step that already failed) and passes at its end. A step whose traffic stays
//! under `min_requests` goes on, up to three times its duration; then it passes when
//! nothing speaks against it, and the report says how little it saw.
//!
//! The outcome carries every step's numbers, for the event and the failure bundle.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::CanaryPlan;
use crate::error::Result;

/// How often a running step is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a traffic layer counted of one revision (monotonic counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevisionCounters {
    /// Requests answered (any status).
    pub requests: u64,
    /// Of those, answered with a 5xx status.
    pub server_errors: u64,
    /// The sum of the requests' latencies.
    pub latency_total: Duration,
}

impl RevisionCounters {
    /// Counters with these values.
    #[must_use]
    pub fn new(requests: u64, server_errors: u64, latency_total: Duration) -> Self {
        Self {
            requests,
            server_errors,
            latency_total,
        }
    }

    /// The increase since `earlier` (a counter that went back, after a reset, counts from 0).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        if self.requests < earlier.requests {
            return *self;
        }
        Self {
            requests: self.requests - earlier.requests,
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            latency_total: self.latency_total.saturating_sub(earlier.latency_total),
        }
    }

    /// `5xx / requests` (0 without requests).
    #[must_use]
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.server_errors as f64 / self.requests as f64
        }
    }

    /// The mean latency, if any request was answered.
    #[must_use]
    pub fn mean_latency(&self) -> Option<Duration> {
        let n = u32::try_from(self.requests).unwrap_or(u32::MAX);
        (n > 0).then(|| self.latency_total / n)
    }
}

impl fmt::Display for RevisionCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests, {} 5xx ({:.2} %)",
            self.requests,
            self.server_errors,
            self.error_ratio() * 100.0
        )?;
        if let Some(m) = self.mean_latency() {
            write!(f, ", mean {:.2} ms", m.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

/// The verdict on a step's traffic so far.
#[derive(Clone, Debug, PartialEq)]
pub enum StepVerdict {
    /// Nothing speaks against the new revision.
    Pass,
    /// Too few canary requests to judge yet.
    TooFew,
    /// The new revision is worse than allowed: why, with the numbers.
    Fail(String),
}

/// Judges a step from the counters' increase of the old and the new revision.
#[must_use]
pub fn judge(plan: &CanaryPlan, old: &RevisionCounters, new: &RevisionCounters) -> StepVerdict {
    if new.requests < plan.min_requests {
        return StepVerdict::TooFew;
    }
    let (old_ratio, new_ratio) = (old.error_ratio(), new.error_ratio());
    if new_ratio > old_ratio + plan.max_error_ratio_increase {
        return StepVerdict::Fail(format!(
            "5xx ratio {:.2} % against {:.2} % for the old revision (at most {:.2} points more allowed)",
            new_ratio * 100.0,
            old_ratio * 100.0,
            plan.max_error_ratio_increase * 100.0
        ));
    }
    if let (Some(o), Some(n)) = (old.mean_latency(), new.mean_latency()) {
        let allowed = o.mul_f64(plan.max_latency_ratio) + plan.latency_slack;
        if n > allowed {
            return StepVerdict::Fail(format!(
                "mean latency {:.2} ms against {:.2} ms for the old revision (at most {:.2} ms allowed)",
                n.as_secs_f64() * 1000.0,
                o.as_secs_f64() * 1000.0,
                allowed.as_secs_f64() * 1000.0
            ));
        }
    }
    StepVerdict::Pass
}

/// What a canary needs of the traffic layer.
#[async_trait]
pub trait CanaryTraffic: Send + Sync {
    /// Routes `percent` of the requests to the new revision, the rest to the old one.
    ///
    /// # Errors
    /// When the traffic layer cannot route as asked (the canary then rolls back).
    async fn set_share(&self, percent: u8) -> Result<()>;

    /// The counters of the old and the new revision, now.
    fn counters(&self) -> (RevisionCounters, RevisionCounters);
}

/// One step as it went.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepReport {
    /// Percent of requests the new revision got.
    pub share: u8,
    /// How long the step ran.
    pub ran: Duration,
    /// The old revision's traffic during the step.
    pub old: RevisionCounters,
    /// The new revision's traffic during the step.
    pub new: RevisionCounters,
    /// The verdict (`TooFew` only when the step ran out of time with thin traffic and
    /// passed for lack of evidence against it).
    pub verdict: StepVerdict,
}

impl fmt::Display for StepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match &self.verdict {
            StepVerdict::Pass => "passed".to_owned(),
            StepVerdict::TooFew => "passed with too little traffic to judge".to_owned(),
            StepVerdict::Fail(why) => format!("failed: {why}"),
        };
        write!(
            f,
            "{} % for {}: new {}; old {}; {verdict}",
            self.share,
            crate::time::format_duration(self.ran),
            self.new,
            self.old
        )
    }
}

/// How a canary ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CanaryOutcome {
    /// Whether the new revision is to be promoted.
    pub promoted: bool,
    /// The steps that ran, in order.
    pub steps: Vec<StepReport>,
    /// Why it ended so, with the numbers of the deciding step.
    pub summary: String,
}

/// Walks `plan` through `traffic`: each step's share, checked every [`CHECK_EVERY`], until
/// a step fails (rolled back: the share goes back to 0) or every step passed (promoted;
/// the caller routes everything to the new revision). `on_step` sees each finished step.
pub async fn run(
    plan: &CanaryPlan,
    traffic: &dyn CanaryTraffic,
    mut on_step: impl FnMut(&StepReport) + Send,
) -> CanaryOutcome {
    let mut steps = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        if let Err(e) = traffic.set_share(step.share).await {
            let _ = traffic.set_share(0).await;
            return CanaryOutcome {
                promoted: false,
                steps,
                summary: format!("could not route {} % to the new revision: {e}", step.share),
            };
        }
        let (old0, new0) = traffic.counters();
        let started = tokio::time::Instant::now();
        let longest = step.duration.saturating_mul(3);
        let report = loop {
            tokio::time::sleep(CHECK_EVERY.min(step.duration)).await;
            let ran = started.elapsed();
            let (old1, new1) = traffic.counters();
            let (old, new) = (old1.since(&old0), new1.since(&new0));
            let verdict = judge(plan, &old, &new);
            let done = match &verdict {
                StepVerdict::Fail(_) => true,
                StepVerdict::Pass => ran >= step.duration,
                StepVerdict::TooFew => ran >= longest,
            };
            if done {
                break StepReport {
                    share: step.share,
                    ran,
                    old,
                    new,
                    verdict,
                };
            }
        };
        on_step(&report);
        let failed = matches!(report.verdict, StepVerdict::Fail(_));
        steps.push(report);
        if failed {
            let _ = traffic.set_share(0).await;
            let last = steps.last().map(ToString::to_string).unwrap_or_default();
            return CanaryOutcome {
                promoted: false,
                steps,
                summary: format!("canary rolled back at {last}"),
            };
        }
    }
    let all: Vec<String> = steps.iter().map(ToString::to_string).collect();
    CanaryOutcome {
        promoted: true,
        summary: format!("canary promoted after {}", all.join("; ")),
        steps,
    }
}

/// What a provider asks of the manager's canary: the instances of both revisions (each
/// already past its readiness gate) and the plan.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CanaryRequest {
    /// The old revision's instances (serving now).
    pub old: crate::provider::RuntimeInfo,
    /// The new revision's instances.
    pub new: crate::provider::RuntimeInfo,
    /// The plan (`update.canary`, or its defaults).
    pub plan: CanaryPlan,
}

impl CanaryRequest {
    /// A request for `plan` between `old` and `new`.
    #[must_use]
    pub fn new(
        old: crate::provider::RuntimeInfo,
        new: crate::provider::RuntimeInfo,
        plan: CanaryPlan,
    ) -> Self {
        Self { old, new, plan }
    }
}

/// The manager's canary, handed to a provider's `update` in its
/// [`OperationContext`](crate::OperationContext) when the deployment runs behind a traffic
/// layer: it routes each step's share through the traffic layer, judges the counters
/// ([`run`]), reports each step as a progress event, and answers the outcome. The
/// provider then promotes (a [`cutover`](crate::OperationContext::cutover) to the new
/// instances, the old ones stopped) or rolls back (the new ones stopped).
#[derive(Clone)]
pub struct CanaryGate {
    run: std::sync::Arc<
        dyn Fn(CanaryRequest) -> futures::future::BoxFuture<'static, CanaryOutcome> + Send + Sync,
    >,
}

impl fmt::Debug for CanaryGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CanaryGate")
    }
}

impl CanaryGate {
    /// A gate that runs `judge` for each request.
    #[must_use]
    pub fn new(
        judge: impl Fn(CanaryRequest) -> futures::future::BoxFuture<'static, CanaryOutcome>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            run: std::sync::Arc::new(judge),
        }
    }

    /// Runs the canary of `request` to its verdict.
    pub async fn run(&self, request: CanaryRequest) -> CanaryOutcome {
        (self.run)(request).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::CanaryStep;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_verdict_compares_with_the_old_revision() {
        let plan = CanaryPlan::default();
        let old = RevisionCounters::new(1000, 10, ms(1000 * 4));
        // 1 % old, 1.9 % new: within one point.
        assert_eq!(
            judge(&plan, &old, &RevisionCounters::new(1000, 19, ms(4000))),
            StepVerdict::Pass
        );
        let StepVerdict::Fail(why) = judge(&plan, &old, &RevisionCounters::new(1000, 30, ms(4000)))
        else {
            panic!()
        };
        assert!(why.contains("5xx ratio 3.00 % against 1.00 %"), "{why}");
        // 4 ms old: at most 4 * 1.5 + 5 = 11 ms.
        assert_eq!(
            judge(&plan, &old, &RevisionCounters::new(100, 0, ms(100 * 11))),
            StepVerdict::Pass
        );
        let StepVerdict::Fail(why) =
            judge(&plan, &old, &RevisionCounters::new(100, 0, ms(100 * 12)))
        else {
            panic!()
        };
        assert!(
            why.contains("mean latency 12.00 ms against 4.00 ms"),
            "{why}"
        );
        // Too few requests: no verdict yet, whatever they say.
        assert_eq!(
            judge(&plan, &old, &RevisionCounters::new(19, 19, ms(1))),
            StepVerdict::TooFew
        );
        // Counters that went back (a reset) count from zero.
        let now = RevisionCounters::new(5, 1, ms(5));
        assert_eq!(now.since(&old), now);
    }

    /// A traffic layer in virtual time: `rate` requests a second split by the share, the
    /// new revision failing `new_errors` per mille and answering in `new_latency`.
    struct Fake {
        share: Mutex<Vec<u8>>,
        started: tokio::time::Instant,
        rate: u64,
        new_errors_per_mille: u64,
        new_latency: Duration,
        last: Mutex<(tokio::time::Instant, RevisionCounters, RevisionCounters)>,
    }

    impl Fake {
        fn new(rate: u64, new_errors_per_mille: u64, new_latency: Duration) -> Self {
            let now = tokio::time::Instant::now();
            Self {
                share: Mutex::new(vec![]),
                started: now,
                rate,
                new_errors_per_mille,
                new_latency,
                last: Mutex::new((
                    now,
                    RevisionCounters::default(),
                    RevisionCounters::default(),
                )),
            }
        }
        fn shares(&self) -> Vec<u8> {
            self.share.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl CanaryTraffic for Fake {
        async fn set_share(&self, percent: u8) -> Result<()> {
            // Advance the counters to now at the old share first.
            let _ = self.counters();
            self.share.lock().unwrap().push(percent);
            Ok(())
        }
        fn counters(&self) -> (RevisionCounters, RevisionCounters) {
            let now = tokio::time::Instant::now();
            let share = u64::from(self.share.lock().unwrap().last().copied().unwrap_or(0));
            let mut last = self.last.lock().unwrap();
            let secs = now.duration_since(last.0).as_secs();
            if secs > 0 {
                let total = self.rate * secs;
                let to_new = total * share / 100;
                let to_old = total - to_new;
                last.1.requests += to_old;
                last.1.latency_total += ms(2) * u32::try_from(to_old).unwrap();
                last.2.requests += to_new;
                last.2.server_errors += to_new * self.new_errors_per_mille / 1000;
                last.2.latency_total += self.new_latency * u32::try_from(to_new).unwrap();
                last.0 += Duration::from_secs(secs);
            }
            let _ = self.started;
            (last.1, last.2)
        }
    }

    fn plan() -> CanaryPlan {
        CanaryPlan {
            steps: vec![
                CanaryStep::new(10, Duration::from_secs(30)),
                CanaryStep::new(50, Duration::from_secs(60)),
            ],
            ..CanaryPlan::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_canary_walks_every_step_and_is_promoted() {
        let fake = Fake::new(500, 0, ms(2));
        let t0 = tokio::time::Instant::now();
        let mut seen = 0;
        let out = run(&plan(), &fake, |_| seen += 1).await;
        assert!(out.promoted, "{}", out.summary);
        assert_eq!(seen, 2);
        assert_eq!(fake.shares(), vec![10, 50]);
        assert_eq!(t0.elapsed(), Duration::from_secs(90));
        assert_eq!(out.steps[0].new.requests, 500 * 30 / 10);
        assert_eq!(out.steps[1].old.requests, 500 * 60 / 2);
        assert!(
            out.summary.contains("1500 requests, 0 5xx"),
            "{}",
            out.summary
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_canary_that_fails_5xx_is_rolled_back_within_seconds_with_the_numbers() {
        let fake = Fake::new(500, 200, ms(2));
        let t0 = tokio::time::Instant::now();
        let out = run(&plan(), &fake, |_| {}).await;
        assert!(!out.promoted);
        assert_eq!(fake.shares(), vec![10, 0], "back to the old revision");
        // 50 canary requests a second: the first check already has 20.
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(out.steps.len(), 1);
        assert!(
            out.summary.contains("5xx ratio 20.00 % against 0.00 %"),
            "{}",
            out.summary
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_canary_is_rolled_back_and_thin_traffic_extends_a_step() {
        let out = run(&plan(), &Fake::new(500, 0, ms(50)), |_| {}).await;
        assert!(!out.promoted);
        assert!(
            out.summary.contains("mean latency 50.00 ms"),
            "{}",
            out.summary
        );

        // 1 request a second, 10 % of it to the canary: never 20 in a step, so each
        // step runs three times its duration and passes for lack of evidence.
        let fake = Fake::new(1, 0, ms(2));
        let t0 = tokio::time::Instant::now();
        let out = run(&plan(), &fake, |_| {}).await;
        assert!(out.promoted);
        assert_eq!(t0.elapsed(), Duration::from_secs(270));
        assert_eq!(out.steps[0].verdict, StepVerdict::TooFew);
        assert!(
            out.summary.contains("too little traffic"),
            "{}",
            out.summary
        );
    }
}
