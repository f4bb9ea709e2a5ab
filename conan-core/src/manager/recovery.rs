//! Recovery: reconciling the loaded deployments with what the providers find running after
//! the managing process restarted.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Inner;
use super::ops::Op;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::failure::FailureReport;
use crate::id::{DeploymentId, OperationId, Revision};
use crate::provider::{DeploymentSpec, OperationContext, RuntimeInfo};
use crate::status::{DeploymentStatus, StatusKind, is_allowed};
use crate::store::DeploymentRecord;
use crate::time::Timestamp;

/// See [`super::DeploymentManager::recover`]; `only` limits it to one provider.
pub(crate) async fn recover(
    inner: &Arc<Inner>,
    only: Option<&str>,
) -> Result<Vec<DeploymentRecord>> {
    let mut changed = Vec::new();
    let mut first_error = None;
    let registry = inner.registry();
    for provider in registry
        .iter()
        .filter(|p| only.is_none_or(|name| p.name() == name))
    {
        let known: Vec<DeploymentSpec> = {
            let state = inner.state();
            state
                .deployments
                .values()
                .filter(|e| &*e.provider == provider.name())
                .map(|e| {
                    DeploymentSpec::new(
                        e.record.id.clone(),
                        e.record.revision,
                        e.record.config.clone(),
                    )
                })
                .collect()
        };
        if known.is_empty() {
            continue;
        }
        let ctx = OperationContext::new(inner.sink.clone());
        let found = match provider.recover(&ctx, &known).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(provider = provider.name(), error = %e, "recovery failed");
                first_error.get_or_insert(e);
                continue;
            }
        };
        for spec in &known {
            let found = found.iter().find(|f| f.id == spec.id);
            let (status, runtime, failure, revision) = match found {
                Some(f) => (
                    f.status.clone(),
                    Some(f.runtime.clone()),
                    f.failure.clone(),
                    f.revision,
                ),
                None => (
                    DeploymentStatus::failed("not found by its provider after a manager restart"),
                    None,
                    None,
                    spec.revision,
                ),
            };
            match reconcile(inner, &spec.id, status, runtime, failure, revision).await {
                Ok(Some(record)) => {
                    inner.bus.emit_with(|| Event::Recovered {
                        deployment: record.id.clone(),
                        status: record.status.clone(),
                    });
                    changed.push(record);
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    match first_error {
        Some(e) if changed.is_empty() => Err(e),
        _ => Ok(changed),
    }
}

/// Brings one loaded record in line with what its provider found, through legal transitions
/// only: a state left mid-operation goes through `Failed` ("interrupted") first.
async fn reconcile(
    inner: &Arc<Inner>,
    id: &DeploymentId,
    found: DeploymentStatus,
    runtime: Option<RuntimeInfo>,
    failure: Option<FailureReport>,
    revision: Revision,
) -> Result<Option<DeploymentRecord>> {
    let op = Op {
        inner,
        id: OperationId(0),
        deployment: id.clone(),
        cancel: CancellationToken::new(),
        attempts: 0,
    };
    let (record, _) = op.snapshot()?;
    let from = record.status.kind();
    let target = found.kind();
    // A deployment stopped on purpose stays stopped even if nothing is found.
    if from == StatusKind::Stopped && target == StatusKind::Failed {
        return Ok(None);
    }
    if from == target {
        if target == StatusKind::Running {
            let record = op
                .transition_same(|r| {
                    r.runtime = runtime.map(Arc::new);
                    r.revision = revision.max(r.revision);
                })
                .await?;
            return Ok(Some(record));
        }
        return Ok(None);
    }
    if !is_allowed(from, target) {
        op.transition(
            DeploymentStatus::failed(format!("{from} was interrupted by a manager restart")),
            |_| {},
        )
        .await?;
    }
    let record = op
        .transition(found, |r| {
            if runtime.is_some() {
                r.runtime = runtime.map(Arc::new);
            }
            if failure.is_some() {
                r.last_failure = failure.map(Arc::new);
            }
        })
        .await?;
    Ok(Some(record))
}

impl Op<'_> {
    /// Updates the record without a status change (recovery refreshing runtime info).
    async fn transition_same(
        &self,
        update: impl FnOnce(&mut DeploymentRecord),
    ) -> Result<DeploymentRecord> {
        let record = {
            let mut state = self.inner.state();
            let entry = state
                .deployments
                .get_mut(&self.deployment)
                .ok_or_else(|| Error::deployment_not_found(self.deployment.as_str()))?;
            update(&mut entry.record);
            entry.record.updated_at = Timestamp::now();
            entry.record.clone()
        };
        self.inner.store.save_deployment(&record).await?;
        Ok(record)
    }
}
