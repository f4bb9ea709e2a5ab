//! Conan's Docker provider: builds and runs applications as containers on a Docker daemon,
//! through [bollard](https://docs.rs/bollard).
//!
//! ```no_run
//! # async fn demo() -> conan_core::Result<()> {
//! use conan_provider_docker::DockerProvider;
//! let docker = DockerProvider::builder()
//!     .base_image("node:20-slim")
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # The model
//!
//! - **Connection**: `DOCKER_HOST` (`unix://`, `tcp://`) or the local socket; the API version
//!   is negotiated with the daemon. A daemon that does not answer within the connect timeout
//!   (5 s) is [`Error::ProviderUnavailable`](conan_core::Error::ProviderUnavailable) naming the
//!   address and the setting that fixes it (`DOCKER_HOST`); nothing ever hangs on a dead socket.
//! - **Images** come from one of three sources, in this order: `provider_options.docker.image`
//!   (an image on the daemon; never pulled), the project's `Dockerfile`, or a Dockerfile
//!   generated for a Node.js project (see [`DockerProviderBuilder::base_image`]). Images are
//!   tagged `conan/<name>:r<revision>` and labelled; the last
//!   [`keep_images`](DockerProviderBuilder::keep_images) revisions are kept for rollback,
//!   older ones are pruned after each successful deploy or update.
//! - **Containers** carry the labels `conan.managed=true`, `conan.deployment=<id>`,
//!   `conan.name`, `conan.revision`, `conan.replica` plus the config's own labels. The app's
//!   port (config `port`, default 3000, also passed as `PORT`) is published on 127.0.0.1 on a
//!   port the daemon picks, unless `provider_options.docker.host_port` fixes it. `HOST=0.0.0.0`
//!   is set unless the config's env sets `HOST`, so apps that read it listen where the
//!   published port reaches them. `init` is on so
//!   signals reach the app; memory and CPU limits, the stop signal and timeout and the restart
//!   policy are Docker's own (`always` maps to `unless-stopped`, so a stop sticks).
//! - **Idempotent by (deployment, revision)**: containers are found by label, not remembered.
//!   A deploy or update repeated with the same spec adopts the containers of that revision
//!   (after they pass the gate again) instead of starting a second set; a deploy replaces
//!   whatever else of the deployment exists (a stopped or failed earlier revision, leftovers
//!   of an abandoned attempt). An image built earlier for the same revision is reused.
//!   Every call works from the [`KnownDeployment`](conan_core::KnownDeployment) it is handed
//!   (its runtime details carry the container ids, image id and published port), so a fresh
//!   provider instance manages what an earlier one started.
//! - **Readiness**: a deploy returns once every container passes the health check through the
//!   published port (and Docker's own `HEALTHCHECK` status when the image has one), within
//!   `update.healthy_deadline`. On failure the error carries a
//!   [`FailureReport`](conan_core::FailureReport) (exit code, last 50 log lines, last probe) and
//!   the containers (and the revision's image) are removed. Cancellation is raced against
//!   image builds and the readiness wait; a cancelled deploy removes what it started and
//!   answers [`Error::Cancelled`](conan_core::Error::Cancelled).
//! - **Health** answers the readiness gate's observation. Liveness after the gate is the
//!   monitor's (`conan-monitor`, one implementation for every provider): this provider
//!   answers [`Provider::probe`](conan_core::Provider::probe) through the published port
//!   (HTTP and TCP probes are [`conan_core::probe`]'s) or, for a `command` check, inside the
//!   container (`docker exec`), and fails a probe Docker's own `HEALTHCHECK` calls unhealthy.
//! - **Updates**: `blue-green` starts the new containers beside the old ones and removes the
//!   old ones once the new ones are healthy; `rolling` does that `max_parallel` replicas at a
//!   time; `recreate` stops the old first. A failing new revision is removed and the old one
//!   keeps serving (with `recreate` and `rolling`, the stopped old containers are started
//!   again when `auto_rollback` is set). The runtime's URL is the new container's
//!   published port; behind a traffic layer (`conan-proxy`, which the daemon runs) the
//!   deployment's stable endpoint fronts it: a blue-green update (and so a rollback, an
//!   update to the old revision's config) calls
//!   [`OperationContext::cutover`](conan_core::OperationContext::cutover) once the new
//!   containers are ready and removes the old ones only after their drain; a rolling update
//!   cuts over after each batch, and keeps the replaced replicas running (out of rotation)
//!   until the last batch passed, so a failure routes back to the old set on the ports the
//!   manager knows (Docker publishes a restarted container on a new port).
//! - **Restarts without a gap**: [`replace`](conan_core::Provider::replace) starts a fresh
//!   container per replica of the same revision beside the old ones (each on a port the
//!   daemon picks), gates it, cuts over, then removes the old ones; a failed or cancelled
//!   replace removes the fresh containers and leaves the old ones serving. A fixed
//!   `host_port` answers `NotSupported` (the manager then stops and starts).
//! - **Supervision** is Docker's restart policy; a watcher on the daemon's event stream turns
//!   a container death into `Restarted` events, or into a failed (or exited) status report
//!   with the bundle when Docker leaves the deployment down; the manager applies it. The
//!   provider never emits the manager's events. Docker's own backoff applies; the policy's
//!   `window`, `jitter` and `reset_after` are not used.
//! - **Recovery**: containers outlive the process. [`recover`](conan_core::Provider::recover)
//!   finds them by label and adopts them without restarting; a known deployment without
//!   containers comes back `Failed` with the reason. `stop` keeps the containers and `start`
//!   resumes them; both use the config's `stop.timeout`.
//! - **Secrets**: env values go to the daemon only; they are never logged, nor part of an
//!   error or `Debug` output.

