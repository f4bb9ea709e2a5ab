//! Rows as SQLite stores them, their conversion from and to records, and the statements.
//!
//! Encoding and decoding (JSON) happen on the caller's task; the writer thread only binds
//! and reads plain columns, so it spends its time on SQL.

use std::sync::Arc;

use rusqlite::{Connection, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::schema::sql_error;
use super::writer::atomic;
use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::id::{DeploymentId, OperationId, Revision};
use crate::seal::EnvKey;
use crate::store::{AuditEntry, AuditQuery, DamagedRecord, DeploymentRecord, RevisionRecord};
use crate::time::Timestamp;

/// A `deployments` row, plus (when loaded) the config of its revision.
pub(super) struct DeploymentRow {
    id: String,
    name: String,
    provider: String,
    status: String,
    revision: i64,
    runtime: Option<String>,
    last_failure: Option<String>,
    created_at: i64,
    updated_at: i64,
    config: Option<String>,
}

/// A `revisions` row.
pub(super) struct RevisionRow {
    deployment: String,
    revision: i64,
    config: String,
    cause: String,
    source_revision: Option<i64>,
    state: String,
    created_at: i64,
}

/// An `audit` row (`seq` is 0 before insertion).
pub(super) struct AuditRow {
    seq: i64,
    at: i64,
    deployment: String,
    operation: Option<i64>,
    action: String,
}

pub(super) fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| {
        Error::store(
            format!("sqlite: encoding {what} as JSON"),
            false,
            Some(Box::new(e)),
        )
    })
}

pub(super) fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        Error::store(
            format!("sqlite: stored {what} is not valid: {e}"),
            false,
            Some(Box::new(e)),
        )
    })
}

/// A config as stored: its env values sealed with `key` (in the clear without one).
fn config_to_json(config: &DeploymentConfig, key: Option<&EnvKey>) -> Result<String> {
    match key {
        Some(key) => to_json("config", &key.seal_config(config)?),
        None => to_json("config", config),
    }
}

/// A stored config: sealed env values are opened with `key`.
fn config_from_json(text: &str, key: Option<&EnvKey>) -> Result<DeploymentConfig> {
    let mut value: serde_json::Value = from_json("config", text)?;
    if let Some(key) = key {
        key.open_config_value(&mut value)?;
    }
    serde_json::from_value(value).map_err(|e| {
        Error::store(
            format!("sqlite: stored config is not valid: {e}"),
            false,
            Some(Box::new(e)),
        )
    })
}

fn to_int(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::store(
            format!("sqlite: {what} {value} is too large to store"),
            false,
            None,
        )
    })
}

fn from_int(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| {
        Error::store(
            format!("sqlite: stored {what} {value} is negative"),
            false,
            None,
        )
    })
}

/// Stores a unit enum that serializes as a string (like `OperationKind`) as that bare string.
fn to_tag<T: Serialize>(what: &str, value: &T) -> Result<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(Error::store(
            format!("sqlite: encoding {what}"),
            false,
            Some(Box::new(e)),
        )),
    }
}

fn from_tag<T: DeserializeOwned>(what: &str, text: String) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(text)).map_err(|e| {
        Error::store(
            format!("sqlite: stored {what} is not valid: {e}"),
            false,
            Some(Box::new(e)),
        )
    })
}

impl DeploymentRow {
    pub(super) fn encode(record: &DeploymentRecord) -> Result<Self> {
        Ok(Self {
            id: record.id.as_str().to_owned(),
            name: record.name.to_string(),
            provider: record.provider.to_string(),
            status: to_json("status", &record.status)?,
            revision: to_int("revision", record.revision.0)?,
            runtime: record
                .runtime
                .as_ref()
                .map(|r| to_json("runtime", r))
                .transpose()?,
            last_failure: record
                .last_failure
                .as_ref()
                .map(|f| to_json("last_failure", f))
                .transpose()?,
            created_at: record.created_at.as_unix_micros(),
            updated_at: record.updated_at.as_unix_micros(),
            config: None,
        })
    }

    /// Names the row in a damage report (the error is filled in by the caller).
    pub(super) fn describe(&self) -> DamagedRecord {
        DamagedRecord::new("deployment", &self.id, "").with_name(&self.name)
    }

