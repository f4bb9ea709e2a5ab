//! Tests of the history's storage and queries (explicit timestamps) and of the sampler
//! (a real manager over `MemoryProvider`, virtual time).

use std::sync::Arc;
use std::time::Duration;

use conan_core::testing::{Call, CallFault, FaultyProvider, MemoryProvider, wait_until};
use conan_core::{DeploymentConfig, DeploymentId, DeploymentManager, Metrics, Timestamp};

use super::*;

/// 2026-01-01T00:00:00Z: a multiple of every step used here.
const T0: i64 = 1_767_225_600_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_micros(T0 + secs * 1_000_000)
}

fn metrics(cpu: f64, memory: u64, rx: u64, restarts: u32) -> Metrics {
    let mut m = Metrics::new();
    m.cpu_percent = Some(cpu);
    m.memory_bytes = Some(memory);
    m.memory_limit_bytes = Some(1 << 30);
    m.network_rx_bytes = Some(rx);
    m.network_tx_bytes = Some(rx / 2);
    m.restarts = restarts;
    m.pids = Some(2);
    m.uptime = Some(Duration::from_secs(7));
    m
}

fn history() -> MetricsHistory {
    MetricsHistory::new(&MonitorSettings::default())
}

#[test]
fn full_resolution_points_aggregate_min_avg_max_per_step() {
    let h = history();
    let id = DeploymentId::new("dep-a");
    // One minute of samples every 10 s: cpu 0, 10, ..., 50; memory 100..=600.
    for i in 0..6 {
        h.record(
            &id,
            at(i * 10),
            &metrics(i as f64 * 10.0, 100 * (i as u64 + 1), 0, 0),
        );
    }
    let native = h.query(&id, &HistoryQuery::range(at(0), at(59)));
    assert_eq!(native.resolution, Resolution::Full);
    assert_eq!(native.step_ms, 10_000);
    assert_eq!(native.points.len(), 6);
    assert_eq!(native.points[2].time, at(20));
    assert_eq!(native.points[2].samples, 1);
    let mem = native.points[2].memory_bytes.unwrap();
    assert_eq!((mem.min, mem.avg, mem.max), (300, 300.0, 300));

    let minute = h.query(
        &id,
        &HistoryQuery::range(at(0), at(59)).step(Duration::from_secs(60)),
    );
    assert_eq!(minute.step_ms, 60_000);
    assert_eq!(minute.points.len(), 1);
    let p = &minute.points[0];
    assert_eq!((p.time, p.samples), (at(0), 6));
    let cpu = p.cpu_percent.unwrap();
    assert_eq!((cpu.min, cpu.avg, cpu.max), (0.0, 25.0, 50.0));
    let mem = p.memory_bytes.unwrap();
    assert_eq!((mem.min, mem.avg, mem.max), (100, 350.0, 600));
    assert_eq!(p.memory_limit_bytes, Some(1 << 30));
    assert_eq!(p.pids.unwrap().max, 2);

    // A step finer than the samples is the samples' own; a range outside has no points.
    let fine = h.query(
        &id,
        &HistoryQuery::range(at(0), at(59)).step(Duration::from_secs(1)),
    );
    assert_eq!((fine.step_ms, fine.points.len()), (10_000, 6));
    assert!(
        h.query(&id, &HistoryQuery::range(at(100), at(200)))
            .points
            .is_empty()
    );
    // An unknown deployment answers an empty series.
    let none = h.query(
        &DeploymentId::new("dep-x"),
        &HistoryQuery::last(FULL_RESOLUTION),
    );
    assert!(none.points.is_empty());
}

#[test]
fn counters_answer_their_growth_per_point_and_survive_a_reset() {
    let h = history();
    let id = DeploymentId::new("dep-c");
    // rx: 0, 1000, 3000, then the process restarted (counter reset) to 500, then 700.
    for (i, (rx, restarts)) in [(0, 0), (1000, 0), (3000, 0), (500, 1), (700, 1)]
        .into_iter()
        .enumerate()
    {
        h.record(&id, at(i as i64 * 30), &metrics(1.0, 10, rx, restarts));
    }
    let q = HistoryQuery::range(at(0), at(179)).step(Duration::from_secs(60));
    let s = h.query(&id, &q);
    assert_eq!(s.points.len(), 3, "{s:?}");
    // [0, 60): samples 0 and 1000 (no sample before the first: it grew by 1000).
    let rx0 = s.points[0].network_rx_bytes.unwrap();
    assert_eq!((rx0.total, rx0.increase), (1000, 1000));
    // [60, 120): 3000 (+2000) and 500 (reset: +500).
    let rx1 = s.points[1].network_rx_bytes.unwrap();
    assert_eq!((rx1.total, rx1.increase), (500, 2500));
    assert_eq!(
        s.points[1].restarts,
        Counter {
            total: 1,
            increase: 1
        }
    );
    // [120, 180): 700 (+200), counted from the sample before the point.
    let rx2 = s.points[2].network_rx_bytes.unwrap();
    assert_eq!((rx2.total, rx2.increase), (700, 200));
    assert_eq!(s.points[2].network_tx_bytes.unwrap().total, 350);
}

