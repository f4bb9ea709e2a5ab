//! The [`Provider`] trait (contract v2): what a deployment target must do, and what it may
//! rely on.
//!
//! A provider runs deployments somewhere (local processes, Docker, a cloud). It does **not**
//! queue, retry, time out, limit concurrency, keep revision history or move the status state
//! machine: the [`DeploymentManager`](crate::DeploymentManager) does all of that around it.
//!
//! # What the provider may rely on
//!
//! - **One call per deployment at a time.** The manager never runs two calls that change a
//!   deployment (`deploy`, `update`, `start`, `replace`, `scale`, `stop`, `remove`,
//!   `recover`) at once for the same deployment id; calls for different deployments run
//!   concurrently. Read-only calls (`status`, `logs`, `metrics`, `health`) may run at any
//!   time.
//! - **It is handed what the store knows.** Every call after `deploy` receives a
//!   [`KnownDeployment`]: the spec of the current revision and the [`RuntimeInfo`] the
//!   provider last returned (persisted across restarts of the managing process, including
//!   [`RuntimeInfo::details`]). A provider may keep caches, but it must work from this alone
//!   (a fresh instance after a restart has nothing else).
//! - **Which call, when.** `deploy` when the provider holds nothing that serves the
//!   deployment (a first deploy; an update, rollback or start of a deployment that is
//!   stopped, failed or never came up). `update` only while the deployment runs. `start`
//!   only for a deployment stopped on purpose, at its recorded revision. `replace` only
//!   while it runs behind an endpoint (a restart or a heal). `stop` and `remove` in any
//!   state.
//! - **Bounded calls.** The manager gives each call a deadline (deploy and update: the
//!   config's `update.healthy_deadline` plus a build allowance; stop and remove: the config's
//!   `stop.timeout` plus a margin; the others a fixed bound). When the deadline passes, or
//!   the user cancels, it cancels `ctx.cancel`, waits a short grace period, and then abandons
//!   the call (the future is dropped). It may later call again with the same arguments.
//!
//! # What the provider must do
//!
//! - **Idempotent by (deployment, revision).** `deploy` and `update` called again with the
//!   same spec, after any failure, cancellation or abandoned call, converge on one running
//!   revision: never `AlreadyExists`, never two copies. `stop` and `remove` succeed when
//!   there is nothing (left) to stop or remove. This is what makes the manager's retries of
//!   transient errors safe.
//! - **Leave nothing behind on failure.** A failed or cancelled `deploy` leaves no process,
//!   container, port or temp file of that attempt; a failed or cancelled `update` leaves the
//!   previous revision serving untouched (its error carries the failure bundle where one
//!   exists, [`Error::HealthCheckFailed`]).
//! - **Observe, do not decide.** Report what happens between calls through the
//!   [`EventSink`] of the context: progress, health probe results, restarts, and that an
//!   instance exited or failed for good. The sink cannot change a deployment's status or
//!   emit the manager's events (status changes, rollbacks, failures, queue events): the
//!   manager does that from the reports and the call results.
//! - **Honour cancellation.** Check `ctx.cancel` between steps (and race it against long
//!   waits); on cancellation undo what this call started and return [`Error::Cancelled`].
//! - **Classify errors.** Errors that retrying may cure are transient
//!   ([`Error::is_transient`]): an unreachable daemon or API, a rate limit. A config the
//!   provider cannot run, a failed health gate, a missing deployment are permanent.
//! - **Unknown ids answer [`Error::NotFound`]** from `status`, `logs`, `metrics`, `health`,
//!   `start` and `update` when the provider holds nothing for them and the known runtime
//!   names nothing it can find.
//!
//! `conan_core::testing::conformance` (feature `testing`) checks this contract; every
//! provider crate runs it against itself, directly and through `Arc<dyn Provider>`.

