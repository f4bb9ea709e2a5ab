use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;

use super::*;
use crate::event::{OperationKind, Outcome};
use crate::failure::FailureReport;
use crate::id::{OperationId, Revision};
use crate::provider::RuntimeInfo;
use crate::status::{DeploymentStatus, StatusKind};
use crate::store::tests::sample;
use crate::store::{AlertRecord, AuditAction, OutboxEntry, RevisionState};
use crate::time::Timestamp;

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    (dir, path)
}

/// Stores keep microseconds; entries made with `Timestamp::now()` carry nanoseconds.
fn entry(deployment: &DeploymentId, op: Option<u64>, action: AuditAction) -> AuditEntry {
    let mut e = AuditEntry::new(deployment.clone(), op.map(OperationId), action);
    e.at = Timestamp::from_unix_micros(e.at.as_unix_micros());
    e
}

fn transition(from: StatusKind, to: StatusKind) -> AuditAction {
    AuditAction::Transition { from, to }
}

/// Writes `n` deployments (each at revision 2, with failure and runtime details) and two
/// audit entries per deployment; returns what was written, audit `seq`s filled in.
async fn fill(
    store: &SqliteStore,
    n: u64,
) -> (Vec<DeploymentRecord>, Vec<RevisionRecord>, Vec<AuditEntry>) {
    let (mut records, mut revisions, mut log) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (mut rec, rev1) = sample(&format!("app-{i}"), i + 1);
        let mut rev2 = rev1.clone();
        rev2.revision = Revision(2);
        rev2.cause = OperationKind::Update;
        rev2.config = Arc::new(
            crate::config::DeploymentConfig::builder(&*rec.name)
                .port(4000)
                .build_unchecked(),
        );
        rev2.state = RevisionState::Succeeded;
        rec.revision = Revision(2);
        rec.config = rev2.config.clone();
        rec.status = DeploymentStatus::failed("crashed");
        rec.last_failure = Some(Arc::new(FailureReport::new("exit 1")));
        rec.runtime = Some(Arc::new(RuntimeInfo {
            url: Some(format!("http://127.0.0.1:{}", 4000 + i)),
            ..RuntimeInfo::default()
        }));
        store.save_revision(&rev1).await.unwrap();
        store.save_revision(&rev2).await.unwrap();
        store.save_deployment(&rec).await.unwrap();
        let entries = vec![
            entry(
                &rec.id,
                Some(i),
                transition(StatusKind::Running, StatusKind::Failed),
            ),
            entry(
                &rec.id,
                Some(i),
                AuditAction::Operation {
                    kind: OperationKind::Update,
                    revision: Some(Revision(2)),
                    attempts: 1,
                    outcome: Outcome::Succeeded,
                    // Who asked survives the round trip (the action is stored as JSON).
                    requested_by: Some("mcp:test-client 1.0".to_owned()),
                },
            ),
        ];
        store.append_audit(entries.clone()).await.unwrap();
        log.extend(entries);
        records.push(rec);
        revisions.extend([rev1, rev2]);
    }
    for (seq, e) in log.iter_mut().enumerate() {
        e.seq = seq as u64 + 1;
    }
    (records, revisions, log)
}

async fn assert_holds(
    store: &SqliteStore,
    records: &[DeploymentRecord],
    revisions: &[RevisionRecord],
    log: &[AuditEntry],
) {
    assert_eq!(store.load_deployments().await.unwrap(), records);
    for rec in records {
        let expected: Vec<_> = revisions
            .iter()
            .filter(|r| r.deployment == rec.id)
            .cloned()
            .collect();
        assert_eq!(store.revisions(&rec.id).await.unwrap(), expected);
    }
    assert_eq!(store.audit(&AuditQuery::default()).await.unwrap(), log);
}

#[tokio::test]
async fn conforms_in_memory() {
    crate::store::tests::store_round_trip(&SqliteStore::open_in_memory().unwrap()).await;
}

#[tokio::test]
async fn conforms_on_file() {
    let (_dir, path) = temp_db();
    crate::store::tests::store_round_trip(&SqliteStore::open(&path).unwrap()).await;
}

#[tokio::test]
async fn outbox_conforms_in_memory_and_on_file() {
    crate::store::tests::outbox_round_trip(&SqliteStore::open_in_memory().unwrap()).await;
    let (_dir, path) = temp_db();
    crate::store::tests::outbox_round_trip(&SqliteStore::open(&path).unwrap()).await;
}

