//! [`DeploymentManager`]: queues operations, serializes them per deployment, limits them
//! per provider, retries transient failures, moves the status state machine, keeps revision
//! history and the audit log, and emits events.
//!
//! # Guarantees
//!
//! - **One operation per deployment at a time.** Operations on the same deployment run in
//!   the order they were submitted; operations on different deployments run concurrently,
//!   up to each provider's concurrency limit (default 16), highest [`Priority`] first.
//! - **Retries only for transient errors** ([`Error::is_transient`]), with exponential
//!   backoff and jitter ([`RetryPolicy`]: 3 retries, 1 s, ×2, 10 s cap by default).
//!   Permanent errors fail the operation at once. A provider call that panics fails its
//!   operation with a permanent [`Error::Provider`]; the operations queued behind it run.
//! - **Every status change goes through the state machine** ([`crate::status::transition`]),
//!   is written to the [`StateStore`] in one call (with its audit entry, and the revision
//!   whose state changed with it) before the event is emitted.
//! - **A failed store write never fails an operation.** The in-memory record is
//!   authoritative; a change the store refuses (a full disk) is kept and re-written with
//!   backoff until it lands, in order with the later changes of that deployment
//!   ([`DeploymentManager::unsaved_state`] shows it meanwhile). So an operation whose
//!   provider call succeeded succeeds, and every operation ends in a status from which
//!   every operation is possible: `Running`, `Stopped`, `Failed` (a failed provider call,
//!   or an operation that panicked) or `Removed`. An operation finding its deployment in a
//!   transitional status (one that was interrupted) resumes from it.
//! - **Failed updates keep the old revision.** When an update fails and the provider still
//!   reports the deployment running, the deployment returns to `Running` on its previous
//!   revision and [`Event::RolledBack`] is emitted.
//! - **Revisions.** Each deploy, update and rollback creates a revision; `rollback` rolls
//!   an earlier revision's config out as a new one.
//!
//! # Status changes a provider reports
//!
//! A provider's supervisor may find a deployment failed on its own (crash loop). It reports
//! this through its [`EventSink`]; the manager queues the change as an
//! internal high-priority operation on that deployment, so it is serialized with user
//! operations like everything else.

mod builder;
mod canary;
mod deadline;
mod handle;
mod heal;
mod lifecycle;
mod ops;
mod persist;
mod recovery;
mod registry;
mod reports;
mod retry;
mod scale;
mod scheduler;
mod traffic;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::{Notify, broadcast, oneshot};
use tokio_util::sync::CancellationToken;

pub use builder::DeploymentManagerBuilder;
pub use deadline::CallTimeouts;
pub use handle::{HealAction, OperationCanceller, OperationHandle, Request, SubmitOptions};
pub use persist::UnsavedState;
pub use registry::ProviderRegistry;
pub use retry::RetryPolicy;
pub use scheduler::{Priority, QueueStats};

use crate::config::{ConfigProblem, DeploymentConfig};
use crate::error::{Error, Result};
use crate::event::{Event, EventBus, EventEnvelope, EventSink, OperationKind};
use crate::id::{DeploymentId, OperationId, Revision};
use crate::log::{LogQuery, LogStream};
use crate::provider::{DynProvider, HealthReport, Metrics, Provider};
use crate::status::DeploymentStatus;
use crate::store::{AuditEntry, AuditQuery, DeploymentRecord, RevisionRecord, StateStore};
use crate::time::Timestamp;
use scheduler::{Queued, Scheduler};
use std::time::Duration;

/// Default number of operations that run at once per provider.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Deploys and supervises deployments through registered providers. Cheap to clone.
///
/// ```
/// use conan_core::{DeploymentConfig, DeploymentManager, DeploymentStatus};
/// use conan_core::testing::MemoryProvider;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> conan_core::Result<()> {
/// let manager = DeploymentManager::builder().provider(MemoryProvider::new()).build().await?;
/// let record = manager.deploy(DeploymentConfig::builder("hello").build()?).await?;
/// assert_eq!(record.status, DeploymentStatus::Running);
/// manager.stop("hello").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DeploymentManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeploymentManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentManager")
            .field("providers", &self.inner.registry().names())
            .field("queue", &self.queue_stats())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(crate) struct State {
    deployments: foldhash::HashMap<DeploymentId, Entry>,
    names: foldhash::HashMap<Arc<str>, DeploymentId>,
}