mod types;

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::capability::{Capabilities, Capability};
use crate::config::HealthCheck;
use crate::error::{Error, Result};
use crate::event::EventSink;
use crate::log::{LogLine, LogQuery, LogStream};
use crate::probe::ProbeOutcome;

pub use types::{
    DeploymentSpec, HealthReport, HealthStatus, InstanceInfo, KnownDeployment, Metrics,
    ObservedStatus, RecoveredDeployment, RuntimeInfo,
};

/// What a provider gets with each call: a cancellation token and an event sink.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OperationContext {
    /// Cancelled when the caller gives up (a user's cancel, the call's deadline, shutdown);
    /// a provider checks it between steps, undoes this call's work and returns
    /// [`Error::Cancelled`].
    pub cancel: CancellationToken,
    /// Where progress, probe results and restarts go. Supervisors that outlive the call
    /// keep a clone.
    pub events: EventSink,
    /// Set by the manager when the deployment has a stable endpoint: see
    /// [`cutover`](Self::cutover).
    pub traffic: Option<crate::traffic::Cutover>,
    /// Set by the manager for a `canary` update behind a traffic layer: see
    /// [`canary`](Self::canary).
    pub canary: Option<crate::support::canary::CanaryGate>,
}

impl OperationContext {
    /// A context with its own token and the given sink.
    #[must_use]
    pub fn new(events: EventSink) -> Self {
        Self::with_cancel(events, CancellationToken::new())
    }

    /// A context with the given sink and token.
    #[must_use]
    pub fn with_cancel(events: EventSink, cancel: CancellationToken) -> Self {
        Self {
            cancel,
            events,
            traffic: None,
            canary: None,
        }
    }

    /// The same context, with the manager's canary gate.
    #[must_use]
    pub fn with_canary(mut self, gate: Option<crate::support::canary::CanaryGate>) -> Self {
        self.canary = gate;
        self
    }

    /// Runs a canary between the instances of `request` (both past their readiness gate)
    /// through the manager's traffic layer and answers its verdict; `None` when the
    /// deployment has no traffic layer in front of it (a canary cannot split requests then).
    pub async fn canary(
        &self,
        request: crate::support::canary::CanaryRequest,
    ) -> Option<crate::support::canary::CanaryOutcome> {
        match &self.canary {
            Some(gate) => Some(gate.run(request).await),
            None => None,
        }
    }

    /// The same context, with a traffic cutover (the manager sets it).
    #[must_use]
    pub fn with_cutover(mut self, cutover: Option<crate::traffic::Cutover>) -> Self {
        self.traffic = cutover;
        self
    }

    /// Switches the deployment's endpoint to the instances of `runtime` and waits until the
    /// instances it no longer lists have drained (see [`crate::traffic`]). A provider calls
    /// it in `update` and `replace` once the new instances passed their readiness gate and
    /// before it stops the old ones. Does nothing (returns at once) without an endpoint.
    pub async fn cutover(&self, runtime: &RuntimeInfo) {
        if let Some(c) = &self.traffic {
            c.run(runtime.clone()).await;
        }
    }

    /// A context connected to nothing: for calling a provider directly, without a manager.
    #[must_use]
    pub fn detached() -> Self {
        Self::new(EventSink::detached())
    }

    /// Whether the operation was cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `Err(Error::Cancelled)` once cancelled; call it between steps.
    ///
    /// # Errors
    /// [`Error::Cancelled`] naming `operation`.
    pub fn check_cancelled(&self, operation: &str) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled {
                operation: operation.to_owned(),
            })
        } else {
            Ok(())
        }
    }
}