#[test]
fn unmeasured_fields_stay_absent() {
    let h = history();
    let id = DeploymentId::new("dep-u");
    let mut m = Metrics::new();
    m.memory_bytes = Some(42);
    h.record(&id, at(0), &m);
    let s = h.query(&id, &HistoryQuery::range(at(0), at(1)));
    let p = &s.points[0];
    assert!(p.cpu_percent.is_none() && p.network_rx_bytes.is_none() && p.pids.is_none());
    assert_eq!(p.memory_bytes.unwrap().max, 42);
    assert_eq!(p.memory_limit_bytes, None);
    let json = serde_json::to_value(&s).unwrap();
    assert!(json["points"][0].get("cpu_percent").is_none(), "{json}");
}

#[test]
fn a_day_of_samples_is_kept_downsampled_and_the_last_hour_in_full() {
    let h = history();
    let id = DeploymentId::new("dep-d");
    let day = 24 * 360; // samples every 10 s
    for i in 0..day {
        // cpu cycles 0..=29 within each 5-minute bucket (30 samples).
        h.record(
            &id,
            at(i * 10),
            &metrics((i % 30) as f64, 1000 + i as u64, i as u64 * 10, 0),
        );
    }
    let end = at(day * 10 - 1);
    // The last hour: full resolution, every sample.
    let hour = h.query(
        &id,
        &HistoryQuery::range(end.saturating_sub(FULL_RESOLUTION), end),
    );
    assert_eq!(hour.resolution, Resolution::Full);
    assert_eq!(hour.points.len(), 360);
    // Two hours back: the buckets, one per five minutes (the one holding `since` too).
    let two = h.query(
        &id,
        &HistoryQuery::range(end.saturating_sub(Duration::from_secs(7200)), end),
    );
    assert_eq!(two.resolution, Resolution::Downsampled);
    assert_eq!(two.step_ms, 300_000);
    assert_eq!(two.points.len(), 25);
    let p = &two.points[5];
    assert_eq!(p.samples, 30);
    let cpu = p.cpu_percent.unwrap();
    assert_eq!((cpu.min, cpu.max), (0.0, 29.0));
    assert!((cpu.avg - 14.5).abs() < 1e-6, "{cpu:?}");
    // rx grows by 10 per sample: 300 per bucket.
    assert_eq!(p.network_rx_bytes.unwrap().increase, 300);
    // The whole day by the hour.
    let daily = h.query(
        &id,
        &HistoryQuery::range(at(0), end).step(Duration::from_secs(3600)),
    );
    assert_eq!(daily.resolution, Resolution::Downsampled);
    assert_eq!(daily.points.len(), 24);
    assert_eq!(daily.points[0].samples, 360);
    assert_eq!(
        daily.points[23].memory_bytes.unwrap().max,
        1000 + day as u64 - 1
    );
    // A step that is not a multiple of the bucket width is rounded up to one.
    let odd = h.query(
        &id,
        &HistoryQuery::range(at(0), end).step(Duration::from_secs(420)),
    );
    assert_eq!(odd.step_ms, 600_000);
    // 288 buckets so far; a 289th fills the ring, a 290th drops the oldest.
    h.record(&id, at(day * 10), &metrics(0.0, 1, 0, 0));
    h.record(&id, at(day * 10 + 300), &metrics(0.0, 1, 0, 0));
    let all = h.query(&id, &HistoryQuery::range(at(-10), at(day * 10 + 300)));
    assert_eq!(all.points.len(), track::BUCKETS);
    assert_eq!(all.points[0].time, at(300));
    // The buffers never grew.
    assert!(
        h.memory_bytes() <= h.bytes_per_deployment(),
        "{}",
        h.memory_bytes()
    );
}

#[test]
fn time_never_goes_back_within_a_series() {
    let h = history();
    let id = DeploymentId::new("dep-t");
    h.record(&id, at(100), &metrics(1.0, 1, 0, 0));
    h.record(&id, at(50), &metrics(2.0, 2, 0, 0));
    let (t, m) = h.latest(&id).unwrap();
    assert_eq!(t, at(100));
    assert_eq!(m.memory_bytes, Some(2));
    assert_eq!(m.uptime, Some(Duration::from_secs(7)));
}

#[test]
fn the_bound_follows_the_sample_interval() {
    let mut settings = MonitorSettings::default();
    let h = MetricsHistory::new(&settings);
    assert_eq!(h.full_resolution_samples(), 361);
    assert!(
        h.bytes_per_deployment() <= 54 * 1024,
        "{}",
        h.bytes_per_deployment()
    );
    settings.sample_interval = Duration::from_millis(200);
    let fast = MetricsHistory::new(&settings);
    assert_eq!(fast.full_resolution_samples(), MAX_FULL_SAMPLES);
    assert!(fast.bytes_per_deployment() <= 234 * 1024);
    assert_eq!(size_of::<track::Sample>(), 56);
    assert_eq!(size_of::<track::Bucket>(), 112);
}