pub(crate) struct Entry {
    record: DeploymentRecord,
    latest: Revision,
    provider: Arc<str>,
    /// The latest observation a monitor published, with the revision and runtime (the
    /// instances) it observed: a restart's new runtime makes it stale.
    health: Option<(
        Revision,
        Option<Arc<crate::provider::RuntimeInfo>>,
        HealthReport,
    )>,
}

impl State {
    fn insert(&mut self, record: DeploymentRecord, latest: Revision) {
        self.names.insert(record.name.clone(), record.id.clone());
        let provider = record.provider.clone();
        self.deployments.insert(
            record.id.clone(),
            Entry {
                record,
                latest,
                provider,
                health: None,
            },
        );
    }

    fn resolve(&self, target: &ops::Target) -> Result<&DeploymentId> {
        match target {
            ops::Target::Id(id) => self
                .deployments
                .get_key_value(id)
                .map(|(k, _)| k)
                .ok_or_else(|| Error::deployment_not_found(id.as_str())),
            ops::Target::Ref(s) => {
                if let Some((k, _)) = self.deployments.get_key_value(s.as_str()) {
                    Ok(k)
                } else {
                    self.names
                        .get(s.as_str())
                        .ok_or_else(|| Error::deployment_not_found(s.as_str()))
                }
            }
        }
    }

    fn remove(&mut self, id: &DeploymentId) {
        if let Some(entry) = self.deployments.remove(id)
            && self.names.get(&*entry.record.name) == Some(id)
        {
            self.names.remove(&*entry.record.name);
        }
    }
}

pub(crate) struct Inner {
    /// Replaced as a whole when a provider is added after `build()`; readers take a
    /// snapshot.
    registry: RwLock<Arc<ProviderRegistry>>,
    store: Arc<dyn StateStore>,
    /// Status changes the store did not take yet, re-written in the background.
    persist: Arc<persist::Persister>,
    bus: EventBus,
    sink: EventSink,
    /// The stable endpoints in front of deployments (see [`crate::traffic`]).
    traffic: Option<Arc<crate::traffic::DynTraffic>>,
    retry: RetryPolicy,
    timeouts: CallTimeouts,
    /// Per-provider overrides of `timeouts`.
    provider_timeouts: Vec<(String, CallTimeouts)>,
    /// How long `shutdown` lets operations finish before cancelling them.
    shutdown_timeout: Duration,
    /// Cancelled by `shutdown` once its patience ends: queued operations then answer
    /// `Cancelled`, running provider calls are cancelled like a user's cancel. (Not a parent
    /// of the operations' tokens: creating and dropping children of one shared token takes
    /// its lock once per operation, which throughput measurements showed.)
    shutdown: CancellationToken,
    /// Set with `shutdown`'s cancel: the cheap check for queued operations (asking the
    /// token takes its lock, shared by every operation).
    cancelled_all: AtomicBool,
    state: Mutex<State>,
    scheduler: Mutex<Scheduler<ops::Job>>,
    next_op: AtomicU64,
    closed: AtomicBool,
    idle: Notify,
}

impl Inner {
    /// The registered providers, as of now.
    fn registry(&self) -> Arc<ProviderRegistry> {
        self.registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The call deadlines of provider `name`.
    fn timeouts(&self, name: &str) -> CallTimeouts {
        if self.provider_timeouts.is_empty() {
            return self.timeouts;
        }
        self.provider_timeouts
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.timeouts, |(_, t)| *t)
    }

