//! Recovery: reconciling the loaded deployments with what the providers find running after
//! the managing process restarted, or when a provider is added later.
//!
//! Each deployment is recovered by an internal job in its own queue, like every other
//! operation: a recovery never overlaps a user's operation on the same deployment.
//!
//! # Interrupted operations
//!
//! A record loaded in a transitional state was left by a manager that stopped in the
//! middle of an operation. Recovery ends each in a definite status:
//!
//! - **deploying / updating / pending**: the status becomes what the provider found
//!   (running, stopped, or failed with the provider's reason, "… interrupted by a
//!   manager restart" when nothing else explains it). After an interrupted update the
//!   revision that still serves keeps serving (`Running`, with a failure report naming
//!   the interrupted revision, and an [`Event::RolledBack`]); when the provider found
//!   the new revision serving (it switched before the manager stopped), the record
//!   moves to that revision and its config.
//! - **stopping / removing**: the operation the user asked for is finished (through
//!   `Failed` with "… was interrupted by a manager restart", then a fresh stop or
//!   remove), so it ends `Stopped`, or removed, or `Failed` with the provider's error.
//! - **history**: every revision still `pending` is settled: `succeeded` when it is the
//!   one the provider found serving, else `failed` with "interrupted by a manager
//!   restart". No operation runs while a recovery does, so a pending revision at that
//!   point is always a leftover.

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
use crate::store::{DeploymentRecord, RevisionRecord, RevisionState};

