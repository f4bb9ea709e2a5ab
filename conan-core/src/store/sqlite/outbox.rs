//! The `outbox` and `alerts` tables (schema version 2), run on the writer thread.

use rusqlite::{Connection, Row, params};

use super::schema::sql_error;
use crate::error::{Error, Result};
use crate::id::DeploymentId;
use crate::store::{AlertRecord, OutboxEntry};
use crate::time::Timestamp;

fn to_int(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::store(
            format!("sqlite: {what} {value} is too large to store"),
            false,
            None,
        )
    })
}

fn read_entry(row: &Row<'_>) -> rusqlite::Result<OutboxEntry> {
    let id: i64 = row.get(0)?;
    let attempts: i64 = row.get(3)?;
    let mut entry = OutboxEntry::new(row.get::<_, String>(1)?, row.get::<_, String>(2)?);
    entry.id = u64::try_from(id).unwrap_or(0);
    entry.attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
    entry.next_attempt_at = Timestamp::from_unix_micros(row.get(4)?);
    entry.created_at = Timestamp::from_unix_micros(row.get(5)?);
    entry.last_error = row.get(6)?;
    Ok(entry)
}

pub(super) fn put(conn: &Connection, entry: &OutboxEntry) -> Result<u64> {
    conn.prepare_cached(
        "INSERT INTO outbox (destination, payload, attempts, next_attempt_at, created_at, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            entry.destination,
            entry.payload,
            i64::from(entry.attempts),
            entry.next_attempt_at.as_unix_micros(),
            entry.created_at.as_unix_micros(),
            entry.last_error,
        ])
    })
    .map_err(|e| sql_error("adding to the outbox", e))?;
    Ok(u64::try_from(conn.last_insert_rowid()).unwrap_or(0))
}

pub(super) fn pending(conn: &Connection, limit: usize) -> Result<Vec<OutboxEntry>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "SELECT id, destination, payload, attempts, next_attempt_at, created_at, last_error
         FROM outbox ORDER BY id LIMIT ?1",
    )
    .and_then(|mut stmt| stmt.query_map([limit], read_entry)?.collect())
    .map_err(|e| sql_error("reading the outbox", e))
}

pub(super) fn ack(conn: &Connection, id: u64) -> Result<()> {
    let id = to_int("outbox id", id)?;
    conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute([id]))
        .map(drop)
        .map_err(|e| sql_error("deleting from the outbox", e))
}

pub(super) fn retry(conn: &Connection, id: u64, next: Timestamp, error: &str) -> Result<()> {
    let id = to_int("outbox id", id)?;
    conn.prepare_cached(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
         WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![id, next.as_unix_micros(), error]))
    .map(drop)
    .map_err(|e| sql_error("recording a failed delivery", e))
}

pub(super) fn save_alert(conn: &Connection, alert: &AlertRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO alerts (rule, deployment, name, since, value)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            alert.rule,
            alert.deployment.as_str(),
            alert.name,
            alert.since.as_unix_micros(),
            alert.value,
        ])
    })
    .map(drop)
    .map_err(|e| sql_error("saving an alert", e))
}

pub(super) fn delete_alert(conn: &Connection, rule: &str, deployment: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM alerts WHERE rule = ?1 AND deployment = ?2")
        .and_then(|mut stmt| stmt.execute([rule, deployment]))
        .map(drop)
        .map_err(|e| sql_error("deleting an alert", e))
}

pub(super) fn alerts(conn: &Connection) -> Result<Vec<AlertRecord>> {
    conn.prepare_cached(
        "SELECT rule, deployment, name, since, value FROM alerts ORDER BY since, rule, deployment",
    )
    .and_then(|mut stmt| {
        stmt.query_map([], |row| {
            Ok(AlertRecord::new(
                row.get::<_, String>(0)?,
                DeploymentId::new(row.get::<_, String>(1)?),
                row.get::<_, String>(2)?,
                Timestamp::from_unix_micros(row.get(3)?),
                row.get(4)?,
            ))
        })?
        .collect()
    })
    .map_err(|e| sql_error("reading the alerts", e))
}
