//! Behaviour every [`StateStore`] must show; run by each store's tests.

use std::sync::Arc;

use super::*;
use crate::event::{OperationKind, Outcome};

pub(crate) fn sample(name: &str, n: u64) -> (DeploymentRecord, RevisionRecord) {
    let id = DeploymentId::new(format!("dep-{name}"));
    let config = Arc::new(
        DeploymentConfig::builder(name)
            .env("SECRET", "v")
            .port(3000)
            .build_unchecked(),
    );
    let now = Timestamp::from_unix_micros(1_000_000 * i64::try_from(n).unwrap_or(0));
    let rev = RevisionRecord {
        deployment: id.clone(),
        revision: Revision(1),
        config: config.clone(),
        cause: OperationKind::Deploy,
        source_revision: None,
        state: RevisionState::Pending,
        created_at: now,
    };
    let rec = DeploymentRecord {
        id,
        name: name.into(),
        provider: "memory".into(),
        status: DeploymentStatus::Pending,
        revision: Revision(1),
        config,
        runtime: None,
        last_failure: None,
        created_at: now,
        updated_at: now,
    };
    (rec, rev)
}

/// Saves, reloads, updates and deletes; checks ordering and audit sequencing.
pub(crate) async fn store_round_trip(store: &dyn StateStore) {
    let (mut a, rev_a) = sample("alpha", 1);
    let (b, rev_b) = sample("beta", 2);
    store.save_revision(&rev_a).await.unwrap();
    store.save_revision(&rev_b).await.unwrap();
    store.save_deployment(&a).await.unwrap();
    store.save_deployment(&b).await.unwrap();

    a.status = DeploymentStatus::failed("boom");
    a.runtime = Some(Arc::new(RuntimeInfo {
        url: Some("http://127.0.0.1:1".into()),
        ..RuntimeInfo::default()
    }));
    store.save_deployment(&a).await.unwrap();

    let all = store.load_deployments().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], a);
    assert_eq!(all[1], b);
    assert_eq!(all[0].config.env.get("SECRET"), Some("v"));

    let mut rev2 = rev_a.clone();
    rev2.revision = Revision(2);
    rev2.cause = OperationKind::Rollback;
    rev2.source_revision = Some(Revision(1));
    store.save_revision(&rev2).await.unwrap();
    rev2.state = RevisionState::Failed {
        reason: "unhealthy".into(),
    };
    store.save_revision(&rev2).await.unwrap();
    let revs = store.revisions(&a.id).await.unwrap();
    assert_eq!(revs, vec![rev_a.clone(), rev2]);

    store
        .append_audit(vec![
            AuditEntry::new(
                a.id.clone(),
                None,
                AuditAction::Transition {
                    from: StatusKind::Pending,
                    to: StatusKind::Deploying,
                },
            ),
            AuditEntry::new(
                b.id.clone(),
                Some(crate::id::OperationId(7)),
                AuditAction::Operation {
                    kind: OperationKind::Deploy,
                    revision: Some(Revision(1)),
                    attempts: 2,
                    outcome: Outcome::Succeeded,
                    requested_by: None,
                },
            ),
        ])
        .await
        .unwrap();
    store
        .append_audit(vec![AuditEntry::new(
            a.id.clone(),
            None,
            AuditAction::Transition {
                from: StatusKind::Deploying,
                to: StatusKind::Failed,
            },
        )])
        .await
        .unwrap();
    let log = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let only_a = store
        .audit(&AuditQuery {
            deployment: Some(a.id.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(only_a.len(), 2);
    let after = store
        .audit(&AuditQuery {
            after_seq: Some(1),
            limit: Some(1),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].seq, 2);
    assert_eq!(after[0].operation, Some(crate::id::OperationId(7)));

    store.delete_deployment(&a.id).await.unwrap();
    assert_eq!(store.load_deployments().await.unwrap(), vec![b]);
    assert!(store.revisions(&a.id).await.unwrap().is_empty());
    assert_eq!(
        store.audit(&AuditQuery::default()).await.unwrap().len(),
        3,
        "audit log survives removal"
    );

    status_change_writes_revision_record_and_audit(store).await;
}

/// `save_status_change` writes all three parts, and replaces an earlier state of the
/// same revision.
async fn status_change_writes_revision_record_and_audit(store: &dyn StateStore) {
    let (mut rec, mut rev) = sample("gamma", 3);
    let before = store.audit(&AuditQuery::default()).await.unwrap().len();
    rec.status = DeploymentStatus::Deploying;
    let entry = AuditEntry::new(
        rec.id.clone(),
        Some(crate::id::OperationId(9)),
        AuditAction::Transition {
            from: StatusKind::Pending,
            to: StatusKind::Deploying,
        },
    );
    let change = StatusChange {
        record: &rec,
        revision: Some(&rev),
        audit: std::slice::from_ref(&entry),
    };
    store.save_status_change(change).await.unwrap();
    rec.status = DeploymentStatus::Running;
    rev.state = RevisionState::Succeeded;
    store
        .save_status_change(StatusChange {
            record: &rec,
            revision: Some(&rev),
            audit: &[],
        })
        .await
        .unwrap();
    let loaded = store.load_deployments().await.unwrap();
    assert_eq!(loaded.iter().find(|r| r.id == rec.id), Some(&rec));
    assert_eq!(store.revisions(&rec.id).await.unwrap(), vec![rev]);
    let log = store
        .audit(&AuditQuery {
            deployment: Some(rec.id.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].action, entry.action);
    assert_eq!(log[0].seq, u64::try_from(before).unwrap() + 1);
}

/// A store that implements only the required methods, to test the trait's defaults.
struct RequiredOnly(MemoryStore);

#[async_trait]
impl StateStore for RequiredOnly {
    async fn save_deployment(&self, record: &DeploymentRecord) -> Result<()> {
        self.0.save_deployment(record).await
    }
    async fn delete_deployment(&self, id: &DeploymentId) -> Result<()> {
        self.0.delete_deployment(id).await
    }
    async fn load_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        self.0.load_deployments().await
    }
    async fn save_revision(&self, revision: &RevisionRecord) -> Result<()> {
        self.0.save_revision(revision).await
    }
    async fn revisions(&self, id: &DeploymentId) -> Result<Vec<RevisionRecord>> {
        self.0.revisions(id).await
    }
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        self.0.append_audit(entries).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        self.0.audit(query).await
    }
}

#[tokio::test]
async fn default_methods_conform() {
    store_round_trip(&RequiredOnly(MemoryStore::new())).await;
}

/// What every store's outbox and alert state must do (run on a fresh store).
pub(crate) async fn outbox_round_trip(store: &dyn StateStore) {
    let micros = |n: i64| Timestamp::from_unix_micros(1_700_000_000_000_000 + n);
    assert!(store.outbox_pending(10).await.unwrap().is_empty());
    let mut first = OutboxEntry::new("ops", r#"{"n":1}"#);
    first.created_at = micros(1);
    first.next_attempt_at = micros(1);
    first.id = 999; // ignored: the store assigns ids
    let a = store.outbox_put(first.clone()).await.unwrap();
    let b = store
        .outbox_put(OutboxEntry::new("pager", r#"{"n":2}"#))
        .await
        .unwrap();
    let c = store
        .outbox_put(OutboxEntry::new("ops", r#"{"n":3}"#))
        .await
        .unwrap();
    assert!(a < b && b < c, "ids increase: {a} {b} {c}");

    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(
        pending.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a, b, c],
        "oldest first"
    );
    assert_eq!(pending[0].destination, "ops");
    assert_eq!(pending[0].payload, r#"{"n":1}"#);
    assert_eq!(pending[0].attempts, 0);
    assert_eq!(pending[0].created_at, micros(1));
    assert_eq!(pending[0].last_error, None);
    assert_eq!(store.outbox_pending(2).await.unwrap().len(), 2, "limit");

    store
        .outbox_retry(a, micros(5_000_000), "connection refused")
        .await
        .unwrap();
    store
        .outbox_retry(a, micros(9_000_000), "HTTP 503")
        .await
        .unwrap();
    let retried = &store.outbox_pending(1).await.unwrap()[0];
    assert_eq!(retried.id, a);
    assert_eq!(retried.attempts, 2);
    assert_eq!(retried.next_attempt_at, micros(9_000_000));
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));

    store.outbox_ack(b).await.unwrap();
    store.outbox_ack(b).await.unwrap(); // twice: not an error
    store.outbox_retry(b, micros(1), "gone").await.unwrap(); // unknown: not an error
    assert_eq!(
        store
            .outbox_pending(10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![a, c]
    );
    // An id is never reused, even after the newest entry is acked.
    store.outbox_ack(c).await.unwrap();
    let d = store
        .outbox_put(OutboxEntry::new("ops", "{}"))
        .await
        .unwrap();
    assert!(d > c);

    let dep = DeploymentId::new("dep-x");
    assert!(store.alerts().await.unwrap().is_empty());
    store
        .save_alert(&AlertRecord::new("down", dep.clone(), "x", micros(20), 1.0))
        .await
        .unwrap();
    store
        .save_alert(&AlertRecord::new(
            "memory",
            dep.clone(),
            "x",
            micros(10),
            0.5,
        ))
        .await
        .unwrap();
    // Same rule and deployment: replaced, not added.
    store
        .save_alert(&AlertRecord::new("down", dep.clone(), "x", micros(30), 2.5))
        .await
        .unwrap();
    let alerts = store.alerts().await.unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].rule, "memory", "ordered by since");
    assert_eq!(alerts[1].value, 2.5);
    assert_eq!(alerts[1].since, micros(30));
    assert_eq!(alerts[1].name, "x");
    store.delete_alert("down", &dep).await.unwrap();
    store.delete_alert("down", &dep).await.unwrap();
    let alerts = store.alerts().await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "memory");
}

#[tokio::test]
async fn a_store_without_an_outbox_says_so() {
    let store = RequiredOnly(MemoryStore::new());
    let err = store
        .outbox_put(OutboxEntry::new("ops", "{}"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("outbox"), "{err}");
    assert!(!err.is_transient());
}