    /// Runs a read-only provider call (`status`, `logs`, `metrics`, `health`) within the
    /// provider's query deadline.
    async fn query<T>(
        &self,
        provider: &DynProvider,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = self.timeouts(provider.name()).query;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: format!("{} query", provider.name()),
                after: limit,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated (every update is a
        // single insert/assign), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn scheduler(&self) -> MutexGuard<'_, Scheduler<ops::Job>> {
        self.scheduler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn submit_job(
        self: &Arc<Self>,
        target: ops::Target,
        kind: ops::JobKind,
        opts: SubmitOptions,
    ) -> Result<OperationHandle> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        let (deployment, provider) = match (&kind, target) {
            (ops::JobKind::Deploy(config), _) => {
                // Everything that allocates happens before taking the lock.
                let registry = self.registry();
                let chosen = registry.resolve(config)?;
                check_fit(&*chosen, config)?;
                self.check_autoscale(config)?;
                let provider = registry.shared_name(chosen.name());
                let id = DeploymentId::generate();
                let now = Timestamp::now();
                let record = DeploymentRecord {
                    id: id.clone(),
                    name: config.name.as_str().into(),
                    provider: provider.clone(),
                    status: DeploymentStatus::Pending,
                    revision: Revision::FIRST,
                    config: config.clone(),
                    runtime: None,
                    last_failure: None,
                    created_at: now,
                    updated_at: now,
                };
                let mut state = self.state();
                if state.names.contains_key(config.name.as_str()) {
                    return Err(Error::AlreadyExists {
                        name: config.name.clone(),
                    });
                }
                state.insert(record, Revision::FIRST);
                (id, Some(provider))
            }
            (_, target) => {
                let state = self.state();
                let id = state.resolve(&target)?.clone();
                let entry = state.deployments.get(&id);
                if let (ops::JobKind::Update(config), Some(entry)) = (&kind, entry) {
                    check_update(&entry.record, config)?;
                    if let Some(p) = self.registry().get(&entry.provider) {
                        check_fit(&**p, config)?;
                    }
                    self.check_autoscale(config)?;
                }
                (id, entry.map(|e| e.provider.clone()))
            }
        };
        let provider = provider.ok_or_else(|| Error::deployment_not_found(deployment.as_str()))?;
        let op = OperationId(self.next_op.fetch_add(1, Ordering::Relaxed));
        let cancel = CancellationToken::new();
        let (tx, rx) = oneshot::channel();
        let op_kind = kind.operation_kind();
        if let Some(k) = op_kind {
            self.bus.emit_with(|| Event::Queued {
                deployment: deployment.clone(),
                operation: op,
                kind: k,
            });
        }
        let job = ops::Job {
            kind,
            cancel: cancel.clone(),
            reply: Some(tx),
            requested_by: opts.requested_by,
        };
        let mut started = Vec::new();
        self.scheduler().submit(
            Queued::new(op, deployment.clone(), provider, opts.priority, job),
            &mut started,
        );
        self.spawn_all(started);
        Ok(OperationHandle {
            id: op,
            deployment,
            kind: op_kind.unwrap_or(OperationKind::Update),
            cancel,
            rx,
            manager: Arc::downgrade(self),
        })
    }

    /// Autoscaling reads the traffic layer's counters and routes through it: a manager
    /// without one refuses an autoscaled config.
    fn check_autoscale(&self, config: &DeploymentConfig) -> Result<()> {
        if config.autoscale.is_some() && self.traffic.is_none() {
            return Err(Error::InvalidConfig {
                problems: vec![ConfigProblem::new(
                    "replicas",
                    "autoscaling needs the proxy in front of the deployment, and this manager has no traffic layer; use a fixed count (replicas = N)",
                )],
            });
        }
        Ok(())
    }

    fn spawn_all(self: &Arc<Self>, jobs: impl IntoIterator<Item = Queued<ops::Job>>) {
        for job in jobs {
            let inner = self.clone();
            tokio::spawn(async move { inner.run(job).await });
        }
    }

    fn cancel_queued(self: &Arc<Self>, op: OperationId) {
        let mut started = Vec::new();
        let Some(mut job) = self.scheduler().cancel(op, &mut started) else {
            return;
        };
        self.spawn_all(started);
        if matches!(job.job.kind, ops::JobKind::Deploy(_)) {
            // It never ran: the deployment never existed.
            let mut state = self.state();
            if state
                .deployments
                .get(&job.deployment)
                .is_some_and(|e| e.record.status == DeploymentStatus::Pending)
            {
                state.remove(&job.deployment);
            }
        }
        if let Some(reply) = job.job.reply.take() {
            let _ = reply.send(Err(Error::Cancelled {
                operation: job.job.kind.name().to_owned(),
            }));
        }
        self.notify_if_idle();
    }

    fn notify_if_idle(&self) {
        let stats = self.scheduler().stats();
        if stats.pending == 0 && stats.processing == 0 {
            self.idle.notify_waiters();
        }
    }
}

/// What `config` asks that its provider cannot give, found before anything is stored: a
/// fixed `port` for several replicas where instances share the host's network (they would
/// all bind the same port).
fn check_fit(provider: &crate::provider::DynProvider, config: &DeploymentConfig) -> Result<()> {
    if config.autoscale.is_some()
        && !provider
            .capabilities()
            .contains(crate::capability::Capability::Scale)
    {
        return Err(Error::InvalidConfig {
            problems: vec![ConfigProblem::new(
                "replicas",
                format!(
                    "provider '{}' cannot scale a running deployment, which autoscaling needs; use a fixed count (replicas = N)",
                    provider.name()
                ),
            )],
        });
    }
    if config.max_replicas() > 1
        && let Some(port) = config.port
        && provider
            .capabilities()
            .contains(crate::capability::Capability::LocalNetwork)
    {
        return Err(Error::InvalidConfig {
            problems: vec![ConfigProblem::new(
                "port",
                format!(
                    "a fixed port ({port}) allows only one replica on provider '{}' (replicas = {}): remove `port` and each replica gets its own PORT",
                    provider.name(),
                    config.max_replicas()
                ),
            )],
        });
    }
    Ok(())
}

fn check_update(current: &DeploymentRecord, config: &DeploymentConfig) -> Result<()> {
    let mut problems = Vec::new();
    if *config.name != *current.name {
        problems.push(ConfigProblem::new(
            "name",
            format!(
                "an update cannot rename deployment '{}' (got '{}')",
                current.name, config.name
            ),
        ));
    }
    if let Some(p) = &config.provider
        && **p != *current.provider
    {
        problems.push(ConfigProblem::new(
            "provider",
            format!(
                "an update cannot move '{}' from provider '{}' to '{p}'",
                current.name, current.provider
            ),
        ));
    }
    if let Err(Error::InvalidConfig { problems: more }) = config.validate() {
        problems.extend(more);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidConfig { problems })
    }
}

