//! Integrity at open, the backup of the last good state, and restoring from it.
//!
//! - **At open** the file gets `PRAGMA quick_check`. A file that fails it, is not a
//!   database, or is missing or empty while a backup exists, is moved aside (kept as
//!   `NAME.damaged-UNIXTIME`, with its `-wal` and `-shm`), and the backup is copied in its
//!   place. Without a usable backup the store starts empty. Either way
//!   [`StoreHealth::restore`](crate::store::StoreHealth::restore) says what happened, and
//!   an error is logged: a damaged state never turns silently into an empty one.
//! - **The backup** (`NAME.bak`) is a consistent copy made with `VACUUM INTO` on a
//!   connection of its own, on a thread of its own (in WAL mode it never blocks the writer):
//!   right after a successful open, then after [`BACKUP_EVERY_WRITES`] writes or
//!   [`BACKUP_INTERVAL`] after the first write since the last backup, and when the store
//!   closes with writes since the last one. So a crash loses at most the last 30 s of
//!   changes from the backup (the database itself loses none). It is written to a
//!   temporary file and renamed, so a failed backup (a full disk) never replaces a good one.
//! - Every state file (the database, its `-wal` and `-shm`, backups) is created `0600`:
//!   the revisions hold env values.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::schema;
use crate::error::{Error, Result};
use crate::store::StateRestore;
use crate::time::Timestamp;

/// A backup is taken after this many committed write calls...
pub(super) const BACKUP_EVERY_WRITES: u64 = 200;
/// ...or this long after the first write since the last backup, whichever comes first
/// (and when the store closes after writes).
pub(super) const BACKUP_INTERVAL: Duration = Duration::from_secs(30);

