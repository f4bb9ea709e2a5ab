//! Opening a connection: pragmas, the schema and its version, and error mapping.

use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::{Error, Result};

/// The schema this code reads and writes, kept in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another connection's lock before failing with a transient
/// error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of WAL kept after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Enough for every statement the store prepares, so none is ever evicted.
const STATEMENT_CACHE: usize = 32;

/// Version 1. No foreign keys: a revision may be saved before its deployment (the manager
/// records the revision first), and `delete_deployment` removes revisions itself.
///
/// The audit log has no index on `deployment` on purpose: appends for many deployments would
/// land on random pages of such an index, which halved write throughput in measurements
/// (every group commit rewrote hundreds of index pages). Reading one deployment's entries
/// scans the log in `seq` order and stops at the query's `limit`. Likewise `deployments` is
/// sorted by creation time when loaded (rare) rather than indexed (on every save).
/// `revisions` is an ordinary rowid table because its rows (a whole config) are large, which
/// `WITHOUT ROWID` handles poorly; `deployments` rows are small and keyed by id, so they live
/// in the primary key's B-tree.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE deployments (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    provider     TEXT NOT NULL,
    status       TEXT NOT NULL,    -- JSON DeploymentStatus
    revision     INTEGER NOT NULL,
    runtime      TEXT,             -- JSON RuntimeInfo
    last_failure TEXT,             -- JSON FailureReport
    created_at   INTEGER NOT NULL, -- unix micros
    updated_at   INTEGER NOT NULL  -- unix micros
) WITHOUT ROWID;

CREATE TABLE revisions (
    deployment      TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    config          TEXT NOT NULL, -- JSON DeploymentConfig (with env values)
    cause           TEXT NOT NULL, -- OperationKind, e.g. 'deploy'
    source_revision INTEGER,
    state           TEXT NOT NULL, -- JSON RevisionState
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (deployment, revision)
);

CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,   -- unix micros
    deployment TEXT NOT NULL,
    operation  INTEGER,
    action     TEXT NOT NULL       -- JSON AuditAction
);
";

/// Version 2 adds the notification outbox and the firing alerts (see
/// [`Outbox`](crate::store::Outbox)). The outbox is read oldest first by its `id`, so it
/// needs no other index; both tables stay small (what is undelivered, what is firing).
const SCHEMA_V2: &str = "
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    destination     TEXT NOT NULL,    -- a name, never a URL
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL, -- unix micros
    created_at      INTEGER NOT NULL, -- unix micros
    last_error      TEXT
);

CREATE TABLE alerts (
    rule       TEXT NOT NULL,
    deployment TEXT NOT NULL,
    name       TEXT NOT NULL,
    since      INTEGER NOT NULL,      -- unix micros
    value      REAL NOT NULL,
    PRIMARY KEY (rule, deployment)
) WITHOUT ROWID;
";

/// Maps a rusqlite error: `SQLITE_BUSY` and `SQLITE_LOCKED` (another connection holds the
/// lock longer than the busy timeout) and `SQLITE_FULL` are transient, everything else is
/// not.
pub(super) fn sql_error(context: &str, e: rusqlite::Error) -> Error {
    let transient = is_transient(&e);
    Error::store(
        format!("sqlite: {context}: {e}"),
        transient,
        Some(Box::new(e)),
    )
}

/// Whether a rusqlite error is worth retrying: another connection's lock, or a full disk
/// (space comes back; the manager re-persists until it does).
pub(super) fn is_transient(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull)
    )
}

/// Opens a private in-memory database.
pub(super) fn open_memory() -> Result<Connection> {
    let conn =
        Connection::open_in_memory().map_err(|e| sql_error("opening an in-memory database", e))?;
    prepare(conn, false)
}

pub(super) fn prepare(mut conn: Connection, wal: bool) -> Result<Connection> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error("setting busy_timeout", e))?;
    if wal {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| sql_error("switching to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "sqlite store: WAL mode unavailable, continuing in this journal mode");
        }
    }
    // In WAL mode NORMAL still survives a crash of the process; only a power loss or OS crash
    // may lose the last commits before the next checkpoint.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| sql_error("setting synchronous=NORMAL", e))?;
    // After a burst, give the disk back instead of keeping the WAL at its largest size.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(|e| sql_error("setting journal_size_limit", e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    migrate(&mut conn)?;
    Ok(conn)
}

/// Creates the schema in an empty database, upgrades an older one step by step (each step
/// only adds tables, so an older Conan reading an upgraded file is refused by the version
/// check rather than confused), accepts the current one, refuses a newer one.
/// Runs under the write lock so two processes opening a new file at once create it once.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error("locking the database to check its schema", e))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| sql_error("reading the schema version", e))?;
    match version {
        0..SCHEMA_VERSION => {
            if version < 1 {
                tx.execute_batch(SCHEMA_V1)
                    .map_err(|e| sql_error("creating the schema", e))?;
            }
            tx.execute_batch(SCHEMA_V2)
                .map_err(|e| sql_error("creating the outbox and alert tables", e))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| sql_error("recording the schema version", e))?;
            tracing::debug!(
                from = version,
                to = SCHEMA_VERSION,
                "sqlite store: created or upgraded the schema"
            );
        }
        SCHEMA_VERSION => {}
        newer => {
            return Err(Error::store(
                format!(
                    "sqlite: the database has schema version {newer}, this version of Conan knows only up to \
                     {SCHEMA_VERSION}; upgrade Conan or use another state file"
                ),
                false,
                None,
            ));
        }
    }
    tx.commit()
        .map_err(|e| sql_error("committing the schema", e))
}