/// A deployment target. Object safe: use it as `Arc<dyn Provider>` ([`DynProvider`]).
///
/// Read the [module documentation](self) first: it states what every method may rely on
/// and must guarantee. Each method's own documentation adds what is particular to it.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's name (`"local"`, `"docker"`), as written in `DeploymentConfig::provider`.
    /// Constant for the provider's life.
    fn name(&self) -> &str;

    /// What it can do. Constant for the provider's life; the registry matches
    /// `requirements` against it, and the conformance suite checks optional behaviour
    /// (`Recovery`, `LogFollow`) by it.
    fn capabilities(&self) -> Capabilities;

    /// Makes `spec` run and returns once it is ready (its health gate passed) or failed.
    ///
    /// Called when the provider holds nothing that serves the deployment. `previous` is
    /// what the store knows of it when it existed before (an update or start of a stopped
    /// or failed deployment): whatever the provider still holds of it (a stopped container,
    /// a remote service) is replaced by `spec`, and may be reused where that is cheaper.
    ///
    /// **Idempotent:** called again with the same spec (a retry, or after an abandoned call),
    /// it converges on one instance set of `spec.revision`; if that revision already runs,
    /// it returns its runtime.
    ///
    /// **On failure** nothing of this attempt is left running, and `previous` is gone too
    /// (it was not serving).
    ///
    /// # Errors
    /// [`Error::HealthCheckFailed`] with a failure bundle when the app never became ready;
    /// [`Error::NotSupported`] or [`Error::InvalidConfig`] for a config it cannot run;
    /// [`Error::PortInUse`]; [`Error::Cancelled`]; transient errors when the platform is
    /// unreachable.
    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo>;

    /// Replaces the running `current` revision with `spec.revision`, following
    /// `spec.config.update` (strategy, healthy deadline), and returns once it serves.
    ///
    /// Called only while the deployment runs. **Idempotent:** repeated with the same spec,
    /// it converges on `spec.revision` serving alone (if it already does, it returns its
    /// runtime).
    ///
    /// **On failure or cancellation** the previous revision keeps serving untouched when
    /// `auto_rollback` is set (the strategy allowing); the manager then checks
    /// [`status`](Self::status) of `current` to learn whether it still runs.
    ///
    /// # Errors
    /// As [`deploy`](Self::deploy); [`Error::NotFound`] when nothing of `current` is held.
    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo>;

    /// Resumes a deployment that was stopped on purpose, at its recorded revision
    /// (`known.spec`), and returns once it is ready. Idempotent: if it already runs, its
    /// runtime is returned.
    ///
    /// # Errors
    /// As [`deploy`](Self::deploy); [`Error::NotFound`] when nothing of it is held (the
    /// manager then falls back to `deploy`).
    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo>;

    /// Replaces the running instances of `known` by fresh ones of the same revision without
    /// a gap (a restart behind a stable endpoint, see [`crate::traffic`]): starts them beside
    /// the old ones, waits for their readiness gate, calls
    /// [`OperationContext::cutover`] with the new runtime, then stops the old ones. On
    /// failure the old instances serve untouched. The default answers
    /// [`Error::NotSupported`], and the manager then stops and starts.
    ///
    /// # Errors
    /// [`Error::NotSupported`] when the provider (or this deployment: a fixed port) cannot
    /// run two instances side by side; otherwise as [`update`](Self::update).
    async fn replace(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
    ) -> Result<RuntimeInfo> {
        let _ = (ctx, known);
        Err(Error::NotSupported {
            operation: "replacing instances side by side".to_owned(),
            provider: self.name().to_owned(),
        })
    }

    /// Changes the number of running instances of `known` (its revision, `known.spec`) to
    /// `replicas`, without a new revision, and answers the new runtime. Scaling out starts
    /// the extra instances beside the serving ones, waits for their readiness gate, then
    /// calls [`OperationContext::cutover`] with the runtime that includes them; scaling in
    /// first calls `cutover` with the runtime without the instances it removes (the
    /// manager's traffic layer stops sending them requests and waits for those in flight),
    /// and only then stops them. On failure the instances that served keep serving. A
    /// provider that has this method declares [`Capability::Scale`](crate::Capability::Scale);
    /// the default answers [`Error::NotSupported`].
    ///
    /// # Errors
    /// [`Error::NotSupported`]; [`Error::NotFound`] when nothing of `known` runs; otherwise
    /// as [`update`](Self::update) (a new instance that fails its gate).
    async fn scale(
        &self,
        ctx: &OperationContext,
        known: &KnownDeployment,
        replicas: u32,
    ) -> Result<RuntimeInfo> {
        let _ = (ctx, known, replicas);
        Err(Error::NotSupported {
            operation: "scaling a running deployment".to_owned(),
            provider: self.name().to_owned(),
        })
    }

    /// Stops every instance (the config's stop signal, then a kill after `stop.timeout`).
    /// What a later [`start`](Self::start) needs is kept.
    ///
    /// **Idempotent:** succeeds when nothing runs (already stopped, failed, never started,
    /// or unknown to this provider).
    ///
    /// # Errors
    /// Only when something may still run: a platform error (often transient), or
    /// [`Error::Cancelled`].
    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()>;

    /// Stops and deletes everything the deployment owns (instances, artifacts, state
    /// files, remote resources), after which [`status`](Self::status) answers
    /// [`Error::NotFound`].
    ///
    /// **Idempotent:** succeeds when nothing is left.
    ///
    /// # Errors
    /// As [`stop`](Self::stop).
    async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()>;

    /// The status as the provider observes it now. Cheap (no probing): the manager and
    /// the CLI call it often.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the provider holds nothing for it.
    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus>;

    /// Log lines matching `query`; with `query.follow` the stream stays open and yields
    /// new lines as they are written (only with [`Capability::LogFollow`]; without it the
    /// stream ends after the lines already kept).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the provider keeps nothing of it.
    async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream>;

    /// Current resource usage (fields it cannot measure are `None`).
    ///
    /// # Errors
    /// [`Error::NotFound`] when nothing of it is held.
    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics>;

    /// The latest health observation (what the last probe saw), without probing now.
    /// [`HealthStatus::Unknown`] when no check is configured or nothing runs.
    ///
    /// # Errors
    /// [`Error::NotFound`] when nothing of it is held.
    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport>;

    /// Runs `check` once against the serving instance of `known`: the liveness probe of a
    /// monitor (`conan-monitor`), which schedules, counts and acts on the outcomes for
    /// every provider alike. Only the way to reach the instance is the provider's.
    ///
    /// The default ([`probe::probe_runtime`](crate::probe::probe_runtime)) probes HTTP and
    /// TCP checks on the host and port of the runtime's URL (else the first instance's
    /// port on `127.0.0.1`), `check.port` replacing the port, and runs a command check with
    /// `sh -c` in the deployment's source directory. A provider whose instances are reached
    /// through translated ports or run their commands elsewhere (a container) overrides
    /// it. An unhealthy outcome is an answer, not an error.
    ///
    /// # Errors
    /// Only when the provider cannot probe at all (nothing of the deployment is held).
    async fn probe(&self, known: &KnownDeployment, check: &HealthCheck) -> Result<ProbeOutcome> {
        Ok(crate::probe::probe_runtime(known, check).await)
    }

    /// Finds what an earlier process of this provider started for each of `known` (from
    /// the store: spec and persisted runtime) and resumes supervising it without
    /// restarting it. Runs on a fresh provider instance after the managing process
    /// restarted (or was added later), so it must work from `known` and what the platform
    /// shows, not from memory.
    ///
    /// Answers one entry per deployment it knows about: found running (and adopted),
    /// stopped, or failed with a reason (vanished, exited while nobody watched). A
    /// deployment of `known` left out of the answer is treated as not found. It must not
    /// start anything twice; it may clean up what no deployment of `known` explains.
    /// Providers without [`Capability::Recovery`] answer every deployment failed or
    /// stopped.
    ///
    /// # Errors
    /// A platform error (transient when the platform is unreachable); the manager retries.
    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>>;
}

