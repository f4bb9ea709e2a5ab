//! One monitored deployment: what its probes saw and what that means. Pure: the
//! scheduler ([`super::run`]) feeds it outcomes with the time and acts on the verdicts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use conan_core::probe::ProbeOutcome;
use conan_core::{
    DeploymentRecord, HealthCheck, HealthCheckKind, HealthReport, HealthStatus, ProbeRecord,
    ReportOrigin, Revision, Timestamp,
};
use tokio::time::Instant;

/// Probes a failure bundle and a status view keep.
pub(crate) const HISTORY: usize = conan_core::FailureReport::MAX_PROBE_RECORDS;

/// What identifies the instance a watch observes: a restart (by anyone) makes a new one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Identity {
    pub(crate) revision: Revision,
    pub(crate) instance: String,
    pub(crate) started_at: Option<Timestamp>,
}

impl Identity {
    /// The identity of a running record's serving instance.
    pub(crate) fn of(record: &DeploymentRecord) -> Self {
        let first = record.runtime.as_deref().and_then(|r| r.instances.first());
        Self {
            revision: record.revision,
            instance: first.map(|i| i.id.clone()).unwrap_or_default(),
            started_at: first.and_then(|i| i.started_at),
        }
    }

    pub(crate) fn origin(&self) -> ReportOrigin {
        ReportOrigin::new(self.revision, self.instance.clone())
    }
}

/// The check a running record is watched with, if any: a `process` check is the
/// provider's own business.
pub(crate) fn check_of(record: &DeploymentRecord) -> Option<&HealthCheck> {
    record
        .config
        .health_check
        .as_ref()
        .filter(|c| c.kind != HealthCheckKind::Process)
}

/// What an outcome changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing a user would see changed.
    Same,
    /// Healthy again (or for the first time after failing).
    Healthy,
    /// `failure_threshold` failures in a row: unhealthy; the scheduler decides a restart.
    Unhealthy {
        /// Failures in a row.
        failures: u32,
        /// What the last probe saw.
        reason: String,
    },
    /// Still unhealthy (another failure).
    StillUnhealthy,
}

/// One deployment under watch.
#[derive(Debug)]
pub(crate) struct Watched {
    pub(crate) name: Arc<str>,
    pub(crate) identity: Identity,
    pub(crate) check: HealthCheck,
    /// Bumped whenever the watch is replaced: timers and probes of an older generation are
    /// ignored.
    pub(crate) generation: u64,
    /// Failures before this instant do not count (the check's start period).
    pub(crate) grace_until: Instant,
    pub(crate) in_flight: bool,
    pub(crate) failures: u32,
    pub(crate) successes: u32,
    /// The verdict; the readiness gate's pass counts as healthy until probes say otherwise.
    pub(crate) healthy: bool,
    pub(crate) restart_pending: bool,
    pub(crate) last: Option<ProbeRecord>,
    pub(crate) history: VecDeque<ProbeRecord>,
}

impl Watched {
    pub(crate) fn new(
        record: &DeploymentRecord,
        check: HealthCheck,
        generation: u64,
        now: Instant,
    ) -> Self {
        let identity = Identity::of(record);
        let age = identity.started_at.map_or(Duration::ZERO, |t| t.elapsed());
        let since = now.checked_sub(age).unwrap_or(now);
        let grace_until = since.checked_add(check.start_period).unwrap_or(now);
        Self {
            name: record.name.clone(),
            identity,
            check,
            generation,
            grace_until,
            in_flight: false,
            failures: 0,
            successes: 0,
            healthy: true,
            restart_pending: false,
            last: None,
            history: VecDeque::with_capacity(HISTORY),
        }
    }

    /// Applies one probe outcome seen at `now` (wall clock `at`).
    pub(crate) fn apply(&mut self, outcome: &ProbeOutcome, now: Instant, at: Timestamp) -> Verdict {
        let record = ProbeRecord {
            at,
            healthy: outcome.is_healthy(),
            detail: outcome.detail().to_owned(),
            duration_ms: u64::try_from(outcome.duration().as_millis()).unwrap_or(u64::MAX),
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(record.clone());
        self.last = Some(record);
        if outcome.is_healthy() {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && self.successes >= self.check.success_threshold.max(1) {
                self.healthy = true;
                self.restart_pending = false;
                return Verdict::Healthy;
            }
            return Verdict::Same;
        }
        self.successes = 0;
        if now < self.grace_until {
            return Verdict::Same;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.check.failure_threshold.max(1) {
            if self.healthy {
                self.healthy = false;
                return Verdict::Unhealthy {
                    failures: self.failures,
                    reason: outcome.detail().to_owned(),
                };
            }
            return Verdict::StillUnhealthy;
        }
        Verdict::Same
    }

    /// The report `health()` answers.
    pub(crate) fn report(&self) -> HealthReport {
        // Before the first probe the readiness gate's pass stands: healthy.
        let status = if self.healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        let mut report = HealthReport::new(status).with_failures(self.failures);
        if let Some(last) = &self.last {
            report = report.checked_at(last.at).with_detail(last.detail.clone());
        }
        report
    }

    /// The probes kept, oldest first.
    pub(crate) fn history(&self) -> Vec<ProbeRecord> {
        self.history.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conan_core::DeploymentId;

    fn record() -> DeploymentRecord {
        let config = conan_core::DeploymentConfig::builder("w").build().unwrap();
        DeploymentRecord {
            id: DeploymentId::generate(),
            name: "w".into(),
            provider: "memory".into(),
            status: conan_core::DeploymentStatus::Running,
            revision: Revision::FIRST,
            config: Arc::new(config),
            runtime: None,
            last_failure: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        }
    }

    fn watched(threshold: u32, start_period: Duration) -> (Watched, Instant) {
        let record = record();
        let mut check = HealthCheck::http("/health");
        check.failure_threshold = threshold;
        check.start_period = start_period;
        let now = Instant::now();
        (Watched::new(&record, check, 1, now), now)
    }

    fn fail() -> ProbeOutcome {
        ProbeOutcome::unhealthy("GET /health answered 500")
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_after_the_threshold_and_healthy_again_after_a_pass() {
        let (mut w, now) = watched(3, Duration::ZERO);
        let at = Timestamp::now();
        assert_eq!(w.apply(&fail(), now, at), Verdict::Same);
        assert_eq!(w.apply(&fail(), now, at), Verdict::Same);
        assert!(matches!(
            w.apply(&fail(), now, at),
            Verdict::Unhealthy { failures: 3, .. }
        ));
        assert_eq!(w.apply(&fail(), now, at), Verdict::StillUnhealthy);
        assert_eq!(w.report().status, HealthStatus::Unhealthy);
        assert_eq!(
            w.apply(&ProbeOutcome::healthy("200"), now, at),
            Verdict::Healthy
        );
        assert_eq!(w.report().status, HealthStatus::Healthy);
        assert_eq!(w.history().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_the_start_period_do_not_count() {
        let (mut w, now) = watched(1, Duration::from_secs(30));
        let at = Timestamp::now();
        assert_eq!(w.apply(&fail(), now, at), Verdict::Same);
        let later = now + Duration::from_secs(31);
        assert!(matches!(
            w.apply(&fail(), later, at),
            Verdict::Unhealthy { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_history_is_bounded() {
        let (mut w, now) = watched(1000, Duration::ZERO);
        for _ in 0..(HISTORY * 3) {
            w.apply(&fail(), now, Timestamp::now());
        }
        assert_eq!(w.history().len(), HISTORY);
    }
}