impl DeploymentManager {
    /// A builder.
    pub fn builder() -> DeploymentManagerBuilder {
        DeploymentManagerBuilder::new()
    }

    /// Queues `request` and returns a handle to follow or cancel it.
    ///
    /// # Errors
    /// Synchronous rejections: an invalid config, an unknown deployment, a name in use, no
    /// fitting provider, or a manager that is shut down.
    pub fn submit(&self, request: Request, options: SubmitOptions) -> Result<OperationHandle> {
        let (target, kind) = match request {
            Request::Deploy(config) => {
                config.validate()?;
                (
                    ops::Target::Ref(String::new()),
                    ops::JobKind::Deploy(Arc::new(config)),
                )
            }
            Request::Update { target, config } => (
                ops::Target::Ref(target),
                ops::JobKind::Update(Arc::new(config)),
            ),
            Request::Rollback { target, to } => {
                (ops::Target::Ref(target), ops::JobKind::Rollback(to))
            }
            Request::Start { target } => (ops::Target::Ref(target), ops::JobKind::Start),
            Request::Stop { target } => (ops::Target::Ref(target), ops::JobKind::Stop),
            Request::Restart { target } => (ops::Target::Ref(target), ops::JobKind::Restart),
            Request::Remove { target } => (ops::Target::Ref(target), ops::JobKind::Remove),
            Request::Scale {
                target,
                replicas,
                reason,
                revision,
            } => (
                ops::Target::Ref(target),
                ops::JobKind::Scale(Box::new(scale::ScaleJob {
                    replicas,
                    reason,
                    revision,
                })),
            ),
            Request::Heal {
                target,
                origin,
                action,
            } => (
                ops::Target::Ref(target),
                ops::JobKind::Heal(Box::new((origin, action))),
            ),
        };
        self.inner.submit_job(target, kind, options)
    }

    async fn run(&self, request: Request) -> Result<DeploymentRecord> {
        self.submit(request, SubmitOptions::default())?.wait().await
    }

    /// Deploys a new deployment and waits until it is `Running` (or failed).
    ///
    /// # Errors
    /// Rejections of [`submit`](Self::submit), or the deploy's error (the deployment is then
    /// `Failed`, with the failure bundle in its record).
    pub async fn deploy(&self, config: DeploymentConfig) -> Result<DeploymentRecord> {
        self.run(Request::Deploy(config)).await
    }

    /// Rolls out `config` as a new revision of `target` (id or name) and waits.
    ///
    /// # Errors
    /// The update's error; when the old revision kept serving, the deployment is `Running`
    /// on it.
    pub async fn update(&self, target: &str, config: DeploymentConfig) -> Result<DeploymentRecord> {
        self.run(Request::Update {
            target: target.to_owned(),
            config,
        })
        .await
    }

