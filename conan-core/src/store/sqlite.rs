//! [`SqliteStore`]: state kept in one SQLite file (feature `sqlite`).
//!
//! # Model
//!
//! One connection, owned by a dedicated thread. Every [`StateStore`] call is sent to that
//! thread and awaited, so the async runtime never blocks on SQLite. The thread takes all
//! calls queued at that moment and runs them in one transaction (group commit), then answers
//! them: a few hundred small writes cost one commit instead of a few hundred. Reads go through
//! the same thread, so a read sees every write whose call returned before it was made.
//!
//! # Guarantees
//!
//! - Each call is atomic: `append_audit` with several entries and `delete_deployment` run
//!   under a savepoint, so a failing call leaves no trace and does not undo the other calls
//!   committed with it.
//! - A call returns `Ok` only after its transaction committed. The file is in WAL mode with
//!   `synchronous=NORMAL`: a committed write survives a crash of the process; a power loss or
//!   OS crash may lose the commits since the last checkpoint. Checkpoints (which `fsync`)
//!   run on a thread of their own, after every 200 write calls or once writes stopped for a
//!   second, never inside a call's commit (see `checkpoint.rs`).
//! - A call whose caller stops waiting (a dropped future) still runs. Dropping the store waits
//!   until every queued call ran and the connection closed, so nothing queued is lost; that
//!   wait blocks the dropping thread (usually for well under a millisecond).
//! - Several processes may open the same file: each sees what the others committed. Writes
//!   of different processes take turns on SQLite's lock; a lock held longer than the busy
//!   timeout (5 s) gives a transient [`Error::Store`](crate::Error::Store), which the manager
//!   retries.
//! - Audit `seq` numbers are assigned by SQLite (`AUTOINCREMENT`): increasing, never reused,
//!   shared by every process writing the file.
//!
//! # Layout
//!
//! Tables `deployments`, `revisions` and `audit`, and (schema version 2) `outbox` and
//! `alerts` for [`Outbox`](super::Outbox); timestamps are Unix microseconds (the
//! precision of [`Timestamp`](crate::time::Timestamp)), structured values are JSON text.
//! Deployment rows do not hold a config: a record's config is that of its revision, read with
//! a join, so save the revision before the deployment that points at it. The schema version
//! lives in `PRAGMA user_version`; a file written by a newer schema is refused, not guessed at.
//! The audit log is indexed only by `seq`: appends stay cheap, and a query for one deployment
//! scans the log from `after_seq` until it has `limit` entries (fine for the CLI's history
//! view; pass `after_seq` to page through a large log).
//! Env values are sealed in the revisions' configs (see [`crate::seal`]): a file store
//! keeps its key in `<stem>.key` beside the database (`conan.db` → `conan.key`, mode
//! 0600) unless given one ([`SqliteStore::open_with_key`]), so the database, its `-wal`
//! and `-shm` and its backups hold no env value in the clear; all of them are created with
//! mode 0600 too. An in-memory store does not seal.
//!
//! # Damage
//!
//! - The file is checked at open and restored from its backup `PATH.bak` when damaged (see
//!   [`SqliteStore::open`]); the backup is refreshed after open, after writes (200 calls or
//!   30 s) and at close, on its own connection, never blocking writes.
//! - A row that cannot be decoded is skipped and listed by [`StateStore::health`]; the
//!   others load.
//! - [`SqliteStore::repair`] salvages such rows or moves them into a `quarantine` table
//!   (created on first use: `kind`, `key`, `name`, `error` and the row's columns as JSON).
//! - A full disk fails writes with a transient error; the writer thread survives it (and
//!   any panic of a call), and later writes land once space is back.

mod backup;
mod checkpoint;
mod outbox;
mod repair;
mod rows;
mod schema;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use self::backup::{BackupState, Backups};
pub use self::repair::RepairReport;
use self::rows::{AuditFilter, AuditRow, DeploymentRow, RevisionRow};
use self::writer::Writer;
use super::{
    AlertRecord, AuditEntry, AuditQuery, DamagedRecord, DeploymentRecord, OutboxEntry,
    RevisionRecord, StateRestore, StateStore, StatusChange, StoreHealth,
};
use crate::error::Result;
use crate::id::DeploymentId;
use crate::seal::EnvKey;
use crate::time::Timestamp;

/// A durable [`StateStore`] on one SQLite file in WAL mode.
///
/// ```no_run
/// # async fn example() -> conan_core::Result<()> {
/// use conan_core::store::{SqliteStore, StateStore};
///
/// let store = SqliteStore::open("/var/lib/conan/state.db")?;
/// for deployment in store.load_deployments().await? {
///     println!("{} is {:?}", deployment.name, deployment.status);
/// }
/// # Ok(())
/// # }
/// ```
pub struct SqliteStore {
    writer: Writer,
    path: Option<PathBuf>,
    /// Rows skipped because they could not be decoded (see [`StateStore::health`]).
    damaged: Mutex<Vec<DamagedRecord>>,
    /// What happened at open when the file was damaged.
    restore: Option<StateRestore>,
    /// Shared with the writer thread, which schedules backups.
    backups: Option<Arc<Mutex<BackupState>>>,
    /// Seals env values at rest; `None` in memory.
    key: Option<Arc<EnvKey>>,
}

