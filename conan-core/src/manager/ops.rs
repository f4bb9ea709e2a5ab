//! The machinery every operation shares: jobs, the run loop with its slot guard and panic
//! isolation, status transitions through the store, and bounded provider calls.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::deadline::bounded;
use super::handle::HealAction;
use super::scheduler::Queued;
use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::event::{Event, OperationKind, Outcome, ReportOrigin, StatusReport};
use crate::id::{DeploymentId, OperationId, Revision};
use crate::provider::{DeploymentSpec, DynProvider, KnownDeployment, OperationContext};
use crate::status::{DeploymentStatus, StatusKind};
use crate::store::{AuditAction, AuditEntry, DeploymentRecord, RevisionRecord};
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
    Observe(Box<StatusReport>),
    /// A monitor's restart or give-up, applied only while its origin serves.
    Heal(Box<(ReportOrigin, HealAction)>),
    /// Reconciling the record with what the provider finds after a restart of the managing
    /// process (or when the provider is added later).
    Recover,
    /// A new replica count, same revision.
    Scale(Box<super::scale::ScaleJob>),
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
            JobKind::Scale(_) => OperationKind::Scale,
            JobKind::Heal(heal) => match heal.1 {
                HealAction::Restart => OperationKind::Restart,
                HealAction::Fail(_) => OperationKind::Stop,
            },
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
    /// Who asked ([`SubmitOptions::requested_by`](super::SubmitOptions)), for the audit entry.
    pub requested_by: Option<String>,
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
    /// Handed to provider calls in their context (see [`crate::traffic`]): set around
    /// `update` and `replace` calls of deployments with an endpoint.
    pub(super) cutover: Option<crate::traffic::Cutover>,
    /// Handed to a `canary` update's provider call (see [`super::canary`]).
    pub(super) canary: Option<crate::support::canary::CanaryGate>,
    /// Set while a restart stops and starts: its `Stopped` in between holds requests
    /// instead of refusing them.
    pub(super) holding: bool,
    /// What the operation's own audit entry needs, for [`Op::finish_with`].
    pub(super) outcome: Option<OutcomeEntry>,
    /// Set once [`Op::finish_with`] wrote the operation's audit entry with its last
    /// transition, so it is not written again.
    pub(super) outcome_written: bool,
}

