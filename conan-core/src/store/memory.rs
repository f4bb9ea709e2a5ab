//! [`MemoryStore`]: state kept in process memory.

use foldhash::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    AlertRecord, AuditEntry, AuditQuery, DeploymentRecord, OutboxEntry, RevisionRecord, StateStore,
    StatusChange,
};
use crate::error::{Error, Result};
use crate::id::DeploymentId;
use crate::time::Timestamp;

#[derive(Default)]
struct Inner {
    deployments: HashMap<DeploymentId, DeploymentRecord>,
    /// Per deployment, ordered by revision (new revisions arrive last, so inserting is a push).
    revisions: HashMap<DeploymentId, Vec<RevisionRecord>>,
    audit: AuditLog,
    /// By id, so iteration is oldest first.
    outbox: std::collections::BTreeMap<u64, OutboxEntry>,
    outbox_last_id: u64,
    alerts: Vec<AlertRecord>,
}

impl Inner {
    /// Stores `revision`; returns the state it replaces, for the caller to drop after
    /// unlocking.
    fn save_revision(&mut self, revision: RevisionRecord) -> Option<RevisionRecord> {
        let history = self
            .revisions
            .entry(revision.deployment.clone())
            .or_insert_with(|| Vec::with_capacity(2));
        match history.binary_search_by_key(&revision.revision, |r| r.revision) {
            Ok(i) => Some(std::mem::replace(&mut history[i], revision)),
            Err(i) => {
                history.insert(i, revision);
                None
            }
        }
    }
}

/// The audit log in fixed-size chunks: appending never copies the entries already logged
/// (a plain `Vec` would move the whole log every time it doubles).
#[derive(Default)]
struct AuditLog {
    chunks: Vec<Vec<AuditEntry>>,
    len: usize,
}

impl AuditLog {
    const CHUNK: usize = 4096;

    fn push(&mut self, mut entry: AuditEntry) {
        self.len += 1;
        entry.seq = self.len as u64;
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < Self::CHUNK => chunk.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(Self::CHUNK);
                chunk.push(entry);
                self.chunks.push(chunk);
            }
        }
    }

    /// Entries from the newest back to position `start` (0-based), newest first.
    fn iter_back_to(&self, start: usize) -> impl Iterator<Item = &AuditEntry> {
        self.chunks
            .iter()
            .rev()
            .flat_map(|chunk| chunk.iter().rev())
            .take(self.len.saturating_sub(start))
    }

    /// Entries from position `start` (0-based) on.
    fn iter_from(&self, start: usize) -> impl Iterator<Item = &AuditEntry> {
        let first = start / Self::CHUNK;
        let skip = start % Self::CHUNK;
        self.chunks.iter().skip(first).flatten().skip(skip)
    }
}

