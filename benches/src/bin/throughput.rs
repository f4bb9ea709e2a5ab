//! Quick throughput report: deploy+stop operations per second through the manager, on
//! MemoryStore and SqliteStore. Each run deploys 10,000 deployments and stops them (20,000
//! operations, all submitted at once); after one warm-up run per store, 9 runs are timed
//! and the median is reported with the slowest and fastest run.
//!
//! `cargo run --release -p conan-benches --bin throughput` (`-- memory` or `-- sqlite` runs
//! one store only, for profiling).

use std::sync::Arc;
use std::time::Duration;

use conan::MemoryStore;
use conan::StateStore;
use conan::store::SqliteStore;
use conan_benches::{deploy_stop_cycles, median};

const DEPLOYMENTS: usize = 10_000;
const RUNS: usize = 9;

#[tokio::main]
async fn main() {
    let only = std::env::args().nth(1).unwrap_or_default();
    let mut mem = Vec::new();
    let mut sql = Vec::new();
    // Run 0 warms the allocator and page tables up and is not counted.
    for run in 0..=RUNS {
        if only != "sqlite" {
            let t = deploy_stop_cycles(Arc::new(MemoryStore::new()), DEPLOYMENTS).await;
            if run > 0 {
                mem.push(t);
            }
        }
        if only != "memory" {
            let dir = tempfile::tempdir().expect("tempdir");
            let store: Arc<dyn StateStore> =
                Arc::new(SqliteStore::open(dir.path().join("conan.db")).expect("sqlite"));
            let t = deploy_stop_cycles(store, DEPLOYMENTS).await;
            if run > 0 {
                sql.push(t);
            }
        }
    }
    for (name, samples) in [("MemoryStore", &mut mem), ("SqliteStore", &mut sql)] {
        if !samples.is_empty() {
            report(name, samples);
        }
    }
}

fn report(name: &str, samples: &mut [Duration]) {
    let ops = (DEPLOYMENTS * 2) as f64;
    let rate = |d: Duration| ops / d.as_secs_f64();
    let m = median(samples);
    let (fastest, slowest) = (samples[0], samples[samples.len() - 1]);
    println!(
        "{name}: {:>7.0} ops/s median ({m:.1?} for {ops} ops); runs {:.0}..{:.0} ops/s",
        rate(m),
        rate(slowest),
        rate(fastest),
    );
}
