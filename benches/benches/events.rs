//! Event fan-out: one emitter, 16 subscribers each receiving every event.
//!
//! `cargo bench -p conan-benches --bench events`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use conan::{DeploymentId, Event, EventBus};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: usize = 10_000;
const SUBSCRIBERS: usize = 16;

fn fan_out(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements((EVENTS * SUBSCRIBERS) as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("fan_out_16_subscribers", |b| {
        b.to_async(&rt).iter(|| async {
            // Large enough that no subscriber lags: every event reaches all 16.
            let bus = EventBus::new(EVENTS);
            let mut tasks = Vec::new();
            for _ in 0..SUBSCRIBERS {
                let mut rx = bus.subscribe();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0;
                    while n < EVENTS {
                        match rx.recv().await {
                            Ok(_) => n += 1,
                            Err(e) => panic!("subscriber lost events: {e}"),
                        }
                    }
                    n
                }));
            }
            let id = DeploymentId::new("dep-bench");
            for _ in 0..EVENTS {
                bus.emit(Event::Healthy {
                    deployment: id.clone(),
                });
            }
            for t in tasks {
                assert_eq!(t.await.expect("subscriber"), EVENTS);
            }
        });
    });
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
