//! Persistence: deployments, revisions and an audit log of every operation.
//!
//! The [`StateStore`] is the source of truth. The manager writes through it on every status
//! change and every finished operation; a manager started later on the same store (another
//! process, after a crash) loads everything back with [`StateStore::load_deployments`].
//!
//! - [`MemoryStore`]: in-process, the default when embedding.
//! - `SqliteStore` (feature `sqlite`): one SQLite file in WAL mode; what the CLI uses.
//!
//! Besides deployments, a store keeps a notification outbox and the alert state of a
//! monitor ([`Outbox`], see its module docs for the delivery model).
//!
//! A deployment record's `config` is always the config of its `revision`, so stores may keep
//! configs only in the revision table.

mod memory;
mod outbox;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use outbox::{AlertRecord, Outbox, OutboxEntry};
#[cfg(feature = "sqlite")]
pub use sqlite::{RepairReport, SqliteStore};

use crate::config::DeploymentConfig;
use crate::error::Result;
use crate::event::{OperationKind, Outcome};
use crate::failure::{ExitStatus, FailureReport};
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
        /// Who asked for it, when the caller said (`mcp:claude-desktop 1.2`: an agent
        /// through `conan mcp`); see [`SubmitOptions::requested_by`](crate::SubmitOptions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_by: Option<String>,
    },
    /// The provider's supervisor restarts a crashed instance (recorded when the restart is
    /// decided, before its backoff delay).
    Restart {
        /// The revision the instance runs.
        revision: Revision,
        /// The restart count within the restart window (1 = first restart).
        attempt: u32,
        /// How the instance ended.
        exit: ExitStatus,
        /// The backoff delay before the restart, in milliseconds.
        delay_ms: u64,
    },
    /// The replica count changed without a new revision (written with the `scale`
    /// operation's own entry, which says who asked).
    Scale {
        /// The count before.
        from: u32,
        /// The count now.
        to: u32,
        /// Why, with the measured value.
        reason: String,
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

/// One stored row a store could not decode: skipped, so the others are managed, and
/// listed by [`StateStore::health`] until repaired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DamagedRecord {
    /// What the row is: `"deployment"`, `"revision"` or `"audit"`.
    pub kind: String,
    /// Its key: the deployment id (with `@revision` for a revision, the `seq` for audit).
    pub id: String,
    /// The deployment's name, when that part of the row could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why it could not be read.
    pub error: String,
}

impl DamagedRecord {
    /// A damaged row of `kind` keyed `id`.
    #[must_use]
    pub fn new(kind: impl Into<String>, id: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
            name: None,
            error: error.into(),
        }
    }

    /// The same, with the deployment's name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// The state file was damaged when the store opened, and what the store did about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StateRestore {
    /// What was wrong (`"database disk image is malformed"`).
    pub problem: String,
    /// Where the damaged file was moved (kept for inspection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged_copy: Option<std::path::PathBuf>,
    /// The backup the state was restored from; `None` when there was none and the store
    /// started empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<std::path::PathBuf>,
    /// When that backup was taken (changes after it are lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_taken_at: Option<Timestamp>,
}

impl StateRestore {
    /// A restore notice for `problem`.
    #[must_use]
    pub fn new(problem: impl Into<String>) -> Self {
        Self {
            problem: problem.into(),
            damaged_copy: None,
            restored_from: None,
            backup_taken_at: None,
        }
    }

    /// One line for logs and status output.
    #[must_use]
    pub fn summary(&self) -> String {
        let kept = self
            .damaged_copy
            .as_ref()
            .map(|p| format!("; the damaged file is kept at {}", p.display()))
            .unwrap_or_default();
        match (&self.restored_from, &self.backup_taken_at) {
            (Some(from), at) => format!(
                "the state database was damaged ({}); restored from the backup {}{}{kept}; changes made after the backup are lost",
                self.problem,
                from.display(),
                at.map(|t| format!(" taken at {t}")).unwrap_or_default(),
            ),
            (None, _) => format!(
                "the state database was damaged ({}) and no backup exists; started with an empty state{kept}",
                self.problem
            ),
        }
    }
}