/// `conan.db` → `conan.db.bak`.
pub(super) fn backup_path(db: &Path) -> PathBuf {
    with_suffix(db, ".bak")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The files SQLite keeps beside the database in WAL mode.
fn sidecars(db: &Path) -> [PathBuf; 2] {
    [with_suffix(db, "-wal"), with_suffix(db, "-shm")]
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Creates `path` empty with mode 0600 if it does not exist.
fn create_private(path: &Path) -> io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the database and its sidecars (those that exist) 0600. SQLite creates the
/// sidecars with the database's mode, so a private database keeps them private too; this
/// also fixes files an older version left readable.
pub(super) fn make_private(db: &Path) -> io::Result<()> {
    create_private(db)?;
    for path in std::iter::once(db.to_owned()).chain(sidecars(db)) {
        match fs::set_permissions(&path, fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn io_error(what: String, e: io::Error) -> Error {
    Error::store(format!("sqlite: {what}: {e}"), false, Some(Box::new(e)))
}

/// Why an open failed: the file is damaged (restore it), or something else (report it).
enum OpenError {
    Damaged(String),
    Other(Error),
}

/// Whether a rusqlite error says the file's content is damaged.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Runs `PRAGMA quick_check`; `Err` with SQLite's first findings when the file is damaged.
pub(super) fn quick_check(conn: &Connection) -> std::result::Result<(), String> {
    let findings: rusqlite::Result<Vec<String>> = conn
        .prepare("PRAGMA quick_check(3)")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect());
    match findings {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
        Ok(rows) => Err(format!("integrity check failed: {}", rows.join("; "))),
        Err(e) => Err(e.to_string()),
    }
}

fn open_and_check(path: &Path) -> std::result::Result<Connection, OpenError> {
    make_private(path)
        .map_err(|e| OpenError::Other(io_error(format!("creating {}", path.display()), e)))?;
    let conn = Connection::open(path).map_err(|e| {
        if is_damage(&e) {
            OpenError::Damaged(e.to_string())
        } else {
            OpenError::Other(schema::sql_error(&format!("opening {}", path.display()), e))
        }
    })?;
    // The check comes first: preparing a damaged file can fail in confusing ways.
    quick_check(&conn).map_err(OpenError::Damaged)?;
    match schema::prepare(conn, true) {
        Ok(conn) => Ok(conn),
        Err(e) => {
            match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<rusqlite::Error>()) {
                Some(sql) if is_damage(sql) => Err(OpenError::Damaged(sql.to_string())),
                _ => Err(OpenError::Other(e)),
            }
        }
    }
}

/// Opens the database at `path`, checking it, and restoring it from its backup when it is
/// damaged (see the module docs). Returns the connection and, after a restore, what
/// happened.
pub(super) fn open_checked(path: &Path) -> Result<(Connection, Option<StateRestore>)> {
    let backup = backup_path(path);
    let had_state = file_len(path) > 0 || file_len(&sidecars(path)[0]) > 0;
    if !had_state && file_len(&backup) > 0 {
        return restore(
            path,
            &backup,
            "the database file is missing or empty".to_owned(),
        );
    }
    match open_and_check(path) {
        Ok(conn) => Ok((conn, None)),
        Err(OpenError::Damaged(problem)) => restore(path, &backup, problem),
        Err(OpenError::Other(e)) => Err(e),
    }
}

/// Moves `path` and its sidecars aside; returns where the database went, if it existed.
fn move_aside(path: &Path) -> Result<Option<PathBuf>> {
    let stamp = Timestamp::now().as_unix_micros() / 1_000_000;
    let aside = with_suffix(path, &format!(".damaged-{stamp}"));
    let mut moved = None;
    for (from, to) in std::iter::once((path.to_owned(), aside.clone())).chain(
        sidecars(path)
            .into_iter()
            .zip(sidecars(&aside))
            .collect::<Vec<_>>(),
    ) {
        match fs::rename(&from, &to) {
            Ok(()) if from == path => moved = Some(to),
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io_error(
                    format!("moving the damaged {} aside", from.display()),
                    e,
                ));
            }
        }
    }
    Ok(moved)
}

fn restore(
    path: &Path,
    backup: &Path,
    problem: String,
) -> Result<(Connection, Option<StateRestore>)> {
    let mut notice = StateRestore::new(problem);
    notice.damaged_copy = move_aside(path)?;
    if file_len(backup) > 0 {
        let copied = copy_private(backup, path);
        match copied.map(|()| open_and_check(path)) {
            Ok(Ok(conn)) => {
                notice.restored_from = Some(backup.to_owned());
                notice.backup_taken_at = modified(backup);
                tracing::error!(
                    path = %path.display(),
                    "sqlite store: {}", notice.summary()
                );
                return Ok((conn, Some(notice)));
            }
            Ok(Err(OpenError::Other(e))) => return Err(e),
            Ok(Err(OpenError::Damaged(also))) => {
                notice.problem = format!("{}; the backup is damaged too: {also}", notice.problem);
                let _ = fs::remove_file(path);
            }
            Err(e) => {
                notice.problem = format!("{}; the backup cannot be copied: {e}", notice.problem);
            }
        }
    }
    let conn = match open_and_check(path) {
        Ok(conn) => conn,
        Err(OpenError::Other(e)) => return Err(e),
        Err(OpenError::Damaged(e)) => {
            return Err(Error::store(
                format!(
                    "sqlite: a new database at {} is damaged at once: {e}",
                    path.display()
                ),
                false,
                None,
            ));
        }
    };
    tracing::error!(path = %path.display(), "sqlite store: {}", notice.summary());
    Ok((conn, Some(notice)))
}

fn modified(path: &Path) -> Option<Timestamp> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(Timestamp::from_system_time)
}

/// Copies `from` to `to` (mode 0600) through a temporary file and a rename.
fn copy_private(from: &Path, to: &Path) -> io::Result<()> {
    let tmp = with_suffix(to, ".tmp");
    let _ = fs::remove_file(&tmp);
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let copied = io::copy(&mut fs::File::open(from)?, &mut out).and_then(|_| out.sync_all());
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, to)
}

