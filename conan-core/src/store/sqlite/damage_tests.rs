//! Issue 10: a full disk, a truncated file and one bad row must never cost the state, or
//! silently empty it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::status::DeploymentStatus;
use crate::store::tests::sample;

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conan.db");
    (dir, path)
}

async fn save(store: &SqliteStore, name: &str, n: u64) -> DeploymentRecord {
    let (mut rec, rev) = sample(name, n);
    rec.status = DeploymentStatus::Running;
    store
        .save_status_change(StatusChange {
            record: &rec,
            revision: Some(&rev),
            audit: &[],
        })
        .await
        .unwrap();
    rec
}

fn names(records: &[DeploymentRecord]) -> Vec<String> {
    records.iter().map(|r| r.name.to_string()).collect()
}

/// Runs SQL on the file behind the store's back, as damage would.
fn tamper(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// A 2 MiB tmpfs, unmounted on drop; `None` (with the reason printed) when not root.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Issue 10, finding 3: on a full disk every write fails with a *transient* error (the
/// manager re-persists it), the writer thread keeps serving reads, and the same write
/// lands once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_transiently_and_a_retry_lands_once_space_is_freed() {
    let Some(fs) = Tmpfs::mount() else { return };
    let path = fs.0.path().join("conan.db");
    let store = SqliteStore::open(&path).unwrap();
    let kept = save(&store, "kept", 1).await;
    // Fill the volume (the filler stops at ENOSPC).
    let filler = fs.0.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 4 * 1024 * 1024]);

    let (mut rec, rev) = sample("late", 2);
    let mut cfg = (*rev.config).clone();
    cfg.labels.insert("big".into(), "x".repeat(64 * 1024));
    let rev = RevisionRecord {
        config: Arc::new(cfg),
        ..rev
    };
    rec.config = rev.config.clone();
    let change = || StatusChange {
        record: &rec,
        revision: Some(&rev),
        audit: &[],
    };
    let mut failures = 0;
    for _ in 0..20 {
        match store.save_status_change(change()).await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_transient(), "a full disk is transient: {e}");
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "the disk was never full");
    // The writer still answers.
    assert_eq!(names(&store.load_deployments().await.unwrap()), ["kept"]);

    std::fs::remove_file(&filler).unwrap();
    store.save_status_change(change()).await.unwrap();
    assert_eq!(
        names(&store.load_deployments().await.unwrap()),
        ["kept", "late"]
    );
    drop(store);
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.load_deployments().await.unwrap()[0], kept);
    assert_eq!(reopened.load_deployments().await.unwrap().len(), 2);
}

async fn wait_for_backup(store: &SqliteStore) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.health().backup_taken_at.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no backup was written"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 10, finding 4: a truncated database made the daemon start empty, with no word,
/// while the apps ran on unmanaged.
#[tokio::test]
async fn a_truncated_database_is_restored_from_its_backup_and_says_so() {
    let (dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    for i in 0..20 {
        save(&store, &format!("app-{i}"), i + 1).await;
    }
    store.backup_now().unwrap();
    drop(store);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let store = SqliteStore::open(&path).unwrap();
    let restored = store.load_deployments().await.unwrap();
    assert_eq!(restored.len(), 20, "everything in the backup is back");
    let health = store.health();
    let restore = health.restore.expect("the restore is reported");
    assert_eq!(restore.restored_from, Some(backup::backup_path(&path)));
    let kept = restore
        .damaged_copy
        .clone()
        .expect("the damaged file is kept");
    assert!(kept.exists() && kept.starts_with(dir.path()), "{kept:?}");
    assert!(
        restore.summary().contains("restored from the backup"),
        "{}",
        restore.summary()
    );
}

#[tokio::test]
async fn an_emptied_database_with_a_backup_is_restored_not_started_empty() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    save(&store, "one", 1).await;
    store.backup_now().unwrap();
    drop(store);
    std::fs::write(&path, b"").unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(names(&store.load_deployments().await.unwrap()), ["one"]);
    assert!(store.health().restore.is_some());
}

#[tokio::test]
async fn a_damaged_database_without_a_backup_starts_empty_but_loudly() {
    let (_dir, path) = temp_db();
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.load_deployments().await.unwrap(), vec![]);
    let restore = store.health().restore.expect("reported");
    assert_eq!(restore.restored_from, None);
    assert!(restore.damaged_copy.as_ref().is_some_and(|p| p.exists()));
    assert!(
        restore.summary().contains("no backup"),
        "{}",
        restore.summary()
    );
}

#[tokio::test]
async fn a_backup_is_taken_after_open() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    save(&store, "one", 1).await;
    wait_for_backup(&store).await;
    assert!(backup::backup_path(&path).exists());
}

/// Issue 10, finding 4: one bad row made the daemon refuse to start.
#[tokio::test]
async fn one_bad_row_is_skipped_and_flagged_the_others_load() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    for name in ["a", "b", "c"] {
        save(&store, name, 1).await;
    }
    drop(store);
    tamper(
        &path,
        "UPDATE deployments SET status = '{\"state\":\"runn' WHERE id = 'dep-b'",
    );

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(names(&store.load_deployments().await.unwrap()), ["a", "c"]);
    let damaged = store.health().damaged;
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(
        (damaged[0].kind.as_str(), damaged[0].id.as_str()),
        ("deployment", "dep-b")
    );
    assert_eq!(damaged[0].name.as_deref(), Some("b"));
    assert!(damaged[0].error.contains("status"), "{damaged:?}");
}

#[tokio::test]
async fn repair_salvages_what_it_can_quarantines_the_rest_and_is_idempotent() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    for name in ["good", "bad-status", "bad-config"] {
        save(&store, name, 1).await;
    }
    drop(store);
    tamper(
        &path,
        "UPDATE deployments SET status = 'garbage', runtime = '{' WHERE id = 'dep-bad-status';
         UPDATE revisions SET config = '{\"name\":' WHERE deployment = 'dep-bad-config';",
    );
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(names(&store.load_deployments().await.unwrap()), ["good"]);
    assert_eq!(store.health().damaged.len(), 2);

    let report = store.repair().await.unwrap();
    let ids = |list: &[DamagedRecord]| list.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&report.salvaged), ["dep-bad-status"], "{report:?}");
    assert_eq!(
        ids(&report.quarantined),
        ["dep-bad-config@1", "dep-bad-config"],
        "{report:?}"
    );
    assert!(store.health().damaged.is_empty());
    let loaded = store.load_deployments().await.unwrap();
    assert_eq!(names(&loaded), ["bad-status", "good"]);
    assert_eq!(loaded[0].status.kind(), crate::status::StatusKind::Failed);
    assert!(store.health().damaged.is_empty(), "{:?}", store.health());
    // What was moved out is kept.
    assert_eq!(store.quarantined().await.unwrap().len(), 3);

    let again = store.repair().await.unwrap();
    assert!(again.is_empty(), "a second repair finds nothing: {again:?}");
    assert_eq!(store.quarantined().await.unwrap().len(), 3);
}

#[tokio::test]
async fn every_state_file_is_private() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).unwrap();
    save(&store, "one", 1).await;
    store.backup_now().unwrap();
    let mut seen = 0;
    for suffix in ["", "-wal", "-shm", ".bak"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(meta) = std::fs::metadata(&file) {
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "{}",
                file.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 3, "the database, its WAL and the backup exist");
}