#[test]
fn a_thousand_deployments_stay_within_the_documented_bound() {
    let h = history();
    let ids: Vec<_> = (0..1000)
        .map(|i| DeploymentId::new(format!("dep-{i:016x}")))
        .collect();
    // Buffers are allocated in full at the first sample: a day of samples adds nothing
    // (the counting-allocator test in tests/history_memory.rs records the day).
    for id in &ids {
        h.record(id, at(0), &metrics(1.0, 1, 1, 0));
    }
    let bound = 1000 * 54 * 1024;
    assert!(h.memory_bytes() <= bound, "{} > {bound}", h.memory_bytes());
    for (i, id) in ids.iter().enumerate().take(10) {
        for s in 1..=(24 * 360) {
            h.record(id, at(s * 10), &metrics(i as f64, 2, 2, 0));
        }
    }
    assert!(h.memory_bytes() <= bound, "{} > {bound}", h.memory_bytes());
    assert_eq!(h.len(), 1000);
}

// --- the sampler ---

fn fast_settings() -> MonitorSettings {
    MonitorSettings {
        sample_interval: Duration::from_secs(10),
        health: false,
        ..MonitorSettings::default()
    }
}

async fn manager_with(providers: Vec<Arc<conan_core::DynProvider>>) -> DeploymentManager {
    let mut b = DeploymentManager::builder();
    for p in providers {
        b = b.provider_arc(p);
    }
    b.build().await.unwrap()
}

fn config(name: &str, provider: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name)
        .provider(provider)
        .build()
        .unwrap()
}

fn samples(h: &MetricsHistory, id: &DeploymentId) -> usize {
    h.query(id, &HistoryQuery::last(Duration::from_secs(86_400)))
        .points
        .len()
}

#[tokio::test(start_paused = true)]
async fn the_sampler_samples_running_deployments_every_interval() {
    let provider = MemoryProvider::named("mem");
    let manager = manager_with(vec![Arc::new(provider.clone())]).await;
    let a = manager.deploy(config("a", "mem")).await.unwrap().id;
    let b = manager.deploy(config("b", "mem")).await.unwrap().id;
    let monitor = crate::Monitor::builder(manager.clone())
        .settings(fast_settings())
        .build();
    let h = monitor.history();
    // Ticks at 0, 10, 20, 30 s.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!((samples(h, &a), samples(h, &b)), (4, 4));
    let (_, m) = h.latest(&a).unwrap();
    assert_eq!(m.memory_bytes, Some(1 << 20));

    // A stopped deployment is not sampled but keeps its series; a removed one loses it.
    manager.stop("a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(samples(h, &a), 4);
    assert_eq!(samples(h, &b), 6);
    manager.remove("a").await.unwrap();
    assert!(wait_until(Duration::from_secs(1), || async { h.latest(&a).is_none() }).await);
    assert_eq!(h.len(), 1);
    monitor.shutdown().await;
    manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_provider_does_not_stall_the_others() {
    let good = MemoryProvider::named("mem");
    let stuck = FaultyProvider::new(MemoryProvider::named("stuck"));
    let stuck = Arc::new(stuck);
    let manager = manager_with(vec![Arc::new(good), stuck.clone()]).await;
    let ok = manager.deploy(config("ok", "mem")).await.unwrap().id;
    let hung = manager.deploy(config("hung", "stuck")).await.unwrap().id;
    stuck.inject(Call::Metrics, CallFault::Hang);
    // A timeout longer than the interval: the hung call spans several ticks.
    let settings = MonitorSettings {
        sample_timeout: Duration::from_secs(25),
        ..fast_settings()
    };
    let monitor = crate::Monitor::builder(manager.clone())
        .settings(settings)
        .build();
    tokio::time::sleep(Duration::from_secs(55)).await;
    let h = monitor.history();
    assert_eq!(samples(h, &ok), 6, "sampled on every tick");
    assert_eq!(samples(h, &hung), 0);
    // One call in flight at a time per deployment: at 0 s and 30 s (after the first
    // timed out at 25 s, the tick at 30 s starts the next).
    assert_eq!(stuck.calls(Call::Metrics), 2);
    monitor.shutdown().await;
    manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_sampler_keeps_at_most_its_concurrency_in_flight() {
    let slow = Arc::new(FaultyProvider::new(MemoryProvider::named("slow")));
    let manager = manager_with(vec![slow.clone()]).await;
    let n = SAMPLE_CONCURRENCY * 2 + 8;
    for i in 0..n {
        manager
            .deploy(config(&format!("d{i}"), "slow"))
            .await
            .unwrap();
    }
    slow.inject(Call::Metrics, CallFault::Delay(Duration::from_secs(1)));
    let settings = MonitorSettings {
        sample_interval: Duration::from_secs(60),
        ..fast_settings()
    };
    let monitor = crate::Monitor::builder(manager.clone())
        .settings(settings)
        .build();
    let h = monitor.history();
    // Calls of one second each, 16 at a time: 16 answered after 1 s, 32 after 2 s...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.len(), SAMPLE_CONCURRENCY);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.len(), 2 * SAMPLE_CONCURRENCY);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.len(), n);
    monitor.shutdown().await;
    manager.shutdown().await;
}
