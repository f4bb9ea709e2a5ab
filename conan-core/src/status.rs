//! The deployment status state machine.
//!
//! ```text
//!            ┌──────────── Failed ◄───────────────┐ (any active state may fail)
//!            ▼                                    │
//! Pending ─► Deploying ─► Running ─► Updating ─► Running
//!    │           │         ▲   │         │
//!    │           │         │   ▼         │
//!    │           │       Restarting ─────┤ (the provider's supervisor waits to restart a crashed
//!    │           │           │           │  instance; it may also stop, update, remove or fail)
//!    │           └──► Stopping ◄─────────┘──► Stopped ─► Deploying (start) / Updating
//!    └────────────────────┴───► Removing ─► Removed
//! ```
//!
//! `Restarting` is entered and left only on a provider's report (a supervised instance
//! crashed and waits out its backoff: systemd's "activating (auto-restart)", PM2's "waiting
//! restart"); nothing serves meanwhile. It carries the attempt, how the instance ended and
//! when the restart is due.
//!
//! [`transition`] is the single source of truth: a pure function, no IO. Every status
//! change in the manager goes through it, and an illegal one is an
//! [`Error::IllegalTransition`] value, never a panic.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::failure::ExitStatus;
use crate::time::Timestamp;

/// Where a deployment is in its life. `Failed` carries why.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum DeploymentStatus {
    /// Accepted, waiting in the queue for its first deploy.
    Pending,
    /// The provider is building/starting it and waiting for readiness.
    Deploying,
    /// Ready and serving.
    Running,
    /// A supervised instance crashed; the provider restarts it once its backoff delay
    /// passed. Nothing serves meanwhile.
    Restarting {
        /// The restart count within the restart window (1 = first restart).
        attempt: u32,
        /// How the crashed instance ended.
        exit: ExitStatus,
        /// When the restart is due.
        at: Timestamp,
    },
    /// A new revision is being rolled out; the old one still serves.
    Updating,
    /// Being stopped.
    Stopping,
    /// Stopped on purpose; nothing runs.
    Stopped,
    /// Failed; nothing of this deployment is known to serve.
    Failed {
        /// Why, in one line.
        reason: String,
    },
    /// Being removed.
    Removing,
    /// Gone. Terminal.
    Removed,
}

/// [`DeploymentStatus`] without data: what the state machine reasons about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// See [`DeploymentStatus::Pending`].
    Pending,
    /// See [`DeploymentStatus::Deploying`].
    Deploying,
    /// See [`DeploymentStatus::Running`].
    Running,
    /// See [`DeploymentStatus::Restarting`].
    Restarting,
    /// See [`DeploymentStatus::Updating`].
    Updating,
    /// See [`DeploymentStatus::Stopping`].
    Stopping,
    /// See [`DeploymentStatus::Stopped`].
    Stopped,
    /// See [`DeploymentStatus::Failed`].
    Failed,
    /// See [`DeploymentStatus::Removing`].
    Removing,
    /// See [`DeploymentStatus::Removed`].
    Removed,
}

impl StatusKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [StatusKind; 10] = [
        StatusKind::Pending,
        StatusKind::Deploying,
        StatusKind::Running,
        StatusKind::Restarting,
        StatusKind::Updating,
        StatusKind::Stopping,
        StatusKind::Stopped,
        StatusKind::Failed,
        StatusKind::Removing,
        StatusKind::Removed,
    ];

    /// The lowercase name (`"running"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::Pending => "pending",
            StatusKind::Deploying => "deploying",
            StatusKind::Running => "running",
            StatusKind::Restarting => "restarting",
            StatusKind::Updating => "updating",
            StatusKind::Stopping => "stopping",
            StatusKind::Stopped => "stopped",
            StatusKind::Failed => "failed",
            StatusKind::Removing => "removing",
            StatusKind::Removed => "removed",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether an operation is under way in this state.
    #[must_use]
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            StatusKind::Pending
                | StatusKind::Deploying
                | StatusKind::Updating
                | StatusKind::Stopping
                | StatusKind::Removing
        )
    }
}

impl fmt::Display for StatusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DeploymentStatus {
    /// The data-less kind.
    #[must_use]
    pub fn kind(&self) -> StatusKind {
        match self {
            DeploymentStatus::Pending => StatusKind::Pending,
            DeploymentStatus::Deploying => StatusKind::Deploying,
            DeploymentStatus::Running => StatusKind::Running,
            DeploymentStatus::Restarting { .. } => StatusKind::Restarting,
            DeploymentStatus::Updating => StatusKind::Updating,
            DeploymentStatus::Stopping => StatusKind::Stopping,
            DeploymentStatus::Stopped => StatusKind::Stopped,
            DeploymentStatus::Failed { .. } => StatusKind::Failed,
            DeploymentStatus::Removing => StatusKind::Removing,
            DeploymentStatus::Removed => StatusKind::Removed,
        }
    }

    /// A `Failed` status with a reason.
    #[must_use]
    pub fn failed(reason: impl Into<String>) -> Self {
        DeploymentStatus::Failed {
            reason: reason.into(),
        }
    }

    /// Whether this is `Running`.
    #[must_use]
    pub fn is_running(&self) -> bool {
        matches!(self, DeploymentStatus::Running)
    }

