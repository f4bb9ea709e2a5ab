//! Deploy+stop throughput through the `DeploymentManager` with `MemoryProvider`, on
//! `MemoryStore` and on `SqliteStore` (a file in a temp dir, WAL).
//!
//! `cargo bench -p conan-benches --bench manager`. Throughput is reported in operations
//! (a deploy and a stop are two operations).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use conan::MemoryStore;
use conan::store::SqliteStore;
use conan_benches::deploy_stop_cycles;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const DEPLOYMENTS: usize = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn manager(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("manager");
    group.throughput(Throughput::Elements((DEPLOYMENTS * 2) as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));

    group.bench_function("deploy_stop/memory_store", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += deploy_stop_cycles(Arc::new(MemoryStore::new()), DEPLOYMENTS).await;
            }
            total
        });
    });

    group.bench_function("deploy_stop/sqlite_store", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(dir.path().join("conan.db")).expect("sqlite store");
                total += deploy_stop_cycles(Arc::new(store), DEPLOYMENTS).await;
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, manager);
criterion_main!(benches);
