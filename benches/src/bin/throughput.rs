//! Quick throughput report: deploy+stop operations per second through the manager, on
//! MemoryStore and SqliteStore (median of 7 runs of 10,000 deployments = 20,000 operations).
//!
//! `cargo run --release -p conan-benches --bin throughput`

use std::sync::Arc;

use conan::MemoryStore;
use conan::store::SqliteStore;
use conan_benches::{deploy_stop_cycles, median};

const DEPLOYMENTS: usize = 10_000;

#[tokio::main]
async fn main() {
    // `throughput memory` or `throughput sqlite` runs one store only (for profiling).
    let only = std::env::args().nth(1).unwrap_or_default();
    let mut mem = Vec::new();
    let mut sql = Vec::new();
    for _ in 0..7 {
        if only != "sqlite" {
            mem.push(deploy_stop_cycles(Arc::new(MemoryStore::new()), DEPLOYMENTS).await);
        }
        if only != "memory" {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(dir.path().join("conan.db")).expect("sqlite");
            sql.push(deploy_stop_cycles(Arc::new(store), DEPLOYMENTS).await);
        }
    }
    let ops = (DEPLOYMENTS * 2) as f64;
    for (name, samples) in [("MemoryStore", &mut mem), ("SqliteStore", &mut sql)] {
        if !samples.is_empty() {
            let m = median(samples);
            println!(
                "{name}: {:>9.0} ops/s ({m:?} for {ops} ops)",
                ops / m.as_secs_f64()
            );
        }
    }
}
