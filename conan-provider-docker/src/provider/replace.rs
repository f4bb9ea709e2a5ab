//! `replace`: fresh containers of the serving revision beside the running ones, then the
//! traffic switch, then the old ones go (a restart without a gap behind a stable endpoint).
//!
//! The sequence, and what holds at each step:
//!
//! 1. The running containers of the known revision are the old set. None running, or a
//!    fixed `host_port` (two containers cannot publish it), answers
//!    [`Error::NotSupported`]: the manager then stops and starts.
//! 2. A fresh set (one per replica, each on a port the daemon picks) is started and must
//!    pass the readiness gate. On failure or cancellation it is removed and the old set
//!    serves untouched; it never got a request, because routes only change in step 3.
//! 3. [`OperationContext::cutover`] routes the endpoint to the fresh set and waits until
//!    the old set drained (the traffic layer's `drain_timeout`).
//! 4. Every other container of the deployment (the old set, and leftovers of an abandoned
//!    attempt) is stopped and removed. Past the cutover the call no longer gives up on
//!    cancellation: the fresh set serves, and answering an error would leave the manager
//!    believing the old one does.
//!
//! **Idempotent**: a repeated call replaces whatever runs again; leftovers of an abandoned
//! call (a fresh container that never reached the cutover) are removed in step 4, and
//! [`recover`](conan_core::Provider::recover) keeps one container per replica.

use bollard::models::ContainerSummary;
use conan_core::{Error, KnownDeployment, OperationContext, Phase, Result, RuntimeInfo};

use crate::rollout::{self, Artifact};
use crate::{DockerProvider, PROVIDER_NAME, container, image};

impl DockerProvider {
    pub(super) async fn replace_inner(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("restart")?;
        let spec = &known.spec;
        let options = rollout::options_of(spec)?;
        let side_by_side = |why: &str| Error::NotSupported {
            operation: format!("replacing '{}' side by side ({why})", spec.name()),
            provider: PROVIDER_NAME.to_owned(),
        };
        if options.host_port.is_some() {
            return Err(side_by_side("a fixed host port"));
        }
        let existing = self.containers(&spec.id).await?;
        let old = self.running_of(&existing, spec.revision).await?;
        if old.is_empty() {
            return Err(side_by_side("nothing running"));
        }
        // The serving revision's image is there (its containers run); `prepare` finds it
        // again (or tags the configured image again) without building.
        let prepared =
            image::prepare(&self.docker, &self.settings.base_image, ctx, spec, &options).await?;
        let artifact = Artifact::from(&prepared);
        let replicas: Vec<u32> = (0..spec.config.replicas.max(1)).collect();
        // On failure the fresh containers are gone (`launch` removes them) and the old
        // ones were never touched.
        let fresh = self
            .launch(ctx, spec, &options, &artifact, &replicas)
            .await?;
        if ctx.is_cancelled() {
            self.discard(ctx, spec, &fresh).await;
            return Err(Error::Cancelled {
                operation: format!("restart of {}", spec.name()),
            });
        }
        ctx.events.progress(
            &spec.id,
            Phase::Switching,
            format!(
                "{} fresh container(s) of revision {} are ready",
                fresh.len(),
                spec.revision
            ),
        );
        let info = rollout::runtime(&self.settings.bind_address, &prepared.tag, &fresh);
        ctx.cutover(&info).await;
        // Everything else of the deployment goes: the old set, stopped containers, and
        // leftovers of an abandoned attempt (none of them is routed to any more).
        let replaced: Vec<&ContainerSummary> = existing
            .iter()
            .filter(|c| !fresh.iter().any(|f| c.id.as_deref() == Some(f.id.as_str())))
            .collect();
        ctx.events.progress(
            &spec.id,
            Phase::Stopping,
            format!("removing {} replaced container(s)", replaced.len()),
        );
        let stop_s = container::stop_seconds(spec.config.stop.timeout);
        container::stop_and_remove(&self.docker, &super::inventory::ids(&replaced), stop_s).await;
        self.serve(spec, &ctx.events, Vec::new());
        ctx.events.healthy(&spec.id);
        Ok(info)
    }
}
