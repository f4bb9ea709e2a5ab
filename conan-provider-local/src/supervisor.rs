//! The supervisor task of an instance: waits for its process and restarts it after a crash
//! following the restart policy
//! ([`RestartTracker`]: exponential backoff with jitter, reset after a healthy period, a
//! crash-loop limit that turns the deployment Failed). Leftover processes of a crashed
//! instance are killed before the restart. A deliberate stop sets `stopping` first, so it
//! never triggers a restart.
//!
//! Liveness after the readiness gate is not probed here: the monitor (`conan-monitor`)
//! probes every provider's deployments alike, through [`Provider::probe`](conan_core::Provider::probe),
//! and restarts unhealthy ones through the manager.
//!
//! What the manager learns of a restart, each through the sink with the instance it
//! concerns (revision and pid, so a report that arrives after an operation replaced the
//! instance is dropped): `restarting` when the restart is decided (the deployment shows
//! `restarting` during the backoff delay, and the restart is audited), then
//! `runtime_changed` with the new pid and start time once the new process runs (also
//! persisted in the state file first, so a later manager adopts the new process).
//!
//! Time is added with checked arithmetic: an interval of `u64::MAX` seconds means "never"
//! rather than a panic. And a supervisor that panics anyway does not end supervision
//! silently: its instance is killed (nothing runs unsupervised) and the deployment is
//! reported failed with the panic's message.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use conan_core::support::restart::{RestartDecision, RestartTracker};
use conan_core::{
    DeploymentSpec, EventSink, FailureReport, HealthReport, HealthStatus, ObservedStatus,
    ReportOrigin, RuntimeInfo, StatusReport, Timestamp,
};
use futures::FutureExt;
use tokio::time::{Instant, sleep_until};

use crate::command::Launch;
use crate::deployment::Deployment;
use crate::instance::{Instance, Proc};
use crate::lifecycle::Inner;

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
        dep: Arc::clone(&dep),
        inst: Arc::clone(&inst),
        launch,
        spec,
        source,
        sink: sink.clone(),
    };
    let watched = Arc::clone(&inst);
    let handle = tokio::spawn(async move {
        if let Err(panic) = AssertUnwindSafe(sup.run(proc)).catch_unwind().await {
            let what = panic_message(panic.as_ref());
            panicked(&dep, &watched, &sink, what).await;
        }
    });
    *inst
        .supervisor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
}

/// `now + d`, or a far-future instant when that is past what an `Instant` can hold (an
/// interval of `u64::MAX` seconds is "never", not an overflow panic).
pub(crate) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// About 30 years: what tokio itself uses for "never".
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A supervisor panicked (a bug): nothing of its instance may run unsupervised, and the
/// manager must learn that supervision ended.
async fn panicked(dep: &Deployment, inst: &Instance, sink: &EventSink, what: String) {
    tracing::error!(deployment = %dep.id, panic = what, "the supervisor panicked; killing its instance");
    if inst.stopping.load(Ordering::Acquire) {
        return;
    }
    let origin = origin_of(inst);
    inst.tree().kill_all().await;
    inst.capture.poll();
    let report = FailureReport::new(format!("the supervisor panicked: {what}"))
        .with_logs(dep.logs.last(FailureReport::MAX_LOG_LINES));
    dep.logs.system(format!("[conan] {}", report.reason));
    {
        let mut shared = dep.lock();
        shared.observed = ObservedStatus::failed(report.reason.clone());
        shared.health = HealthReport::new(HealthStatus::Unhealthy);
        shared.last_failure = Some(report.clone());
    }
    dep.persist();
    sink.report(
        StatusReport::new(
            dep.id.clone(),
            ObservedStatus::failed(report.reason.clone()),
        )
        .from_origin(origin)
        .with_failure(report),
    );
}

/// The text of a panic payload (a `&str` or `String` message, as `panic!` makes).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned())
}

/// The instance as the manager holds it: its revision and current pid.
fn origin_of(inst: &Instance) -> ReportOrigin {
    ReportOrigin::new(inst.revision, inst.pid.load(Ordering::Acquire).to_string())
}