    pub(super) fn decode(self, key: Option<&EnvKey>) -> Result<DeploymentRecord> {
        let Some(config) = self.config else {
            return Err(Error::store(
                format!(
                    "sqlite: deployment {} is at revision {} but that revision is not stored (save the revision before the deployment)",
                    self.id, self.revision
                ),
                false,
                None,
            ));
        };
        Ok(DeploymentRecord {
            status: from_json("status", &self.status)?,
            revision: Revision(from_int("revision", self.revision)?),
            config: Arc::new(config_from_json(&config, key)?),
            runtime: self
                .runtime
                .as_deref()
                .map(|r| from_json("runtime", r))
                .transpose()?,
            last_failure: self
                .last_failure
                .as_deref()
                .map(|f| from_json("last_failure", f))
                .transpose()?,
            created_at: Timestamp::from_unix_micros(self.created_at),
            updated_at: Timestamp::from_unix_micros(self.updated_at),
            id: DeploymentId::new(self.id),
            name: self.name.into(),
            provider: self.provider.into(),
        })
    }

    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            provider: row.get(2)?,
            status: row.get(3)?,
            revision: row.get(4)?,
            runtime: row.get(5)?,
            last_failure: row.get(6)?,
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
            config: row.get(9)?,
        })
    }
}

impl RevisionRow {
    pub(super) fn encode(record: &RevisionRecord, key: Option<&EnvKey>) -> Result<Self> {
        Ok(Self {
            deployment: record.deployment.as_str().to_owned(),
            revision: to_int("revision", record.revision.0)?,
            config: config_to_json(&record.config, key)?,
            cause: to_tag("cause", &record.cause)?,
            source_revision: record
                .source_revision
                .map(|r| to_int("source_revision", r.0))
                .transpose()?,
            state: to_json("revision state", &record.state)?,
            created_at: record.created_at.as_unix_micros(),
        })
    }

    /// Names the row in a damage report.
    pub(super) fn describe(&self) -> DamagedRecord {
        DamagedRecord::new(
            "revision",
            format!("{}@{}", self.deployment, self.revision),
            "",
        )
    }

    pub(super) fn decode(self, key: Option<&EnvKey>) -> Result<RevisionRecord> {
        Ok(RevisionRecord {
            revision: Revision(from_int("revision", self.revision)?),
            config: Arc::new(config_from_json(&self.config, key)?),
            cause: from_tag("cause", self.cause)?,
            source_revision: self
                .source_revision
                .map(|r| from_int("source_revision", r).map(Revision))
                .transpose()?,
            state: from_json("revision state", &self.state)?,
            created_at: Timestamp::from_unix_micros(self.created_at),
            deployment: DeploymentId::new(self.deployment),
        })
    }

    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            deployment: row.get(0)?,
            revision: row.get(1)?,
            config: row.get(2)?,
            cause: row.get(3)?,
            source_revision: row.get(4)?,
            state: row.get(5)?,
            created_at: row.get(6)?,
        })
    }
}

impl AuditRow {
    pub(super) fn encode(entry: &AuditEntry) -> Result<Self> {
        Ok(Self {
            seq: 0,
            at: entry.at.as_unix_micros(),
            deployment: entry.deployment.as_str().to_owned(),
            operation: entry
                .operation
                .map(|o| to_int("operation id", o.0))
                .transpose()?,
            action: to_json("audit action", &entry.action)?,
        })
    }

    /// Names the row in a damage report.
    pub(super) fn describe(&self) -> DamagedRecord {
        DamagedRecord::new("audit", self.seq.to_string(), "")
    }

    pub(super) fn decode(self) -> Result<AuditEntry> {
        Ok(AuditEntry {
            seq: from_int("audit seq", self.seq)?,
            at: Timestamp::from_unix_micros(self.at),
            deployment: DeploymentId::new(self.deployment),
            operation: self
                .operation
                .map(|o| from_int("operation id", o).map(OperationId))
                .transpose()?,
            action: from_json("audit action", &self.action)?,
        })
    }

    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: row.get(0)?,
            at: row.get(1)?,
            deployment: row.get(2)?,
            operation: row.get(3)?,
            action: row.get(4)?,
        })
    }
}

/// [`AuditQuery`] in SQL terms.
pub(super) struct AuditFilter {
    deployment: Option<String>,
    after_seq: i64,
    limit: i64,
    newest: bool,
}