impl SqliteStore {
    /// Opens the store in the file at `path`, creating the file (mode 0600) and the schema
    /// if missing (the directory must exist).
    ///
    /// The file is checked first (`PRAGMA quick_check`). A damaged file (or a missing or
    /// empty one while its backup `PATH.bak` exists) is moved aside and the backup restored
    /// in its place, or, without a backup, the store starts empty; [`StateStore::health`]
    /// then says so (and an error is logged). After a good open, and then regularly, the
    /// store backs itself up to `PATH.bak`. To start afresh on purpose, remove both files.
    ///
    /// This does blocking file IO; call it at startup, or from `spawn_blocking` inside a
    /// running async task that must not stall.
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) when the file cannot be opened or moved aside,
    /// was written by a newer schema version, or stays locked by another process longer
    /// than the busy timeout (transient).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let key = EnvKey::load_or_create(path.with_extension("key"))?;
        Self::open_with_key(path, key)
    }

    /// [`open`](Self::open), sealing env values with `key` (see [`crate::seal`]) instead
    /// of the key file beside the database.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_key(path: impl AsRef<Path>, key: EnvKey) -> Result<Self> {
        let path = path.as_ref();
        let (conn, restore) = backup::open_checked(path)?;
        tracing::debug!(path = %path.display(), "sqlite store: opened");
        let backups = Backups::new(path.to_owned());
        let state = backups.state.clone();
        // Checkpoints run on their own thread, not in the commit a caller waits for.
        let checkpoints = checkpoint::Checkpointer::spawn(path.to_owned());
        if checkpoints.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)
                .map_err(|e| schema::sql_error("setting wal_autocheckpoint", e))?;
        }
        Ok(Self {
            writer: Writer::spawn(conn, Some(backups), checkpoints)?,
            path: Some(path.to_owned()),
            damaged: Mutex::new(Vec::new()),
            restore,
            backups: Some(state),
            key: Some(Arc::new(key)),
        })
    }

    /// A private in-memory database, gone when the store is dropped (for tests).
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) when SQLite or the writer thread cannot start.
    pub fn open_in_memory() -> Result<Self> {
        Ok(Self {
            writer: Writer::spawn(schema::open_memory()?, None, None)?,
            path: None,
            damaged: Mutex::new(Vec::new()),
            restore: None,
            backups: None,
            key: None,
        })
    }

    /// Where this store keeps its backup (`PATH.bak`), or `None` in memory.
    #[must_use]
    pub fn backup_path(&self) -> Option<PathBuf> {
        self.path.as_deref().map(backup::backup_path)
    }

    /// Writes the backup now (on the calling thread; blocking IO) and returns its path.
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) for an in-memory store, or when the copy
    /// cannot be written (the previous backup is then kept).
    pub fn backup_now(&self) -> Result<PathBuf> {
        let Some(path) = &self.path else {
            return Err(crate::Error::store(
                "sqlite: an in-memory store has no backup",
                false,
                None,
            ));
        };
        let taken = backup::take(path)?;
        if let Some(state) = &self.backups {
            let mut state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.taken_at = Some(crate::time::Timestamp::now());
            state.error = None;
        }
        Ok(taken)
    }

    /// Repairs what can be repaired in place: rows whose status, runtime or failure
    /// details cannot be decoded are kept with those parts reset (a damaged status becomes
    /// `failed`, so recovery reconciles it); a deployment whose revision's config is
    /// damaged goes back to its latest readable revision; what cannot be read at all is
    /// moved to the `quarantine` table (kept, with the error) and out of the way. Safe to
    /// run again: a second run finds nothing to do.
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) when the database cannot be written.
    pub async fn repair(&self) -> Result<RepairReport> {
        let mut report = self.writer.call(true, repair::repair).await?;
        report.restore = self.restore.clone();
        self.lock_damaged().clear();
        Ok(report)
    }

    /// What the `quarantine` table holds: rows moved out by [`repair`](Self::repair).
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) when the database cannot be read.
    pub async fn quarantined(&self) -> Result<Vec<DamagedRecord>> {
        self.writer.call(false, repair::quarantined).await
    }

    fn lock_damaged(&self) -> std::sync::MutexGuard<'_, Vec<DamagedRecord>> {
        self.damaged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps what decodes; flags (once) and skips what does not.
    fn keep_decoded<R, T>(
        &self,
        rows: Vec<R>,
        describe: impl Fn(&R) -> DamagedRecord,
        decode: impl Fn(R) -> Result<T>,
    ) -> Vec<T> {
        let mut good = Vec::with_capacity(rows.len());
        for row in rows {
            let mut damaged = describe(&row);
            match decode(row) {
                Ok(record) => good.push(record),
                Err(e) => {
                    damaged.error = e.to_string();
                    let mut list = self.lock_damaged();
                    if !list
                        .iter()
                        .any(|d| d.kind == damaged.kind && d.id == damaged.id)
                    {
                        tracing::error!(
                            kind = %damaged.kind,
                            id = %damaged.id,
                            error = %damaged.error,
                            "sqlite store: skipping a row that cannot be read (run `conan daemon repair`)"
                        );
                        list.push(damaged);
                    }
                }
            }
        }
        good
    }

    /// The file this store writes, or `None` in memory.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field(
                "path",
                &self
                    .path
                    .as_deref()
                    .map_or_else(|| ":memory:".into(), Path::to_string_lossy),
            )
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn save_deployment(&self, record: &DeploymentRecord) -> Result<()> {
        let row = DeploymentRow::encode(record)?;
        self.writer
            .call(true, move |conn| rows::save_deployment(conn, &row))
            .await
    }

    async fn delete_deployment(&self, id: &DeploymentId) -> Result<()> {
        let id = id.as_str().to_owned();
        self.writer
            .call(true, move |conn| rows::delete_deployment(conn, &id))
            .await
    }

    async fn load_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        let rows = self.writer.call(false, rows::load_deployments).await?;
        let key = self.key.as_deref();
        Ok(self.keep_decoded(rows, DeploymentRow::describe, |r| r.decode(key)))
    }

    async fn save_revision(&self, revision: &RevisionRecord) -> Result<()> {
        let row = RevisionRow::encode(revision, self.key.as_deref())?;
        self.writer
            .call(true, move |conn| rows::save_revision(conn, &row))
            .await
    }

    async fn revisions(&self, id: &DeploymentId) -> Result<Vec<RevisionRecord>> {
        let id = id.as_str().to_owned();
        let rows = self
            .writer
            .call(false, move |conn| rows::revisions(conn, &id))
            .await?;
        let key = self.key.as_deref();
        Ok(self.keep_decoded(rows, RevisionRow::describe, |r| r.decode(key)))
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let rows = entries
            .iter()
            .map(AuditRow::encode)
            .collect::<Result<Vec<_>>>()?;
        self.writer
            .call(true, move |conn| rows::append_audit(conn, &rows))
            .await
    }

    async fn save_status_change(&self, change: StatusChange<'_>) -> Result<()> {
        let key = self.key.as_deref();
        let revision = change
            .revision
            .map(|r| RevisionRow::encode(r, key))
            .transpose()?;
        let row = DeploymentRow::encode(change.record)?;
        let audit = change
            .audit
            .iter()
            .map(AuditRow::encode)
            .collect::<Result<Vec<_>>>()?;
        self.writer
            .call(true, move |conn| {
                writer::atomic(conn, |conn| {
                    if let Some(revision) = &revision {
                        rows::save_revision(conn, revision)?;
                    }
                    rows::save_deployment(conn, &row)?;
                    rows::append_audit(conn, &audit)
                })
            })
            .await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let filter = AuditFilter::new(query);
        let rows = self
            .writer
            .call(false, move |conn| rows::audit(conn, &filter))
            .await?;
        Ok(self.keep_decoded(rows, AuditRow::describe, AuditRow::decode))
    }

    async fn outbox_put(&self, entry: OutboxEntry) -> Result<u64> {
        self.writer
            .call(true, move |conn| outbox::put(conn, &entry))
            .await
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.writer
            .call(false, move |conn| outbox::pending(conn, limit))
            .await
    }

    async fn outbox_ack(&self, id: u64) -> Result<()> {
        self.writer
            .call(true, move |conn| outbox::ack(conn, id))
            .await
    }

    async fn outbox_retry(&self, id: u64, next_attempt_at: Timestamp, error: &str) -> Result<()> {
        let error = error.to_owned();
        self.writer
            .call(true, move |conn| {
                outbox::retry(conn, id, next_attempt_at, &error)
            })
            .await
    }

    async fn save_alert(&self, alert: &AlertRecord) -> Result<()> {
        let alert = alert.clone();
        self.writer
            .call(true, move |conn| outbox::save_alert(conn, &alert))
            .await
    }

    async fn delete_alert(&self, rule: &str, deployment: &DeploymentId) -> Result<()> {
        let (rule, deployment) = (rule.to_owned(), deployment.as_str().to_owned());
        self.writer
            .call(true, move |conn| {
                outbox::delete_alert(conn, &rule, &deployment)
            })
            .await
    }

    async fn alerts(&self) -> Result<Vec<AlertRecord>> {
        self.writer.call(false, outbox::alerts).await
    }

    fn health(&self) -> StoreHealth {
        let (backup_taken_at, backup_error) = self.backups.as_ref().map_or((None, None), |s| {
            let s = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (s.taken_at, s.error.clone())
        });
        StoreHealth {
            damaged: self.lock_damaged().clone(),
            restore: self.restore.clone(),
            backup: self.backup_path(),
            backup_taken_at,
            backup_error,
        }
    }
}

#[cfg(test)]
mod damage_tests;
#[cfg(test)]
mod tests;
