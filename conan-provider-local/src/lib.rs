//! # conan-provider-local
//!
//! Conan's local provider runs Node.js apps as supervised local processes — what PM2 does,
//! without its daemon, its orphaned children or its lost log lines.
//!
//! ```no_run
//! # async fn demo() -> conan_core::Result<()> {
//! use conan_core::prelude::*;
//! use conan_provider_local::LocalProvider;
//!
//! let provider = LocalProvider::builder().state_dir("/tmp/conan-state").build()?;
//! let config = DeploymentConfig::builder("hello").build()?;
//! let spec = DeploymentSpec::new(DeploymentId::generate(), Revision(1), config);
//! let runtime = provider.deploy(&OperationContext::detached(), &spec, None).await?;
//! println!("serving at {:?}", runtime.url);
//! # Ok(()) }
//! ```
//!
//! ## Model
//!
//! - **Start command**: `start_command` via `sh -c`,
//!   else `package.json` `scripts.start` (with `node_modules/.bin` on `PATH`), else `main`,
//!   else `server.js` / `index.js` / `app.js`; the error lists what was tried.
//! - **Environment**: an allowlist of the manager's variables, the config's env, `PORT`,
//!   `HOST`, `CONAN_DEPLOYMENT_ID` and the tree marker `CONAN_INSTANCE` (details on
//!   [`DEFAULT_INHERITED_ENV`]).
//! - **Ports**: an explicit port must be free ([`Error::PortInUse`](conan_core::Error::PortInUse)
//!   names the holder's pid when `/proc` shows it); otherwise one is allocated from
//!   [`port_range`](LocalProviderBuilder::port_range), reserved process-wide and
//!   machine-wide (a locked file per port in
//!   [`port_lock_dir`](LocalProviderBuilder::port_lock_dir), so two managers on one machine
//!   never pick the same port) and checked with a bind.
//! - **Process tree**: each instance gets its own cgroup where the machine allows it
//!   (cgroup v2, pure or beside v1, else v1; as root or in a delegated subtree; see the
//!   [`cgroup`] module and [`LocalProvider::containment`]): its first process is moved
//!   in right after the spawn, then whatever it forked before the move, so nothing it
//!   starts escapes — not even a double fork with a scrubbed environment in a new session.
//!   Without a cgroup (none can be made, or [`cgroups(false)`](LocalProviderBuilder::cgroups))
//!   the tree is the instance's process group plus every process found by ancestry or by
//!   the `CONAN_INSTANCE` marker in its environment (which reaches grandchildren that
//!   moved to a new session, but not one that also scrubbed its environment and lost its
//!   parent). Stop sends the configured signal **once to each process** (`killpg` to the
//!   group, `kill` to members outside it), waits `stop.timeout`, then SIGKILLs by the
//!   cgroup (`cgroup.kill`, else freeze + SIGKILL of every member) and by marker, and
//!   returns when none is left (and the cgroup is removed). The same kill runs after a
//!   crash (before restarting) and after a failed deploy. The cgroup's path depends only
//!   on the deployment and instance, so a provider started later kills by it too.
//! - **Contract v2**: the provider observes (starting, running, stopped, exited, failed)
//!   and answers [`ObservedStatus`](conan_core::ObservedStatus); it never emits the
//!   manager's events (rollbacks are the manager's to report). `deploy` and `update` are
//!   idempotent by (deployment, revision): repeated with the same spec they return the
//!   instance already serving it; `deploy` replaces whatever is held of the deployment
//!   (a stopped or failed revision). A call whose future is dropped (abandoned by the
//!   manager's deadline) kills what it started and releases its port. Every call works
//!   from the [`KnownDeployment`](conan_core::KnownDeployment) it is handed: the
//!   runtime's details name the state directory and the serving instance (pid, start
//!   time), so a fresh provider finds, adopts or reports it. Within one process, fresh
//!   providers over the same state directory share a supervised deployment instead of
//!   supervising its processes twice.
//! - **Readiness gate**: `deploy` returns once the HTTP check answers 2xx (or the TCP
//!   connect succeeds, or — without a check — the app accepts TCP on its `PORT` or stayed
//!   up `restart.min_uptime`, whichever comes first),
//!   probing (with [`conan_core::probe`]) every millisecond for the first ~200 probes,
//!   then backing off ×1.5 to at most min(interval, 250 ms), until
//!   `update.healthy_deadline`. On failure the error carries a failure bundle (exit status,
//!   last probe, last 50 log lines) and nothing is left running. A `command` check runs
//!   `sh -c` in the app's directory with `PORT` and `HOST` set; exit 0 is healthy.
//!   Cancelling the operation's token during the gate stops the instance and answers
//!   [`Error::Cancelled`](conan_core::Error::Cancelled).
//! - **Supervision**: restarts follow
//!   [`RestartTracker`](conan_core::support::restart::RestartTracker); each is an
//!   [`Event::Restarted`](conan_core::Event::Restarted); a crash loop reports
//!   `Failed` through the event sink (a clean exit under `on-failure`, `exited`). Once
//!   running, liveness is the monitor's (`conan-monitor`, for every provider alike): this
//!   provider answers [`Provider::probe`](conan_core::Provider::probe) with the default,
//!   on the instance's port, and does not probe on its own.
//! - **Logs**: see the [`logs`] module: the app writes to spool files, Conan tails them —
//!   lossless up to `process.exit()`, recorded even while no manager runs.
//! - **Updates**: `recreate` stops then starts; `blue-green` (and `rolling`, which is the
//!   same with one replica) starts the new revision on a new port beside the old one and
//!   switches once it is ready; a failed new revision is discarded and the old one keeps
//!   serving untouched. With an explicit port that the new revision keeps, blue-green is
//!   impossible without a proxy and falls back to recreate (with `auto_rollback`, the old
//!   revision is started again when the new one fails).
//! - **Adoption**: apps outlive the manager (even SIGKILL). State lives in
//!   `<state_dir>/deployments/<id>/` (see the `state` module docs): `state.json` names
//!   the serving instance, `spec.json` keeps the spec (mode 0600: it holds env values),
//!   and every launch writes its own record in `instances/<key>/instance.json` before
//!   its process is spawned, right after (pid and start time) and once it passed its
//!   gate, all atomically. [`Provider::recover`](conan_core::Provider::recover) (and any
//!   call that finds the deployment on disk) reconciles **every** instance directory and
//!   every process carrying the deployment's marker: the serving instance is adopted
//!   only when its pid's start time (`/proc/PID/stat`) matches the recorded one, so a
//!   recycled pid is never adopted; a launch that passed its gate but was never recorded
//!   as serving is adopted only when it is the revision the caller expects; everything
//!   else (a launch interrupted before its gate, the new side of an interrupted update,
//!   the old side of an interrupted blue-green switch, anything no record explains) is
//!   killed. Exactly one instance per deployment (one per replica) runs afterwards, or none; `stop` and
//!   `remove` sweep every instance's processes the same way. A damaged (truncated,
//!   garbage) state file never makes recovery fail: that deployment is adopted when one
//!   instance is unambiguously its own (the runtime the caller knows names it, or it is
//!   the only live ready one) and flagged with a failure report "state file damaged:
//!   …", else reported failed with that reason and its processes are killed; the others
//!   are recovered as usual, and `recover` reports one failed unit instead of failing
//!   the batch. [`LocalProvider::discover`] lists what the state directory holds, for
//!   a manager that lost its records. An adopted process's exit status cannot be
//!   observed (it is not our child): it is reported as `Unknown`.
//! - **Replicas**: `replicas = N` runs N instances, each a supervised process on its own
//!   port with its own instance directory and cgroup, restarted alone (and out of the
//!   runtime, so out of a proxy's pool, until ready again); with a health check each is
//!   probed by its supervisor and taken out of service, brought back, or restarted alone.
//!   Updates are `rolling` (`update.max_surge` / `max_unavailable`, default 1 / 0),
//!   `blue-green` (N new beside N old), `canary` (through the manager's
//!   [`OperationContext::canary`](conan_core::OperationContext::canary)) or `recreate`.
//!   After a manager restart every live replica of the recorded revision is adopted and
//!   missing ones are started again. A fixed `port` allows one replica
//!   ([`Error::InvalidConfig`](conan_core::Error::InvalidConfig) at `port`).
//! - **Resource limits**: with a cgroup, `resources.memory` is a hard limit
//!   (`memory.max` on v2, `memory.limit_in_bytes` on v1: the kernel kills the app past it,
//!   and the supervisor restarts it as after any crash) and `resources.cpus` a CPU quota
//!   (`cpu.max`, `cpu.cfs_quota_us`). Each deploy says in a progress notice which limits
//!   are enforced and how; without a controller for one, that one is not enforced.
//! - **Sessions**: an instance gets its own process group (and cgroup) but stays in the
//!   manager's session (`setsid` would need `unsafe` `pre_exec`; so does joining the
//!   cgroup before `exec`, hence the move right after the spawn); being a background
//!   group, it gets no terminal hang-up when the manager's terminal closes.

