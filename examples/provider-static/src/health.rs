//! Probing the provider's own servers with `conan_core::probe`: the readiness gate of
//! deploy, update, start and recover, and the liveness loop of a running server.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conan_core::probe::{Probe, ProbeOutcome, readiness_delay};
use conan_core::{
    DeploymentId, EventSink, HealthCheck, HealthReport, HealthStatus, OperationContext, Timestamp,
};
use tokio::time::Instant;

/// How long one probe may take when the config has no health check.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the readiness gate probes: the config's check, or (without one, or for a
/// `process` check, which a server in this process passes by accepting connections) a TCP
/// connect to the server.
pub(crate) fn probe_for(check: Option<&HealthCheck>, port: u16, root: &Path) -> Probe {
    check
        .and_then(|c| Probe::for_check(c, "127.0.0.1", port, root))
        .unwrap_or_else(|| Probe::tcp("127.0.0.1", port))
}

fn probe_timeout(check: Option<&HealthCheck>) -> Duration {
    check.map_or(DEFAULT_PROBE_TIMEOUT, |c| c.timeout)
}

/// Why the gate did not pass.
pub(crate) enum GateError {
    /// `ctx.cancel` fired.
    Cancelled,
    /// The deadline passed; the last probe's detail.
    NeverReady(String),
}

/// Probes until the check passes `success_threshold` times in a row, the deadline passes
/// or the operation is cancelled (raced against every probe and every wait). Answers the
/// last probe's detail.
pub(crate) async fn wait_ready(
    ctx: &OperationContext,
    check: Option<&HealthCheck>,
    probe: &Probe,
    deadline: Duration,
) -> Result<String, GateError> {
    let until = Instant::now() + deadline;
    let timeout = probe_timeout(check);
    let interval = check.map_or(Duration::from_secs(1), |c| c.interval);
    let needed = check.map_or(1, |c| c.success_threshold.max(1));
    let mut passes = 0;
    let mut last = String::from("no probe ran");
    for n in 0u32.. {
        let remaining = until.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(GateError::NeverReady(last));
        }
        let outcome: ProbeOutcome = tokio::select! {
            () = ctx.cancel.cancelled() => return Err(GateError::Cancelled),
            outcome = probe.run(timeout.min(remaining)) => outcome,
        };
        if outcome.is_healthy() {
            passes += 1;
            if passes >= needed {
                return Ok(outcome.into_detail());
            }
        } else {
            passes = 0;
        }
        last = outcome.into_detail();
        let wait = if passes > 0 {
            interval
        } else {
            readiness_delay(n, interval)
        };
        tokio::select! {
            () = ctx.cancel.cancelled() => return Err(GateError::Cancelled),
            () = tokio::time::sleep_until((Instant::now() + wait).min(until)) => {}
        }
    }
    Err(GateError::NeverReady(last))
}

/// The latest observation of one server, shared by its liveness loop and the provider.
pub(crate) type SharedReport = Arc<Mutex<HealthReport>>;

pub(crate) fn read(report: &SharedReport) -> HealthReport {
    report
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The report right after the gate passed.
pub(crate) fn passed(detail: String) -> HealthReport {
    HealthReport::new(HealthStatus::Healthy)
        .checked_at(Timestamp::now())
        .with_detail(detail)
}

/// Probes a running server every `check.interval` for as long as the task lives (it is
/// aborted with its server), keeps the latest observation in `report`, and reports
/// transitions on `events`: `unhealthy` after `failure_threshold` failures in a row,
/// `healthy` after `success_threshold` successes following that.
pub(crate) async fn liveness(
    events: EventSink,
    deployment: DeploymentId,
    check: HealthCheck,
    probe: Probe,
    report: SharedReport,
) {
    let mut failures = 0u32;
    let mut successes = 0u32;
    let mut healthy = true;
    loop {
        tokio::time::sleep(check.interval).await;
        let outcome = probe.run(check.timeout).await;
        let ok = outcome.is_healthy();
        let detail = outcome.into_detail();
        if ok {
            failures = 0;
            successes = successes.saturating_add(1);
        } else {
            successes = 0;
            failures = failures.saturating_add(1);
        }
        let was = healthy;
        if ok && !healthy && successes >= check.success_threshold.max(1) {
            healthy = true;
        } else if !ok && healthy && failures >= check.failure_threshold.max(1) {
            healthy = false;
        }
        {
            let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
            *r = HealthReport::new(if healthy {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            })
            .checked_at(Timestamp::now())
            .with_failures(failures)
            .with_detail(detail.clone());
        }
        match (was, healthy) {
            (false, true) => events.healthy(&deployment),
            (true, false) => events.unhealthy(&deployment, detail),
            _ => {}
        }
    }
}