#[tokio::test]
async fn the_outbox_and_alerts_survive_a_reopen() {
    let (_dir, path) = temp_db();
    let first = SqliteStore::open(&path).unwrap();
    let a = first
        .outbox_put(OutboxEntry::new("ops", r#"{"state":"firing"}"#))
        .await
        .unwrap();
    let b = first
        .outbox_put(OutboxEntry::new("ops", r#"{"state":"resolved"}"#))
        .await
        .unwrap();
    let next = Timestamp::from_unix_micros(1_800_000_000_000_000);
    first
        .outbox_retry(a, next, "connection refused")
        .await
        .unwrap();
    let dep = DeploymentId::new("dep-web");
    let since = Timestamp::from_unix_micros(1_700_000_000_000_000);
    first
        .save_alert(&AlertRecord::new("down", dep.clone(), "web", since, 3.0))
        .await
        .unwrap();
    drop(first);

    let second = SqliteStore::open(&path).unwrap();
    let pending = second.outbox_pending(10).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].next_attempt_at, next);
    assert_eq!(pending[0].last_error.as_deref(), Some("connection refused"));
    assert_eq!(pending[1].payload, r#"{"state":"resolved"}"#);
    assert_eq!(
        second.alerts().await.unwrap(),
        vec![AlertRecord::new("down", dep, "web", since, 3.0)]
    );
    // Ids continue after the reopened ones.
    second.outbox_ack(b).await.unwrap();
    let c = second
        .outbox_put(OutboxEntry::new("ops", "{}"))
        .await
        .unwrap();
    assert!(c > b);
}

#[tokio::test]
async fn a_version_1_file_is_upgraded_and_keeps_its_deployments() {
    let (_dir, path) = temp_db();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(super::schema::SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO audit (at, deployment, operation, action) VALUES (1, 'dep-a', NULL, '{}')",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let id = store
        .outbox_put(OutboxEntry::new("ops", "{}"))
        .await
        .unwrap();
    assert_eq!(store.outbox_pending(10).await.unwrap()[0].id, id);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 2);
    let audit: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit", [], |row| row.get(0))
        .unwrap();
    assert_eq!(audit, 1, "the upgrade keeps what version 1 held");
}

#[tokio::test]
async fn reopening_the_file_restores_everything() {
    let (_dir, path) = temp_db();
    let first = SqliteStore::open(&path).unwrap();
    let (records, revisions, log) = fill(&first, 5).await;
    drop(first);

    let second = SqliteStore::open(&path).unwrap();
    assert_holds(&second, &records, &revisions, &log).await;
    // The config comes from the revision the record points at, not the first one.
    assert_eq!(
        second.load_deployments().await.unwrap()[0].config.port,
        Some(4000)
    );
    // Numbering continues after the restored entries.
    second
        .append_audit(vec![entry(
            &records[0].id,
            None,
            transition(StatusKind::Failed, StatusKind::Stopped),
        )])
        .await
        .unwrap();
    let after = second
        .audit(&AuditQuery {
            after_seq: Some(log.len() as u64),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![log.len() as u64 + 1]
    );
}

#[tokio::test]
async fn a_second_open_store_sees_committed_writes() {
    let (_dir, path) = temp_db();
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    let (records, revisions, mut log) = fill(&a, 3).await;
    assert_holds(&b, &records, &revisions, &log).await;

    // And the other way round, with one audit sequence shared by both.
    let mut e = entry(
        &records[1].id,
        Some(9),
        transition(StatusKind::Failed, StatusKind::Stopping),
    );
    b.append_audit(vec![e.clone()]).await.unwrap();
    b.delete_deployment(&records[2].id).await.unwrap();
    e.seq = log.len() as u64 + 1;
    log.push(e);
    let remaining: Vec<_> = revisions
        .iter()
        .filter(|r| r.deployment != records[2].id)
        .cloned()
        .collect();
    assert_holds(&a, &records[..2], &remaining, &log).await;
}

/// Commits `n` audit entries one call (one commit) at a time.
async fn commit_one_by_one(store: &SqliteStore, id: &DeploymentId, n: u64) {
    for i in 0..n {
        let e = entry(
            id,
            Some(i),
            transition(StatusKind::Running, StatusKind::Stopping),
        );
        store.append_audit(vec![e]).await.unwrap();
    }
}

/// Waits until the database file itself (not only its WAL) is `larger` than `than`.
async fn until_checkpointed(db: &Path, than: u64) -> u64 {
    let t = Instant::now();
    loop {
        let len = std::fs::metadata(db).map_or(0, |m| m.len());
        if len > than {
            return len;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "no checkpoint copied the WAL into {} (still {len} bytes)",
            db.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn checkpoints_run_on_their_own_thread_and_the_wal_starts_over() {
    let (_dir, path) = temp_db();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let store = SqliteStore::open(&path).unwrap();
    // The writer's connection leaves checkpoints to the thread but for its backstop.
    let auto: i64 = store
        .writer
        .call(false, |c| {
            c.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .map_err(|e| schema::sql_error("reading wal_autocheckpoint", e))
        })
        .await
        .unwrap();
    assert_eq!(auto, checkpoint::BACKSTOP_PAGES);

    let id = DeploymentId::from("dep-ckpt");
    let before = std::fs::metadata(&path).unwrap().len();
    // 1,200 commits take the WAL to about 2,500 pages: past SQLite's default threshold
    // (1,000), short of the writer's backstop, so only the thread copies them.
    commit_one_by_one(&store, &id, 1_200).await;
    until_checkpointed(&path, before).await;

    // Once everything was copied, a write starts the WAL over: the checkpoint sequence
    // number in the WAL header (bytes 12..16) moves on.
    let sequence = || {
        let header = std::fs::read(&wal).unwrap();
        u32::from_be_bytes([header[12], header[13], header[14], header[15]])
    };
    let first = sequence();
    let t = Instant::now();
    let mut n = 1_200;
    while sequence() == first {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "the WAL never started over after the checkpoints"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        commit_one_by_one(&store, &id, 1).await;
        n += 1;
    }
    let all = store
        .audit(&AuditQuery {
            deployment: Some(id.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), n);
}

#[tokio::test]
async fn dropping_the_store_completes_pending_writes() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    let (rec, rev) = sample("pending", 1);
    store.save_revision(&rev).await.unwrap();
    // Each call is polled once (which queues it) and then abandoned, the way a cancelled
    // caller would; the store is dropped right after.
    for i in 0..500 {
        let mut rec = rec.clone();
        rec.updated_at = Timestamp::from_unix_micros(i);
        let _ = store.save_deployment(&rec).now_or_never();
        let _ = store
            .append_audit(vec![entry(
                &rec.id,
                Some(i as u64),
                transition(StatusKind::Pending, StatusKind::Deploying),
            )])
            .now_or_never();
    }
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let loaded = store.load_deployments().await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].updated_at,
        Timestamp::from_unix_micros(499),
        "the last write won"
    );
    let log = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(log.len(), 500);
    assert_eq!(
        log.last().unwrap().operation,
        Some(OperationId(499)),
        "in submission order"
    );
}

#[tokio::test]
async fn audit_filters_combine() {
    let store = SqliteStore::open_in_memory().unwrap();
    let (records, _, log) = fill(&store, 4).await;
    let of = |d: usize| {
        log.iter()
            .filter(|e| e.deployment == records[d].id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let query = |deployment: Option<usize>, after_seq, limit| AuditQuery {
        deployment: deployment.map(|d| records[d].id.clone()),
        after_seq,
        limit,
        newest: false,
    };
    let newest = |deployment: Option<usize>, after_seq, limit| AuditQuery {
        newest: true,
        ..query(deployment, after_seq, limit)
    };

    assert_eq!(
        store.audit(&query(Some(2), None, None)).await.unwrap(),
        of(2)
    );
    assert_eq!(
        store.audit(&query(Some(2), Some(5), None)).await.unwrap(),
        of(2)[1..]
    );
    assert_eq!(
        store
            .audit(&query(Some(3), Some(0), Some(1)))
            .await
            .unwrap(),
        of(3)[..1]
    );
    assert_eq!(
        store.audit(&query(None, Some(3), Some(2))).await.unwrap(),
        log[3..5]
    );
    assert_eq!(store.audit(&query(None, None, Some(0))).await.unwrap(), []);
    assert_eq!(
        store
            .audit(&query(None, Some(u64::MAX), None))
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        store
            .audit(&query(None, None, Some(usize::MAX)))
            .await
            .unwrap(),
        log
    );
    // The newest N, still oldest first.
    let n = log.len();
    assert_eq!(
        store.audit(&newest(None, None, Some(2))).await.unwrap(),
        log[n - 2..]
    );
    let of2 = of(2);
    assert_eq!(
        store.audit(&newest(Some(2), None, Some(1))).await.unwrap(),
        of2[of2.len() - 1..]
    );
    assert_eq!(
        store.audit(&newest(None, Some(3), None)).await.unwrap(),
        log[3..]
    );
}

#[tokio::test]
async fn a_deployment_without_its_revision_is_skipped_and_flagged() {
    let store = SqliteStore::open_in_memory().unwrap();
    let (rec, _) = sample("orphan", 1);
    store.save_deployment(&rec).await.unwrap();
    assert_eq!(store.load_deployments().await.unwrap(), vec![]);
    let damaged = store.health().damaged;
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0].id, "dep-orphan");
    assert!(damaged[0].error.contains("not stored"), "{damaged:?}");
}

#[tokio::test]
async fn concurrent_callers_get_distinct_increasing_seqs() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let (rec, _) = sample("busy", 1);
    let tasks: Vec<_> = (0..100u64)
        .map(|t| {
            let (store, id) = (store.clone(), rec.id.clone());
            tokio::spawn(async move {
                for i in 0..10 {
                    let batch = vec![
                        entry(
                            &id,
                            Some(t * 100 + i),
                            transition(StatusKind::Pending, StatusKind::Deploying)
                        );
                        2
                    ];
                    store.append_audit(batch).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let log = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=2000).collect::<Vec<_>>()
    );
    // The two entries of one call are adjacent.
    assert!(
        log.chunks(2)
            .all(|pair| pair[0].operation == pair[1].operation)
    );
}

#[test]
fn refuses_a_newer_schema() {
    let (_dir, path) = temp_db();
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn opening_in_a_missing_directory_fails() {
    let (dir, _) = temp_db();
    let err = SqliteStore::open(dir.path().join("missing/state.db")).unwrap_err();
    assert_eq!(err.code(), "store");
}

#[test]
fn busy_locked_and_full_are_transient() {
    let sqlite = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
    assert!(schema::sql_error("x", sqlite(rusqlite::ffi::SQLITE_BUSY)).is_transient());
    assert!(schema::sql_error("x", sqlite(rusqlite::ffi::SQLITE_LOCKED)).is_transient());
    assert!(schema::sql_error("x", sqlite(rusqlite::ffi::SQLITE_FULL)).is_transient());
    assert!(!schema::sql_error("x", sqlite(rusqlite::ffi::SQLITE_CORRUPT)).is_transient());
    assert!(!schema::sql_error("x", rusqlite::Error::QueryReturnedNoRows).is_transient());
}

/// `cargo test --release -p conan-core --features sqlite -- --ignored --nocapture sqlite_throughput`
#[test]
#[ignore = "throughput measurement; run in release"]
fn sqlite_throughput() {
    const TASKS: u64 = 1000;
    const ROUNDS: u64 = 100;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_dir, path) = temp_db();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let elapsed = runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let (mut rec, rev) = sample(&format!("app-{t}"), t);
                    store.save_revision(&rev).await.unwrap();
                    for i in 0..ROUNDS {
                        rec.status = if i % 2 == 0 {
                            DeploymentStatus::Running
                        } else {
                            DeploymentStatus::Stopped
                        };
                        rec.updated_at = Timestamp::now();
                        store.save_deployment(&rec).await.unwrap();
                        let action = transition(StatusKind::Deploying, StatusKind::Running);
                        store
                            .append_audit(vec![AuditEntry::new(
                                rec.id.clone(),
                                Some(OperationId(i)),
                                action,
                            )])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    });
    let pairs = (TASKS * ROUNDS) as f64;
    eprintln!(
        "sqlite_throughput: {TASKS} tasks x {ROUNDS} (save_deployment + append_audit) in {elapsed:?}: \
         {:.0} pairs/s, {:.0} writes/s",
        pairs / elapsed.as_secs_f64(),
        2.0 * pairs / elapsed.as_secs_f64()
    );
}