    /// Validates the move from `self` to `to` and returns `to`.
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] when the state machine forbids it.
    pub fn transition(&self, to: DeploymentStatus) -> Result<DeploymentStatus> {
        transition(self.kind(), to.kind())?;
        Ok(to)
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeploymentStatus::Failed { reason } => write!(f, "failed: {reason}"),
            DeploymentStatus::Restarting { attempt, exit, .. } => {
                write!(f, "restarting (attempt {attempt}, {exit})")
            }
            other => f.write_str(other.kind().as_str()),
        }
    }
}

/// Whether the state machine allows `from` → `to`. Pure, total, and the only place the
/// rules live.
#[must_use]
pub fn is_allowed(from: StatusKind, to: StatusKind) -> bool {
    use StatusKind::*;
    matches!(
        (from, to),
        (Pending, Deploying | Failed | Removing)
            | (Deploying, Running | Failed | Stopping)
            | (
                Running,
                Updating | Stopping | Failed | Removing | Restarting
            )
            | (
                Restarting,
                Running | Updating | Stopping | Failed | Removing
            )
            | (Updating, Running | Failed | Stopping)
            | (Stopping, Stopped | Failed)
            | (Stopped, Deploying | Updating | Removing)
            | (Failed, Deploying | Updating | Stopping | Removing | Running)
            | (Removing, Removed | Failed)
    )
}

/// Checks `from` → `to`.
///
/// `Failed → Running` is allowed for one reason: a manager that restarts finds a deployment
/// it had marked failed running again (adopted by recovery). `Running ⇄ Restarting` follows
/// a provider's supervisor through a crash and its restart.
///
/// # Errors
/// [`Error::IllegalTransition`] when the state machine forbids it.
pub fn transition(from: StatusKind, to: StatusKind) -> Result<()> {
    if is_allowed(from, to) {
        Ok(())
    } else {
        Err(Error::IllegalTransition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::StatusKind::*;
    use super::*;

    /// The full table: every (from, to) pair, written out so a change to the rules is a
    /// deliberate change to this test.
    const ALLOWED: &[(StatusKind, &[StatusKind])] = &[
        (Pending, &[Deploying, Failed, Removing]),
        (Deploying, &[Running, Failed, Stopping]),
        (Running, &[Updating, Stopping, Failed, Removing, Restarting]),
        (Restarting, &[Running, Updating, Stopping, Failed, Removing]),
        (Updating, &[Running, Failed, Stopping]),
        (Stopping, &[Stopped, Failed]),
        (Stopped, &[Deploying, Updating, Removing]),
        (Failed, &[Deploying, Updating, Stopping, Removing, Running]),
        (Removing, &[Removed, Failed]),
        (Removed, &[]),
    ];

    #[test]
    fn every_pair_matches_the_table() {
        let mut checked = 0;
        for (from, allowed) in ALLOWED {
            for to in StatusKind::ALL {
                let expected = allowed.contains(&to);
                assert_eq!(is_allowed(*from, to), expected, "{from} -> {to}");
                match transition(*from, to) {
                    Ok(()) => assert!(expected),
                    Err(Error::IllegalTransition { from: f, to: t }) => {
                        assert!(!expected);
                        assert_eq!((f, t), (*from, to));
                    }
                    Err(other) => panic!("unexpected error {other}"),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 100);
        assert_eq!(ALLOWED.len(), StatusKind::ALL.len());
    }

    #[test]
    fn no_self_transitions_and_removed_is_terminal() {
        for k in StatusKind::ALL {
            assert!(!is_allowed(k, k), "{k} -> {k}");
            assert!(!is_allowed(Removed, k));
        }
    }

    #[test]
    fn every_state_except_removed_can_reach_removed() {
        for start in StatusKind::ALL {
            let mut seen = vec![start];
            let mut frontier = vec![start];
            while let Some(s) = frontier.pop() {
                for next in StatusKind::ALL {
                    if is_allowed(s, next) && !seen.contains(&next) {
                        seen.push(next);
                        frontier.push(next);
                    }
                }
            }
            assert!(seen.contains(&Removed), "{start} cannot reach removed");
        }
    }

    #[test]
    fn restarting_carries_attempt_exit_and_due_time() {
        let at = Timestamp::from_unix_micros(1_800_000_000_000_000);
        let s = DeploymentStatus::Restarting {
            attempt: 2,
            exit: ExitStatus::Code(1),
            at,
        };
        assert_eq!(s.kind(), Restarting);
        assert!(!s.is_running());
        assert_eq!(s.to_string(), "restarting (attempt 2, exit code 1)");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "restarting");
        assert_eq!(json["attempt"], 2);
        let back: DeploymentStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        assert_eq!(StatusKind::parse("restarting"), Some(Restarting));
        // A crash loop goes back and forth; a user can stop, update or remove meanwhile.
        for to in [Running, Updating, Stopping, Failed, Removing] {
            assert!(is_allowed(Restarting, to), "restarting -> {to}");
        }
        assert!(is_allowed(Running, Restarting));
        assert!(!Restarting.is_transitional());
    }

    #[test]
    fn failed_carries_reason() {
        let s = DeploymentStatus::failed("exit code 1");
        assert_eq!(s.kind(), Failed);
        assert_eq!(s.to_string(), "failed: exit code 1");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"state":"failed","reason":"exit code 1"}"#);
        let next = s.transition(DeploymentStatus::Deploying).unwrap();
        assert_eq!(next, DeploymentStatus::Deploying);
        assert!(
            DeploymentStatus::Removed
                .transition(DeploymentStatus::Running)
                .is_err()
        );
    }
}
