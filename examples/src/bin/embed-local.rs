//! Embedding Conan in a Rust program, without the daemon: deploy the hello app as a
//! supervised local process, print events as they happen, query it, then stop and remove
//! it.
//!
//! `cargo run -p conan-examples --bin embed-local [APP_DIR]` (default `examples/apps/hello`).

use std::time::Duration;

use conan::prelude::*;
use conan_examples::{EventPrinter, mib};
use futures::StreamExt;

const NAME: &str = "hello-embedded";

#[tokio::main]
async fn main() -> conan::Result<()> {
    let source = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/apps/hello").to_owned());
    let manager = DeploymentManager::builder()
        .provider(LocalProvider::builder().build()?)
        .build()
        .await?;

    // Prints every event as it happens; `events.finished(kind)` waits until an
    // operation's events are printed, so what follows reads in order.
    let mut events = EventPrinter::start(&manager);

    println!("deploying {source}");
    let config = DeploymentConfig::builder(NAME)
        .source(source)
        .health_check(HealthCheck::http("/health").interval(Duration::from_secs(2)))
        .build()?;
    let record = manager.deploy(config).await?;
    events.finished(OperationKind::Deploy).await;
    let runtime = record.runtime.as_deref();
    println!(
        "{} ({}) is {} at {}, pid {}",
        record.name,
        record.id,
        record.status,
        runtime.and_then(|r| r.url.as_deref()).unwrap_or("-"),
        runtime
            .and_then(|r| r.instances.first())
            .map_or("-", |i| i.id.as_str()),
    );

    let metrics = manager.metrics(NAME).await?;
    let cpu = metrics
        .cpu_percent
        .map_or_else(|| "unknown".to_owned(), |c| format!("{c:.1} %"));
    println!("memory {}, cpu {cpu}", mib(metrics.memory_bytes));

    println!("its last log lines:");
    let mut lines = manager.logs(NAME, &LogQuery::tail(5)).await?;
    while let Some(line) = lines.next().await {
        let line = line?;
        println!("  {} {}", line.stream, line.message);
    }

    println!("stopping");
    let record = manager.stop(NAME).await?;
    events.finished(OperationKind::Stop).await;
    println!("{} is {}", record.name, record.status);

    manager.remove(NAME).await?;
    events.finished(OperationKind::Remove).await;
    println!("{NAME} removed");
    Ok(())
}
