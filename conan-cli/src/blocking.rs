//! Blocking work (files, child processes) from async code: the daemon and the commands
//! run on one thread (a current-thread Tokio runtime), so anything that may block runs on
//! Tokio's blocking pool instead, and the runtime keeps serving meanwhile.

use crate::error::{CliError, CliResult};

/// Runs `work` on the blocking pool and returns its result. A panic in `work` is resumed
/// here.
///
/// # Errors
/// `work`'s error, or an error when the runtime shuts down before `work` ran.
pub async fn run<T, F>(work: F) -> CliResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> CliResult<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(CliError::failed(format!("shutting down: {e}"))),
        },
    }
}

/// [`run`] for work that cannot fail; `fallback` is answered when the runtime shuts down
/// before it ran.
pub async fn infallible<T, F>(fallback: T, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run(move || Ok(work())).await.unwrap_or(fallback)
}
