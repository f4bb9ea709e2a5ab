//! [`SqliteStore::repair`](super::SqliteStore::repair): salvage what can be read, move what
//! cannot into the `quarantine` table.

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::rows::{from_json, to_json};
use super::schema::sql_error;
use crate::config::DeploymentConfig;
use crate::error::Result;
use crate::event::OperationKind;
use crate::failure::FailureReport;
use crate::provider::RuntimeInfo;
use crate::status::DeploymentStatus;
use crate::store::{AuditAction, DamagedRecord, RevisionState, StateRestore};
use crate::time::Timestamp;

/// What [`SqliteStore::repair`](super::SqliteStore::repair) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RepairReport {
    /// Rows kept with their damaged parts reset; `error` says what was wrong and what was
    /// done.
    pub salvaged: Vec<DamagedRecord>,
    /// Rows moved to the `quarantine` table because nothing usable could be read.
    pub quarantined: Vec<DamagedRecord>,
    /// When the store was restored from its backup at open, what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<StateRestore>,
}

impl RepairReport {
    /// Whether the repair found nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.salvaged.is_empty() && self.quarantined.is_empty()
    }
}

/// Where rows that cannot be read are kept. Created on first use (older versions ignore
/// it), so it needs no schema version of its own.
const QUARANTINE: &str = "
CREATE TABLE IF NOT EXISTS quarantine (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL, -- unix micros
    kind   TEXT NOT NULL,    -- 'deployment', 'revision', 'audit'
    key    TEXT NOT NULL,
    name   TEXT,
    error  TEXT NOT NULL,
    row    TEXT NOT NULL     -- JSON object of the row's columns, as they were
)";

