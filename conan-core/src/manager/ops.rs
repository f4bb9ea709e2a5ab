//! What each operation does: status transitions around provider calls.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::deadline::bounded;
use super::scheduler::Queued;
use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::event::{Event, OperationKind, Outcome};
use crate::failure::FailureReport;
use crate::id::{DeploymentId, OperationId, Revision};
use crate::provider::{
    DeploymentSpec, DynProvider, KnownDeployment, ObservedStatus, OperationContext, RuntimeInfo,
};
use crate::status::{DeploymentStatus, StatusKind, is_allowed};
use crate::store::{
    AuditAction, AuditEntry, DeploymentRecord, RevisionRecord, RevisionState, StatusChange,
};
use crate::time::Timestamp;

pub(crate) enum Target {
    Id(DeploymentId),
    Ref(String),
}

pub(crate) enum JobKind {
    Deploy(Arc<DeploymentConfig>),
    Update(Arc<DeploymentConfig>),
    Rollback(Option<Revision>),
    Start,
    Stop,
    Restart,
    Remove,
    /// A status change a provider observed on its own.
    /// (Boxed: jobs move through the queue several times, and a report is large.)
    Observe(ObservedStatus, Option<Box<FailureReport>>),
    /// Reconciling the record with what the provider finds after a restart of the managing
    /// process (or when the provider is added later).
    Recover,
}

impl JobKind {
    pub(crate) fn operation_kind(&self) -> Option<OperationKind> {
        Some(match self {
            JobKind::Deploy(_) => OperationKind::Deploy,
            JobKind::Update(_) => OperationKind::Update,
            JobKind::Rollback(_) => OperationKind::Rollback,
            JobKind::Start => OperationKind::Start,
            JobKind::Stop => OperationKind::Stop,
            JobKind::Restart => OperationKind::Restart,
            JobKind::Remove => OperationKind::Remove,
            JobKind::Observe(..) | JobKind::Recover => return None,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            JobKind::Observe(..) => "status report",
            JobKind::Recover => "recovery",
            other => other
                .operation_kind()
                .map_or("internal", OperationKind::as_str),
        }
    }
}

pub(crate) struct Job {
    pub kind: JobKind,
    pub cancel: CancellationToken,
    pub reply: Option<oneshot::Sender<Result<DeploymentRecord>>>,
}

/// Holds a job's scheduler slot; [`SlotGuard::release`] gives it back and learns which
/// jobs may start next. If the operation panics instead, `Drop` releases the slot and
/// spawns those jobs, so the queue never stalls.
struct SlotGuard {
    inner: Arc<Inner>,
    deployment: DeploymentId,
    provider: Arc<str>,
    held: bool,
}

impl SlotGuard {
    fn release(mut self, success: bool, started: &mut Vec<Queued<Job>>) {
        self.held = false;
        self.inner
            .release(&self.deployment, &self.provider, success, started);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let mut started = Vec::new();
        self.inner
            .release(&self.deployment, &self.provider, false, &mut started);
        if !started.is_empty() && tokio::runtime::Handle::try_current().is_ok() {
            self.inner.spawn_all(started);
        }
    }
}

/// One operation in progress: who, what, and how many attempts it took.
pub(super) struct Op<'a> {
    pub(super) inner: &'a Arc<Inner>,
    pub(super) id: OperationId,
    pub(super) deployment: DeploymentId,
    pub(super) cancel: CancellationToken,
    pub(super) attempts: u32,
}

