//! Issue 10, finding 3: a store that refuses writes (a full disk) must not fail operations
//! or wedge the state machine; the refused writes land once the store takes them again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::event::{OperationKind, Outcome};
use crate::status::StatusKind;
use crate::store::{AuditAction, AuditEntry, AuditQuery, MemoryStore, StatusChange};
use crate::testing::{Fault, MemoryProvider, ProviderOp, wait_until};

/// A [`MemoryStore`] whose writes fail like a full disk while `full` is set, and which
/// records the audit entries of each audit write it takes.
#[derive(Default)]
struct FullDisk {
    inner: MemoryStore,
    full: AtomicBool,
    /// One element per call: `(called through save_status_change, entries)`.
    calls: std::sync::Mutex<Vec<(bool, Vec<AuditAction>)>>,
}

impl FullDisk {
    fn record(&self, status_change: bool, entries: &[AuditEntry]) {
        self.calls.lock().unwrap().push((
            status_change,
            entries.iter().map(|e| e.action.clone()).collect(),
        ));
    }

    fn check(&self) -> Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(Error::store(
                "sqlite: committing: database or disk is full",
                true,
                None,
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl StateStore for FullDisk {
    async fn save_deployment(&self, record: &DeploymentRecord) -> Result<()> {
        self.check()?;
        self.inner.save_deployment(record).await
    }
    async fn delete_deployment(&self, id: &DeploymentId) -> Result<()> {
        self.check()?;
        self.inner.delete_deployment(id).await
    }
    async fn load_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        self.inner.load_deployments().await
    }
    async fn save_revision(&self, revision: &RevisionRecord) -> Result<()> {
        self.check()?;
        self.inner.save_revision(revision).await
    }
    async fn revisions(&self, id: &DeploymentId) -> Result<Vec<RevisionRecord>> {
        self.inner.revisions(id).await
    }
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        self.check()?;
        self.record(false, &entries);
        self.inner.append_audit(entries).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        self.inner.audit(query).await
    }
    async fn save_status_change(&self, change: StatusChange<'_>) -> Result<()> {
        self.check()?;
        self.record(true, change.audit);
        self.inner.save_status_change(change).await
    }
}

async fn manager(provider: &MemoryProvider, store: &Arc<FullDisk>) -> DeploymentManager {
    DeploymentManager::builder()
        .provider(provider.clone())
        .store_arc(store.clone())
        .build()
        .await
        .unwrap()
}

fn config(name: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name).build().unwrap()
}

async fn stored_status(store: &FullDisk, name: &str) -> Option<StatusKind> {
    store
        .inner
        .load_deployments()
        .await
        .unwrap()
        .into_iter()
        .find(|r| &*r.name == name)
        .map(|r| r.status.kind())
}

async fn wait_saved(m: &DeploymentManager) {
    assert!(
        wait_until(Duration::from_secs(60), || async {
            m.unsaved_state().is_clear()
        })
        .await,
        "the kept writes never landed: {:?}",
        m.unsaved_state()
    );
}

/// Before: the `stopping` write failed, the stop answered a store error and left the
/// deployment `stopping`; every later stop said "illegal status transition from stopping
/// to stopping", even after space was freed.
#[tokio::test(start_paused = true)]
async fn a_stop_whose_state_write_fails_still_stops_and_the_write_lands_later() {
    let p = MemoryProvider::new();
    let store = Arc::new(FullDisk::default());
    let m = manager(&p, &store).await;
    let rec = m.deploy(config("web")).await.unwrap();

    store.full.store(true, Ordering::SeqCst);
    let stopped = m
        .stop("web")
        .await
        .expect("the provider stopped it: a success");
    assert_eq!(stopped.status, DeploymentStatus::Stopped);
    let unsaved = m.unsaved_state();
    assert_eq!(unsaved.deployments, vec![rec.id.clone()]);
    assert!(
        unsaved.error.as_deref().unwrap().contains("disk is full"),
        "{unsaved:?}"
    );
    assert_eq!(
        stored_status(&store, "web").await,
        Some(StatusKind::Running)
    );
    // Operations go on while the disk is full.
    assert_eq!(
        m.start("web").await.unwrap().status,
        DeploymentStatus::Running
    );
    assert_eq!(
        m.stop("web").await.unwrap().status,
        DeploymentStatus::Stopped
    );

    store.full.store(false, Ordering::SeqCst);
    wait_saved(&m).await;
    assert_eq!(
        stored_status(&store, "web").await,
        Some(StatusKind::Stopped)
    );
    // Every transition was written once, in order.
    let transitions: Vec<(StatusKind, StatusKind)> = m
        .audit(&AuditQuery::default())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.action {
            crate::store::AuditAction::Transition { from, to } => Some((from, to)),
            crate::store::AuditAction::Operation { .. }
            | crate::store::AuditAction::Restart { .. }
            | crate::store::AuditAction::Scale { .. } => None,
        })
        .skip(2) // the deploy's
        .collect();
    use StatusKind::*;
    assert_eq!(
        transitions,
        [
            (Running, Stopping),
            (Stopping, Stopped),
            (Stopped, Deploying),
            (Deploying, Running),
            (Running, Stopping),
            (Stopping, Stopped),
        ]
    );
    assert_eq!(
        m.start("web").await.unwrap().status,
        DeploymentStatus::Running
    );
    m.remove("web").await.unwrap();
}

