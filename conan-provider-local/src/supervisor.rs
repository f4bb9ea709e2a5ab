//! The supervisor task of an instance: waits for its process, probes its health every
//! `health_check.interval`, and restarts it after a crash following the restart policy
//! ([`RestartTracker`]: exponential backoff with jitter, reset after a healthy period, a
//! crash-loop limit that turns the deployment Failed). Leftover processes of a crashed
//! instance are killed before the restart. A deliberate stop sets `stopping` first, so it
//! never triggers a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use conan_core::support::restart::{RestartDecision, RestartTracker};
use conan_core::{
    DeploymentSpec, EventSink, FailureReport, HealthReport, HealthStatus, ObservedStatus, Timestamp,
};
use tokio::time::{Instant, sleep, sleep_until};

use crate::command::Launch;
use crate::deployment::Deployment;
use crate::instance::{Instance, Proc};
use crate::lifecycle::Inner;
use crate::probe::Probe;

/// Everything a supervisor needs.
struct Supervisor {
    inner: Arc<Inner>,
    dep: Arc<Deployment>,
    inst: Arc<Instance>,
    launch: Launch,
    spec: DeploymentSpec,
    source: PathBuf,
    sink: EventSink,
}

/// The health of an instance that just passed its readiness gate: healthy when a check
/// exists (the gate ran it), unknown otherwise.
pub(crate) fn after_gate(has_check: bool) -> HealthReport {
    HealthReport::new(if has_check {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unknown
    })
    .checked_at(Timestamp::now())
}

/// Starts supervising `inst`, whose process is `proc`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    inner: Arc<Inner>,
    dep: Arc<Deployment>,
    inst: Arc<Instance>,
    proc: Proc,
    launch: Launch,
    spec: DeploymentSpec,
    source: PathBuf,
    sink: EventSink,
) {
    let sup = Supervisor {
        inner,
        dep,
        inst: Arc::clone(&inst),
        launch,
        spec,
        source,
        sink,
    };
    let handle = tokio::spawn(sup.run(proc));
    *inst
        .supervisor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
}

impl Supervisor {
    fn stopping(&self) -> bool {
        self.inst.stopping.load(Ordering::Acquire)
    }

    async fn run(self, mut proc: Proc) {
        let origin = Instant::now();
        let config = Arc::clone(&self.spec.config);
        let mut tracker = RestartTracker::new(config.restart.clone());
        let check = config.health_check.clone();
        let probe = Probe::for_check(
            check.as_ref(),
            &self.inner.settings.host,
            self.inst.port,
            &self.source,
        );
        let interval = check
            .as_ref()
            .map_or(std::time::Duration::from_secs(3600), |c| c.interval);
        let mut failures = 0u32;
        let mut healthy = true;
        self.dep.lock().health = after_gate(check.is_some());
        loop {
            let mut next_probe = Instant::now() + interval;
            let exit = loop {
                tokio::select! {
                    exit = proc.wait() => break exit,
                    () = sleep_until(next_probe), if check.is_some() => {
                        next_probe = Instant::now() + interval;
                        let Some(c) = &check else { continue };
                        let r = probe.run(c.timeout).await;
                        if self.stopping() { continue; }
                        failures = if r.healthy { 0 } else { failures + 1 };
                        let was_healthy = healthy;
                        if r.healthy {
                            healthy = true;
                        } else if failures >= c.failure_threshold {
                            healthy = false;
                        }
                        // The report is updated before the event, so a subscriber that
                        // reacts to the event reads the new state.
                        self.dep.lock().health = HealthReport::new(
                            if healthy { HealthStatus::Healthy } else { HealthStatus::Unhealthy },
                        )
                        .checked_at(Timestamp::now())
                        .with_failures(failures)
                        .with_detail(r.detail.clone());
                        if healthy && !was_healthy {
                            self.sink.healthy(&self.dep.id);
                        } else if !healthy && was_healthy {
                            self.sink.unhealthy(&self.dep.id, r.detail);
                        }
                    }
                }
            };
            if self.stopping() {
                return;
            }
            self.inst.capture.poll();
            // Nothing of a crashed instance may outlive it (children, detached grandchildren).
            self.inst.tree().kill_all().await;
            if self.stopping() {
                return;
            }
            let uptime = self.inst.started_at().1.elapsed();
            self.dep.logs.system(format!(
                "[conan] process exited ({exit}) after {}",
                conan_core::time::format_duration(uptime)
            ));
            match tracker.on_exit(origin.elapsed(), uptime, exit, fastrand::f64()) {
                RestartDecision::Restart { delay, attempt } => {
                    tracing::info!(deployment = %self.dep.id, attempt, %exit, ?delay, "restarting");
                    {
                        let mut shared = self.dep.lock();
                        shared.restarts = tracker.total_restarts();
                        shared.observed = ObservedStatus::Starting;
                    }
                    self.sink.restarted(&self.dep.id, attempt, exit, delay);
                    self.dep.logs.system(format!(
                        "[conan] restart {attempt} in {}",
                        conan_core::time::format_duration(delay)
                    ));
                    tokio::select! {
                        () = sleep(delay) => {}
                        () = self.inst.cancel.cancelled() => return,
                    }
                    if self.stopping() {
                        return;
                    }
                    match self.inst.spawn(
                        &self.inner.settings,
                        &self.launch,
                        &self.spec,
                        &self.source,
                    ) {
                        Ok(p) => {
                            proc = p;
                            self.dep.set_observed(ObservedStatus::Running);
                            self.dep.persist();
                        }
                        Err(e) => {
                            let report = FailureReport::new(format!("restart failed: {e}"))
                                .with_exit(exit)
                                .with_logs(self.dep.logs.last(FailureReport::MAX_LOG_LINES));
                            self.fail(report);
                            return;
                        }
                    }
                }
                RestartDecision::Stay => {
                    self.inst.capture.poll();
                    {
                        let mut shared = self.dep.lock();
                        shared.observed = ObservedStatus::Exited { exit };
                        shared.health = HealthReport::new(HealthStatus::Unknown);
                    }
                    self.dep.persist();
                    self.sink.exited(&self.dep.id, exit);
                    return;
                }
                RestartDecision::GiveUp { restarts } => {
                    let report = FailureReport::new(format!(
                        "crash loop: {restarts} restarts within {}, giving up",
                        conan_core::time::format_duration(config.restart.window)
                    ))
                    .with_exit(exit)
                    .with_logs(self.dep.logs.last(FailureReport::MAX_LOG_LINES));
                    self.fail(report);
                    return;
                }
            }
        }
    }

    fn fail(&self, report: FailureReport) {
        self.inst.capture.poll();
        self.dep.logs.system(format!("[conan] {}", report.reason));
        {
            let mut shared = self.dep.lock();
            shared.observed = ObservedStatus::failed(report.reason.clone());
            shared.health = HealthReport::new(HealthStatus::Unhealthy);
            shared.last_failure = Some(report.clone());
        }
        self.dep.persist();
        self.sink.failed(&self.dep.id, report);
    }
}