impl Inner {
    pub(crate) fn provider(&self, name: &str) -> Result<Arc<DynProvider>> {
        let registry = self
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoProvider {
                reason: format!(
                    "deployment uses provider '{name}', which is not registered (registered: {})",
                    registry.names().join(", ")
                ),
            })
    }

    /// Gives a finished job's slot back to the scheduler; appends the jobs that may start
    /// now to `started`.
    fn release(
        &self,
        deployment: &DeploymentId,
        provider: &Arc<str>,
        success: bool,
        started: &mut Vec<Queued<Job>>,
    ) {
        let idle = {
            let mut scheduler = self.scheduler();
            scheduler.finish(deployment, provider, success, started);
            let stats = scheduler.stats();
            stats.pending == 0 && stats.processing == 0
        };
        if idle {
            self.idle.notify_waiters();
        }
    }

    /// Runs `first`, then keeps running in this task the jobs its completion lets start
    /// (typically the next operation on the same deployment, or the next one waiting for
    /// this provider slot); any further jobs get tasks of their own. Reusing the task saves
    /// a spawn per operation.
    pub(crate) async fn run(self: Arc<Self>, first: Queued<Job>) {
        let mut next = Some(first);
        let mut started = Vec::new();
        while let Some(queued) = next.take() {
            self.run_one(queued, &mut started).await;
            let mut more = started.drain(..);
            next = more.next();
            self.spawn_all(more);
            if next.is_some() {
                // Operations that never wait would otherwise keep this worker to themselves.
                tokio::task::consume_budget().await;
            }
        }
    }

    async fn run_one(self: &Arc<Self>, queued: Queued<Job>, started: &mut Vec<Queued<Job>>) {
        let Queued {
            op,
            deployment,
            provider,
            mut job,
            ..
        } = queued;
        let guard = SlotGuard {
            inner: self.clone(),
            deployment: deployment.clone(),
            provider,
            held: true,
        };
        let kind = job.kind.operation_kind();
        if let Some(kind) = kind {
            self.bus.emit_with(|| Event::Started {
                deployment: deployment.clone(),
                operation: op,
                kind,
            });
        }
        let mut ctx = Op {
            inner: self,
            id: op,
            deployment: deployment.clone(),
            cancel: job.cancel.clone(),
            attempts: 0,
        };
        let result = if job.cancel.is_cancelled() || self.cancelled_all.load(Ordering::Acquire) {
            Err(Error::Cancelled {
                operation: job.kind.name().to_owned(),
            })
        } else {
            ctx.execute(&job.kind).await
        };
        if let Some(kind) = kind {
            let outcome = match &result {
                Ok(_) => Outcome::Succeeded,
                Err(Error::Cancelled { .. }) => Outcome::Cancelled,
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                },
            };
            let revision = result.as_ref().ok().map(|r| r.revision);
            let entry = AuditEntry::new(
                deployment.clone(),
                Some(op),
                AuditAction::Operation {
                    kind,
                    revision,
                    attempts: ctx.attempts.max(1),
                    outcome: outcome.clone(),
                },
            );
            if let Err(e) = self.store.append_audit(vec![entry]).await {
                tracing::warn!(%deployment, error = %e, "could not write the audit log");
            }
            self.bus.emit_with(|| Event::Finished {
                deployment: deployment.clone(),
                operation: op,
                kind,
                outcome,
            });
        }
        // Release the slot before answering, so a caller that saw its result also sees the
        // queue counters include it.
        guard.release(result.is_ok(), started);
        if let Some(reply) = job.reply.take() {
            let _ = reply.send(result);
        }
    }
}

/// The text of a panic payload (a `&str` or `String` message, as `panic!` makes).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic payload")
}