impl Supervisor {
    fn stopping(&self) -> bool {
        self.inst.stopping.load(Ordering::Acquire)
    }

    /// The deployment's runtime when this supervisor's instance is the serving one (a
    /// supervisor of an instance being switched in or out has nothing to report).
    fn runtime_if_serving(&self) -> Option<RuntimeInfo> {
        let serving = self
            .dep
            .serving()
            .iter()
            .any(|c| Arc::ptr_eq(c, &self.inst));
        serving.then(|| self.dep.runtime(&self.inner.settings.host))
    }

    /// Whether another replica of the deployment is in service: then a crash of this one
    /// is this replica's business alone (the deployment keeps running on the others).
    fn others_serve(&self) -> bool {
        self.spec.config.max_replicas() > 1
            && self.dep.lock().serving.iter().any(|o| {
                !Arc::ptr_eq(o, &self.inst)
                    && !o.down.load(Ordering::Acquire)
                    && !o.stopping.load(Ordering::Acquire)
            })
    }

    /// Tells the manager the serving set changed (this replica left or rejoined it). The
    /// origin names no instance: the report is guarded by the revision alone, since the
    /// replica's old pid may already be off the record.
    fn report_pool(&self) {
        self.dep.persist();
        if let Some(runtime) = self.runtime_if_serving() {
            self.sink.runtime_changed(
                &self.dep.id,
                ReportOrigin::new(self.inst.revision, String::new()),
                runtime,
            );
        }
    }

    /// Takes this replica out of the serving set for good (it gave up or exited), the
    /// others serving on.
    fn leave(&self, why: &str) {
        tracing::warn!(deployment = %self.dep.id, instance = %self.inst.key, why, "a replica leaves the serving set");
        self.dep.logs.system(format!(
            "[conan] replica on port {} {why}; the other replicas keep serving",
            self.inst
                .port
                .map_or_else(|| "-".to_owned(), |p| p.to_string())
        ));
        self.inst.down.store(true, Ordering::Release);
        self.report_pool();
        {
            let mut shared = self.dep.lock();
            shared.serving.retain(|o| !Arc::ptr_eq(o, &self.inst));
        }
        self.dep.persist();
        self.inst.capture.finish();
        crate::logs::remove_instance_dir(&self.inst.dir);
        self.inst.release_port();
    }

    /// Waits for the process to end. A replica of several with a health check is also
    /// probed here every `interval`: after `failure_threshold` failures in a row it leaves
    /// the serving set (no traffic, while the others serve), after `success_threshold`
    /// passes it rejoins, and when it is still failing after twice `failure_threshold`
    /// probes it is killed, so the crash path restarts it (alone, with backoff).
    /// Failures within `start_period` of its start do not count.
    async fn wait_watching(&self, proc: &mut Proc) -> conan_core::ExitStatus {
        let config = &self.spec.config;
        let Some(check) = config
            .health_check
            .as_ref()
            .filter(|_| config.max_replicas() > 1)
        else {
            return proc.wait().await;
        };
        let probe = crate::probe::Probe::for_check(
            Some(check),
            &self.inner.settings.host,
            self.inst.port,
            &self.source,
        );
        if matches!(probe, crate::probe::Probe::Alive) {
            return proc.wait().await;
        }
        let (mut fails, mut passes) = (0u32, 0u32);
        let mut out = false;
        loop {
            tokio::select! {
                exit = proc.wait() => return exit,
                () = sleep_until(after(check.interval)) => {}
            }
            if self.stopping() {
                return proc.wait().await;
            }
            let outcome = tokio::select! {
                exit = proc.wait() => return exit,
                r = probe.run(check.timeout) => r,
            };
            if outcome.healthy {
                fails = 0;
                passes += 1;
                if out && passes >= check.success_threshold {
                    out = false;
                    self.dep.logs.system(format!(
                        "[conan] replica on port {} passes its health check again; back in service",
                        self.port_text()
                    ));
                    self.inst.down.store(false, Ordering::Release);
                    self.report_pool();
                }
                continue;
            }
            passes = 0;
            if self.inst.started_at().1.elapsed() < check.start_period {
                continue;
            }
            fails += 1;
            if fails == check.failure_threshold && !out && self.others_serve() {
                out = true;
                self.dep.logs.system(format!(
                    "[conan] replica on port {} failed {fails} health checks ({}); out of service while the others serve",
                    self.port_text(),
                    outcome.detail
                ));
                tracing::warn!(deployment = %self.dep.id, instance = %self.inst.key, detail = %outcome.detail, "a replica is out of service");
                self.inst.down.store(true, Ordering::Release);
                self.report_pool();
            }
            if out && fails >= check.failure_threshold.saturating_mul(2) {
                self.dep.logs.system(format!(
                    "[conan] replica on port {} still unhealthy; restarting it",
                    self.port_text()
                ));
                self.inst.tree().kill_all().await;
                return proc.wait().await;
            }
        }
    }

