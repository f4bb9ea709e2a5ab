//! What each operation does to a deployment: the status transitions around the provider
//! calls of deploy, update and rollback, start, stop, restart and remove (what a provider
//! reports on its own is applied in [`super::reports`]).

use std::sync::Arc;

use super::ops::Op;
use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::event::{Event, OperationKind};
use crate::id::Revision;
use crate::provider::{DeploymentSpec, ObservedStatus, RuntimeInfo};
use crate::status::{DeploymentStatus, StatusKind, is_allowed};
use crate::store::{DeploymentRecord, RevisionRecord, RevisionState};
use crate::time::Timestamp;

impl Op<'_> {
    pub(super) async fn deploy(&mut self) -> Result<DeploymentRecord> {
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
        // An endpoint that cannot be opened (its address is taken) fails the deploy before
        // anything is started or stored.
        let endpoint = match self.ensure_endpoint(&record, &record.config).await {
            Ok(endpoint) => endpoint,
            Err(e) => {
                self.inner.state().remove(&record.id);
                return Err(e);
            }
        };
        // The Pending record is first persisted by this transition.
        self.transition_with(DeploymentStatus::Deploying, Some(&revision), |r| {
            super::traffic::set_endpoint(r, endpoint);
        })
        .await?;
        let spec = DeploymentSpec::new(record.id.clone(), record.revision, record.config.clone());
        let deadline = self.inner.timeouts(provider.name()).rollout(&spec.config);
        match self
            .call(&provider, "deploy", deadline, |ctx| {
                let (p, spec) = (&provider, &spec);
                async move { p.deploy(&ctx, spec, None).await }
            })
            .await
        {
            Ok(runtime) => {
                revision.state = RevisionState::Succeeded;
                self.finish_with(DeploymentStatus::Running, Some(&revision), |r| {
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

    pub(super) async fn rollback(&mut self, to: Option<Revision>) -> Result<DeploymentRecord> {
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

    pub(super) async fn update(
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
        let endpoint = self.ensure_endpoint(&record, &config).await?;
        self.transition_with(DeploymentStatus::Updating, Some(&revision), |r| {
            super::traffic::set_endpoint(r, endpoint);
        })
        .await?;
        // An autoscaled deployment keeps its current count across the rollout.
        let count = super::scale::carried(&record, &config);
        let spec = DeploymentSpec::new(
            record.id.clone(),
            new_rev,
            super::scale::with_count(&config, count),
        );
        let known = Self::known(&record);
        let deadline = self.inner.timeouts(provider.name()).rollout(&spec.config);
        let result = if from == StatusKind::Running {
            // The provider switches the endpoint to the new revision once it passed its gate.
            self.cutover = self.cutover_for(&config);
            self.canary = self.canary_for(&config);
            let result = self
                .call(&provider, "update", deadline, |ctx| {
                    let (p, spec, known) = (&provider, &spec, &known);
                    async move { p.update(&ctx, known, spec).await }
                })
                .await;
            self.cutover = None;
            self.canary = None;
            result
        } else {
            // Nothing serves (stopped, failed, never came up): the new revision is deployed
            // in place of whatever the provider still holds.
            self.call(&provider, "deploy", deadline, |ctx| {
                let (p, spec, known) = (&provider, &spec, &known);
                async move { p.deploy(&ctx, spec, Some(known)).await }
            })
            .await
        };
        match result {
            Ok(runtime) => {
                revision.state = RevisionState::Succeeded;
                self.transition_with(DeploymentStatus::Running, Some(&revision), |r| {
                    r.revision = new_rev;
                    r.config = config;
                    r.runtime = Some(Arc::new(runtime.with_replicas(count)));
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
                    let failure = e.failure_report();
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

    pub(super) async fn start(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        // A restarting deployment is brought back by its provider's supervisor.
        if matches!(
            record.status.kind(),
            StatusKind::Running | StatusKind::Restarting
        ) {
            return Ok(record);
        }
        self.start_from(record).await
    }

    pub(super) async fn start_from(
        &mut self,
        record: DeploymentRecord,
    ) -> Result<DeploymentRecord> {
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
                    async move { p.start(&ctx, known).await }
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

    pub(super) async fn stop(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        if record.status.kind() == StatusKind::Stopped {
            return Ok(record);
        }
        self.stop_from(record).await
    }

    pub(super) async fn stop_from(&mut self, record: DeploymentRecord) -> Result<DeploymentRecord> {
        self.stop_instances(&record).await?;
        self.transition(DeploymentStatus::Stopped, |r| r.runtime = stopped(r))
            .await
    }

    /// Moves `record` to `Stopping` and has its provider stop it; a provider error fails the
    /// deployment and is answered.
    pub(super) async fn stop_instances(&mut self, record: &DeploymentRecord) -> Result<()> {
        let provider = self.inner.provider(&record.provider)?;
        self.transition(DeploymentStatus::Stopping, |_| {}).await?;
        let known = Self::known(record);
        let deadline = self.inner.timeouts(provider.name()).stop(&record.config);
        match self
            .call(&provider, "stop", deadline, |ctx| {
                let (p, known) = (&provider, &known);
                async move { p.stop(&ctx, known).await }
            })
            .await
        {
            // `NotFound` is tolerated from providers that answer it for "nothing to stop".
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => {
                self.fail(&e, None).await?;
                Err(e)
            }
        }
    }

    pub(super) async fn restart(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        // Behind an endpoint, fresh instances start beside the running ones first.
        if let Some(result) = self.try_replace(&record).await {
            return result;
        }
        self.holding = true;
        let result = async {
            let record = match record.status.kind() {
                StatusKind::Running | StatusKind::Restarting => self.stop_from(record).await?,
                _ => record,
            };
            self.start_from(record).await
        }
        .await;
        self.holding = false;
        result
    }

    pub(super) async fn remove(&mut self) -> Result<DeploymentRecord> {
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
                    async move { p.remove(&ctx, known).await }
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
        self.inner.persist_delete(&id).await;
        self.inner
            .bus
            .emit_with(|| Event::Removed { deployment: id });
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
        ObservedStatus::Restarting {
            attempt, exit, at, ..
        } => DeploymentStatus::Restarting {
            attempt: *attempt,
            exit: *exit,
            at: *at,
        },
        ObservedStatus::Stopped | ObservedStatus::Exited { .. } => DeploymentStatus::Stopped,
        ObservedStatus::Failed { reason } => DeploymentStatus::failed(reason.clone()),
    }
}

/// What a record keeps of its runtime once nothing runs: the provider's details.
pub(super) fn stopped(record: &DeploymentRecord) -> Option<Arc<RuntimeInfo>> {
    record
        .runtime
        .as_deref()
        .filter(|r| !r.details.is_empty() || r.endpoint.is_some())
        .map(|r| Arc::new(r.stopped()))
}
