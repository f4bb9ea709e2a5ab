//! Requests to the manager and handles to follow them.

use std::sync::Weak;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::scheduler::Priority;
use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::event::{OperationKind, ReportOrigin};
use crate::failure::FailureReport;
use crate::id::{DeploymentId, OperationId, Revision};
use crate::store::DeploymentRecord;

/// An operation to queue. `target` is a deployment id or name.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Request {
    /// Deploy a new deployment.
    Deploy(DeploymentConfig),
    /// Roll out a new config as a new revision.
    Update {
        /// Deployment id or name.
        target: String,
        /// The new config (same name).
        config: DeploymentConfig,
    },
    /// Roll out an earlier revision's config as a new revision; `to: None` means the last
    /// successful revision before the serving one.
    Rollback {
        /// Deployment id or name.
        target: String,
        /// Which revision's config.
        to: Option<Revision>,
    },
    /// Start a stopped (or failed) deployment.
    Start {
        /// Deployment id or name.
        target: String,
    },
    /// Stop a deployment.
    Stop {
        /// Deployment id or name.
        target: String,
    },
    /// Stop, then start.
    Restart {
        /// Deployment id or name.
        target: String,
    },
    /// Stop and delete.
    Remove {
        /// Deployment id or name.
        target: String,
    },
    /// Run another number of replicas of the serving revision (no new revision): see
    /// [`DeploymentManager::scale`](super::DeploymentManager::scale).
    Scale {
        /// Deployment id or name.
        target: String,
        /// The new count.
        replicas: u32,
        /// Why (the autoscaler's measurement), for the event and the audit entry.
        reason: Option<String>,
        /// Applies only while this revision serves (what an autoscaler measured); `None`:
        /// whatever serves.
        revision: Option<Revision>,
    },
    /// What a monitor asks for a running deployment that is alive but not serving well:
    /// restart it, or give up on it. Applies only while `origin` (the revision and instance
    /// the monitor observed) still serves and the deployment runs; otherwise (a user's
    /// `update`, `stop` or `restart`, or a supervised restart came first) it changes
    /// nothing and answers the record as it is.
    Heal {
        /// Deployment id or name.
        target: String,
        /// What the monitor observed.
        origin: ReportOrigin,
        /// What to do.
        action: HealAction,
    },
}

/// What [`Request::Heal`] does.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HealAction {
    /// Stop, then start (a `restart` operation).
    Restart,
    /// Stop the deployment and mark it `Failed` with this failure bundle (a crash-loop cap
    /// reached by restarts the monitor asked for); emits [`Event::Failed`](crate::Event::Failed).
    Fail(FailureReport),
}

impl Request {
    /// The deployment id or name it acts on (`None` for a deploy, which names a new one in
    /// its config).
    #[must_use]
    pub fn target(&self) -> Option<&str> {
        match self {
            Request::Deploy(_) => None,
            Request::Update { target, .. }
            | Request::Rollback { target, .. }
            | Request::Start { target }
            | Request::Stop { target }
            | Request::Restart { target }
            | Request::Remove { target }
            | Request::Scale { target, .. }
            | Request::Heal { target, .. } => Some(target),
        }
    }

    /// The kind of operation.
    #[must_use]
    pub fn kind(&self) -> OperationKind {
        match self {
            Request::Deploy(_) => OperationKind::Deploy,
            Request::Update { .. } => OperationKind::Update,
            Request::Rollback { .. } => OperationKind::Rollback,
            Request::Start { .. } => OperationKind::Start,
            Request::Stop { .. } => OperationKind::Stop,
            Request::Restart { .. } => OperationKind::Restart,
            Request::Remove { .. } => OperationKind::Remove,
            Request::Scale { .. } => OperationKind::Scale,
            Request::Heal { action, .. } => match action {
                HealAction::Restart => OperationKind::Restart,
                HealAction::Fail(_) => OperationKind::Stop,
            },
        }
    }
}

/// Options of one submission.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubmitOptions {
    /// Queue priority when providers are saturated.
    pub priority: Priority,
    /// Who asks (an MCP client, a user): recorded in the operation's audit entry
    /// ([`AuditAction::Operation`](crate::store::AuditAction)`::requested_by`).
    pub requested_by: Option<String>,
}

impl SubmitOptions {
    /// Options with a priority.
    #[must_use]
    pub fn priority(priority: Priority) -> Self {
        Self {
            priority,
            requested_by: None,
        }
    }

    /// The same options, naming who asks.
    #[must_use]
    pub fn requested_by(mut self, who: impl Into<String>) -> Self {
        self.requested_by = Some(who.into());
        self
    }
}

/// A queued or running operation. Dropping the handle does not cancel the operation.
#[derive(Debug)]
pub struct OperationHandle {
    pub(super) id: OperationId,
    pub(super) deployment: DeploymentId,
    pub(super) kind: OperationKind,
    pub(super) cancel: CancellationToken,
    pub(super) rx: oneshot::Receiver<Result<DeploymentRecord>>,
    pub(super) manager: Weak<Inner>,
}

/// Cancels one operation ([`OperationHandle::canceller`]); cancelling a finished operation
/// does nothing.
#[derive(Clone, Debug)]
pub struct OperationCanceller {
    id: OperationId,
    cancel: CancellationToken,
    manager: Weak<Inner>,
}

impl OperationCanceller {
    /// Cancels the operation: see [`OperationHandle::cancel`].
    pub fn cancel(&self) {
        self.cancel.cancel();
        if let Some(inner) = self.manager.upgrade() {
            inner.cancel_queued(self.id);
        }
    }
}

impl OperationHandle {
    /// The operation's id.
    #[must_use]
    pub fn id(&self) -> OperationId {
        self.id
    }

    /// The deployment it acts on.
    #[must_use]
    pub fn deployment(&self) -> &DeploymentId {
        &self.deployment
    }

    /// What it does.
    #[must_use]
    pub fn kind(&self) -> OperationKind {
        self.kind
    }

    /// Cancels it: a queued operation is dropped from the queue and answers
    /// [`Error::Cancelled`]; a running one sees its context's token cancelled, stops retrying,
    /// and the provider cleans up what it started.
    pub fn cancel(&self) {
        self.canceller().cancel();
    }

    /// Something that cancels this operation later, from elsewhere (as [`cancel`](Self::cancel)
    /// does), while [`wait`](Self::wait) holds the handle.
    #[must_use]
    pub fn canceller(&self) -> OperationCanceller {
        OperationCanceller {
            id: self.id,
            cancel: self.cancel.clone(),
            manager: self.manager.clone(),
        }
    }

    /// Waits for the outcome: the deployment's record after the operation.
    ///
    /// # Errors
    /// The operation's error, or [`Error::ShutDown`] if the manager went away first.
    pub async fn wait(self) -> Result<DeploymentRecord> {
        self.rx.await.unwrap_or(Err(Error::ShutDown))
    }
}