    fn port_text(&self) -> String {
        self.inst
            .port
            .map_or_else(|| "-".to_owned(), |p| p.to_string())
    }

    /// Waits for a restarted replica to pass its readiness probe again before it rejoins
    /// the serving set (at most `update.healthy_deadline`; it rejoins then anyway, and
    /// the monitor judges it). A crash meanwhile ends the wait.
    async fn ready_again(&self, proc: &mut Proc) -> Option<conan_core::ExitStatus> {
        let config = &self.spec.config;
        let probe = crate::probe::Probe::for_check(
            config.health_check.as_ref(),
            &self.inner.settings.host,
            self.inst.port,
            &self.source,
        );
        let deadline = after(config.update.healthy_deadline);
        if matches!(probe, crate::probe::Probe::Alive) {
            tokio::select! {
                exit = proc.wait() => return Some(exit),
                () = sleep_until(after(config.restart.min_uptime).min(deadline)) => return None,
                () = self.inst.cancel.cancelled() => return None,
            }
        }
        let limit = config
            .health_check
            .as_ref()
            .map_or(Duration::from_secs(1), |h| h.timeout);
        let mut n = 0;
        while Instant::now() < deadline {
            tokio::select! {
                exit = proc.wait() => return Some(exit),
                r = probe.run(limit) => if r.healthy { return None },
                () = self.inst.cancel.cancelled() => return None,
            }
            let wake = after(crate::probe::readiness_delay(n, limit)).min(deadline);
            n += 1;
            tokio::select! {
                exit = proc.wait() => return Some(exit),
                () = sleep_until(wake) => {}
                () = self.inst.cancel.cancelled() => return None,
            }
        }
        None
    }

