//! Retrying transient provider errors with exponential backoff and jitter (`backon`).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::future::{self, Either};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How the manager retries operations that failed with a transient error
/// ([`Error::is_transient`]). Permanent errors are never retried.
///
/// Defaults: 3 retries, 1 s initial delay, ×2 per retry, at most 10 s, with jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: usize,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Growth factor per retry.
    pub factor: f32,
    /// Largest delay.
    pub max_delay: Duration,
    /// Whether to add random jitter to each delay.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(10),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    #[must_use]
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_max_times(self.max_retries);
        if self.jitter { b.with_jitter() } else { b }
    }

    /// Runs `op` until it succeeds, fails permanently, runs out of retries, or `cancel`
    /// fires. Returns the result and the number of attempts. `on_retry(attempt, delay, error)`
    /// is called before each backoff sleep.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        op: F,
        mut on_retry: impl FnMut(u32, Duration, &Error),
    ) -> (Result<T>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempts = AtomicU32::new(0);
        let mut op = op;
        let counted = || {
            if cancel.is_cancelled() {
                return Either::Left(future::ready(Err(Error::Cancelled {
                    operation: "retry".into(),
                })));
            }
            attempts.fetch_add(1, Ordering::Relaxed);
            Either::Right(op())
        };
        let sleep_cancel = cancel.clone();
        let result = counted
            .retry(self.backoff())
            .sleep(move |d| {
                let cancel = sleep_cancel.clone();
                async move {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = cancel.cancelled() => {}
                    }
                }
            })
            .when(|e: &Error| e.is_transient() && !cancel.is_cancelled())
            .notify(|e, d| on_retry(attempts.load(Ordering::Relaxed), d, e))
            .await;
        (result, attempts.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::time::Instant;

    async fn flaky(fail_times: usize, transient: bool, calls: &AtomicUsize) -> Result<u8> {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        if n < fail_times {
            Err(Error::provider("p", "flaky", transient))
        } else {
            Ok(7)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_with_exponential_backoff() {
        let policy = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        let calls = AtomicUsize::new(0);
        let mut delays = Vec::new();
        let start = Instant::now();
        let (r, attempts) = policy
            .run(
                &CancellationToken::new(),
                || flaky(3, true, &calls),
                |_, d, _| delays.push(d),
            )
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(attempts, 4);
        assert_eq!(
            delays,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4)
            ]
        );
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries_and_caps_delay() {
        let policy = RetryPolicy {
            jitter: false,
            max_retries: 5,
            ..RetryPolicy::default()
        };
        let calls = AtomicUsize::new(0);
        let mut delays = Vec::new();
        let (r, attempts) = policy
            .run(
                &CancellationToken::new(),
                || flaky(100, true, &calls),
                |_, d, _| delays.push(d),
            )
            .await;
        assert!(r.is_err());
        assert_eq!(attempts, 6);
        assert_eq!(delays.last(), Some(&Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let (r, attempts) = RetryPolicy::default()
            .run(
                &CancellationToken::new(),
                || flaky(1, false, &calls),
                |_, _, _| panic!("no retry"),
            )
            .await;
        assert!(r.is_err());
        assert_eq!(attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_retrying() {
        let calls = AtomicUsize::new(0);
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let (r, attempts) = RetryPolicy::default()
            .run(
                &cancel,
                || flaky(100, true, &calls),
                move |_, _, _| c2.cancel(),
            )
            .await;
        assert!(matches!(r, Err(Error::Cancelled { .. })));
        assert_eq!(attempts, 1);
    }
}
