//! Scaling a running deployment (`Provider::scale`): more or fewer replicas of the serving
//! revision, no new revision.
//!
//! - **Out:** the extra replicas start beside the serving ones (each on a port of its own,
//!   behind its readiness gate, all at once); once every one passed, they join the serving
//!   set and the cutover routes the endpoint to them too. One that fails its gate leaves
//!   nothing behind, and the replicas that served serve on.
//! - **In:** the replicas to remove (those out of service first, then the newest) leave the
//!   serving set, the cutover routes the endpoint without them and waits for their requests
//!   in flight (up to `endpoint.drain_timeout`), and only then they are stopped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use conan_core::{DeploymentSpec, Error, OperationContext, Phase, Result, RuntimeInfo};

use super::serving::alive;
use crate::deployment::Deployment;
use crate::lifecycle::{Inner, PortChoice};

impl Inner {
    /// Brings the serving set of `dep` to `spec`'s replica count (see the module docs).
    pub(super) async fn scale(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        let want = super::serving::replicas_of(spec);
        let (serving, held) = {
            let shared = dep.lock();
            let running = shared.observed.is_running();
            let serving = if running {
                shared.serving.clone()
            } else {
                Vec::new()
            };
            (serving, shared.spec.clone())
        };
        if serving.is_empty() {
            return Err(Error::deployment_not_found(spec.id.as_str()));
        }
        if held.revision != spec.revision {
            return Err(Error::NotSupported {
                operation: format!(
                    "scaling revision {} of '{}' while revision {} runs",
                    spec.revision,
                    spec.name(),
                    held.revision
                ),
                provider: super::NAME.to_owned(),
            });
        }
        let have = serving.len();
        if want > have {
            ctx.events.progress(
                &spec.id,
                Phase::Starting,
                format!(
                    "scaling out: starting {} more replicas ({have} serving)",
                    want - have
                ),
            );
            // On failure the new replicas are gone, the serving ones untouched.
            let batch = self
                .launch_many(ctx, dep, spec, want - have, PortChoice::Fresh)
                .await?;
            {
                let mut shared = dep.lock();
                shared.serving.extend(batch);
                shared.spec = spec.clone();
            }
            dep.persist();
            ctx.cutover(&dep.runtime(&self.settings.host)).await;
            ctx.events
                .progress(&spec.id, Phase::Switching, format!("{want} replicas serve"));
        } else {
            let mut order = serving;
            // Out of service (down, or gone) first, then the newest.
            order.sort_by_key(|i| i.down.load(Ordering::Acquire) || !alive(i));
            order.reverse();
            let victims: Vec<_> = order.into_iter().take(have - want).collect();
            dep.lock().spec = spec.clone();
            if !victims.is_empty() {
                ctx.events.progress(
                    &spec.id,
                    Phase::Stopping,
                    format!(
                        "scaling in: draining and stopping {} replicas",
                        victims.len()
                    ),
                );
                self.take_out(ctx, dep, &held, victims).await;
            } else {
                dep.persist();
            }
        }
        Ok(dep.runtime(&self.settings.host))
    }
}