    /// Rolls out revision `to`'s config (default: the last successful revision before the
    /// serving one) as a new revision, and waits.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown revision, or the update's error.
    pub async fn rollback(&self, target: &str, to: Option<Revision>) -> Result<DeploymentRecord> {
        self.run(Request::Rollback {
            target: target.to_owned(),
            to,
        })
        .await
    }

    /// Starts a stopped or failed deployment and waits.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn start(&self, target: &str) -> Result<DeploymentRecord> {
        self.run(Request::Start {
            target: target.to_owned(),
        })
        .await
    }

    /// Stops a deployment and waits (a no-op when already stopped).
    ///
    /// # Errors
    /// The provider's error.
    pub async fn stop(&self, target: &str) -> Result<DeploymentRecord> {
        self.run(Request::Stop {
            target: target.to_owned(),
        })
        .await
    }

    /// Stops and starts a deployment and waits.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn restart(&self, target: &str) -> Result<DeploymentRecord> {
        self.run(Request::Restart {
            target: target.to_owned(),
        })
        .await
    }

    /// Sets the number of replicas of `target` without a new revision, and waits (see
    /// [`Request::Scale`]): a running deployment's provider starts or stops replicas
    /// (health-gated, drained); a stopped or failed one keeps the count for its next
    /// start. Emits [`Event::Scaled`] when the count changed.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] at `replicas` for a count outside the autoscaling range (or
    /// several replicas with a fixed port); [`Error::NotSupported`] when the provider cannot
    /// scale; the provider's error (the replicas that served keep serving).
    pub async fn scale(&self, target: &str, replicas: u32) -> Result<DeploymentRecord> {
        self.run(Request::Scale {
            target: target.to_owned(),
            replicas,
            reason: None,
            revision: None,
        })
        .await
    }

    /// The replica count `record` runs: the one a scale set, else its config's.
    #[must_use]
    pub fn replicas_of(record: &DeploymentRecord) -> u32 {
        scale::replicas_of(record)
    }

    /// Stops and deletes a deployment and waits; its audit entries stay.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn remove(&self, target: &str) -> Result<DeploymentRecord> {
        self.run(Request::Remove {
            target: target.to_owned(),
        })
        .await
    }

    /// The deployment `target` (id or name) as the manager knows it.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get(&self, target: &str) -> Result<DeploymentRecord> {
        let state = self.inner.state();
        let id = state.resolve(&ops::Target::Ref(target.to_owned()))?;
        state
            .deployments
            .get(id)
            .map(|e| e.record.clone())
            .ok_or_else(|| Error::deployment_not_found(target))
    }

    /// Every deployment, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<DeploymentRecord> {
        let mut all: Vec<_> = self
            .inner
            .state()
            .deployments
            .values()
            .map(|e| e.record.clone())
            .collect();
        all.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.name.cmp(&b.name))
        });
        all
    }

    /// The revision history of a deployment, oldest first.
    ///
    /// # Errors
    /// [`Error::NotFound`] or a store error.
    pub async fn history(&self, target: &str) -> Result<Vec<RevisionRecord>> {
        let id = self.get(target)?.id;
        self.inner.store.revisions(&id).await
    }

    /// State changes whose write to the store failed and that are being re-written (see
    /// the manager's guarantees). Clear once the store takes them again.
    #[must_use]
    pub fn unsaved_state(&self) -> UnsavedState {
        self.inner.persist.state()
    }

    /// What the store reports about damage to its state (rows skipped at load, a restore
    /// from backup); see [`StateStore::health`].
    #[must_use]
    pub fn store_health(&self) -> crate::store::StoreHealth {
        self.inner.store.health()
    }

    /// The audit log.
    ///
    /// # Errors
    /// A store error.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        self.inner.store.audit(query).await
    }

    fn provider_of(&self, target: &str) -> Result<(DeploymentRecord, Arc<DynProvider>)> {
        let record = self.get(target)?;
        let provider = self.inner.provider(&record.provider)?;
        Ok((record, provider))
    }

    /// Log lines of a deployment (see [`LogQuery`]; `follow` keeps the stream open).
    ///
    /// When the provider has nothing left of a failed deployment (a deploy whose instances
    /// were cleaned up), the last lines kept in its failure bundle are answered instead,
    /// filtered by the same query (a follow then ends after them).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Timeout`] or the provider's error.
    pub async fn logs(&self, target: &str, query: &LogQuery) -> Result<LogStream> {
        let (record, provider) = self.provider_of(target)?;
        let known = ops::Op::known(&record);
        match self
            .inner
            .query(&provider, provider.logs(&known, query))
            .await
        {
            Err(Error::NotFound { .. })
                if record
                    .last_failure
                    .as_ref()
                    .is_some_and(|f| !f.last_logs.is_empty()) =>
            {
                let kept = record
                    .last_failure
                    .as_ref()
                    .map(|f| query.apply(&f.last_logs))
                    .unwrap_or_default();
                Ok(query.clone().into_stream(kept, None))
            }
            other => other,
        }
    }

    /// Current resource usage of a deployment.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Timeout`] or the provider's error.
    pub async fn metrics(&self, target: &str) -> Result<Metrics> {
        let (record, provider) = self.provider_of(target)?;
        let known = ops::Op::known(&record);
        self.inner.query(&provider, provider.metrics(&known)).await
    }

    /// The latest health observation of a deployment: the one a monitor published for the
    /// serving revision ([`publish_health`](Self::publish_health)) while the deployment
    /// runs, else the provider's (its readiness gate's).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Timeout`] or the provider's error.
    pub async fn health(&self, target: &str) -> Result<HealthReport> {
        {
            let state = self.inner.state();
            let id = state.resolve(&ops::Target::Ref(target.to_owned()))?;
            if let Some(entry) = state.deployments.get(id)
                && let Some((revision, runtime, report)) = &entry.health
                && *revision == entry.record.revision
                && *runtime == entry.record.runtime
                && matches!(
                    entry.record.status.kind(),
                    crate::StatusKind::Running | crate::StatusKind::Restarting
                )
            {
                return Ok(report.clone());
            }
        }
        let (record, provider) = self.provider_of(target)?;
        let known = ops::Op::known(&record);
        self.inner.query(&provider, provider.health(&known)).await
    }

    /// Runs the deployment's health check once through its provider
    /// ([`Provider::probe`]), bounded by the check's timeout plus 5 s. This is the liveness
    /// probe a monitor schedules; it changes nothing by itself.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::NotSupported`] for a deployment without a health
    /// check; [`Error::Timeout`] or the provider's error.
    pub async fn probe(&self, target: &str) -> Result<crate::probe::ProbeOutcome> {
        let (record, provider) = self.provider_of(target)?;
        let Some(check) = record.config.health_check.clone() else {
            return Err(Error::NotSupported {
                operation: format!("probing '{}', which has no health check", record.name),
                provider: record.provider.to_string(),
            });
        };
        let known = ops::Op::known(&record);
        let limit = check
            .timeout
            .checked_add(Duration::from_secs(5))
            .unwrap_or(Duration::MAX);
        match tokio::time::timeout(limit, provider.probe(&known, &check)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: format!("{} probe", provider.name()),
                after: limit,
            }),
        }
    }

    /// Publishes a monitor's health observation of revision `revision` of `deployment`
    /// (of the instances its record shows now): [`health`](Self::health) answers it while
    /// they serve. Does nothing for an
    /// unknown deployment. Publishing does not emit events: the monitor emits
    /// [`Event::Healthy`] / [`Event::Unhealthy`] through the [`event_sink`](Self::event_sink).
    pub fn publish_health(
        &self,
        deployment: &DeploymentId,
        revision: Revision,
        report: HealthReport,
    ) {
        if let Some(entry) = self.inner.state().deployments.get_mut(deployment) {
            let runtime = entry.record.runtime.clone();
            entry.health = Some((revision, runtime, report));
        }
    }

    /// The traffic layer set with [`DeploymentManagerBuilder::traffic`], if any.
    #[must_use]
    pub fn traffic(&self) -> Option<Arc<crate::traffic::DynTraffic>> {
        self.inner.traffic.clone()
    }

    /// The traffic layer's counters of deployment `target` (id or name): `None` without a
    /// traffic layer or an open endpoint.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn traffic_stats(&self, target: &str) -> Result<Option<crate::traffic::TrafficStats>> {
        let record = self.get(target)?;
        Ok(self
            .inner
            .traffic
            .as_ref()
            .and_then(|t| t.stats(&record.id)))
    }

    /// A subscription to events from now on (see [`crate::event`] for the guarantee).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<EventEnvelope> {
        self.inner.bus.subscribe()
    }

    /// The outbox and alert state of the manager's store (see [`Outbox`](crate::Outbox)): what
    /// a monitor must deliver at least once, and which alerts fire, kept across restarts.
    #[must_use]
    pub fn outbox(&self) -> crate::store::Outbox {
        crate::store::Outbox::new(self.inner.store.clone())
    }

    /// Emits [`Event::Alert`]: a monitor's alert rule fired or resolved for `deployment`.
    /// Only an event (nothing is stored or changed); the monitor keeps its alert state in
    /// the [`outbox`](Self::outbox).
    pub fn emit_alert(
        &self,
        deployment: &DeploymentId,
        rule: &str,
        state: crate::event::AlertState,
        value: f64,
    ) {
        self.inner.bus.emit_with(|| Event::Alert {
            deployment: deployment.clone(),
            rule: rule.to_owned(),
            state,
            value,
        });
    }

    /// The event sink providers get; use it to drive a provider directly with the same bus
    /// (its status reports are applied like those of registered providers).
    #[must_use]
    pub fn event_sink(&self) -> EventSink {
        self.inner.sink.clone()
    }

    /// Queue counters.
    #[must_use]
    pub fn queue_stats(&self) -> QueueStats {
        self.inner.scheduler().stats()
    }

    /// The registered providers.
    #[must_use]
    pub fn registry(&self) -> Arc<ProviderRegistry> {
        self.inner.registry()
    }

    /// Registers a provider after [`build`](DeploymentManagerBuilder::build) (for example
    /// Docker, once its daemon answers), then reconciles the deployments the store says it
    /// runs, as [`recover`](Self::recover) does for the others, each in its own queue (so
    /// operations submitted meanwhile run after their deployment's recovery). Returns those
    /// deployments.
    ///
    /// # Errors
    /// [`Error::ProviderExists`] when a provider of that name is registered already (the
    /// deployments it runs would be left to a different instance), in which case `provider`
    /// is dropped unused; otherwise the first recovery error when no deployment could be
    /// recovered (the provider stays registered).
    pub async fn add_provider(&self, provider: impl Provider) -> Result<Vec<DeploymentRecord>> {
        let name = provider.name().to_owned();
        {
            let mut registry = self
                .inner
                .registry
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut updated = ProviderRegistry::clone(&registry);
            updated.register(Arc::new(provider))?;
            *registry = Arc::new(updated);
        }
        tracing::info!(provider = %name, "provider added");
        recovery::recover(&self.inner, Some(&name)).await
    }

    /// Reconciles the loaded deployments with what the providers run (after a restart of
    /// the managing process): adopted deployments stay or become `Running`; deployments
    /// that vanished become `Failed` with a reason; stopped ones stay stopped. Each
    /// deployment's recovery is a job in its own queue, ahead of operations submitted
    /// later. Returns the record of every deployment reconciled.
    ///
    /// # Errors
    /// The first error when no deployment could be recovered (each failure is logged;
    /// the others are still reconciled).
    pub async fn recover(&self) -> Result<Vec<DeploymentRecord>> {
        recovery::recover(&self.inner, None).await
    }

    /// Refuses new operations, lets queued and running ones finish for up to the shutdown
    /// timeout (default 30 s, [`DeploymentManagerBuilder::shutdown_timeout`]), then cancels
    /// the rest: queued ones answer [`Error::Cancelled`], running provider calls get their
    /// grace period ([`CallTimeouts::grace`]) and are then abandoned. So it returns within
    /// the shutdown timeout plus the grace period, plus the store writes of the final
    /// status changes.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let patience = self.inner.shutdown_timeout;
        if tokio::time::timeout(patience, self.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                ?patience,
                "operations still running at shutdown; cancelling them"
            );
            self.inner.cancelled_all.store(true, Ordering::Release);
            self.inner.shutdown.cancel();
            self.wait_idle().await;
        }
        if !self.inner.persist.state().is_clear() && !self.inner.flush_kept().await {
            let unsaved = self.inner.persist.state();
            tracing::error!(
                deployments = unsaved.deployments.len(),
                error = unsaved.error.as_deref().unwrap_or(""),
                "stopping with state changes the store did not take; the next start recovers from the last written state"
            );
        }
    }

    async fn wait_idle(&self) {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let stats = self.queue_stats();
            if stats.pending == 0 && stats.processing == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod report_tests;
#[cfg(all(test, feature = "sqlite"))]
mod store_damage_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod traffic_tests;