fn decodes<T: serde::de::DeserializeOwned>(
    what: &str,
    text: &str,
) -> std::result::Result<(), String> {
    from_json::<T>(what, text)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether a stored config decodes, sealed env values aside (opening them needs the key,
/// and a row is not damaged for want of it).
fn config_decodes(text: &str) -> std::result::Result<(), String> {
    let mut value: serde_json::Value = from_json("config", text).map_err(|e| e.to_string())?;
    crate::seal::strip_sealed(&mut value);
    serde_json::from_value::<DeploymentConfig>(value)
        .map(drop)
        .map_err(|e| format!("sqlite: stored config is not valid: {e}"))
}

fn tag_decodes<T: serde::de::DeserializeOwned>(text: &str) -> bool {
    serde_json::from_value::<T>(serde_json::Value::String(text.to_owned())).is_ok()
}

struct RawRevision {
    revision: i64,
    problem: Option<String>,
    row: serde_json::Value,
}

struct RawDeployment {
    id: String,
    name: String,
    status: String,
    revision: i64,
    runtime: Option<String>,
    last_failure: Option<String>,
    row: serde_json::Value,
}

fn read_revisions(conn: &Connection) -> rusqlite::Result<Vec<(String, RawRevision)>> {
    let mut stmt = conn.prepare(
        "SELECT deployment, revision, config, cause, source_revision, state, created_at FROM revisions",
    )?;
    stmt.query_map([], |row| {
        let deployment: String = row.get(0)?;
        let revision: i64 = row.get(1)?;
        let config: String = row.get(2)?;
        let cause: String = row.get(3)?;
        let source: Option<i64> = row.get(4)?;
        let state: String = row.get(5)?;
        let created_at: i64 = row.get(6)?;
        let problem = config_decodes(&config)
            .and_then(|()| decodes::<RevisionState>("revision state", &state))
            .and_then(|()| {
                if tag_decodes::<OperationKind>(&cause) {
                    Ok(())
                } else {
                    Err(format!("sqlite: stored cause '{cause}' is not valid"))
                }
            })
            .and_then(|()| {
                if revision < 0 {
                    Err(format!("sqlite: stored revision {revision} is negative"))
                } else {
                    Ok(())
                }
            })
            .err();
        let json = serde_json::json!({
            "deployment": deployment, "revision": revision, "config": config, "cause": cause,
            "source_revision": source, "state": state, "created_at": created_at,
        });
        Ok((
            deployment,
            RawRevision {
                revision,
                problem,
                row: json,
            },
        ))
    })?
    .collect()
}

fn read_deployments(conn: &Connection) -> rusqlite::Result<Vec<RawDeployment>> {
    let mut stmt = conn.prepare(
        "SELECT id, name, provider, status, revision, runtime, last_failure, created_at, updated_at FROM deployments",
    )?;
    stmt.query_map([], |row| {
        let d = RawDeployment {
            id: row.get(0)?,
            name: row.get(1)?,
            status: row.get(3)?,
            revision: row.get(4)?,
            runtime: row.get(5)?,
            last_failure: row.get(6)?,
            row: serde_json::Value::Null,
        };
        let provider: String = row.get(2)?;
        let (created, updated): (i64, i64) = (row.get(7)?, row.get(8)?);
        let json = serde_json::json!({
            "id": d.id, "name": d.name, "provider": provider, "status": d.status,
            "revision": d.revision, "runtime": d.runtime, "last_failure": d.last_failure,
            "created_at": created, "updated_at": updated,
        });
        Ok(RawDeployment { row: json, ..d })
    })?
    .collect()
}

fn quarantine(conn: &Connection, damaged: &DamagedRecord, row: &serde_json::Value) -> Result<()> {
    conn.execute(
        "INSERT INTO quarantine (at, kind, key, name, error, row) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            Timestamp::now().as_unix_micros(),
            damaged.kind,
            damaged.id,
            damaged.name,
            damaged.error,
            row.to_string()
        ],
    )
    .map(drop)
    .map_err(|e| sql_error("quarantining a row", e))
}

/// Runs on the writer thread, inside its transaction.
pub(super) fn repair(conn: &Connection) -> Result<RepairReport> {
    conn.execute_batch(QUARANTINE)
        .map_err(|e| sql_error("creating the quarantine table", e))?;
    let mut report = RepairReport::default();
    let sql = |what: &'static str| move |e| sql_error(what, e);

    let mut revisions: std::collections::HashMap<String, Vec<RawRevision>> = Default::default();
    for (deployment, revision) in read_revisions(conn).map_err(sql("reading revisions"))? {
        revisions.entry(deployment).or_default().push(revision);
    }
    // Unreadable revisions go first, so a deployment falls back to a readable one.
    for (deployment, revs) in &mut revisions {
        for rev in revs.iter().filter(|r| r.problem.is_some()) {
            let damaged = DamagedRecord::new(
                "revision",
                format!("{deployment}@{}", rev.revision),
                rev.problem.clone().unwrap_or_default(),
            );
            quarantine(conn, &damaged, &rev.row)?;
            conn.execute(
                "DELETE FROM revisions WHERE deployment = ?1 AND revision = ?2",
                params![deployment, rev.revision],
            )
            .map_err(sql("removing a damaged revision"))?;
            report.quarantined.push(damaged);
        }
        revs.retain(|r| r.problem.is_none());
    }

    for d in read_deployments(conn).map_err(sql("reading deployments"))? {
        let readable = revisions.get(&d.id).map(Vec::as_slice).unwrap_or_default();
        let latest = readable.iter().map(|r| r.revision).max();
        let mut fixes = Vec::new();
        let mut status = (decodes::<DeploymentStatus>("status", &d.status).is_err()).then(|| {
            fixes.push("its status could not be read; marked failed".to_owned());
            DeploymentStatus::failed(
                "the stored status was damaged and reset by `conan daemon repair`",
            )
        });
        let mut revision = d.revision;
        if !readable.iter().any(|r| r.revision == d.revision) {
            let Some(latest) = latest else {
                let damaged = DamagedRecord::new(
                    "deployment",
                    &d.id,
                    format!("no readable config: revision {} is damaged or missing, and no other revision is readable", d.revision),
                )
                .with_name(&d.name);
                quarantine(conn, &damaged, &d.row)?;
                conn.execute("DELETE FROM deployments WHERE id = ?1", [&d.id])
                    .map_err(sql("removing a damaged deployment"))?;
                report.quarantined.push(damaged);
                continue;
            };
            fixes.push(format!(
                "revision {} could not be read; back at revision {latest} (marked failed: start or update it)",
                d.revision
            ));
            revision = latest;
            status = Some(DeploymentStatus::failed(format!(
                "revision {} was damaged; `conan daemon repair` went back to revision {latest}",
                d.revision
            )));
        }
        let runtime_bad = d
            .runtime
            .as_deref()
            .is_some_and(|r| decodes::<RuntimeInfo>("runtime", r).is_err());
        if runtime_bad {
            fixes.push(
                "its runtime details could not be read; cleared (recovery finds them again)"
                    .to_owned(),
            );
        }
        let failure_bad = d
            .last_failure
            .as_deref()
            .is_some_and(|f| decodes::<FailureReport>("last_failure", f).is_err());
        if failure_bad {
            fixes.push("its last failure report could not be read; cleared".to_owned());
        }
        if fixes.is_empty() {
            continue;
        }
        let status_json = match &status {
            Some(s) => to_json("status", s)?,
            None => d.status.clone(),
        };
        conn.execute(
            "UPDATE deployments SET status = ?2, revision = ?3,
                 runtime = CASE WHEN ?4 THEN NULL ELSE runtime END,
                 last_failure = CASE WHEN ?5 THEN NULL ELSE last_failure END
             WHERE id = ?1",
            params![d.id, status_json, revision, runtime_bad, failure_bad],
        )
        .map_err(sql("salvaging a deployment"))?;
        let damaged = DamagedRecord::new("deployment", &d.id, fixes.join("; ")).with_name(&d.name);
        quarantine(conn, &damaged, &d.row)?;
        report.salvaged.push(damaged);
    }

    let bad_audit: Vec<(i64, String)> = conn
        .prepare("SELECT seq, action FROM audit")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("reading the audit log"))?
        .into_iter()
        .filter(|(_, action)| decodes::<AuditAction>("audit action", action).is_err())
        .collect();
    for (seq, action) in bad_audit {
        let damaged = DamagedRecord::new("audit", seq.to_string(), "its action could not be read");
        quarantine(
            conn,
            &damaged,
            &serde_json::json!({ "seq": seq, "action": action }),
        )?;
        conn.execute("DELETE FROM audit WHERE seq = ?1", [seq])
            .map_err(sql("removing a damaged audit entry"))?;
        report.quarantined.push(damaged);
    }
    Ok(report)
}

/// Every quarantined row, oldest first (empty when nothing was ever quarantined).
pub(super) fn quarantined(conn: &Connection) -> Result<Vec<DamagedRecord>> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'quarantine'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| sql_error("looking for the quarantine table", e))?;
    if !exists {
        return Ok(Vec::new());
    }
    conn.prepare("SELECT kind, key, name, error FROM quarantine ORDER BY id")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| {
                let mut d = DamagedRecord::new(
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(3)?,
                );
                d.name = row.get(2)?;
                Ok(d)
            })?
            .collect()
        })
        .map_err(|e| sql_error("reading the quarantine table", e))
}