/// A provider as a trait object.
pub type DynProvider = dyn Provider;

macro_rules! forward_provider {
    ($ty:ty) => {
        #[async_trait]
        impl<T: Provider + ?Sized> Provider for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            async fn deploy(
                &self,
                ctx: &OperationContext,
                spec: &DeploymentSpec,
                previous: Option<&KnownDeployment>,
            ) -> Result<RuntimeInfo> {
                (**self).deploy(ctx, spec, previous).await
            }
            async fn update(
                &self,
                ctx: &OperationContext,
                current: &KnownDeployment,
                spec: &DeploymentSpec,
            ) -> Result<RuntimeInfo> {
                (**self).update(ctx, current, spec).await
            }
            async fn start(
                &self,
                ctx: &OperationContext,
                known: &KnownDeployment,
            ) -> Result<RuntimeInfo> {
                (**self).start(ctx, known).await
            }
            async fn replace(
                &self,
                ctx: &OperationContext,
                known: &KnownDeployment,
            ) -> Result<RuntimeInfo> {
                (**self).replace(ctx, known).await
            }
            async fn scale(
                &self,
                ctx: &OperationContext,
                known: &KnownDeployment,
                replicas: u32,
            ) -> Result<RuntimeInfo> {
                (**self).scale(ctx, known, replicas).await
            }
            async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
                (**self).stop(ctx, known).await
            }
            async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
                (**self).remove(ctx, known).await
            }
            async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
                (**self).status(known).await
            }
            async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
                (**self).logs(known, query).await
            }
            async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
                (**self).metrics(known).await
            }
            async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
                (**self).health(known).await
            }
            async fn probe(
                &self,
                known: &KnownDeployment,
                check: &HealthCheck,
            ) -> Result<ProbeOutcome> {
                (**self).probe(known, check).await
            }
            async fn recover(
                &self,
                ctx: &OperationContext,
                known: &[KnownDeployment],
            ) -> Result<Vec<RecoveredDeployment>> {
                (**self).recover(ctx, known).await
            }
        }
    };
}

