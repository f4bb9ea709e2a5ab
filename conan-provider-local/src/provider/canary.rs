//! A canary update (`update.strategy = "canary"`): the new revision's replicas start beside
//! the old ones, each behind its readiness gate, and the manager's canary
//! ([`OperationContext::canary`]) routes a growing share of requests to them through the
//! traffic layer and judges them against the old revision. Promoted: the endpoint switches
//! to the new replicas, the old ones drain and stop. Rolled back: the new replicas are
//! taken out (drained) and stopped, the old ones serve on untouched, and the update fails
//! with the verdict and its numbers as the failure bundle.
//!
//! Without a traffic layer in front of the deployment there is nothing to split requests
//! with: the new replicas are stopped again and the update fails with `NotSupported`.

use std::sync::Arc;

use conan_core::support::canary::CanaryRequest;
use conan_core::{
    DeploymentSpec, Error, FailureReport, OperationContext, Phase, Result, RuntimeInfo,
};

use super::serving::replicas_of;
use crate::deployment::Deployment;
use crate::instance::Instance;
use crate::lifecycle::{Inner, PortChoice};

/// The runtime of some instances (as the manager and the traffic layer see instances).
fn runtime_of(dep: &Deployment, host: &str, insts: &[Arc<Instance>]) -> RuntimeInfo {
    let all = dep.runtime(host);
    let ids: Vec<String> = insts
        .iter()
        .map(|i| i.pid.load(std::sync::atomic::Ordering::Acquire).to_string())
        .collect();
    let mut out = RuntimeInfo::new();
    for i in all.instances.into_iter().filter(|i| ids.contains(&i.id)) {
        out = out.with_instance(i);
    }
    if let Some(url) = all.url {
        out = out.with_url(url);
    }
    out
}

impl Inner {
    /// Replaces `old` (serving, of `old_spec`) by `spec`'s replicas if the canary promotes
    /// them (see the module docs).
    pub(super) async fn canary(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
        old_spec: &DeploymentSpec,
        old: Vec<Arc<Instance>>,
    ) -> Result<RuntimeInfo> {
        let plan = spec.config.update.canary.clone().unwrap_or_default();
        let fresh = self
            .launch_many(ctx, dep, spec, replicas_of(spec), PortChoice::Fresh)
            .await?;
        {
            // Supervised as serving (their restarts reported) while the canary runs; the
            // endpoint's weights, not this list, decide who gets requests.
            let mut shared = dep.lock();
            shared.serving.extend(fresh.iter().cloned());
        }
        dep.persist();
        let host = &self.settings.host;
        let request = CanaryRequest::new(
            runtime_of(dep, host, &old),
            runtime_of(dep, host, &fresh),
            plan,
        );
        ctx.events.progress(
            &spec.id,
            Phase::Switching,
            format!(
                "canary: revision {} ready ({} replicas) beside revision {}",
                spec.revision,
                fresh.len(),
                old_spec.revision
            ),
        );
        let Some(outcome) = ctx.canary(request).await else {
            self.take_out(ctx, dep, spec, fresh).await;
            return Err(Error::NotSupported {
                operation: "a canary update without a traffic layer in front of the deployment (enable its endpoint)".into(),
                provider: super::NAME.into(),
            });
        };
        if outcome.promoted {
            ctx.events
                .progress(&spec.id, Phase::Switching, outcome.summary.clone());
            let replaced = old.into_iter().map(|o| (o, old_spec.clone())).collect();
            let info = self.serve(ctx, dep, spec, fresh, replaced);
            ctx.cutover(&info).await;
            ctx.events
                .progress(&spec.id, Phase::Stopping, "stopping the previous revision");
            self.retire(dep).await;
            return Ok(info);
        }
        ctx.events
            .progress(&spec.id, Phase::CleaningUp, outcome.summary.clone());
        self.take_out(ctx, dep, spec, fresh).await;
        let failure = FailureReport::new(outcome.summary.clone());
        Err(Error::HealthCheckFailed {
            deployment: spec.config.name.clone(),
            failure: Box::new(failure.with_logs(dep.logs.last(FailureReport::MAX_LOG_LINES))),
        })
    }
}
