//! The metrics history's memory bound, measured: 1,000 deployments × a full day of samples
//! at the default 10 s interval, every byte the history allocates counted by a counting
//! global allocator.

use std::alloc::System;
use std::time::Duration;

use conan_core::{DeploymentId, Metrics, Timestamp};
use conan_monitor::MonitorSettings;
use conan_monitor::history::{HistoryQuery, MetricsHistory, Resolution};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The bound the module docs and the README state, per deployment.
const BOUND_PER_DEPLOYMENT: usize = 54 * 1024;
const DEPLOYMENTS: usize = 1000;
/// A day of samples every 10 s.
const SAMPLES: i64 = 24 * 360;

#[test]
fn a_thousand_deployments_times_a_day_stay_within_54_kib_each() {
    let settings = MonitorSettings::default();
    assert_eq!(settings.sample_interval, Duration::from_secs(10));
    // Ids are made before measuring: the manager's records own them (the history shares
    // the `Arc`), as in the daemon.
    let ids: Vec<DeploymentId> = (0..DEPLOYMENTS)
        .map(|i| DeploymentId::new(format!("dep-{i:016x}")))
        .collect();
    let start = Timestamp::now().saturating_sub(Duration::from_secs(86_400));
    let mut metrics = Metrics::new();

    let region = Region::new(GLOBAL);
    let history = MetricsHistory::new(&settings);
    // Sample by sample, every deployment in turn, as the sampler does.
    for s in 0..SAMPLES {
        let at = Timestamp::from_unix_micros(start.as_unix_micros() + s * 10_000_000);
        for (i, id) in ids.iter().enumerate() {
            metrics.cpu_percent = Some((i % 100) as f64);
            metrics.memory_bytes = Some(50 << 20);
            metrics.memory_limit_bytes = Some(512 << 20);
            metrics.network_rx_bytes = Some(s as u64 * 1000);
            metrics.network_tx_bytes = Some(s as u64 * 500);
            metrics.pids = Some(3);
            history.record(id, at, &metrics);
        }
    }
    let stats = region.change();
    let held =
        stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize - stats.bytes_deallocated;
    let per = held / DEPLOYMENTS;
    println!(
        "history of {DEPLOYMENTS} deployments x {SAMPLES} samples: {held} bytes held \
         ({per} per deployment; {} allocations in all, {:.1} MiB); \
         computed from capacities: {} bytes; bound {} per deployment",
        stats.allocations + stats.reallocations,
        held as f64 / f64::from(1 << 20),
        history.memory_bytes(),
        history.bytes_per_deployment(),
    );
    assert!(
        held <= DEPLOYMENTS * BOUND_PER_DEPLOYMENT,
        "{held} bytes > {DEPLOYMENTS} x {BOUND_PER_DEPLOYMENT}"
    );
    assert!(history.bytes_per_deployment() <= BOUND_PER_DEPLOYMENT);
    assert!(history.memory_bytes() <= DEPLOYMENTS * history.bytes_per_deployment());
    // The computed figure is what the allocator saw, within the table's rounding.
    let computed = history.memory_bytes();
    assert!(
        held.abs_diff(computed) <= computed / 50,
        "allocated {held}, computed {computed}"
    );
    // Allocations happen per deployment, not per sample: the buffers, the table's growth.
    assert!(stats.allocations + stats.reallocations < 4 * DEPLOYMENTS);

    // And the day is all there.
    let q = HistoryQuery::range(start, Timestamp::now()).step(Duration::from_secs(3600));
    let series = history.query(&ids[7], &q);
    assert_eq!(series.resolution, Resolution::Downsampled);
    assert!(series.points.len() >= 24, "{}", series.points.len());
}