/// A stop whose provider call fails *and* whose writes fail ends `failed`, from which
/// stop, start and remove all work once the faults clear.
#[tokio::test(start_paused = true)]
async fn a_failed_stop_on_a_full_disk_ends_in_a_status_every_operation_accepts() {
    let p = MemoryProvider::new();
    let store = Arc::new(FullDisk::default());
    let m = manager(&p, &store).await;
    m.deploy(config("api")).await.unwrap();

    store.full.store(true, Ordering::SeqCst);
    p.inject(ProviderOp::Stop, Fault::Permanent);
    let err = m.stop("api").await.unwrap_err();
    assert!(
        !matches!(err, Error::Store { .. }),
        "the provider's error, not the store's: {err}"
    );
    assert_eq!(m.get("api").unwrap().status.kind(), StatusKind::Failed);

    p.clear_faults();
    assert_eq!(
        m.stop("api").await.unwrap().status,
        DeploymentStatus::Stopped
    );
    assert_eq!(
        m.start("api").await.unwrap().status,
        DeploymentStatus::Running
    );
    store.full.store(false, Ordering::SeqCst);
    m.remove("api").await.unwrap();
    wait_saved(&m).await;
    assert_eq!(
        stored_status(&store, "api").await,
        None,
        "the removal landed"
    );
}

/// A removal while the disk is full is written later: a new manager on the same store
/// does not bring the deployment back.
#[tokio::test(start_paused = true)]
async fn a_removal_on_a_full_disk_lands_later() {
    let p = MemoryProvider::new();
    let store = Arc::new(FullDisk::default());
    let m = manager(&p, &store).await;
    m.deploy(config("gone")).await.unwrap();
    store.full.store(true, Ordering::SeqCst);
    m.remove("gone").await.unwrap();
    assert!(m.get("gone").is_err());
    assert_eq!(
        stored_status(&store, "gone").await,
        Some(StatusKind::Running)
    );
    store.full.store(false, Ordering::SeqCst);
    wait_saved(&m).await;
    let again = manager(&p, &store).await;
    assert!(again.list().is_empty(), "{:?}", again.list());
}

/// A deployment left in a transitional status (an operation interrupted before it ended)
/// accepts the operation again instead of "illegal status transition from stopping to
/// stopping".
#[tokio::test]
async fn an_interrupted_stop_is_resumed_by_the_next_stop() {
    let p = MemoryProvider::new();
    let store = Arc::new(FullDisk::default());
    let m = manager(&p, &store).await;
    let mut rec = m.deploy(config("half")).await.unwrap();
    drop(m);
    rec.status = DeploymentStatus::Stopping;
    store.inner.save_deployment(&rec).await.unwrap();

    let m = manager(&p, &store).await;
    assert_eq!(m.get("half").unwrap().status, DeploymentStatus::Stopping);
    assert_eq!(
        m.stop("half").await.unwrap().status,
        DeploymentStatus::Stopped
    );
    assert_eq!(
        m.start("half").await.unwrap().status,
        DeploymentStatus::Running
    );
}

/// A deploy's `running` transition and its `succeeded` entry land in one store call (one
/// commit between the app being ready and the caller hearing so), in that order, with
/// who asked; a failed deploy still writes its entry on its own.
#[tokio::test(start_paused = true)]
async fn a_successful_deploy_writes_its_outcome_with_its_last_transition() {
    let p = MemoryProvider::new();
    let store = Arc::new(FullDisk::default());
    let m = manager(&p, &store).await;
    let options = SubmitOptions {
        requested_by: Some("test-suite".into()),
        ..SubmitOptions::default()
    };
    m.submit(Request::Deploy(config("web")), options)
        .unwrap()
        .wait()
        .await
        .unwrap();
    let calls = store.calls.lock().unwrap().clone();
    let last = calls.last().expect("writes").clone();
    assert!(last.0, "the last write is the status change: {calls:?}");
    assert!(
        matches!(
            &last.1[..],
            [
                AuditAction::Transition {
                    to: StatusKind::Running,
                    ..
                },
                AuditAction::Operation {
                    kind: OperationKind::Deploy,
                    outcome: Outcome::Succeeded,
                    requested_by: Some(who),
                    ..
                }
            ] if who == "test-suite"
        ),
        "{last:?}"
    );
    let operations = calls
        .iter()
        .flat_map(|(_, a)| a)
        .filter(|a| matches!(a, AuditAction::Operation { .. }))
        .count();
    assert_eq!(operations, 1, "{calls:?}");

    p.inject(ProviderOp::Deploy, Fault::Permanent);
    assert!(m.deploy(config("bad")).await.is_err());
    let calls = store.calls.lock().unwrap().clone();
    assert!(
        matches!(
            calls.last(),
            Some((false, a)) if matches!(&a[..], [AuditAction::Operation { outcome: Outcome::Failed { .. }, .. }])
        ),
        "{calls:?}"
    );
}
