//! The notification outbox and the alert state a monitor keeps in the [`StateStore`].
//!
//! A monitor (for example `conan-monitor`'s alerts) that must deliver a notification at
//! least once writes it to the outbox before trying to send it, and deletes it
//! ([`Outbox::ack`]) only after the receiver took it. A failed attempt is recorded with
//! [`Outbox::retry`] (attempt count, next attempt time, error), so a new process on the same
//! store picks up where the old one stopped: nothing in the outbox is lost by a restart, and
//! a send that succeeded just before a crash (and was not yet acked) is sent again — the
//! guarantee is at-least-once, never exactly-once.
//!
//! The store treats an entry's payload and destination as opaque text. Destinations are
//! names (a webhook's name in the settings), never URLs or credentials: what the store holds
//! must be safe to show.
//!
//! [`AlertRecord`]s say which alert rules are firing for which deployment, so a restarted
//! monitor neither announces a firing alert again nor forgets to announce that it resolved.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::StateStore;
use crate::error::Result;
use crate::id::DeploymentId;
use crate::time::Timestamp;

/// One notification waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutboxEntry {
    /// Assigned by the store when the entry is put (0 before); increasing, never reused,
    /// so ordering by id is ordering by age.
    pub id: u64,
    /// Where it goes: a name the deliverer resolves (a webhook's name), never a URL.
    pub destination: String,
    /// What to deliver (opaque to the store; JSON text for webhooks).
    pub payload: String,
    /// Delivery attempts that failed so far.
    pub attempts: u32,
    /// Not to be tried before this time.
    pub next_attempt_at: Timestamp,
    /// When it was put.
    pub created_at: Timestamp,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl OutboxEntry {
    /// A new entry for `destination`, due now.
    #[must_use]
    pub fn new(destination: impl Into<String>, payload: impl Into<String>) -> Self {
        let now = Timestamp::now();
        Self {
            id: 0,
            destination: destination.into(),
            payload: payload.into(),
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
            last_error: None,
        }
    }
}

/// An alert rule firing for one deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AlertRecord {
    /// The rule's name.
    pub rule: String,
    /// The deployment.
    pub deployment: DeploymentId,
    /// The deployment's name when the alert fired.
    pub name: String,
    /// When it started firing.
    pub since: Timestamp,
    /// The value that made it fire.
    pub value: f64,
}

impl AlertRecord {
    /// `rule` firing for `deployment` (named `name`) since `since` with `value`.
    #[must_use]
    pub fn new(
        rule: impl Into<String>,
        deployment: DeploymentId,
        name: impl Into<String>,
        since: Timestamp,
        value: f64,
    ) -> Self {
        Self {
            rule: rule.into(),
            deployment,
            name: name.into(),
            since,
            value,
        }
    }
}

/// The outbox and alert state of a manager's store, as
/// [`DeploymentManager::outbox`](crate::DeploymentManager::outbox) hands it out: only these
/// operations, so a monitor cannot write deployments behind the manager's back. Cheap to
/// clone.
#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// The outbox of `store`.
    #[must_use]
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    /// Adds an entry and returns its id. Returns once the entry is durable (as durable as
    /// the store: a `MemoryStore` keeps it only in memory).
    ///
    /// # Errors
    /// A store error (see [`StateStore::outbox_put`]).
    pub async fn put(&self, entry: OutboxEntry) -> Result<u64> {
        self.store.outbox_put(entry).await
    }

    /// Up to `limit` entries, oldest first, due or not.
    ///
    /// # Errors
    /// A store error.
    pub async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.store.outbox_pending(limit).await
    }

    /// Deletes a delivered entry (an unknown id is not an error: it was acked already).
    ///
    /// # Errors
    /// A store error.
    pub async fn ack(&self, id: u64) -> Result<()> {
        self.store.outbox_ack(id).await
    }

    /// Records a failed attempt: one more attempt, not before `next_attempt_at`, `error`.
    ///
    /// # Errors
    /// A store error.
    pub async fn retry(&self, id: u64, next_attempt_at: Timestamp, error: &str) -> Result<()> {
        self.store.outbox_retry(id, next_attempt_at, error).await
    }

    /// Records that an alert fires (replacing the record of the same rule and deployment).
    ///
    /// # Errors
    /// A store error.
    pub async fn save_alert(&self, alert: &AlertRecord) -> Result<()> {
        self.store.save_alert(alert).await
    }

    /// Forgets that `rule` fires for `deployment` (not an error when it did not).
    ///
    /// # Errors
    /// A store error.
    pub async fn delete_alert(&self, rule: &str, deployment: &DeploymentId) -> Result<()> {
        self.store.delete_alert(rule, deployment).await
    }

    /// Every firing alert, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn alerts(&self) -> Result<Vec<AlertRecord>> {
        self.store.alerts().await
    }
}