forward_provider!(Arc<T>);
forward_provider!(Box<T>);

/// Conveniences on every [`Provider`], kept out of the trait so implementors have less to
/// get wrong.
#[async_trait]
pub trait ProviderExt: Provider {
    /// Whether the provider has `capability`.
    fn supports(&self, capability: Capability) -> bool {
        self.capabilities().contains(capability)
    }

    /// Collects the log lines of a non-following query.
    async fn logs_vec(&self, known: &KnownDeployment, query: &LogQuery) -> Result<Vec<LogLine>> {
        let mut query = query.clone();
        query.follow = false;
        let stream = self.logs(known, &query).await?;
        stream.collect::<Vec<_>>().await.into_iter().collect()
    }

    /// Whether the provider observes the deployment as running.
    async fn is_running(&self, known: &KnownDeployment) -> Result<bool> {
        Ok(self.status(known).await? == ObservedStatus::Running)
    }

    /// Deploys a fresh deployment with a detached context (no events, no cancellation);
    /// answers the known state to hand to later calls.
    async fn deploy_detached(&self, spec: &DeploymentSpec) -> Result<KnownDeployment> {
        let runtime = self
            .deploy(&OperationContext::detached(), spec, None)
            .await?;
        Ok(KnownDeployment::new(spec.clone(), runtime))
    }
}

impl<P: Provider + ?Sized> ProviderExt for P {}

// Compile-time proof that `Provider` is object safe and that trait objects are thread-safe.
const _: () = {
    fn _object_safe(_: &dyn Provider) {}
    fn _assert_send_sync<T: Send + Sync + 'static>() {}
    fn _dyn_is_send_sync() {
        _assert_send_sync::<Arc<DynProvider>>();
        _assert_send_sync::<Box<DynProvider>>();
    }
};
