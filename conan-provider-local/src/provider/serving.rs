//! Which instance serves a deployment: launching the first one, making a ready one the
//! serving instance, and retiring the ones it replaces.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use conan_core::{
    DeploymentSpec, FailureReport, HealthReport, HealthStatus, ObservedStatus, OperationContext,
    Result, RuntimeInfo,
};

use crate::deployment::Deployment;
use crate::instance::Instance;
use crate::lifecycle::{Inner, PortChoice};
use crate::{procfs, supervisor};

/// Marks a deployment whose launch was abandoned (the future dropped before it was ready
/// or failed) as failed, so it never stays `Starting` with nothing running.
struct StartingGuard<'a> {
    dep: &'a Deployment,
    done: bool,
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut shared = self.dep.lock();
            if shared.current.is_none() && shared.observed == ObservedStatus::Starting {
                shared.observed =
                    ObservedStatus::failed("the deploy was abandoned before it was ready");
                shared.health = HealthReport::new(HealthStatus::Unknown);
            }
        }
        self.dep.persist();
    }
}

impl Inner {
    /// Stops every instance of the deployment that is being replaced (its retiring list).
    /// Each leaves the list only once it is gone, so an abandoned call leaves the rest to
    /// the next one.
    pub(super) async fn retire(&self, dep: &Deployment) {
        loop {
            let next = dep.lock().retiring.first().cloned();
            let Some((inst, spec)) = next else { return };
            self.stop_instance(dep, &inst, &spec).await;
            dep.lock().retiring.retain(|(i, _)| !Arc::ptr_eq(i, &inst));
        }
    }

    /// Stops the serving instance, if any (and whatever is being replaced).
    pub(super) async fn clear(&self, dep: &Deployment) {
        {
            let mut shared = dep.lock();
            if let Some(inst) = shared.current.take() {
                let spec = shared.spec.clone();
                shared.retiring.push((inst, spec));
            }
        }
        self.retire(dep).await;
    }

    /// The runtime of `spec` when exactly that spec already serves (an idempotent repeat).
    pub(super) fn serving(&self, dep: &Deployment, spec: &DeploymentSpec) -> Option<RuntimeInfo> {
        let serves = {
            let shared = dep.lock();
            shared.spec == *spec
                && shared.observed.is_running()
                && shared.current.as_ref().is_some_and(|i| alive(i))
        };
        serves.then(|| dep.runtime(&self.settings.host))
    }

    /// Launches `spec` as the deployment's serving instance (nothing else serves).
    pub(super) async fn run_new(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        {
            let mut shared = dep.lock();
            shared.spec = spec.clone();
            shared.observed = ObservedStatus::Starting;
            shared.health = HealthReport::new(HealthStatus::Starting);
            shared.restarts = 0;
            shared.last_failure = None;
        }
        let mut guard = StartingGuard { dep, done: false };
        let result = match self.launch(ctx, dep, spec, PortChoice::FromConfig).await {
            Ok(inst) => Ok(self.serve(ctx, dep, spec, inst, None)),
            Err(e) => {
                {
                    let mut shared = dep.lock();
                    shared.observed = ObservedStatus::failed(e.to_string());
                    shared.health = HealthReport::new(HealthStatus::Unknown);
                    shared.last_failure = Some(
                        e.failure()
                            .cloned()
                            .unwrap_or_else(|| FailureReport::new(e.to_string())),
                    );
                }
                dep.persist();
                Err(e)
            }
        };
        guard.done = true;
        result
    }

    /// Makes `inst` (of `spec`, past its readiness gate) the serving instance; `replaced`
    /// moves to the retiring list in the same step.
    pub(super) fn serve(
        &self,
        ctx: &OperationContext,
        dep: &Deployment,
        spec: &DeploymentSpec,
        inst: Arc<Instance>,
        replaced: Option<(Arc<Instance>, DeploymentSpec)>,
    ) -> RuntimeInfo {
        {
            let mut shared = dep.lock();
            shared.spec = spec.clone();
            shared.current = Some(inst);
            shared.retiring.extend(replaced);
            shared.observed = ObservedStatus::Running;
            shared.last_failure = None;
            // The gate just passed: healthy until the monitor says otherwise.
            shared.health = supervisor::after_gate(spec.config.health_check.is_some());
        }
        dep.persist();
        ctx.events.healthy(&spec.id);
        dep.runtime(&self.settings.host)
    }
}

/// Whether the instance's current process is alive (same pid, same start time).
pub(super) fn alive(inst: &Instance) -> bool {
    procfs::is_alive(
        inst.pid.load(Ordering::Acquire),
        Some(inst.start_time.load(Ordering::Acquire)),
    )
}