/// What settling the pending revisions found.
#[derive(Default)]
struct Settled {
    /// The revision the provider found serving, when it is newer than the record's.
    serving: Option<RevisionRecord>,
    /// Revisions whose rollout was interrupted (now failed).
    interrupted: Vec<crate::id::Revision>,
}

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
    /// record in line through legal transitions only (see the module docs).
    pub(super) async fn recover(&mut self) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        self.reopen_endpoint(&record).await;
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
        let settled = self.settle_revisions(&record, &found).await;
        let from = record.status.kind();
        if matches!(from, StatusKind::Stopping | StatusKind::Removing) {
            return self.finish_interrupted(record, found).await;
        }
        let changed = self.reconcile(record, found, &settled).await?;
        if let Some(record) = &changed {
            self.inner.bus.emit_with(|| Event::Recovered {
                deployment: record.id.clone(),
                status: record.status.clone(),
            });
        }
        let record = match changed {
            Some(record) => record,
            None => self.snapshot().map(|(r, _)| r)?,
        };
        self.sync_traffic(&record).await;
        Ok(record)
    }

    /// Settles the revisions left `pending` by an interrupted rollout: the one the
    /// provider found serving succeeded, the others failed. A store error is logged, not
    /// fatal (the deployment's status is reconciled anyway).
    async fn settle_revisions(
        &self,
        record: &DeploymentRecord,
        found: &RecoveredDeployment,
    ) -> Settled {
        let mut settled = Settled::default();
        let history = match self.inner.store.revisions(&record.id).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(deployment = %record.id, error = %e, "cannot read the revision history");
                return settled;
            }
        };
        let serving = found.status.is_running().then_some(found.revision);
        for mut rev in history {
            if Some(rev.revision) == serving && rev.revision > record.revision {
                settled.serving = Some(rev.clone());
            }
            if rev.state != RevisionState::Pending {
                continue;
            }
            rev.state = if Some(rev.revision) == serving {
                RevisionState::Succeeded
            } else {
                settled.interrupted.push(rev.revision);
                RevisionState::Failed {
                    reason: match serving {
                        Some(s) => format!(
                            "interrupted by a manager restart during its rollout; revision {s} serves"
                        ),
                        None => "interrupted by a manager restart during its rollout".to_owned(),
                    },
                }
            };
            if let Err(e) = self.inner.store.save_revision(&rev).await {
                tracing::warn!(deployment = %record.id, revision = %rev.revision, error = %e, "cannot settle an interrupted revision");
            }
            if settled
                .serving
                .as_ref()
                .is_some_and(|s| s.revision == rev.revision)
            {
                settled.serving = Some(rev);
            }
        }
        settled
    }

    /// Finishes a stop or a remove the managing process did not finish: through `Failed`
    /// (the operation was interrupted), then the operation again.
    async fn finish_interrupted(
        &mut self,
        record: DeploymentRecord,
        found: RecoveredDeployment,
    ) -> Result<DeploymentRecord> {
        let from = record.status.kind();
        let operation = if from == StatusKind::Removing {
            "remove"
        } else {
            "stop"
        };
        let runtime = Arc::new(found.runtime);
        let keep = found.status.is_running() || !runtime.details.is_empty();
        let record = self
            .transition(
                DeploymentStatus::failed(format!(
                    "{operation} was interrupted by a manager restart; finishing it"
                )),
                |r| {
                    if keep {
                        r.runtime = Some(runtime);
                    }
                },
            )
            .await?;
        self.inner.bus.emit_with(|| Event::Recovered {
            deployment: record.id.clone(),
            status: record.status.clone(),
        });
        if from == StatusKind::Removing {
            self.remove().await
        } else {
            self.stop_from(record).await
        }
    }

    /// Brings one loaded record in line with what its provider found: a state left
    /// mid-operation goes through `Failed` ("interrupted") first. Answers the record when
    /// it changed or was confirmed running.
    async fn reconcile(
        &self,
        record: DeploymentRecord,
        found: RecoveredDeployment,
        settled: &Settled,
    ) -> Result<Option<DeploymentRecord>> {
        let from = record.status.kind();
        let target = status_of(&found.status);
        let to = target.kind();
        // A deployment stopped on purpose stays stopped even if nothing is found.
        if from == StatusKind::Stopped && to != StatusKind::Running {
            return Ok(None);
        }
        let runtime = Arc::new(found.runtime);
        // The provider found a newer revision serving (it switched before the manager
        // stopped): the record follows, with that revision's config.
        let newer = settled.serving.clone();
        let running = found.status.is_running();
        // An interrupted update whose previous revision still serves.
        let rolled_back = (running && newer.is_none())
            .then(|| settled.interrupted.iter().copied().max())
            .flatten()
            .filter(|&rev| rev > found.revision);
        let note = rolled_back.map(|rev| {
            format!(
                "revision {rev} was interrupted by a manager restart; revision {} serves",
                found.revision
            )
        });
        let failure = found
            .failure
            .clone()
            .or_else(|| note.clone().map(FailureReport::new))
            .or_else(|| match &found.status {
                ObservedStatus::Failed { reason } => Some(FailureReport::new(reason.clone())),
                _ => None,
            });
        let apply = |r: &mut DeploymentRecord| {
            if running {
                r.revision = found.revision.max(r.revision);
                if let Some(newer) = &newer {
                    r.revision = newer.revision;
                    r.config = newer.config.clone();
                }
            }
            if let Some(f) = &failure {
                r.last_failure = Some(Arc::new(f.clone()));
            }
        };
        let emit_rollback = |record: &DeploymentRecord| {
            if let (Some(failed), Some(reason)) = (rolled_back, &note) {
                self.inner.bus.emit_with(|| Event::RolledBack {
                    deployment: record.id.clone(),
                    failed,
                    serving: found.revision,
                    reason: reason.clone(),
                });
            }
        };
        if from == to {
            if to == StatusKind::Running {
                let record = self
                    .transition_same(|r| {
                        r.runtime = Some(runtime);
                        apply(r);
                    })
                    .await?;
                emit_rollback(&record);
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
        let record = self
            .transition(target, |r| {
                if running || !runtime.details.is_empty() {
                    r.runtime = Some(runtime);
                } else {
                    r.runtime = None;
                }
                apply(r);
            })
            .await?;
        emit_rollback(&record);
        Ok(Some(record))
    }

    /// Updates the record without a status change (recovery refreshing runtime info).
    pub(super) async fn transition_same(
        &self,
        update: impl FnOnce(&mut DeploymentRecord),
    ) -> Result<DeploymentRecord> {
        let record = {
            let mut state = self.inner.state();
            let entry = state
                .deployments
                .get_mut(&self.deployment)
                .ok_or_else(|| Error::deployment_not_found(self.deployment.as_str()))?;
            let endpoint = super::traffic::endpoint_of(&entry.record);
            let count = super::ops::scaled(&entry.record);
            update(&mut entry.record);
            super::traffic::keep_endpoint(&mut entry.record, endpoint);
            super::scale::keep_count(&mut entry.record, count);
            entry.record.updated_at = crate::time::Timestamp::now();
            entry.record.clone()
        };
        self.inner.store.save_deployment(&record).await?;
        self.sync_traffic(&record).await;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    //! Records left mid-operation by a manager that died (issue 10, finding 1): each ends
    //! in a definite status, and no revision stays `pending`.

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::capability::Capabilities;
    use crate::config::DeploymentConfig;
    use crate::event::OperationKind;
    use crate::id::{DeploymentId, Revision};
    use crate::log::{LogQuery, LogStream};
    use crate::manager::DeploymentManager;
    use crate::provider::{
        DeploymentSpec, HealthReport, KnownDeployment, Metrics, OperationContext, Provider,
        RuntimeInfo,
    };
    use crate::store::{MemoryStore, StateStore};
    use crate::time::Timestamp;

    type Answer = Box<dyn Fn(&KnownDeployment) -> RecoveredDeployment + Send + Sync>;

    /// A provider whose `recover` answers what the test says; counts stops and removes.
    struct Finds {
        answer: Answer,
        stops: Arc<AtomicUsize>,
        removes: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<KnownDeployment>>>,
    }

    impl Finds {
        fn new(
            answer: impl Fn(&KnownDeployment) -> RecoveredDeployment + Send + Sync + 'static,
        ) -> Self {
            Self {
                answer: Box::new(answer),
                stops: Arc::default(),
                removes: Arc::default(),
                seen: Arc::default(),
            }
        }
    }

    #[async_trait]
    impl Provider for Finds {
        fn name(&self) -> &str {
            "finds"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::none()
        }
        async fn deploy(
            &self,
            _: &OperationContext,
            _: &DeploymentSpec,
            _: Option<&KnownDeployment>,
        ) -> Result<RuntimeInfo> {
            Ok(RuntimeInfo::new())
        }
        async fn update(
            &self,
            _: &OperationContext,
            _: &KnownDeployment,
            _: &DeploymentSpec,
        ) -> Result<RuntimeInfo> {
            Ok(RuntimeInfo::new())
        }
        async fn start(&self, _: &OperationContext, _: &KnownDeployment) -> Result<RuntimeInfo> {
            Ok(RuntimeInfo::new())
        }
        async fn stop(&self, _: &OperationContext, _: &KnownDeployment) -> Result<()> {
            self.stops.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn remove(&self, _: &OperationContext, _: &KnownDeployment) -> Result<()> {
            self.removes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn status(&self, _: &KnownDeployment) -> Result<ObservedStatus> {
            Ok(ObservedStatus::Running)
        }
        async fn logs(&self, _: &KnownDeployment, _: &LogQuery) -> Result<LogStream> {
            Err(Error::provider("finds", "no logs", false))
        }
        async fn metrics(&self, _: &KnownDeployment) -> Result<Metrics> {
            Err(Error::provider("finds", "no metrics", false))
        }
        async fn health(&self, _: &KnownDeployment) -> Result<HealthReport> {
            Err(Error::provider("finds", "no health", false))
        }
        async fn recover(
            &self,
            _: &OperationContext,
            known: &[KnownDeployment],
        ) -> Result<Vec<RecoveredDeployment>> {
            self.seen.lock().unwrap().extend(known.iter().cloned());
            Ok(known.iter().map(|k| (self.answer)(k)).collect())
        }
    }

    fn config(name: &str, version: &str) -> Arc<DeploymentConfig> {
        Arc::new(
            DeploymentConfig::builder(name)
                .env("VERSION", version)
                .build()
                .unwrap(),
        )
    }

    fn revision(
        id: &DeploymentId,
        n: u64,
        config: &Arc<DeploymentConfig>,
        state: RevisionState,
    ) -> RevisionRecord {
        RevisionRecord {
            deployment: id.clone(),
            revision: Revision(n),
            config: config.clone(),
            cause: if n == 1 {
                OperationKind::Deploy
            } else {
                OperationKind::Update
            },
            source_revision: None,
            state,
            created_at: Timestamp::now(),
        }
    }

    /// A store as a manager that died mid-operation leaves it: the record in `status` at
    /// revision 1, and the history `revisions` (configs v1, v2, ...).
    async fn left_behind(
        name: &str,
        status: DeploymentStatus,
        revisions: &[RevisionState],
    ) -> (Arc<dyn StateStore>, DeploymentId) {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let id = DeploymentId::generate();
        for (i, state) in revisions.iter().enumerate() {
            let n = i as u64 + 1;
            let rev = revision(&id, n, &config(name, &format!("v{n}")), state.clone());
            store.save_revision(&rev).await.unwrap();
        }
        let now = Timestamp::now();
        let record = DeploymentRecord {
            id: id.clone(),
            name: name.into(),
            provider: "finds".into(),
            status,
            revision: Revision(1),
            config: config(name, "v1"),
            runtime: Some(Arc::new(RuntimeInfo::new().with_detail("serving", 1))),
            last_failure: None,
            created_at: now,
            updated_at: now,
        };
        store.save_deployment(&record).await.unwrap();
        (store, id)
    }

    async fn manager(store: Arc<dyn StateStore>, provider: Finds) -> DeploymentManager {
        DeploymentManager::builder()
            .provider(provider)
            .store_arc(store)
            .build()
            .await
            .unwrap()
    }

    fn running(rev: u64) -> impl Fn(&KnownDeployment) -> RecoveredDeployment {
        move |k| RecoveredDeployment::running(k.id().clone(), Revision(rev), RuntimeInfo::new())
    }

    #[tokio::test]
    async fn an_interrupted_update_keeps_the_serving_revision_and_fails_the_pending_one() {
        let (store, id) = left_behind(
            "upd",
            DeploymentStatus::Updating,
            &[RevisionState::Succeeded, RevisionState::Pending],
        )
        .await;
        let m = manager(store.clone(), Finds::new(running(1))).await;
        let mut rx = m.subscribe();
        m.recover().await.unwrap();
        let record = m.get("upd").unwrap();
        assert_eq!(record.status, DeploymentStatus::Running);
        assert_eq!(record.revision, Revision(1));
        assert_eq!(record.config.env.get("VERSION"), Some("v1"));
        let note = record.last_failure.expect("the interruption is reported");
        assert!(
            note.reason.contains("revision 2 was interrupted"),
            "{note:?}"
        );
        let history = store.revisions(&id).await.unwrap();
        assert_eq!(history[0].state, RevisionState::Succeeded);
        assert!(
            matches!(&history[1].state, RevisionState::Failed { reason } if reason.contains("interrupted")),
            "{:?}",
            history[1].state
        );
        let events = crate::manager::tests::drain(&mut rx);
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::RolledBack {
                    failed: Revision(2),
                    serving: Revision(1),
                    ..
                }
            )),
            "{events:#?}"
        );
        // The next update is revision 3.
        let next = m
            .update("upd", DeploymentConfig::clone(&config("upd", "v3")))
            .await
            .unwrap();
        assert_eq!(next.revision, Revision(3));
    }

    #[tokio::test]
    async fn an_update_that_switched_before_the_manager_died_moves_the_record_to_it() {
        let (store, id) = left_behind(
            "switched",
            DeploymentStatus::Updating,
            &[RevisionState::Succeeded, RevisionState::Pending],
        )
        .await;
        let m = manager(store.clone(), Finds::new(running(2))).await;
        m.recover().await.unwrap();
        let record = m.get("switched").unwrap();
        assert_eq!(record.status, DeploymentStatus::Running);
        assert_eq!(record.revision, Revision(2));
        assert_eq!(
            record.config.env.get("VERSION"),
            Some("v2"),
            "the config of revision 2"
        );
        let history = store.revisions(&id).await.unwrap();
        assert_eq!(history[1].state, RevisionState::Succeeded);
        // Loaded again (as by the next manager), the record keeps that config.
        let again = store.load_deployments().await.unwrap();
        assert_eq!(again[0].config.env.get("VERSION"), Some("v2"));
    }

    #[tokio::test]
    async fn an_interrupted_first_deploy_ends_failed_or_running_and_settles_its_revision() {
        let (store, id) = left_behind(
            "first",
            DeploymentStatus::Deploying,
            &[RevisionState::Pending],
        )
        .await;
        let m = manager(
            store.clone(),
            Finds::new(|k| {
                RecoveredDeployment::failed(
                    k.id().clone(),
                    k.revision(),
                    FailureReport::new("interrupted by a manager restart"),
                )
            }),
        )
        .await;
        m.recover().await.unwrap();
        assert_eq!(m.get("first").unwrap().status.kind(), StatusKind::Failed);
        let history = store.revisions(&id).await.unwrap();
        assert!(
            matches!(history[0].state, RevisionState::Failed { .. }),
            "{history:?}"
        );

        let (store, id) = left_behind(
            "ready",
            DeploymentStatus::Deploying,
            &[RevisionState::Pending],
        )
        .await;
        let m = manager(store.clone(), Finds::new(running(1))).await;
        m.recover().await.unwrap();
        assert_eq!(m.get("ready").unwrap().status, DeploymentStatus::Running);
        let history = store.revisions(&id).await.unwrap();
        assert_eq!(history[0].state, RevisionState::Succeeded);
    }

    #[tokio::test]
    async fn an_interrupted_stop_is_finished() {
        let (store, _) = left_behind(
            "halt",
            DeploymentStatus::Stopping,
            &[RevisionState::Succeeded],
        )
        .await;
        let provider = Finds::new(running(1));
        let stops = provider.stops.clone();
        let m = manager(store, provider).await;
        m.recover().await.unwrap();
        assert_eq!(m.get("halt").unwrap().status, DeploymentStatus::Stopped);
        assert_eq!(stops.load(Ordering::SeqCst), 1);
        // Operable afterwards.
        assert_eq!(
            m.start("halt").await.unwrap().status,
            DeploymentStatus::Running
        );
    }

    #[tokio::test]
    async fn an_interrupted_remove_is_finished() {
        let (store, id) = left_behind(
            "gone",
            DeploymentStatus::Removing,
            &[RevisionState::Succeeded],
        )
        .await;
        let provider = Finds::new(|k| {
            RecoveredDeployment::stopped(k.id().clone(), k.revision(), RuntimeInfo::new())
        });
        let removes = provider.removes.clone();
        let m = manager(store.clone(), provider).await;
        m.recover().await.unwrap();
        assert!(m.get("gone").is_err(), "removed");
        assert_eq!(removes.load(Ordering::SeqCst), 1);
        assert!(store.load_deployments().await.unwrap().is_empty());
        assert!(store.revisions(&id).await.unwrap().is_empty());
    }
}
