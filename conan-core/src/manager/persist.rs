//! Writing the manager's state to the store without letting a failed write wedge it.
//!
//! The in-memory record is authoritative. A status change is applied in memory, then
//! written; when the write fails (a full disk, an I/O error) the change is **kept** — its
//! revision state and audit entries — and re-written in the background with backoff
//! ([`FIRST_RETRY`] doubling to [`MAX_RETRY`]) until the store takes it. Meanwhile the
//! operation goes on: a provider call that succeeded is reported as a success, and the next
//! status change of that deployment joins the kept one, so the store receives every change
//! in order. [`DeploymentManager::unsaved_state`](super::DeploymentManager::unsaved_state)
//! shows what is waiting and why; it clears itself once everything landed.
//!
//! What a crash loses while writes fail: the changes not yet written (as with any store
//! outage); the next manager recovers from the last written state and the providers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::Inner;
use crate::error::{Error, Result};
use crate::id::{DeploymentId, Revision};
use crate::store::{AuditEntry, DeploymentRecord, RevisionRecord, StatusChange};
use crate::time::Timestamp;

/// First delay before writing a kept change again.
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Largest delay between attempts.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(5);

/// Changes of one deployment the store has not taken yet.
#[derive(Default)]
struct Unsaved {
    revisions: BTreeMap<Revision, RevisionRecord>,
    audit: Vec<AuditEntry>,
    delete: bool,
    /// A background write of this deployment is under way: new changes wait behind it.
    flushing: bool,
}

impl Unsaved {
    fn is_empty(&self) -> bool {
        self.revisions.is_empty() && self.audit.is_empty() && !self.delete
    }

    /// Puts `older` (taken for a write that failed) back in front of what came since.
    fn put_back(&mut self, older: Unsaved) {
        for (n, revision) in older.revisions {
            self.revisions.entry(n).or_insert(revision);
        }
        let newer = std::mem::replace(&mut self.audit, older.audit);
        self.audit.extend(newer);
        self.delete |= older.delete;
    }
}

/// State writes that failed and wait to be written again (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UnsavedState {
    /// Deployments with changes the store has not taken yet.
    pub deployments: Vec<DeploymentId>,
    /// The last write error, while some change waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Since when changes wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

impl UnsavedState {
    /// Whether every change is written.
    #[must_use]
    pub fn is_clear(&self) -> bool {
        self.deployments.is_empty()
    }
}

#[derive(Default)]
struct Kept {
    unsaved: foldhash::HashMap<DeploymentId, Unsaved>,
    error: Option<String>,
    since: Option<Timestamp>,
}

/// The kept changes and the wake-up of the task that writes them.
#[derive(Default)]
pub(crate) struct Persister {
    kept: Mutex<Kept>,
    wake: Notify,
}

impl Persister {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Joins a change to the deployment's kept ones when there are any (so it is written
    /// after them); returns whether it did.
    fn join_if_kept(
        &self,
        id: &DeploymentId,
        revision: Option<&RevisionRecord>,
        audit: &mut Vec<AuditEntry>,
        delete: bool,
    ) -> bool {
        let mut kept = self.lock();
        let Some(unsaved) = kept.unsaved.get_mut(id) else {
            return false;
        };
        if let Some(r) = revision {
            unsaved.revisions.insert(r.revision, r.clone());
        }
        unsaved.audit.append(audit);
        unsaved.delete |= delete;
        drop(kept);
        self.wake.notify_one();
        true
    }

    /// Keeps a change whose write failed with `error`.
    fn keep(&self, id: &DeploymentId, older: Unsaved, error: &Error) {
        let mut kept = self.lock();
        if kept.unsaved.is_empty() {
            kept.since = Some(Timestamp::now());
        }
        kept.error = Some(error.to_string());
        kept.unsaved.entry(id.clone()).or_default().put_back(older);
        drop(kept);
        self.wake.notify_one();
    }

    pub(crate) fn state(&self) -> UnsavedState {
        let kept = self.lock();
        let mut deployments: Vec<_> = kept.unsaved.keys().cloned().collect();
        deployments.sort();
        UnsavedState {
            deployments,
            error: kept.error.clone(),
            since: kept.since,
        }
    }
}

