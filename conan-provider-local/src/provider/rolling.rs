//! The rolling update over replicas.
//!
//! With `replicas = N`, `update.max_surge = S` and `update.max_unavailable = U` (defaults
//! 1 and 0), the update proceeds in steps. Each step takes down as many old instances as
//! the unavailability budget allows (at least `N − U` stay in service), starts as many new
//! ones as the surge budget allows (at most `N + S` run), waits for every new one to pass
//! its readiness gate, makes them serve, and only then stops as many old ones as needed to
//! be back at `N`. With the defaults a new replica is always ready before an old one
//! stops: capacity never drops below `N`.
//!
//! **On failure** (a new instance never gets ready, or the call is cancelled) the new
//! instances of that step are gone already (see `launch`); the ones of earlier steps are
//! replaced by instances of the old revision again (each gated too) and then stopped, so
//! the old revision serves with `N` replicas as before. The error carries the failure
//! bundle of the instance that failed.

use std::sync::Arc;

use conan_core::{DeploymentSpec, Error, OperationContext, Phase, Result, RuntimeInfo};

use super::serving::replicas_of;
use crate::deployment::Deployment;
use crate::instance::Instance;
use crate::lifecycle::{Inner, PortChoice};

/// One step of a rolling update: how many old instances to take down before starting new
/// ones, and how many new ones to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub stop_first: usize,
    pub start: usize,
}

/// The next step, from the number of old instances still serving and new ones ready.
/// `None` once no old instance is left and `wanted` new ones serve.
pub(crate) fn next_step(
    wanted: usize,
    surge: usize,
    unavailable: usize,
    old: usize,
    new: usize,
) -> Option<Step> {
    if new >= wanted {
        return None;
    }
    let in_service = old + new;
    let floor = wanted.saturating_sub(unavailable);
    let stop_first = in_service.saturating_sub(floor).min(old);
    let ceiling = wanted + surge;
    let room = ceiling.saturating_sub(in_service - stop_first);
    let start = room.min(wanted - new);
    // Validation forbids surge = unavailable = 0; should it get here anyway, one at a time.
    let start = start.max(1);
    Some(Step { stop_first, start })
}

impl Inner {
    /// Replaces `old` (serving, of `old_spec`) by the replicas of `spec`, step by step (see
    /// the module docs).
    pub(super) async fn rolling(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
        old_spec: &DeploymentSpec,
        old: Vec<Arc<Instance>>,
    ) -> Result<RuntimeInfo> {
        let wanted = replicas_of(spec);
        let surge = spec.config.update.max_surge as usize;
        let unavailable = spec.config.update.max_unavailable as usize;
        let mut old_left = old;
        let mut fresh: Vec<Arc<Instance>> = Vec::new();
        let mut stopped_old = 0usize;
        while let Some(step) = next_step(wanted, surge, unavailable, old_left.len(), fresh.len()) {
            if step.stop_first > 0 {
                let down: Vec<_> = old_left.drain(..step.stop_first).collect();
                stopped_old += down.len();
                self.take_out(ctx, dep, old_spec, down).await;
            }
            ctx.events.progress(
                &spec.id,
                Phase::Starting,
                format!(
                    "rolling: starting {} of revision {} ({} of {wanted} ready, {} old serving)",
                    step.start,
                    spec.revision,
                    fresh.len(),
                    old_left.len()
                ),
            );
            let launched = self
                .launch_many(ctx, dep, spec, step.start, PortChoice::Fresh)
                .await;
            let batch = match launched {
                Ok(b) => b,
                Err(e) => {
                    let missing = (replicas_of(old_spec)).saturating_sub(old_left.len());
                    self.roll_back(ctx, dep, spec, old_spec, fresh, missing, &e)
                        .await;
                    return Err(e);
                }
            };
            {
                let mut shared = dep.lock();
                shared.serving.extend(batch.iter().cloned());
            }
            dep.persist();
            // Behind an endpoint the new replicas get requests from now on.
            ctx.cutover(&dep.runtime(&self.settings.host)).await;
            fresh.extend(batch);
            // Back to `wanted` in service: the oldest old instances go.
            let excess = (old_left.len() + fresh.len()).saturating_sub(wanted);
            let excess = excess.min(old_left.len());
            if excess > 0 {
                let down: Vec<_> = old_left.drain(..excess).collect();
                stopped_old += down.len();
                self.take_out(ctx, dep, old_spec, down).await;
            }
        }
        // Any old instance still serving (fewer replicas wanted than before) goes too.
        if !old_left.is_empty() {
            let rest = std::mem::take(&mut old_left);
            stopped_old += rest.len();
            self.take_out(ctx, dep, old_spec, rest).await;
        }
        tracing::debug!(deployment = %spec.id, stopped_old, "rolling update done");
        ctx.events.progress(
            &spec.id,
            Phase::Switching,
            format!("revision {} ready ({wanted} replicas)", spec.revision),
        );
        let info = self.serve(ctx, dep, spec, fresh, Vec::new());
        self.retire(dep).await;
        Ok(info)
    }

