//! The `scale` operation: a running deployment's replica count changes without a new
//! revision ([`Provider::scale`](crate::Provider::scale)), queued like every operation, so
//! it never overlaps a user's update, canary, restart or stop.
//!
//! - The count is kept in the record's runtime ([`RuntimeInfo::replicas`]): it survives
//!   status changes, restarts of the deployment and of the manager (recovery adopts that
//!   many replicas), until a new revision rolls out. An update or rollback to an
//!   autoscaled config carries the current count over, clamped to the new `[min, max]`
//!   (Kubernetes' HPA keeps its count across a rollout too); one to a fixed config runs
//!   the config's `replicas`.
//! - Providers read the count from the spec's config: [`Op::known`] and the update's spec
//!   carry it in `config.replicas`. The record's and the revision's configs stay as
//!   written (an autoscaled config holds `min` there).
//! - A scale of a deployment that is stopped or failed only records the count, for the
//!   next start. One whose revision is no longer the one it was asked for (the autoscaler
//!   measured an older revision) changes nothing.
//! - A change emits [`Event::Scaled`] and writes an [`AuditAction::Scale`] entry beside
//!   the operation's own (which names who asked: `"autoscaler"` for automatic changes).

use std::sync::Arc;

use super::ops::Op;
use crate::config::{ConfigProblem, DeploymentConfig};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::Revision;
use crate::provider::RuntimeInfo;
use crate::status::StatusKind;
use crate::store::{AuditAction, AuditEntry, DeploymentRecord};

/// What a queued scale asks (boxed in the job: jobs stay small).
#[derive(Clone, Debug)]
pub(crate) struct ScaleJob {
    pub replicas: u32,
    pub reason: Option<String>,
    pub revision: Option<Revision>,
}

/// The replica count `record` runs (or would run at its next start).
#[must_use]
pub(crate) fn replicas_of(record: &DeploymentRecord) -> u32 {
    record
        .runtime
        .as_ref()
        .and_then(|r| r.replicas)
        .unwrap_or(record.config.replicas)
}

/// `config` with `replicas` set to the scaled count, as providers are handed it.
pub(super) fn with_count(
    config: &Arc<DeploymentConfig>,
    count: Option<u32>,
) -> Arc<DeploymentConfig> {
    match count {
        Some(n) if n != config.replicas => {
            let mut patched = Arc::clone(config);
            Arc::make_mut(&mut patched).replicas = n;
            patched
        }
        _ => Arc::clone(config),
    }
}

/// The count an update from `record` to `config` runs with: the current one, clamped to
/// the new range, when `config` autoscales; `None` (the config's `replicas`) otherwise.
pub(super) fn carried(record: &DeploymentRecord, config: &DeploymentConfig) -> Option<u32> {
    let autoscale = config.autoscale.as_ref()?;
    let current = match record.status.kind() {
        StatusKind::Pending => config.replicas,
        _ => replicas_of(record),
    };
    Some(autoscale.clamp(current))
}

/// Carries the scaled count over a change that replaced the runtime (a provider's answer
/// knows nothing of it), unless the change rolled out another revision.
pub(super) fn keep_count(record: &mut DeploymentRecord, before: (Option<u32>, Revision)) {
    let (count, revision) = before;
    let Some(n) = count else { return };
    if record.revision != revision
        || record.status.kind() == StatusKind::Removed
        || record
            .runtime
            .as_ref()
            .is_some_and(|r| r.replicas.is_some())
    {
        return;
    }
    match &mut record.runtime {
        Some(runtime) => Arc::make_mut(runtime).replicas = Some(n),
        None => record.runtime = Some(Arc::new(RuntimeInfo::new().with_replicas(Some(n)))),
    }
}

/// What keeps `n` replicas of `record` from running: out of the autoscaling range, or a
/// fixed port that several replicas on one host would all bind.
fn refusal(record: &DeploymentRecord, n: u32, local_network: bool) -> Option<Error> {
    let config = &record.config;
    let problem = if n < 1 {
        Some("must be at least 1".to_owned())
    } else if let Some(a) = config.autoscale.as_ref().filter(|a| n < a.min || n > a.max) {
        Some(format!(
            "{n} is outside the autoscaling range of '{}' ({}..={}); change replicas.min/max with an update",
            record.name, a.min, a.max
        ))
    } else {
        match config.port {
            Some(port) if n > 1 && local_network => Some(format!(
                "a fixed port ({port}) allows only one replica: remove `port` and each replica gets its own PORT"
            )),
            _ => None,
        }
    };
    problem.map(|message| Error::InvalidConfig {
        problems: vec![ConfigProblem::new("replicas", message)],
    })
}

impl Op<'_> {
    pub(super) async fn scale(&mut self, job: &ScaleJob) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        if job.revision.is_some_and(|r| r != record.revision) {
            tracing::debug!(deployment = %record.id, "dropping a scale of a revision that no longer serves");
            return Ok(record);
        }
        let provider = self.inner.provider(&record.provider)?;
        let capabilities = provider.capabilities();
        let local = capabilities.contains(crate::capability::Capability::LocalNetwork);
        if let Some(e) = refusal(&record, job.replicas, local) {
            return Err(e);
        }
        let from = replicas_of(&record);
        let to = job.replicas;
        if from == to {
            return Ok(record);
        }
        let reason = job
            .reason
            .clone()
            .unwrap_or_else(|| format!("asked for {to} replicas"));
        let record = match record.status.kind() {
            StatusKind::Running => {
                if !capabilities.contains(crate::capability::Capability::Scale) {
                    return Err(Error::NotSupported {
                        operation: "scaling a running deployment".to_owned(),
                        provider: provider.name().to_owned(),
                    });
                }
                let known = Self::known(&record);
                let deadline = self
                    .inner
                    .timeouts(provider.name())
                    .rollout(&known.spec.config);
                self.cutover = self.cutover_for(&record.config);
                let result = self
                    .call(&provider, "scale", deadline, |ctx| {
                        let (p, known) = (&provider, &known);
                        async move { p.scale(&ctx, known, to).await }
                    })
                    .await;
                self.cutover = None;
                // On failure the replicas that served keep serving; the record is unchanged.
                let runtime = result?;
                self.transition_same(|r| {
                    r.runtime = Some(Arc::new(runtime.with_replicas(Some(to))));
                })
                .await?
            }
            // Applies at the next start.
            StatusKind::Stopped | StatusKind::Failed => {
                self.transition_same(|r| match &mut r.runtime {
                    Some(runtime) => Arc::make_mut(runtime).replicas = Some(to),
                    None => r.runtime = Some(Arc::new(RuntimeInfo::new().with_replicas(Some(to)))),
                })
                .await?
            }
            status => {
                return Err(Error::IllegalTransition {
                    from: status,
                    to: StatusKind::Running,
                });
            }
        };
        let entry = AuditEntry::new(
            record.id.clone(),
            Some(self.id),
            AuditAction::Scale {
                from,
                to,
                reason: reason.clone(),
            },
        );
        self.inner.persist_audit(&record.id, entry).await;
        tracing::info!(deployment = %record.id, from, to, %reason, "scaled");
        self.inner.bus.emit_with(|| Event::Scaled {
            deployment: record.id.clone(),
            from,
            to,
            reason,
        });
        Ok(record)
    }
}