    async fn run(self, mut proc: Proc) {
        let origin = Instant::now();
        let config = Arc::clone(&self.spec.config);
        let mut tracker = RestartTracker::new(config.restart.clone());
        self.dep.lock().health = after_gate(config.health_check.is_some());
        let mut pending_exit = None;
        loop {
            let exit = match pending_exit.take() {
                Some(e) => e,
                None => self.wait_watching(&mut proc).await,
            };
            if self.stopping() {
                return;
            }
            // Out of the pool at once: no new request goes to a dead replica.
            let replica = self.others_serve();
            if replica {
                self.inst.down.store(true, Ordering::Release);
                self.report_pool();
            }
            // The instance as the manager holds it (before a restart changes its pid).
            let reported = origin_of(&self.inst);
            self.inst.capture.poll();
            // Nothing of a crashed instance may outlive it (children, detached grandchildren).
            self.inst.tree().kill_all().await;
            if self.stopping() {
                return;
            }
            let uptime = self.inst.started_at().1.elapsed();
            self.dep.logs.system(format!(
                "[conan] process exited ({exit}) after {}",
                conan_core::time::human_duration(uptime)
            ));
            match tracker.on_exit(origin.elapsed(), uptime, exit, fastrand::f64()) {
                RestartDecision::Restart { delay, attempt } if replica => {
                    tracing::info!(deployment = %self.dep.id, instance = %self.inst.key, attempt, %exit, ?delay, "restarting a replica");
                    self.dep.lock().restarts += 1;
                    self.sink.restarted(&self.dep.id, attempt, exit, delay);
                    self.dep.logs.system(format!(
                        "[conan] replica restart {attempt} in {}",
                        conan_core::time::format_duration(delay)
                    ));
                    tokio::select! {
                        () = sleep_until(after(delay)) => {}
                        () = self.inst.cancel.cancelled() => return,
                    }
                    if self.stopping() {
                        return;
                    }
                    match self
                        .inst
                        .spawn(&self.inner.settings, &self.launch, &self.spec, &self.source)
                        .await
                    {
                        Ok(p) => {
                            proc = p;
                            self.dep.persist();
                            if let Some(exit) = self.ready_again(&mut proc).await {
                                pending_exit = Some(exit);
                                continue;
                            }
                            if self.stopping() {
                                return;
                            }
                            self.inst.down.store(false, Ordering::Release);
                            self.report_pool();
                        }
                        Err(e) => {
                            self.leave(&format!("could not be restarted: {e}"));
                            return;
                        }
                    }
                }
                RestartDecision::Stay if replica => {
                    self.leave(&format!("exited ({exit}) and is not restarted"));
                    return;
                }
                RestartDecision::GiveUp { restarts } if replica => {
                    self.leave(&format!(
                        "crash loop: {restarts} restarts within {}, gave up",
                        conan_core::time::format_duration(config.restart.window)
                    ));
                    return;
                }
                RestartDecision::Restart { delay, attempt } => {
                    tracing::info!(deployment = %self.dep.id, attempt, %exit, ?delay, "restarting");
                    {
                        let mut shared = self.dep.lock();
                        shared.restarts = tracker.total_restarts();
                        shared.observed = ObservedStatus::restarting(attempt, exit, delay);
                    }
                    self.sink
                        .restarting(&self.dep.id, reported.clone(), attempt, exit, delay);
                    self.dep.logs.system(format!(
                        "[conan] restart {attempt} in {}",
                        conan_core::time::human_duration(delay)
                    ));
                    tokio::select! {
                        () = sleep_until(after(delay)) => {}
                        () = self.inst.cancel.cancelled() => return,
                    }
                    if self.stopping() {
                        return;
                    }
                    match self
                        .inst
                        .spawn(&self.inner.settings, &self.launch, &self.spec, &self.source)
                        .await
                    {
                        Ok(p) => {
                            proc = p;
                            self.dep.set_observed(ObservedStatus::Running);
                            // The state file first: a manager that dies now adopts the new
                            // process, whatever the report below reaches.
                            self.dep.persist();
                            if let Some(runtime) = self.runtime_if_serving() {
                                self.sink.runtime_changed(&self.dep.id, reported, runtime);
                            }
                        }
                        Err(e) => {
                            let report = FailureReport::new(format!("restart failed: {e}"))
                                .with_exit(exit)
                                .with_logs(self.dep.logs.last(FailureReport::MAX_LOG_LINES));
                            self.fail(reported, report);
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
                    self.sink.report(
                        StatusReport::new(self.dep.id.clone(), ObservedStatus::Exited { exit })
                            .from_origin(reported),
                    );
                    return;
                }
                RestartDecision::GiveUp { restarts } => {
                    let report = FailureReport::new(format!(
                        "crash loop: {restarts} restarts within {}, giving up",
                        conan_core::time::format_duration(config.restart.window)
                    ))
                    .with_exit(exit)
                    .with_logs(self.dep.logs.last(FailureReport::MAX_LOG_LINES));
                    self.fail(reported, report);
                    return;
                }
            }
        }
    }

    fn fail(&self, origin: ReportOrigin, report: FailureReport) {
        self.inst.capture.poll();
        self.dep.logs.system(format!("[conan] {}", report.reason));
        {
            let mut shared = self.dep.lock();
            shared.observed = ObservedStatus::failed(report.reason.clone());
            shared.health = HealthReport::new(HealthStatus::Unhealthy);
            shared.last_failure = Some(report.clone());
        }
        self.dep.persist();
        self.sink.report(
            StatusReport::new(
                self.dep.id.clone(),
                ObservedStatus::failed(report.reason.clone()),
            )
            .from_origin(origin)
            .with_failure(report),
        );
    }
}
