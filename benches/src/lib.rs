//! Shared helpers of Conan's benchmarks (`benches/`) and peer comparison harnesses
//! (`src/bin/`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conan::testing::MemoryProvider;
use conan::{DeploymentConfig, DeploymentManager, Request, StateStore, SubmitOptions};

/// Runs `deployments` deploy+stop cycles through a fresh manager on `store`, all submitted
/// at once, and returns the time from the first submission to the last completion.
///
/// # Panics
/// If an operation fails (the in-memory provider has no faults injected here).
pub async fn deploy_stop_cycles(store: Arc<dyn StateStore>, deployments: usize) -> Duration {
    let manager = DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .store_arc(store)
        .concurrency(1024)
        .build()
        .await
        .expect("manager");
    let configs: Vec<_> = (0..deployments)
        .map(|i| {
            DeploymentConfig::builder(format!("app-{i}"))
                .build()
                .expect("valid config")
        })
        .collect();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(deployments * 2);
    for config in configs {
        let name = config.name.clone();
        handles.push(
            manager
                .submit(Request::Deploy(config), SubmitOptions::default())
                .expect("deploy"),
        );
        handles.push(
            manager
                .submit(Request::Stop { target: name }, SubmitOptions::default())
                .expect("stop"),
        );
    }
    for h in handles {
        h.wait().await.expect("operation");
    }
    start.elapsed()
}

/// Median of durations (sorts in place).
#[must_use]
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}