mod builder;
mod container;
mod context;
mod error;
mod health;
mod image;
mod labels;
mod logs;
mod metrics;
mod node;
mod options;
mod provider;
mod recover;
mod rollout;
mod state;
mod supervise;

pub use builder::DockerProviderBuilder;
pub use labels::{
    LABEL_DEPLOYMENT, LABEL_MANAGED, LABEL_NAME, LABEL_PORT, LABEL_REPLICA, LABEL_REVISION,
};
pub use options::DockerOptions;

use std::sync::Arc;

/// The provider name, as written in `DeploymentConfig::provider` and `provider_options`.
pub const PROVIDER_NAME: &str = "docker";

/// The default base image of generated Dockerfiles.
pub const DEFAULT_BASE_IMAGE: &str = "node:20-slim";

/// The port an app listens on inside its container when the config names none.
pub const DEFAULT_CONTAINER_PORT: u16 = 3000;

/// Deploys applications as Docker containers. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct DockerProvider {
    pub(crate) docker: bollard::Docker,
    pub(crate) settings: Arc<builder::Settings>,
    pub(crate) state: Arc<state::StateTable>,
    /// Keeps the Docker event watcher alive while any clone lives.
    pub(crate) _supervisor: Arc<supervise::Supervisor>,
}

impl std::fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerProvider")
            .field("host", &self.settings.host)
            .field("base_image", &self.settings.base_image)
            .finish_non_exhaustive()
    }
}

impl DockerProvider {
    /// A builder with every default.
    #[must_use]
    pub fn builder() -> DockerProviderBuilder {
        DockerProviderBuilder::default()
    }

    /// Connects with the settings of the environment: `DOCKER_HOST`, and
    /// `CONAN_DOCKER_BASE_IMAGE` for the base image of generated Dockerfiles.
    ///
    /// # Errors
    /// [`Error::ProviderUnavailable`](conan_core::Error::ProviderUnavailable) when no daemon answers.
    pub async fn from_env() -> conan_core::Result<Self> {
        DockerProviderBuilder::from_env().build().await
    }

    /// The underlying bollard client, for what this crate does not cover.
    #[must_use]
    pub fn client(&self) -> &bollard::Docker {
        &self.docker
    }

    /// Where the daemon is (`unix:///var/run/docker.sock`).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.settings.host
    }
}