/// A [`StateStore`] in memory: fast, and gone with the process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::store("memory store lock poisoned", false, None))
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn save_deployment(&self, record: &DeploymentRecord) -> Result<()> {
        let record = record.clone();
        let replaced = self.lock()?.deployments.insert(record.id.clone(), record);
        drop(replaced);
        Ok(())
    }

    async fn delete_deployment(&self, id: &DeploymentId) -> Result<()> {
        let mut inner = self.lock()?;
        inner.deployments.remove(id);
        inner.revisions.remove(id);
        Ok(())
    }

    async fn load_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        let inner = self.lock()?;
        let mut all: Vec<_> = inner.deployments.values().cloned().collect();
        all.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(all)
    }

    async fn save_revision(&self, revision: &RevisionRecord) -> Result<()> {
        let revision = revision.clone();
        let replaced = self.lock()?.save_revision(revision);
        drop(replaced);
        Ok(())
    }

    async fn revisions(&self, id: &DeploymentId) -> Result<Vec<RevisionRecord>> {
        Ok(self.lock()?.revisions.get(id).cloned().unwrap_or_default())
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        let mut inner = self.lock()?;
        for entry in entries {
            inner.audit.push(entry);
        }
        Ok(())
    }

    async fn save_status_change(&self, change: StatusChange<'_>) -> Result<()> {
        // Clone before locking and drop what was replaced after unlocking: the lock is
        // held only for the map and log updates themselves.
        let record = change.record.clone();
        let revision = change.revision.cloned();
        let replaced = {
            let mut inner = self.lock()?;
            let old_revision = revision.and_then(|r| inner.save_revision(r));
            let old_record = inner.deployments.insert(record.id.clone(), record);
            for entry in change.audit {
                inner.audit.push(entry.clone());
            }
            (old_record, old_revision)
        };
        drop(replaced);
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let inner = self.lock()?;
        let start = query.after_seq.map_or(0, |s| {
            usize::try_from(s)
                .unwrap_or(usize::MAX)
                .min(inner.audit.len)
        });
        let wanted = |e: &&AuditEntry| query.deployment.as_ref().is_none_or(|d| &e.deployment == d);
        let limit = query.limit.unwrap_or(usize::MAX);
        Ok(if query.newest {
            let mut newest: Vec<AuditEntry> = inner
                .audit
                .iter_back_to(start)
                .filter(wanted)
                .take(limit)
                .cloned()
                .collect();
            newest.reverse();
            newest
        } else {
            inner
                .audit
                .iter_from(start)
                .filter(wanted)
                .take(limit)
                .cloned()
                .collect()
        })
    }

    async fn outbox_put(&self, mut entry: OutboxEntry) -> Result<u64> {
        let mut inner = self.lock()?;
        inner.outbox_last_id += 1;
        entry.id = inner.outbox_last_id;
        inner.outbox.insert(entry.id, entry);
        Ok(inner.outbox_last_id)
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        Ok(self.lock()?.outbox.values().take(limit).cloned().collect())
    }

    async fn outbox_ack(&self, id: u64) -> Result<()> {
        self.lock()?.outbox.remove(&id);
        Ok(())
    }

    async fn outbox_retry(&self, id: u64, next_attempt_at: Timestamp, error: &str) -> Result<()> {
        if let Some(entry) = self.lock()?.outbox.get_mut(&id) {
            entry.attempts = entry.attempts.saturating_add(1);
            entry.next_attempt_at = next_attempt_at;
            entry.last_error = Some(error.to_owned());
        }
        Ok(())
    }

    async fn save_alert(&self, alert: &AlertRecord) -> Result<()> {
        let mut inner = self.lock()?;
        inner
            .alerts
            .retain(|a| !(a.rule == alert.rule && a.deployment == alert.deployment));
        inner.alerts.push(alert.clone());
        inner.alerts.sort_by_key(|a| a.since);
        Ok(())
    }

    async fn delete_alert(&self, rule: &str, deployment: &DeploymentId) -> Result<()> {
        self.lock()?
            .alerts
            .retain(|a| !(a.rule == rule && &a.deployment == deployment));
        Ok(())
    }

    async fn alerts(&self) -> Result<Vec<AlertRecord>> {
        Ok(self.lock()?.alerts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn audit_reads_across_chunk_boundaries() {
        use crate::status::StatusKind;
        use crate::store::AuditAction;
        let store = MemoryStore::new();
        let id = DeploymentId::new("dep-a");
        let entries = (0..10_000)
            .map(|_| {
                AuditEntry::new(
                    id.clone(),
                    None,
                    AuditAction::Transition {
                        from: StatusKind::Pending,
                        to: StatusKind::Deploying,
                    },
                )
            })
            .collect();
        store.append_audit(entries).await.unwrap();
        for after in [0, 1, 4095, 4096, 4097, 8191, 9_999, 10_000, 20_000] {
            let got = store
                .audit(&AuditQuery {
                    after_seq: Some(after),
                    limit: Some(3),
                    ..AuditQuery::default()
                })
                .await
                .unwrap();
            let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
            let expected: Vec<u64> = (after + 1..=10_000).take(3).collect();
            assert_eq!(seqs, expected, "after {after}");
            let newest = store
                .audit(&AuditQuery {
                    after_seq: Some(after),
                    limit: Some(3),
                    newest: true,
                    ..AuditQuery::default()
                })
                .await
                .unwrap();
            let seqs: Vec<u64> = newest.iter().map(|e| e.seq).collect();
            let expected: Vec<u64> = (after.max(9_997) + 1..=10_000).collect();
            assert_eq!(seqs, expected, "newest after {after}");
        }
        assert_eq!(
            store.audit(&AuditQuery::default()).await.unwrap().len(),
            10_000
        );
    }

    #[tokio::test]
    async fn conforms() {
        crate::store::tests::store_round_trip(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn outbox_conforms() {
        crate::store::tests::outbox_round_trip(&MemoryStore::new()).await;
    }
}