impl Op<'_> {
    pub(super) fn snapshot(&self) -> Result<(DeploymentRecord, Revision)> {
        let state = self.inner.state();
        state
            .deployments
            .get(&self.deployment)
            .map(|e| (e.record.clone(), e.latest))
            .ok_or_else(|| Error::deployment_not_found(self.deployment.as_str()))
    }

    /// Moves the deployment to `to` through the state machine, persists it with an audit
    /// entry, then emits the event.
    pub(super) async fn transition(
        &self,
        to: DeploymentStatus,
        update: impl FnOnce(&mut DeploymentRecord),
    ) -> Result<DeploymentRecord> {
        self.transition_with(to, None, update).await
    }

    /// [`transition`](Self::transition), writing `revision` (whose state changed with the
    /// status) in the same store call.
    pub(super) async fn transition_with(
        &self,
        to: DeploymentStatus,
        revision: Option<&RevisionRecord>,
        update: impl FnOnce(&mut DeploymentRecord),
    ) -> Result<DeploymentRecord> {
        let (record, from) = {
            let mut state = self.inner.state();
            let entry = state
                .deployments
                .get_mut(&self.deployment)
                .ok_or_else(|| Error::deployment_not_found(self.deployment.as_str()))?;
            let from = entry.record.status.kind();
            crate::status::transition(from, to.kind())?;
            entry.record.status = to;
            entry.record.updated_at = Timestamp::now();
            update(&mut entry.record);
            (entry.record.clone(), from)
        };
        let entry = AuditEntry::new(
            self.deployment.clone(),
            Some(self.id),
            AuditAction::Transition {
                from,
                to: record.status.kind(),
            },
        );
        self.inner
            .store
            .save_status_change(StatusChange {
                record: &record,
                revision,
                audit: std::slice::from_ref(&entry),
            })
            .await?;
        self.inner.bus.emit_with(|| Event::StatusChanged {
            deployment: self.deployment.clone(),
            from,
            to: record.status.clone(),
            revision: record.revision,
        });
        Ok(record)
    }

    /// Calls the provider, bounded by `deadline` (see [`super::deadline`]), with retries of
    /// transient errors inside that bound. Every provider call is idempotent by contract,
    /// so repeating one after a transient error is safe. A provider call that panics fails
    /// the operation with a permanent [`Error::Provider`] instead of taking the manager's
    /// task (and the operations queued behind it) down.
    pub(super) async fn call<T, F, Fut>(
        &mut self,
        provider: &DynProvider,
        operation: &'static str,
        deadline: Duration,
        f: F,
    ) -> Result<T>
    where
        F: Fn(OperationContext) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        // The operation's own token: a call that times out fails its operation anyway.
        let token = self.cancel.clone();
        let ctx = OperationContext::with_cancel(self.inner.sink.clone(), token.clone());
        let bus = self.inner.bus.clone();
        let deployment = self.deployment.clone();
        let op = self.id;
        let name = provider.name();
        let grace = self.inner.timeouts(name).grace;
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let retried = self.inner.retry.run(
            &token,
            || {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let call = AssertUnwindSafe(f(ctx.clone())).catch_unwind();
                let deployment = &deployment;
                async move {
                    call.await.unwrap_or_else(|panic| {
                        let what = panic_message(panic.as_ref());
                        tracing::error!(%deployment, provider = name, panic = what, "provider call panicked");
                        Err(Error::provider(name, format!("panicked: {what}"), false))
                    })
                }
            },
            |attempt, delay: Duration, error| {
                tracing::debug!(%deployment, attempt, ?delay, %error, "retrying transient error");
                bus.emit_with(|| Event::Retrying {
                    deployment: deployment.clone(),
                    operation: op,
                    attempt,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error: error.to_string(),
                });
            },
        );
        let result = bounded(
            async { retried.await.0 },
            &token,
            &self.inner.shutdown,
            deadline,
            grace,
            operation,
        )
        .await;
        self.attempts += attempts.load(std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// What the store knows of the deployment, as a provider is handed it.
    pub(super) fn known(record: &DeploymentRecord) -> KnownDeployment {
        KnownDeployment::new(
            DeploymentSpec::new(record.id.clone(), record.revision, record.config.clone()),
            record.runtime.clone().unwrap_or_default(),
        )
    }

    async fn fail(
        &self,
        error: &Error,
        revision: Option<&RevisionRecord>,
    ) -> Result<DeploymentRecord> {
        let failure = error
            .failure()
            .cloned()
            .unwrap_or_else(|| FailureReport::new(error.to_string()));
        let record = self
            .transition_with(DeploymentStatus::failed(error.to_string()), revision, |r| {
                r.last_failure = Some(Arc::new(failure.clone()));
            })
            .await?;
        self.inner.bus.emit_with(|| Event::Failed {
            deployment: self.deployment.clone(),
            failure,
        });
        Ok(record)
    }

    async fn execute(&mut self, kind: &JobKind) -> Result<DeploymentRecord> {
        match kind {
            JobKind::Deploy(_) => self.deploy().await,
            JobKind::Update(config) => {
                self.update(config.clone(), OperationKind::Update, None)
                    .await
            }
            JobKind::Rollback(to) => self.rollback(*to).await,
            JobKind::Start => self.start().await,
            JobKind::Stop => self.stop().await,
            JobKind::Restart => self.restart().await,
            JobKind::Remove => self.remove().await,
            JobKind::Observe(status, failure) => {
                self.observe(status.clone(), failure.as_deref().cloned())
                    .await
            }
            JobKind::Recover => self.recover().await,
        }
    }

    async fn deploy(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        let provider = self.inner.provider(&record.provider)?;
        let mut revision = RevisionRecord {
            deployment: record.id.clone(),
            revision: record.revision,
            config: record.config.clone(),
            cause: OperationKind::Deploy,
            source_revision: None,
            state: RevisionState::Pending,
            created_at: record.created_at,
        };
        // The Pending record is first persisted by this transition.
        self.transition_with(DeploymentStatus::Deploying, Some(&revision), |_| {})
            .await?;
        let spec = DeploymentSpec::new(record.id.clone(), record.revision, record.config.clone());
        let deadline = self.inner.timeouts(provider.name()).rollout(&spec.config);
        match self
            .call(&provider, "deploy", deadline, |ctx| {
                let (p, spec) = (&provider, &spec);
                async move { p.deploy(&ctx, &spec, None).await }
            })
            .await
        {
            Ok(runtime) => {
                revision.state = RevisionState::Succeeded;
                self.transition_with(DeploymentStatus::Running, Some(&revision), |r| {
                    r.runtime = Some(Arc::new(runtime))
                })
                .await
            }
            Err(e) => {
                revision.state = RevisionState::Failed {
                    reason: e.to_string(),
                };
                self.fail(&e, Some(&revision)).await?;
                Err(e)
            }
        }
    }

    async fn rollback(&mut self, to: Option<Revision>) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        let history = self.inner.store.revisions(&record.id).await?;
        let source = match to {
            Some(to) => {
                history
                    .iter()
                    .find(|r| r.revision == to)
                    .ok_or_else(|| Error::NotFound {
                        what: "revision",
                        id: format!("{} of {}", to, record.name),
                    })?
            }
            None => history
                .iter()
                .rev()
                .find(|r| r.revision < record.revision && r.state == RevisionState::Succeeded)
                .ok_or_else(|| Error::NotFound {
                    what: "revision",
                    id: format!(
                        "successful revision before {} of {}",
                        record.revision, record.name
                    ),
                })?,
        };
        self.update(
            source.config.clone(),
            OperationKind::Rollback,
            Some(source.revision),
        )
        .await
    }

    async fn update(
        &mut self,
        config: Arc<DeploymentConfig>,
        cause: OperationKind,
        source_revision: Option<Revision>,
    ) -> Result<DeploymentRecord> {
        let (record, latest) = self.snapshot()?;
        let provider = self.inner.provider(&record.provider)?;
        let from = record.status.kind();
        let new_rev = latest.next();
        if let Some(entry) = self.inner.state().deployments.get_mut(&self.deployment) {
            entry.latest = new_rev;
        }
        let mut revision = RevisionRecord {
            deployment: record.id.clone(),
            revision: new_rev,
            config: config.clone(),
            cause,
            source_revision,
            state: RevisionState::Pending,
            created_at: Timestamp::now(),
        };
        self.transition_with(DeploymentStatus::Updating, Some(&revision), |_| {})
            .await?;
        let spec = DeploymentSpec::new(record.id.clone(), new_rev, config.clone());
        let known = Self::known(&record);
        let deadline = self.inner.timeouts(provider.name()).rollout(&config);
        let result = if from == StatusKind::Running {
            self.call(&provider, "update", deadline, |ctx| {
                let (p, spec, known) = (&provider, &spec, &known);
                async move { p.update(&ctx, &known, &spec).await }
            })
            .await
        } else {
            // Nothing serves (stopped, failed, never came up): the new revision is deployed
            // in place of whatever the provider still holds.
            self.call(&provider, "deploy", deadline, |ctx| {
                let (p, spec, known) = (&provider, &spec, &known);
                async move { p.deploy(&ctx, &spec, Some(known)).await }
            })
            .await
        };
        match result {
            Ok(runtime) => {
                revision.state = RevisionState::Succeeded;
                self.transition_with(DeploymentStatus::Running, Some(&revision), |r| {
                    r.revision = new_rev;
                    r.config = config;
                    r.runtime = Some(Arc::new(runtime));
                })
                .await
            }
            Err(e) => {
                revision.state = RevisionState::Failed {
                    reason: e.to_string(),
                };
                let still_serving = from == StatusKind::Running
                    && matches!(
                        self.inner.query(&provider, provider.status(&known)).await,
                        Ok(ObservedStatus::Running)
                    );
                if still_serving {
                    let failure = e
                        .failure()
                        .cloned()
                        .unwrap_or_else(|| FailureReport::new(e.to_string()));
                    self.transition_with(DeploymentStatus::Running, Some(&revision), |r| {
                        r.last_failure = Some(Arc::new(failure.clone()))
                    })
                    .await?;
                    self.inner.bus.emit_with(|| Event::Failed {
                        deployment: record.id.clone(),
                        failure,
                    });
                    self.inner.bus.emit_with(|| Event::RolledBack {
                        deployment: record.id.clone(),
                        failed: new_rev,
                        serving: record.revision,
                        reason: e.to_string(),
                    });
                } else {
                    self.fail(&e, Some(&revision)).await?;
                }
                Err(e)
            }
        }
    }

    async fn start(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        if record.status.is_running() {
            return Ok(record);
        }
        self.start_from(record).await
    }

    async fn start_from(&mut self, record: DeploymentRecord) -> Result<DeploymentRecord> {
        let provider = self.inner.provider(&record.provider)?;
        let resume = record.status.kind() == StatusKind::Stopped;
        self.transition(DeploymentStatus::Deploying, |_| {}).await?;
        let known = Self::known(&record);
        let deadline = self.inner.timeouts(provider.name()).rollout(&record.config);
        let mut result = Err(Error::deployment_not_found(record.id.as_str()));
        if resume {
            result = self
                .call(&provider, "start", deadline, |ctx| {
                    let (p, known) = (&provider, &known);
                    async move { p.start(&ctx, &known).await }
                })
                .await;
        }
        // Nothing to resume (a failed deployment, or a stopped one the provider lost):
        // deploy its revision afresh.
        if matches!(result, Err(Error::NotFound { .. })) {
            result = self
                .call(&provider, "deploy", deadline, |ctx| {
                    let (p, known) = (&provider, &known);
                    async move { p.deploy(&ctx, &known.spec, Some(known)).await }
                })
                .await;
        }
        match result {
            Ok(runtime) => {
                self.transition(DeploymentStatus::Running, |r| {
                    r.runtime = Some(Arc::new(runtime))
                })
                .await
            }
            Err(e) => {
                self.fail(&e, None).await?;
                Err(e)
            }
        }
    }

    async fn stop(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        if record.status.kind() == StatusKind::Stopped {
            return Ok(record);
        }
        self.stop_from(record).await
    }

    async fn stop_from(&mut self, record: DeploymentRecord) -> Result<DeploymentRecord> {
        let provider = self.inner.provider(&record.provider)?;
        self.transition(DeploymentStatus::Stopping, |_| {}).await?;
        let known = Self::known(&record);
        let deadline = self.inner.timeouts(provider.name()).stop(&record.config);
        match self
            .call(&provider, "stop", deadline, |ctx| {
                let (p, known) = (&provider, &known);
                async move { p.stop(&ctx, &known).await }
            })
            .await
        {
            // `NotFound` is tolerated from providers that answer it for "nothing to stop".
            Ok(()) | Err(Error::NotFound { .. }) => {
                self.transition(DeploymentStatus::Stopped, |r| r.runtime = stopped(r))
                    .await
            }
            Err(e) => {
                self.fail(&e, None).await?;
                Err(e)
            }
        }
    }

    async fn restart(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        let record = match record.status.kind() {
            StatusKind::Running => self.stop_from(record).await?,
            _ => record,
        };
        self.start_from(record).await
    }

    async fn remove(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        let provider = self.inner.provider(&record.provider)?;
        self.transition(DeploymentStatus::Removing, |_| {}).await?;
        let id = record.id.clone();
        let never_deployed = record.status.kind() == StatusKind::Pending;
        let known = Self::known(&record);
        let deadline = self.inner.timeouts(provider.name()).stop(&record.config);
        let result = if never_deployed {
            Ok(())
        } else {
            match self
                .call(&provider, "remove", deadline, |ctx| {
                    let (p, known) = (&provider, &known);
                    async move { p.remove(&ctx, &known).await }
                })
                .await
            {
                Err(Error::NotFound { .. }) => Ok(()),
                other => other,
            }
        };
        if let Err(e) = result {
            self.fail(&e, None).await?;
            return Err(e);
        }
        let record = self
            .transition(DeploymentStatus::Removed, |r| r.runtime = None)
            .await?;
        self.inner.state().remove(&id);
        self.inner.store.delete_deployment(&id).await?;
        self.inner
            .bus
            .emit_with(|| Event::Removed { deployment: id });
        Ok(record)
    }

    async fn observe(
        &mut self,
        observed: ObservedStatus,
        failure: Option<FailureReport>,
    ) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        let status = status_of(&observed);
        let from = record.status.kind();
        let route = if from == status.kind() {
            None
        } else {
            route(from, status.kind())
        };
        let Some(via) = route else {
            tracing::debug!(deployment = %record.id, %from, to = %status, "ignoring provider status report");
            return Ok(record);
        };
        if let Some(via) = via {
            self.transition(intermediate(via), |_| {}).await?;
        }
        let failed = status.kind() == StatusKind::Failed;
        let failure = failure.or_else(|| failed.then(|| FailureReport::new(observed.to_string())));
        let record = self
            .transition(status, |r| {
                if let Some(f) = &failure {
                    r.last_failure = Some(Arc::new(f.clone()));
                }
                if !r.status.is_running() {
                    r.runtime = stopped(r);
                }
            })
            .await?;
        if let (true, Some(failure)) = (failed, failure) {
            self.inner.bus.emit_with(|| Event::Failed {
                deployment: record.id.clone(),
                failure,
            });
        }
        Ok(record)
    }
}

