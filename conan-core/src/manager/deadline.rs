//! Deadlines of provider calls: every call the manager makes is bounded and cancellable
//! in flight.
//!
//! A call runs until it answers, its deadline passes, or its operation is cancelled. In the
//! last two cases the manager cancels the call's token, gives the provider
//! [`CallTimeouts::grace`] to undo its work and answer, and then abandons the call (drops
//! its future) with [`Error::Timeout`] or [`Error::Cancelled`]. A provider that answers
//! within the grace period is believed, success included.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::DeploymentConfig;
use crate::error::{Error, Result};

/// How long provider calls may take. Set for all providers with
/// [`DeploymentManagerBuilder::call_timeouts`](super::DeploymentManagerBuilder::call_timeouts)
/// and per provider with
/// [`provider_call_timeouts`](super::DeploymentManagerBuilder::provider_call_timeouts).
///
/// Deadlines per call:
/// - `deploy`, `update`, `start`: the config's `update.healthy_deadline` × the number of
///   replica batches, plus [`build_allowance`](Self::build_allowance);
/// - `stop`, `remove`: the config's `stop.timeout` plus [`stop_margin`](Self::stop_margin);
/// - `recover`, `status` and the read-only calls: [`query`](Self::query).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallTimeouts {
    /// Time allowed on top of the healthy deadline for building and pulling artifacts
    /// (default 10 min, enough for a cold image build).
    pub build_allowance: Duration,
    /// Time allowed on top of the stop timeout for cleaning up (default 10 s).
    pub stop_margin: Duration,
    /// Deadline of `recover`, `status`, `logs`, `metrics` and `health` (default 30 s).
    pub query: Duration,
    /// How long a cancelled call may take to answer before it is abandoned (default 5 s).
    pub grace: Duration,
}

impl Default for CallTimeouts {
    fn default() -> Self {
        Self {
            build_allowance: Duration::from_secs(600),
            stop_margin: Duration::from_secs(10),
            query: Duration::from_secs(30),
            grace: Duration::from_secs(5),
        }
    }
}

impl CallTimeouts {
    /// The defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, with another build allowance.
    #[must_use]
    pub fn with_build_allowance(mut self, d: Duration) -> Self {
        self.build_allowance = d;
        self
    }

    /// The same, with another stop margin.
    #[must_use]
    pub fn with_stop_margin(mut self, d: Duration) -> Self {
        self.stop_margin = d;
        self
    }

    /// The same, with another query deadline.
    #[must_use]
    pub fn with_query(mut self, d: Duration) -> Self {
        self.query = d;
        self
    }

    /// The same, with another grace period.
    #[must_use]
    pub fn with_grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Deadline of a `deploy`, `update` or `start` of `config`.
    #[must_use]
    pub fn rollout(&self, config: &DeploymentConfig) -> Duration {
        let batches = config
            .replicas
            .div_ceil(config.update.max_parallel.max(1))
            .max(1);
        let canary = match config.update.strategy {
            crate::config::UpdateStrategy::Canary => config
                .update
                .canary
                .clone()
                .unwrap_or_default()
                .longest()
                .saturating_add(config.endpoint.drain_timeout),
            _ => Duration::ZERO,
        };
        config
            .update
            .healthy_deadline
            .saturating_mul(batches)
            .saturating_add(self.build_allowance)
            .saturating_add(canary)
    }

    /// Deadline of a `stop` or `remove` of `config`.
    #[must_use]
    pub fn stop(&self, config: &DeploymentConfig) -> Duration {
        config.stop.timeout.saturating_add(self.stop_margin)
    }
}

/// Runs `call` (which watches `token`) until it answers, `deadline` passes, or `token` or
/// `shutdown` is cancelled from outside; see the module documentation. When the call
/// answers at once (the common case) no timer is registered.
pub(crate) async fn bounded<T>(
    call: impl Future<Output = Result<T>>,
    token: &CancellationToken,
    shutdown: &CancellationToken,
    deadline: Duration,
    grace: Duration,
    operation: &str,
) -> Result<T> {
    tokio::pin!(call);
    // Most calls answer on their first poll: skip the timer and the cancellation waits.
    if let std::task::Poll::Ready(result) = futures::poll!(call.as_mut()) {
        return result;
    }
    let timed_out = tokio::select! {
        biased;
        result = &mut call => return result,
        () = token.cancelled() => false,
        () = shutdown.cancelled() => {
            token.cancel();
            false
        }
        () = sleep_saturating(deadline) => {
            token.cancel();
            true
        }
    };
    let late = tokio::time::timeout(grace, &mut call).await;
    if timed_out {
        tracing::warn!(operation, ?deadline, "provider call passed its deadline");
    }
    match late {
        // A provider that finished anyway is believed; its own cancellation error is
        // reported as what caused it.
        Ok(Err(Error::Cancelled { .. })) | Err(_) if timed_out => Err(Error::Timeout {
            operation: operation.to_owned(),
            after: deadline,
        }),
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                operation,
                ?grace,
                "cancelled provider call abandoned after its grace period"
            );
            Err(Error::Cancelled {
                operation: operation.to_owned(),
            })
        }
    }
}

/// `tokio::time::sleep` for durations too large to add to an `Instant`.
async fn sleep_saturating(d: Duration) {
    match tokio::time::Instant::now().checked_add(d) {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_times_out_after_deadline_and_grace() {
        let token = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let r: Result<()> = bounded(
            futures::future::pending(),
            &token,
            &CancellationToken::new(),
            Duration::from_secs(10),
            Duration::from_secs(2),
            "deploy",
        )
        .await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert!(
            token.is_cancelled(),
            "the provider's token is cancelled first"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_that_honours_its_token_answers_cancelled() {
        let token = CancellationToken::new();
        let t = token.clone();
        let call = async move {
            t.cancelled().await;
            Err::<(), _>(Error::Cancelled {
                operation: "deploy".into(),
            })
        };
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let start = tokio::time::Instant::now();
        let r = bounded(
            call,
            &token,
            &CancellationToken::new(),
            Duration::from_secs(60),
            Duration::from_secs(2),
            "deploy",
        )
        .await;
        assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_that_ignores_its_token_is_abandoned_after_grace() {
        let token = CancellationToken::new();
        token.cancel();
        let start = tokio::time::Instant::now();
        let r: Result<()> = bounded(
            futures::future::pending(),
            &token,
            &CancellationToken::new(),
            Duration::from_secs(60),
            Duration::from_secs(2),
            "stop",
        )
        .await;
        assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn deadlines_follow_the_config_and_never_overflow() {
        let t = CallTimeouts::default();
        let mut config = DeploymentConfig::builder("x").build_unchecked();
        config.update.healthy_deadline = Duration::MAX;
        assert_eq!(t.rollout(&config), Duration::MAX);
        config.update.healthy_deadline = Duration::from_secs(60);
        config.replicas = 4;
        config.update.max_parallel = 2;
        assert_eq!(t.rollout(&config), Duration::from_secs(120 + 600));
        assert_eq!(t.stop(&config), Duration::from_secs(5 + 10));
    }
}