impl Inner {
    /// Writes one status change of deployment `id` (its record as it is now in memory);
    /// a failed write is kept and retried (see the module docs).
    pub(crate) async fn persist_change(
        &self,
        record: &DeploymentRecord,
        revision: Option<&RevisionRecord>,
        audit: Vec<AuditEntry>,
    ) {
        let mut entries = audit;
        if self
            .persist
            .join_if_kept(&record.id, revision, &mut entries, false)
        {
            return;
        }
        let written = self
            .store
            .save_status_change(StatusChange {
                record,
                revision,
                audit: &entries,
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(deployment = %record.id, error = %e, "could not write a status change; keeping it in memory and retrying");
            let unsaved = Unsaved {
                revisions: revision
                    .map(|r| (r.revision, r.clone()))
                    .into_iter()
                    .collect(),
                audit: entries,
                ..Unsaved::default()
            };
            self.persist.keep(&record.id, unsaved, &e);
        }
    }

    /// Appends an audit entry of deployment `id`, keeping it for later if that fails.
    pub(crate) async fn persist_audit(&self, id: &DeploymentId, entry: AuditEntry) {
        let mut entries = vec![entry];
        if self.persist.join_if_kept(id, None, &mut entries, false) {
            return;
        }
        if let Err(e) = self.store.append_audit(entries.clone()).await {
            tracing::warn!(deployment = %id, error = %e, "could not write the audit log; retrying");
            let unsaved = Unsaved {
                audit: entries,
                ..Unsaved::default()
            };
            self.persist.keep(id, unsaved, &e);
        }
    }

    /// Deletes a removed deployment from the store, keeping the deletion for later if that
    /// fails.
    pub(crate) async fn persist_delete(&self, id: &DeploymentId) {
        if self.persist.join_if_kept(id, None, &mut Vec::new(), true) {
            return;
        }
        if let Err(e) = self.store.delete_deployment(id).await {
            tracing::warn!(deployment = %id, error = %e, "could not delete a removed deployment from the store; retrying");
            let unsaved = Unsaved {
                delete: true,
                ..Unsaved::default()
            };
            self.persist.keep(id, unsaved, &e);
        }
    }

    /// Writes what `unsaved` holds for `id`, removing each part once written.
    async fn write_kept(&self, id: &DeploymentId, unsaved: &mut Unsaved) -> Result<()> {
        let record = self.state().deployments.get(id).map(|e| e.record.clone());
        match record {
            Some(record) => {
                // Older revisions first (upserts, so repeating one is harmless); the
                // newest goes with the record in one call.
                while unsaved.revisions.len() > 1 {
                    let Some(entry) = unsaved.revisions.first_entry() else {
                        break;
                    };
                    self.store.save_revision(entry.get()).await?;
                    entry.remove();
                }
                let last = unsaved.revisions.values().next_back();
                self.store
                    .save_status_change(StatusChange {
                        record: &record,
                        revision: last,
                        audit: &unsaved.audit,
                    })
                    .await?;
                unsaved.revisions.clear();
                unsaved.audit.clear();
                unsaved.delete = false;
            }
            None => {
                if unsaved.delete {
                    self.store.delete_deployment(id).await?;
                    unsaved.delete = false;
                    unsaved.revisions.clear();
                }
                for revision in std::mem::take(&mut unsaved.revisions).into_values() {
                    self.store.save_revision(&revision).await?;
                }
                if !unsaved.audit.is_empty() {
                    self.store.append_audit(unsaved.audit.clone()).await?;
                    unsaved.audit.clear();
                }
            }
        }
        Ok(())
    }

    /// One attempt at writing every kept change; returns whether nothing is kept anymore.
    pub(crate) async fn flush_kept(&self) -> bool {
        let taken: Vec<(DeploymentId, Unsaved)> = {
            let mut kept = self.persist.lock();
            kept.unsaved
                .iter_mut()
                .filter(|(_, u)| !u.flushing)
                .map(|(id, u)| {
                    let taken = std::mem::take(u);
                    u.flushing = true;
                    (id.clone(), taken)
                })
                .collect()
        };
        for (id, mut unsaved) in taken {
            let written = self.write_kept(&id, &mut unsaved).await;
            let mut kept = self.persist.lock();
            match written {
                Ok(()) => {
                    if let Some(now) = kept.unsaved.get_mut(&id) {
                        now.flushing = false;
                        if now.is_empty() {
                            kept.unsaved.remove(&id);
                        }
                    }
                    tracing::info!(deployment = %id, "kept state changes written");
                }
                Err(e) => {
                    kept.error = Some(e.to_string());
                    if let Some(now) = kept.unsaved.get_mut(&id) {
                        now.flushing = false;
                        now.put_back(unsaved);
                    }
                }
            }
        }
        let mut kept = self.persist.lock();
        if kept.unsaved.is_empty() {
            kept.error = None;
            kept.since = None;
            true
        } else {
            false
        }
    }
}

/// The background writer of kept changes: sleeps until a write fails, then retries with
/// backoff until everything is written. Ends with the manager.
pub(crate) async fn rewrite_kept(inner: Weak<Inner>, persister: Arc<Persister>) {
    loop {
        persister.wake.notified().await;
        let mut delay = FIRST_RETRY;
        loop {
            tokio::time::sleep(delay).await;
            let Some(inner) = inner.upgrade() else { return };
            if inner.flush_kept().await {
                break;
            }
            drop(inner);
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}