impl AuditFilter {
    pub(super) fn new(query: &AuditQuery) -> Self {
        Self {
            deployment: query.deployment.as_ref().map(|d| d.as_str().to_owned()),
            after_seq: query
                .after_seq
                .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
            // A negative LIMIT means no limit in SQLite.
            limit: query
                .limit
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            newest: query.newest,
        }
    }
}

// The statements, run on the writer thread.

pub(super) fn save_deployment(conn: &Connection, row: &DeploymentRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO deployments (id, name, provider, status, revision, runtime, last_failure, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, provider = excluded.provider,
             status = excluded.status, revision = excluded.revision, runtime = excluded.runtime,
             last_failure = excluded.last_failure, created_at = excluded.created_at,
             updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            row.id,
            row.name,
            row.provider,
            row.status,
            row.revision,
            row.runtime,
            row.last_failure,
            row.created_at,
            row.updated_at
        ])
    })
    .map(drop)
    .map_err(|e| sql_error("saving a deployment", e))
}

pub(super) fn delete_deployment(conn: &Connection, id: &str) -> Result<()> {
    atomic(conn, |conn| {
        conn.prepare_cached("DELETE FROM revisions WHERE deployment = ?1")
            .and_then(|mut stmt| stmt.execute([id]))
            .and_then(|_| conn.prepare_cached("DELETE FROM deployments WHERE id = ?1"))
            .and_then(|mut stmt| stmt.execute([id]))
            .map(drop)
            .map_err(|e| sql_error("deleting a deployment", e))
    })
}

pub(super) fn load_deployments(conn: &Connection) -> Result<Vec<DeploymentRow>> {
    conn.prepare_cached(
        "SELECT d.id, d.name, d.provider, d.status, d.revision, d.runtime, d.last_failure,
                d.created_at, d.updated_at, r.config
         FROM deployments d
         LEFT JOIN revisions r ON r.deployment = d.id AND r.revision = d.revision
         ORDER BY d.created_at, d.id",
    )
    .and_then(|mut stmt| stmt.query_map([], DeploymentRow::read)?.collect())
    .map_err(|e| sql_error("loading deployments", e))
}

pub(super) fn save_revision(conn: &Connection, row: &RevisionRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO revisions (deployment, revision, config, cause, source_revision, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            row.deployment,
            row.revision,
            row.config,
            row.cause,
            row.source_revision,
            row.state,
            row.created_at
        ])
    })
    .map(drop)
    .map_err(|e| sql_error("saving a revision", e))
}

pub(super) fn revisions(conn: &Connection, deployment: &str) -> Result<Vec<RevisionRow>> {
    conn.prepare_cached(
        "SELECT deployment, revision, config, cause, source_revision, state, created_at
         FROM revisions WHERE deployment = ?1 ORDER BY revision",
    )
    .and_then(|mut stmt| stmt.query_map([deployment], RevisionRow::read)?.collect())
    .map_err(|e| sql_error("loading revisions", e))
}

pub(super) fn append_audit(conn: &Connection, rows: &[AuditRow]) -> Result<()> {
    let insert = |conn: &Connection| {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO audit (at, deployment, operation, action) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(|e| sql_error("appending to the audit log", e))?;
        for row in rows {
            stmt.execute(params![row.at, row.deployment, row.operation, row.action])
                .map_err(|e| sql_error("appending to the audit log", e))?;
        }
        Ok(())
    };
    match rows.len() {
        0 => Ok(()),
        1 => insert(conn),
        _ => atomic(conn, insert),
    }
}

pub(super) fn audit(conn: &Connection, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
    const COLUMNS: &str = "SELECT seq, at, deployment, operation, action FROM audit";
    // The newest N are read newest first and turned around below.
    let order = if filter.newest { "DESC" } else { "ASC" };
    let rows: rusqlite::Result<Vec<AuditRow>> = match &filter.deployment {
        None => conn
            .prepare_cached(&format!(
                "{COLUMNS} WHERE seq > ?1 ORDER BY seq {order} LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![filter.after_seq, filter.limit], AuditRow::read)?
                    .collect()
            }),
        Some(deployment) => conn
            .prepare_cached(&format!(
                "{COLUMNS} WHERE deployment = ?3 AND seq > ?1 ORDER BY seq {order} LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![filter.after_seq, filter.limit, deployment],
                    AuditRow::read,
                )?
                .collect()
            }),
    };
    let mut rows = rows.map_err(|e| sql_error("reading the audit log", e))?;
    if filter.newest {
        rows.reverse();
    }
    Ok(rows)
}
