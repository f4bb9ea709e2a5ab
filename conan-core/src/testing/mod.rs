//! Test support for providers and for code that embeds Conan (feature `testing`).
//!
//! - [`MemoryProvider`]: an in-memory reference provider that can be told to fail
//!   transiently, fail permanently, be slow, or crash after deploy.
//! - [`conformance`]: the behaviour every provider must show; each provider crate runs
//!   [`conformance::run_all`] against itself.
//! - [`FaultyProvider`]: wraps any provider and injects faults (transient or permanent
//!   errors, delays, hangs, panics) per kind of call, to test what sits on top of it.

pub mod conformance;
mod faulty;
mod memory_provider;

pub use conformance::ConformanceHarness;
pub use faulty::{Call, CallFault, FaultyProvider};
pub use memory_provider::{Fault, MemoryBackend, MemoryProvider, ProviderOp};

use std::time::Duration;

/// Polls `condition` every few milliseconds until it returns true or `timeout` passes;
/// returns whether it became true. Use it instead of fixed sleeps.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}