/// One backup at a time in this process (the writer's scheduled ones and
/// [`SqliteStore::backup_now`](super::SqliteStore::backup_now)).
static TAKING: Mutex<()> = Mutex::new(());

/// Writes a consistent copy of the database at `db` to its backup path.
pub(super) fn take(db: &Path) -> Result<PathBuf> {
    let _one = TAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let backup = backup_path(db);
    let tmp = with_suffix(&backup, &format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        // VACUUM INTO wants a new or empty file; making it first gives it mode 0600.
        create_private(&tmp).map_err(|e| io_error(format!("creating {}", tmp.display()), e))?;
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| schema::sql_error("opening the database for a backup", e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| schema::sql_error("setting busy_timeout", e))?;
        let target = tmp.to_string_lossy().into_owned();
        conn.execute("VACUUM INTO ?1", [&target])
            .map_err(|e| schema::sql_error("writing the backup", e))?;
        drop(conn);
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(format!("syncing {}", tmp.display()), e))?;
        fs::rename(&tmp, &backup).map_err(|e| io_error(format!("renaming {}", tmp.display()), e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| backup)
}

/// What the writer thread and [`SqliteStore::health`](super::SqliteStore) share about
/// backups.
#[derive(Debug, Default)]
pub(super) struct BackupState {
    pub(super) taken_at: Option<Timestamp>,
    pub(super) error: Option<String>,
}

/// Decides when to back up, on the writer thread, and runs backups on a thread of their
/// own (one at a time).
pub(super) struct Backups {
    db: PathBuf,
    pub(super) state: Arc<Mutex<BackupState>>,
    running: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    writes: u64,
    since: Option<Instant>,
}

impl Backups {
    pub(super) fn new(db: PathBuf) -> Self {
        let state = BackupState {
            taken_at: modified(&backup_path(&db)),
            error: None,
        };
        Self {
            db,
            state: Arc::new(Mutex::new(state)),
            running: Arc::new(AtomicBool::new(false)),
            thread: None,
            writes: 0,
            since: None,
        }
    }

    /// Counts `writes` committed write calls and starts a backup when one is due.
    pub(super) fn committed(&mut self, writes: u64) {
        if writes > 0 {
            self.writes += writes;
            self.since.get_or_insert_with(Instant::now);
        }
        let due = self.writes >= BACKUP_EVERY_WRITES
            || self.since.is_some_and(|t| t.elapsed() >= BACKUP_INTERVAL);
        if due {
            self.start();
        }
    }

    /// How long the writer may sleep before [`committed`](Self::committed) should be
    /// called again to start a due backup.
    pub(super) fn next_due(&self) -> Option<Duration> {
        self.since
            .map(|t| BACKUP_INTERVAL.saturating_sub(t.elapsed()))
    }

    /// Starts a backup now unless one is running.
    pub(super) fn start(&mut self) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(done) = self.thread.take() {
            let _ = done.join();
        }
        self.writes = 0;
        self.since = None;
        let (db, state, running) = (self.db.clone(), self.state.clone(), self.running.clone());
        let spawned = std::thread::Builder::new()
            .name("conan-sqlite-backup".into())
            .spawn(move || {
                let result = take(&db);
                let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match result {
                    Ok(path) => {
                        tracing::debug!(backup = %path.display(), "sqlite store: backup written");
                        state.taken_at = Some(Timestamp::now());
                        state.error = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sqlite store: backup failed; the previous one is kept");
                        state.error = Some(e.to_string());
                    }
                }
                running.store(false, Ordering::Release);
            });
        match spawned {
            Ok(thread) => self.thread = Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "sqlite store: cannot start a backup thread");
                self.running.store(false, Ordering::Release);
            }
        }
    }

    /// Waits for a running backup and, if anything was written since, takes a last one
    /// (when the store closes).
    pub(super) fn finish(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if self.since.is_some() {
            self.start();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
