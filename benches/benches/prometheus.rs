//! Rendering `/metrics` (the Prometheus exposition of `conan::monitor`) for 1,000
//! deployments on `MemoryProvider`: every deployment with probe histograms, health-check
//! and log counters, operations of three kinds, and the history's latest sample when the
//! sampler has taken one.
//!
//! `cargo bench -p conan-benches --bench prometheus`. Goal: ≤ 10 ms a render.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use conan::monitor::{Monitor, MonitorSettings};
use conan::testing::MemoryProvider;
use conan::{DeploymentConfig, DeploymentManager, HealthCheck, LogLevel, Request, SubmitOptions};
use criterion::{Criterion, criterion_group, criterion_main};

const DEPLOYMENTS: usize = 1_000;

async fn populated() -> Monitor {
    let manager = DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .concurrency(64)
        .build()
        .await
        .expect("manager");
    // The bench feeds the probe instruments itself; the sampler fills the history.
    let mut settings = MonitorSettings::default();
    settings.health = false;
    settings.sample_interval = Duration::from_millis(200);
    let monitor = Monitor::builder(manager.clone()).settings(settings).build();
    let handles: Vec<_> = (0..DEPLOYMENTS)
        .map(|i| {
            let config = DeploymentConfig::builder(format!("app-{i:04}"))
                .source("/srv/app")
                .label("tier", if i % 2 == 0 { "web" } else { "worker" })
                .health_check(HealthCheck::http("/health"))
                .build()
                .expect("config");
            manager
                .submit(Request::Deploy(config), SubmitOptions::default())
                .expect("submit")
        })
        .collect();
    for handle in handles {
        handle.wait().await.expect("deploy");
    }
    for i in (0..DEPLOYMENTS).step_by(10) {
        manager
            .restart(&format!("app-{i:04}"))
            .await
            .expect("restart");
    }
    for i in (0..DEPLOYMENTS).step_by(20) {
        manager.stop(&format!("app-{i:04}")).await.expect("stop");
    }
    let instruments = monitor.instruments();
    let counters = monitor.log_counters();
    for record in manager.list() {
        for probe in 0..20u64 {
            instruments.health_check(
                &record.name,
                probe % 7 != 0,
                Duration::from_micros(300 + probe * 450),
            );
        }
        for (n, level) in [
            (40, LogLevel::Info),
            (3, LogLevel::Warn),
            (1, LogLevel::Error),
        ] {
            for _ in 0..n {
                counters.record(&record.id, level);
            }
        }
    }
    // Give the sampler time to take one sample of everything (the history keeps it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    monitor
}

fn render(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let monitor = rt.block_on(populated());
    let _guard = rt.enter();
    let sample = monitor.render_prometheus();
    eprintln!(
        "exposition: {} bytes, {} series, memory samples for {} deployments",
        sample.len(),
        sample.lines().filter(|l| !l.starts_with('#')).count(),
        sample
            .lines()
            .filter(|l| l.starts_with("conan_deployment_memory_bytes{"))
            .count()
    );
    let mut group = c.benchmark_group("prometheus");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(8));
    let mut out = String::with_capacity(sample.len() * 2);
    group.bench_function("render_1000_deployments", |b| {
        b.iter(|| {
            out.clear();
            monitor.render_prometheus_into(&mut out);
            std::hint::black_box(out.len())
        });
    });
    group.finish();
    // The wall time above counts whatever else the machine runs; this thread's CPU time
    // per render does not (as much).
    let renders = 300u32;
    let before = thread_cpu_ticks();
    for _ in 0..renders {
        out.clear();
        monitor.render_prometheus_into(&mut out);
    }
    if let (Some(before), Some(after)) = (before, thread_cpu_ticks()) {
        // Linux clock ticks are 1/100 s.
        let ms = (after - before) as f64 * 10.0 / f64::from(renders);
        eprintln!("CPU time per render: {ms:.2} ms (over {renders} renders)");
    }
    rt.block_on(monitor.shutdown());
}

/// utime + stime of this thread, in clock ticks (`/proc/thread-self/stat`).
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

criterion_group!(benches, render);
criterion_main!(benches);