    /// Takes `insts` out of the serving set, lets their requests drain behind an endpoint
    /// (the [`cutover`](OperationContext::cutover) without them), and stops them.
    pub(super) async fn take_out(
        &self,
        ctx: &OperationContext,
        dep: &Deployment,
        spec: &DeploymentSpec,
        insts: Vec<Arc<Instance>>,
    ) {
        {
            let mut shared = dep.lock();
            shared
                .serving
                .retain(|s| !insts.iter().any(|i| Arc::ptr_eq(i, s)));
            shared
                .retiring
                .extend(insts.iter().map(|i| (Arc::clone(i), spec.clone())));
        }
        dep.persist();
        ctx.cutover(&dep.runtime(&self.settings.host)).await;
        self.retire(dep).await;
    }

    /// Undoes a failed rolling update: `missing` instances of the old revision are started
    /// again (gated), then the new instances of earlier steps are stopped. When the old
    /// revision cannot come back, the new instances keep serving rather than nothing.
    #[allow(clippy::too_many_arguments)]
    async fn roll_back(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
        old_spec: &DeploymentSpec,
        fresh: Vec<Arc<Instance>>,
        missing: usize,
        cause: &Error,
    ) {
        ctx.events.progress(
            &old_spec.id,
            Phase::CleaningUp,
            format!(
                "rolling: a new instance failed ({cause}); back to revision {}",
                old_spec.revision
            ),
        );
        if missing > 0 {
            // The call may be cancelled: the rollback runs to its end regardless.
            let undo = OperationContext::new(ctx.events.clone());
            match self
                .launch_many(&undo, dep, old_spec, missing, PortChoice::Fresh)
                .await
            {
                Ok(back) => {
                    dep.lock().serving.extend(back);
                    dep.persist();
                    ctx.cutover(&dep.runtime(&self.settings.host)).await;
                }
                Err(e) => {
                    tracing::warn!(deployment = %old_spec.id, error = %e, "the previous revision did not come back; the new instances keep serving");
                    return;
                }
            }
        }
        if !fresh.is_empty() {
            self.take_out(ctx, dep, spec, fresh).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the plan to its end: the steps, and the fewest in service and most running at
    /// any point.
    fn plan(
        wanted: usize,
        surge: usize,
        unavailable: usize,
        old: usize,
    ) -> (Vec<Step>, usize, usize) {
        let (mut o, mut n) = (old, 0);
        let mut steps = Vec::new();
        let (mut low, mut high) = (old, old);
        while let Some(s) = next_step(wanted, surge, unavailable, o, n) {
            o -= s.stop_first;
            low = low.min(o + n);
            high = high.max(o + n + s.start);
            n += s.start;
            let excess = (o + n).saturating_sub(wanted).min(o);
            o -= excess;
            steps.push(s);
            assert!(steps.len() < 100, "no progress");
        }
        assert_eq!(n, wanted);
        (steps, low, high.max(o + n))
    }

    #[test]
    fn the_default_never_drops_capacity_and_surges_by_one() {
        let (steps, low, high) = plan(3, 1, 0, 3);
        assert_eq!(steps.len(), 3);
        assert!(steps.iter().all(|s| *s
            == Step {
                stop_first: 0,
                start: 1
            }));
        assert_eq!((low, high), (3, 4));
    }

    #[test]
    fn unavailability_without_surge_stops_first() {
        let (steps, low, high) = plan(3, 0, 1, 3);
        assert_eq!(
            steps[0],
            Step {
                stop_first: 1,
                start: 1
            }
        );
        assert_eq!((low, high), (2, 3));
    }

    #[test]
    fn larger_budgets_take_bigger_steps_and_scale_changes_converge() {
        let (steps, low, high) = plan(4, 2, 2, 4);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!((low, high), (2, 6));
        // Scaling up from 1 to 3 while rolling, and down from 3 to 1.
        let (_, low, high) = plan(3, 1, 0, 1);
        assert!(low >= 1 && high <= 4);
        let (_, low, _) = plan(1, 1, 0, 3);
        assert!(low >= 1);
    }
}
