//! Recovery: reconciling the loaded deployments with what the providers find running after
//! the managing process restarted, or when a provider is added later.
//!
//! Each deployment is recovered by an internal job in its own queue, like every other
//! operation: a recovery never overlaps a user's operation on the same deployment.

use std::sync::Arc;

use super::lifecycle::{intermediate, route, status_of};
use super::ops::{JobKind, Op, Target};
use super::scheduler::Priority;
use super::{Inner, SubmitOptions};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::failure::FailureReport;
use crate::provider::{ObservedStatus, RecoveredDeployment};
use crate::status::{DeploymentStatus, StatusKind};
use crate::store::DeploymentRecord;

/// See [`super::DeploymentManager::recover`]; `only` limits it to one provider.
pub(crate) async fn recover(
    inner: &Arc<Inner>,
    only: Option<&str>,
) -> Result<Vec<DeploymentRecord>> {
    // Deployments of providers that are not registered (yet) wait for `add_provider`.
    let registry = inner.registry();
    let ids: Vec<_> = {
        let state = inner.state();
        state
            .deployments
            .values()
            .filter(|e| only.is_none_or(|name| &*e.provider == name))
            .filter(|e| registry.get(&e.provider).is_some())
            .map(|e| e.record.id.clone())
            .collect()
    };
    let mut handles = Vec::with_capacity(ids.len());
    for id in ids {
        match inner.submit_job(
            Target::Id(id.clone()),
            JobKind::Recover,
            SubmitOptions::priority(Priority::High),
        ) {
            Ok(handle) => handles.push(handle),
            Err(e) => tracing::warn!(deployment = %id, error = %e, "cannot queue recovery"),
        }
    }
    let mut recovered = Vec::with_capacity(handles.len());
    let mut first_error = None;
    for handle in handles {
        let deployment = handle.deployment().clone();
        match handle.wait().await {
            Ok(record) => recovered.push(record),
            Err(e) => {
                tracing::warn!(%deployment, error = %e, "recovery failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if recovered.is_empty() => Err(e),
        _ => Ok(recovered),
    }
}

impl Op<'_> {
    /// The recovery job of one deployment: asks its provider what it finds, then brings the
    /// record in line through legal transitions only.
    pub(super) async fn recover(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        let provider = self.inner.provider(&record.provider)?;
        let known = Self::known(&record);
        let deadline = self.inner.timeouts(provider.name()).query;
        let found = self
            .call(&provider, "recover", deadline, |ctx| {
                let (p, known) = (&provider, &known);
                async move { p.recover(&ctx, std::slice::from_ref(known)).await }
            })
            .await?
            .into_iter()
            .find(|f| f.id == record.id)
            .unwrap_or_else(|| {
                RecoveredDeployment::failed(
                    record.id.clone(),
                    record.revision,
                    FailureReport::new("not found by its provider after a manager restart"),
                )
            });
        let changed = self.reconcile(record, found).await?;
        if let Some(record) = &changed {
            self.inner.bus.emit_with(|| Event::Recovered {
                deployment: record.id.clone(),
                status: record.status.clone(),
            });
        }
        match changed {
            Some(record) => Ok(record),
            None => self.snapshot().map(|(r, _)| r),
        }
    }

    /// Brings one loaded record in line with what its provider found: a state left
    /// mid-operation goes through `Failed` ("interrupted") first. Answers the record when
    /// it changed or was confirmed running.
    async fn reconcile(
        &self,
        record: DeploymentRecord,
        found: RecoveredDeployment,
    ) -> Result<Option<DeploymentRecord>> {
        let from = record.status.kind();
        let target = status_of(&found.status);
        let to = target.kind();
        // A deployment stopped on purpose stays stopped even if nothing is found.
        if from == StatusKind::Stopped && to != StatusKind::Running {
            return Ok(None);
        }
        let runtime = Arc::new(found.runtime);
        if from == to {
            if to == StatusKind::Running {
                let record = self
                    .transition_same(|r| {
                        r.runtime = Some(runtime);
                        r.revision = found.revision.max(r.revision);
                    })
                    .await?;
                return Ok(Some(record));
            }
            return Ok(None);
        }
        match route(from, to) {
            Some(None) => {}
            Some(Some(via)) => {
                self.transition(intermediate(via), |_| {}).await?;
            }
            None => {
                self.transition(
                    DeploymentStatus::failed(format!(
                        "{from} was interrupted by a manager restart"
                    )),
                    |_| {},
                )
                .await?;
            }
        }
        let running = found.status.is_running();
        let failure = found.failure.or_else(|| match &found.status {
            ObservedStatus::Failed { reason } => Some(FailureReport::new(reason.clone())),
            _ => None,
        });
        let record = self
            .transition(target, |r| {
                if running || !runtime.details.is_empty() {
                    r.runtime = Some(runtime);
                } else {
                    r.runtime = None;
                }
                if running {
                    r.revision = found.revision.max(r.revision);
                }
                if failure.is_some() {
                    r.last_failure = failure.map(Arc::new);
                }
            })
            .await?;
        Ok(Some(record))
    }

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
            entry.record.updated_at = crate::time::Timestamp::now();
            entry.record.clone()
        };
        self.inner.store.save_deployment(&record).await?;
        Ok(record)
    }
}