/// The parts of an operation's audit entry known before it runs.
pub(super) struct OutcomeEntry {
    pub(super) kind: OperationKind,
    pub(super) requested_by: Option<String>,
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
            cutover: None,
            canary: None,
            holding: false,
            outcome: kind.map(|kind| OutcomeEntry {
                kind,
                requested_by: job.requested_by.clone(),
            }),
            outcome_written: false,
        };
        let result = if job.cancel.is_cancelled() || self.cancelled_all.load(Ordering::Acquire) {
            Err(Error::Cancelled {
                operation: job.kind.name().to_owned(),
            })
        } else {
            // Provider calls are isolated already; this catches a panic of the manager's
            // own code, so the deployment still ends in a status every operation accepts.
            match AssertUnwindSafe(ctx.execute(&job.kind))
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(panic) => {
                    let what = panic_message(panic.as_ref()).to_owned();
                    tracing::error!(%deployment, operation = job.kind.name(), panic = %what, "operation panicked");
                    let error = Error::provider(
                        "manager",
                        format!("{} panicked: {what}", job.kind.name()),
                        false,
                    );
                    ctx.fail_after_panic(&error).await;
                    Err(error)
                }
            }
        };
        if let Some(kind) = kind {
            let written = ctx.outcome_written && result.is_ok();
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
                    requested_by: job.requested_by.take(),
                },
            );
            if !written {
                self.persist_audit(&deployment, entry).await;
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

/// The scaled count of a record and the revision it belongs to (see
/// [`super::scale::keep_count`]).
pub(super) fn scaled(record: &DeploymentRecord) -> (Option<u32>, Revision) {
    (
        record.runtime.as_ref().and_then(|r| r.replicas),
        record.revision,
    )
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
        self.transition_logged(to, revision, update, false).await
    }

    /// [`transition_with`](Self::transition_with) for the last step of an operation that
    /// succeeds with it: the operation's own audit entry (`succeeded`) is written in the
    /// same store call as the transition's, one commit instead of two before the caller
    /// hears the result.
    pub(super) async fn finish_with(
        &mut self,
        to: DeploymentStatus,
        revision: Option<&RevisionRecord>,
        update: impl FnOnce(&mut DeploymentRecord),
    ) -> Result<DeploymentRecord> {
        let record = self.transition_logged(to, revision, update, true).await?;
        self.outcome_written = self.outcome.is_some();
        Ok(record)
    }

    async fn transition_logged(
        &self,
        to: DeploymentStatus,
        revision: Option<&RevisionRecord>,
        update: impl FnOnce(&mut DeploymentRecord),
        finishing: bool,
    ) -> Result<DeploymentRecord> {
        let (record, from) = {
            let mut state = self.inner.state();
            let entry = state
                .deployments
                .get_mut(&self.deployment)
                .ok_or_else(|| Error::deployment_not_found(self.deployment.as_str()))?;
            let from = entry.record.status.kind();
            // An operation that finds its own transitional status (one an interrupted
            // operation left) resumes from it instead of being refused.
            if !(from == to.kind() && from.is_transitional()) {
                crate::status::transition(from, to.kind())?;
            }
            let endpoint = super::traffic::endpoint_of(&entry.record);
            let count = scaled(&entry.record);
            entry.record.status = to;
            entry.record.updated_at = Timestamp::now();
            update(&mut entry.record);
            super::traffic::keep_endpoint(&mut entry.record, endpoint);
            super::scale::keep_count(&mut entry.record, count);
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
        let mut entries = vec![entry];
        if finishing && let Some(outcome) = &self.outcome {
            entries.push(AuditEntry::new(
                self.deployment.clone(),
                Some(self.id),
                AuditAction::Operation {
                    kind: outcome.kind,
                    revision: Some(record.revision),
                    attempts: self.attempts.max(1),
                    outcome: Outcome::Succeeded,
                    requested_by: outcome.requested_by.clone(),
                },
            ));
        }
        // Never fails: a write the store refuses is kept and re-written (see `persist`).
        self.inner.persist_change(&record, revision, entries).await;
        self.inner.bus.emit_with(|| Event::StatusChanged {
            deployment: self.deployment.clone(),
            from,
            to: record.status.clone(),
            revision: record.revision,
        });
        self.sync_traffic(&record).await;
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
        let ctx = OperationContext::with_cancel(self.inner.sink.clone(), token.clone())
            .with_cutover(self.cutover.clone())
            .with_canary(self.canary.clone());
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

    /// What the store knows of the deployment, as a provider is handed it (with the scaled
    /// replica count in the spec's config, see [`super::scale`]).
    pub(super) fn known(record: &DeploymentRecord) -> KnownDeployment {
        let count = record.runtime.as_ref().and_then(|r| r.replicas);
        KnownDeployment::new(
            DeploymentSpec::new(
                record.id.clone(),
                record.revision,
                super::scale::with_count(&record.config, count),
            ),
            record.runtime.clone().unwrap_or_default(),
        )
    }

    pub(super) async fn fail(
        &self,
        error: &Error,
        revision: Option<&RevisionRecord>,
    ) -> Result<DeploymentRecord> {
        let failure = error.failure_report();
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

    /// Marks the deployment failed after its operation panicked (unless it is gone or
    /// already failed or stopped).
    async fn fail_after_panic(&self, error: &Error) {
        let settled = self.snapshot().map(|(r, _)| {
            matches!(
                r.status.kind(),
                StatusKind::Failed | StatusKind::Stopped | StatusKind::Running
            )
        });
        if matches!(settled, Ok(false))
            && let Err(e) = self.fail(error, None).await
        {
            tracing::warn!(deployment = %self.deployment, error = %e, "cannot mark the deployment failed");
        }
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
            JobKind::Observe(report) => self.observe(report).await,
            JobKind::Heal(heal) => self.heal(&heal.0, &heal.1).await,
            JobKind::Recover => self.recover().await,
            JobKind::Scale(job) => self.scale(job).await,
        }
    }
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