pub mod cgroup;
mod command;
mod deployment;
mod instance;
mod lifecycle;
pub mod logs;
mod metrics;
mod ports;
mod probe;
mod procfs;
mod provider;
mod settings;
mod state;
mod supervisor;
mod tree;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use cgroup::{Containment, ContainmentKind};
pub use settings::{DEFAULT_INHERITED_ENV, LocalProviderBuilder, LocalSettings};

use lifecycle::Inner;
use ports::PortAllocator;

/// The local process provider. Use it as `Arc<dyn Provider>` or directly.
///
/// Dropping it stops supervising (and tailing) but leaves the apps running, so a later
/// provider on the same state directory can adopt them; call `stop` or `remove` to end them.
#[derive(Debug)]
pub struct LocalProvider {
    inner: Arc<Inner>,
}

impl LocalProvider {
    /// A builder with the defaults.
    pub fn builder() -> LocalProviderBuilder {
        LocalProviderBuilder::default()
    }

    fn from_settings(settings: LocalSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                ports: Arc::new(PortAllocator::new(
                    settings.port_range.clone(),
                    settings.port_lock_dir.clone(),
                )),
                settings,
                deployments: Mutex::new(HashMap::new()),
                counter: AtomicU64::new(0),
                sink: Mutex::new(None),
                markers: Mutex::new(None),
            }),
        }
    }

    /// The provider's settings.
    #[must_use]
    pub fn settings(&self) -> &LocalSettings {
        &self.inner.settings
    }

    /// Which mechanism keeps each instance's processes together and kills them, and
    /// whether resource limits are hard limits: a cgroup per instance (v2 or v1, see
    /// [`cgroup`]) where the machine allows it and
    /// [`cgroups`](LocalProviderBuilder::cgroups) is on, else process markers (with the
    /// reason). Its `Display` is one line, e.g.
    /// `cgroup v2 (/sys/fs/cgroup/conan, kill by cgroup.kill); memory limit: memory.max; cpu limit: cpu.max`
    /// or `process markers (no cgroup: disabled by configuration)`.
    #[must_use]
    pub fn containment(&self) -> Containment {
        cgroup::containment(self.inner.settings.cgroups)
    }
}

impl Drop for LocalProvider {
    fn drop(&mut self) {
        let deployments: Vec<_> = self
            .inner
            .deployments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .map(|(_, d)| d)
            .collect();
        for dep in deployments {
            // Another provider of this process may share it: the last one detaches.
            if dep.holders.fetch_sub(1, Ordering::AcqRel) != 1 {
                continue;
            }
            let shared = dep.lock();
            let retiring = shared.retiring.iter().map(|(i, _)| i);
            for inst in shared.serving.iter().chain(retiring) {
                inst.capture.detach();
                if let Some(h) = inst
                    .supervisor
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                {
                    h.abort();
                }
                inst.release_port();
            }
        }
    }
}
