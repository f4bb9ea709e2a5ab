//! Persistence: deployments, revisions and an audit log of every operation.
//!
//! The [`StateStore`] is the source of truth. The manager writes through it on every status
//! change and every finished operation; a manager started later on the same store (another
//! process, after a crash) loads everything back with [`StateStore::load_deployments`].
//!
//! - [`MemoryStore`]: in-process, the default when embedding.
//! - `SqliteStore` (feature `sqlite`): one SQLite file in WAL mode; what the CLI uses.
//!
//! A deployment record's `config` is always the config of its `revision`, so stores may keep
//! configs only in the revision table.

mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use crate::config::DeploymentConfig;
use crate::error::Result;
use crate::event::{OperationKind, Outcome};
use crate::failure::FailureReport;
use crate::id::{DeploymentId, OperationId, Revision};
use crate::provider::RuntimeInfo;
use crate::status::{DeploymentStatus, StatusKind};
use crate::time::Timestamp;

/// A deployment as the manager knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Its id.
    pub id: DeploymentId,
    /// Its name (unique among live deployments). Shared, like the provider name: records
    /// are cloned on every status change.
    pub name: Arc<str>,
    /// The provider running it.
    pub provider: Arc<str>,
    /// Current status.
    pub status: DeploymentStatus,
    /// The revision serving (or, while deploying, being deployed).
    pub revision: Revision,
    /// The config of `revision`.
    pub config: Arc<DeploymentConfig>,
    /// What the provider reported last (instances, URL). Shared: records are cloned on
    /// every status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Arc<RuntimeInfo>>,
    /// The last failure bundle, if it ever failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Arc<FailureReport>>,
    /// When it was first deployed.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// How a revision fared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RevisionState {
    /// Being rolled out.
    Pending,
    /// Became ready and served.
    Succeeded,
    /// Failed to become ready.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One revision of a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// The deployment.
    pub deployment: DeploymentId,
    /// The revision number.
    pub revision: Revision,
    /// Its config.
    pub config: Arc<DeploymentConfig>,
    /// Which operation created it (deploy, update, rollback).
    pub cause: OperationKind,
    /// For a rollback: the revision whose config it reuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<Revision>,
    /// How it fared.
    pub state: RevisionState,
    /// When it was created.
    pub created_at: Timestamp,
}

/// What an audit entry records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum AuditAction {
    /// A status change.
    Transition {
        /// From.
        from: StatusKind,
        /// To.
        to: StatusKind,
    },
    /// An operation finished.
    Operation {
        /// What it was.
        kind: OperationKind,
        /// The revision it concerned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<Revision>,
        /// How many times it ran (retries + 1).
        attempts: u32,
        /// How it ended.
        outcome: Outcome,
    },
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log (assigned by the store, increasing).
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// The deployment.
    pub deployment: DeploymentId,
    /// The operation it belongs to, if any (status changes reported by providers have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationId>,
    /// What happened.
    #[serde(flatten)]
    pub action: AuditAction,
}

impl AuditEntry {
    /// A new entry (the store assigns `seq`).
    #[must_use]
    pub fn new(
        deployment: DeploymentId,
        operation: Option<OperationId>,
        action: AuditAction,
    ) -> Self {
        Self {
            seq: 0,
            at: Timestamp::now(),
            deployment,
            operation,
            action,
        }
    }
}

/// Which audit entries to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this deployment's.
    pub deployment: Option<DeploymentId>,
    /// Only entries with `seq` greater than this.
    pub after_seq: Option<u64>,
    /// At most this many: the oldest matching ones, or the newest with `newest`.
    pub limit: Option<usize>,
    /// With `limit`, take the newest matching entries instead of the oldest (what a
    /// "recent events" view wants). Entries are returned oldest first either way.
    pub newest: bool,
}

/// Where the manager keeps its state. Implementations must be safe to share between tasks;
/// each method is atomic on its own.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Inserts or replaces a deployment (its config is taken from its revision record).
    async fn save_deployment(&self, record: &DeploymentRecord) -> Result<()>;

    /// Deletes a deployment and its revisions (the audit log is kept).
    async fn delete_deployment(&self, id: &DeploymentId) -> Result<()>;

    /// Every deployment, ordered by creation time.
    async fn load_deployments(&self) -> Result<Vec<DeploymentRecord>>;

    /// Inserts or replaces a revision.
    async fn save_revision(&self, revision: &RevisionRecord) -> Result<()>;

    /// The revisions of a deployment, oldest first.
    async fn revisions(&self, id: &DeploymentId) -> Result<Vec<RevisionRecord>>;

    /// Appends entries to the audit log, assigning their `seq`.
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<()>;

    /// Reads the audit log, oldest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>>;

    /// Writes one status change: the revision whose state changed with it (if any), the
    /// deployment record, and audit entries. This is what the manager does on every status
    /// change. The default calls `save_revision`, `save_deployment` and `append_audit` in
    /// turn; a store that can should write all of it in one transaction, so a crash never
    /// leaves a revision's state and the deployment's status disagreeing.
    async fn save_status_change(&self, change: StatusChange<'_>) -> Result<()> {
        if let Some(revision) = change.revision {
            self.save_revision(revision).await?;
        }
        self.save_deployment(change.record).await?;
        self.append_audit(change.audit.to_vec()).await
    }
}

/// What one status change writes (see [`StateStore::save_status_change`]).
#[derive(Clone, Copy, Debug)]
pub struct StatusChange<'a> {
    /// The deployment as it is after the change.
    pub record: &'a DeploymentRecord,
    /// A revision whose state changed with it (a deploy or update started, succeeded or
    /// failed).
    pub revision: Option<&'a RevisionRecord>,
    /// Audit entries to append (their `seq` is assigned by the store).
    pub audit: &'a [AuditEntry],
}

#[async_trait]
impl<T: StateStore + ?Sized> StateStore for Arc<T> {
    async fn save_deployment(&self, record: &DeploymentRecord) -> Result<()> {
        (**self).save_deployment(record).await
    }
    async fn delete_deployment(&self, id: &DeploymentId) -> Result<()> {
        (**self).delete_deployment(id).await
    }
    async fn load_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        (**self).load_deployments().await
    }
    async fn save_revision(&self, revision: &RevisionRecord) -> Result<()> {
        (**self).save_revision(revision).await
    }
    async fn revisions(&self, id: &DeploymentId) -> Result<Vec<RevisionRecord>> {
        (**self).revisions(id).await
    }
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        (**self).append_audit(entries).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        (**self).audit(query).await
    }
    async fn save_status_change(&self, change: StatusChange<'_>) -> Result<()> {
        (**self).save_status_change(change).await
    }
}

#[cfg(test)]
pub(crate) mod tests;