/// What a store knows about the health of its state: see [`StateStore::health`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreHealth {
    /// Rows skipped because they could not be decoded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<DamagedRecord>,
    /// Set when the state file was damaged at open and restored (or started empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<StateRestore>,
    /// Where the last good state is backed up, if the store keeps a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<std::path::PathBuf>,
    /// When that backup was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_taken_at: Option<Timestamp>,
    /// The last error of writing the backup, while it keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_error: Option<String>,
}

impl StoreHealth {
    /// Whether nothing is damaged and nothing was restored.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.damaged.is_empty() && self.restore.is_none()
    }
}

/// Where the manager keeps its state. Implementations must be safe to share between tasks;
/// each method is atomic on its own.
///
/// # Damage
///
/// A store that finds a row it cannot decode skips it (so one bad row never stops the
/// others from loading) and lists it in [`health`](Self::health); it never answers a load
/// with an error for one bad row.
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

    /// Damaged rows skipped so far and whether the state was restored at open. The default
    /// (a store that cannot be damaged) is healthy.
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }

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

    /// Adds `entry` to the outbox (its `id` is ignored) and returns the id the store
    /// assigned: increasing, never reused. Returns once the entry is as durable as the
    /// store's other writes. The default (a store without an outbox) answers a permanent
    /// [`Error::Store`](crate::Error::Store), as do the other outbox and alert methods.
    async fn outbox_put(&self, entry: OutboxEntry) -> Result<u64> {
        let _ = entry;
        Err(no_outbox())
    }

    /// Up to `limit` outbox entries, oldest (lowest id) first, whether due or not.
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let _ = limit;
        Err(no_outbox())
    }

    /// Deletes outbox entry `id` (delivered). An unknown id is not an error.
    async fn outbox_ack(&self, id: u64) -> Result<()> {
        let _ = id;
        Err(no_outbox())
    }

    /// Records a failed delivery of entry `id`: `attempts` goes up by one, `next_attempt_at`
    /// and `last_error` are replaced. An unknown id is not an error.
    async fn outbox_retry(&self, id: u64, next_attempt_at: Timestamp, error: &str) -> Result<()> {
        let _ = (id, next_attempt_at, error);
        Err(no_outbox())
    }

    /// Inserts or replaces the firing alert of `alert.rule` for `alert.deployment`.
    async fn save_alert(&self, alert: &AlertRecord) -> Result<()> {
        let _ = alert;
        Err(no_outbox())
    }

    /// Deletes the firing alert of `rule` for `deployment` (not an error when none).
    async fn delete_alert(&self, rule: &str, deployment: &DeploymentId) -> Result<()> {
        let _ = (rule, deployment);
        Err(no_outbox())
    }

    /// Every firing alert, ordered by `since`.
    async fn alerts(&self) -> Result<Vec<AlertRecord>> {
        Err(no_outbox())
    }
}

fn no_outbox() -> crate::Error {
    crate::Error::store(
        "this state store keeps no outbox or alert state",
        false,
        None,
    )
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
    fn health(&self) -> StoreHealth {
        (**self).health()
    }
    async fn outbox_put(&self, entry: OutboxEntry) -> Result<u64> {
        (**self).outbox_put(entry).await
    }
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        (**self).outbox_pending(limit).await
    }
    async fn outbox_ack(&self, id: u64) -> Result<()> {
        (**self).outbox_ack(id).await
    }
    async fn outbox_retry(&self, id: u64, next_attempt_at: Timestamp, error: &str) -> Result<()> {
        (**self).outbox_retry(id, next_attempt_at, error).await
    }
    async fn save_alert(&self, alert: &AlertRecord) -> Result<()> {
        (**self).save_alert(alert).await
    }
    async fn delete_alert(&self, rule: &str, deployment: &DeploymentId) -> Result<()> {
        (**self).delete_alert(rule, deployment).await
    }
    async fn alerts(&self) -> Result<Vec<AlertRecord>> {
        (**self).alerts().await
    }
}

#[cfg(test)]
pub(crate) mod tests;