/// How the state machine gets from `from` to `to`: directly (`Some(None)`), through one
/// intermediate state (`Some(Some(via))`: `Stopping` on the way to `Stopped`, `Deploying` on
/// the way to `Running`), or not at all (`None`).
pub(super) fn route(from: StatusKind, to: StatusKind) -> Option<Option<StatusKind>> {
    if is_allowed(from, to) {
        return Some(None);
    }
    [StatusKind::Stopping, StatusKind::Deploying]
        .into_iter()
        .find(|&via| is_allowed(from, via) && is_allowed(via, to))
        .map(Some)
}

/// The status of an intermediate state of a [`route`] (those carry no data).
pub(super) fn intermediate(via: StatusKind) -> DeploymentStatus {
    match via {
        StatusKind::Stopping => DeploymentStatus::Stopping,
        _ => DeploymentStatus::Deploying,
    }
}

/// The manager's status for what a provider observed.
pub(super) fn status_of(observed: &ObservedStatus) -> DeploymentStatus {
    match observed {
        ObservedStatus::Starting | ObservedStatus::Running => DeploymentStatus::Running,
        ObservedStatus::Stopped | ObservedStatus::Exited { .. } => DeploymentStatus::Stopped,
        ObservedStatus::Failed { reason } => DeploymentStatus::failed(reason.clone()),
    }
}

/// What a record keeps of its runtime once nothing runs: the provider's details.
fn stopped(record: &DeploymentRecord) -> Option<Arc<RuntimeInfo>> {
    record
        .runtime
        .as_deref()
        .filter(|r| !r.details.is_empty())
        .map(|r| Arc::new(r.stopped()))
}

#[cfg(test)]
mod size_tests {
    /// Jobs are moved through the queue several times; keep them small.
    #[test]
    fn queued_jobs_stay_small() {
        let size = std::mem::size_of::<super::super::scheduler::Queued<super::Job>>();
        assert!(size <= 128, "Queued<Job> is {size} bytes");
    }
}
