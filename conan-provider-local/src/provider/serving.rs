//! Which instances serve a deployment: launching its replicas, making ready ones the
//! serving set, and retiring the ones they replace.

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
            if shared.serving.is_empty() && shared.observed == ObservedStatus::Starting {
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
    /// They are stopped concurrently (replicas do not wait for each other's stop timeout).
    pub(super) async fn retire(&self, dep: &Deployment) {
        loop {
            let batch = dep.lock().retiring.clone();
            if batch.is_empty() {
                return;
            }
            futures::future::join_all(batch.iter().map(|(inst, spec)| async move {
                self.stop_instance(dep, inst, spec).await;
                dep.lock().retiring.retain(|(i, _)| !Arc::ptr_eq(i, inst));
            }))
            .await;
        }
    }

    /// Stops the serving instances, if any (and whatever is being replaced).
    pub(super) async fn clear(&self, dep: &Deployment) {
        {
            let mut shared = dep.lock();
            let spec = shared.spec.clone();
            let serving = std::mem::take(&mut shared.serving);
            shared
                .retiring
                .extend(serving.into_iter().map(|i| (i, spec.clone())));
        }
        self.retire(dep).await;
    }

    /// Launches `count` instances of `spec` at once, each behind its readiness gate. All
    /// of them pass, or none is left running and the first failure is returned.
    pub(super) async fn launch_many(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
        count: usize,
        choice: PortChoice,
    ) -> Result<Vec<Arc<Instance>>> {
        let results =
            futures::future::join_all((0..count).map(|_| self.launch(ctx, dep, spec, choice)))
                .await;
        let mut ready = Vec::with_capacity(count);
        let mut failure = None;
        for r in results {
            match r {
                Ok(inst) => ready.push(inst),
                // A cancellation says less than a real failure beside it.
                Err(e)
                    if failure.is_none()
                        || matches!(failure, Some(conan_core::Error::Cancelled { .. })) =>
                {
                    failure = Some(e);
                }
                Err(_) => {}
            }
        }
        let Some(e) = failure else { return Ok(ready) };
        futures::future::join_all(ready.iter().map(|i| self.stop_instance(dep, i, spec))).await;
        Err(e)
    }

    /// The runtime of `spec` when exactly that spec already serves (an idempotent repeat).
    pub(super) fn serving(&self, dep: &Deployment, spec: &DeploymentSpec) -> Option<RuntimeInfo> {
        let serves = {
            let shared = dep.lock();
            shared.spec == *spec
                && shared.observed.is_running()
                && shared.serving.len() == replicas_of(spec)
                && shared.serving.iter().all(|i| alive(i))
        };
        serves.then(|| dep.runtime(&self.settings.host))
    }

    /// Launches `spec`'s replicas as the deployment's serving set (nothing else serves).
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
        let launched = self
            .launch_many(ctx, dep, spec, replicas_of(spec), PortChoice::FromConfig)
            .await;
        let result = match launched {
            Ok(insts) => Ok(self.serve(ctx, dep, spec, insts, Vec::new())),
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

    /// Makes `insts` (of `spec`, past their readiness gate) the serving set; `replaced`
    /// moves to the retiring list in the same step.
    pub(super) fn serve(
        &self,
        ctx: &OperationContext,
        dep: &Deployment,
        spec: &DeploymentSpec,
        insts: Vec<Arc<Instance>>,
        replaced: Vec<(Arc<Instance>, DeploymentSpec)>,
    ) -> RuntimeInfo {
        {
            let mut shared = dep.lock();
            shared.spec = spec.clone();
            shared.serving = insts;
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

/// How many replicas `spec` runs (at least one).
pub(crate) fn replicas_of(spec: &DeploymentSpec) -> usize {
    spec.config.replicas.max(1) as usize
}

/// Whether the instance's current process is alive (same pid, same start time).
pub(super) fn alive(inst: &Instance) -> bool {
    procfs::is_alive(
        inst.pid.load(Ordering::Acquire),
        Some(inst.start_time.load(Ordering::Acquire)),
    )
}
