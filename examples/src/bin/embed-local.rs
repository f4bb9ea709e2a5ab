//! Embedding Conan in a Rust program, without the daemon: deploy the hello app as a
//! supervised local process, print events as they happen, query it, then stop it.
//!
//! `cargo run -p conan-examples --bin embed-local [APP_DIR]` (default `examples/apps/hello`).

use std::time::Duration;

use conan::local::LocalProvider;
use conan::prelude::*;
use futures::StreamExt;

#[tokio::main]
async fn main() -> conan::Result<()> {
    let source = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/apps/hello").to_owned());
    let manager = DeploymentManager::builder()
        .provider(LocalProvider::builder().build()?)
        .build()
        .await?;

    let mut events = manager.subscribe();
    tokio::spawn(async move {
        while let Ok(envelope) = events.recv().await {
            println!(
                "[{}] {}",
                envelope.at,
                serde_json::to_string(&envelope.event).unwrap_or_default()
            );
        }
    });

    let config = DeploymentConfig::builder("hello-embedded")
        .source(source)
        .health_check(HealthCheck::http("/health").interval(Duration::from_secs(2)))
        .build()?;
    let record = manager.deploy(config).await?;
    let url = record
        .runtime
        .as_ref()
        .and_then(|r| r.url.clone())
        .unwrap_or_default();
    println!("running: {} ({}) at {url}", record.name, record.id);

    let metrics = manager.metrics("hello-embedded").await?;
    println!(
        "memory: {:?} bytes, cpu: {:?} %",
        metrics.memory_bytes, metrics.cpu_percent
    );
    let mut lines = manager.logs("hello-embedded", &LogQuery::tail(5)).await?;
    while let Some(line) = lines.next().await {
        let line = line?;
        println!("log: {} {}", line.stream, line.message);
    }

    let record = manager.stop("hello-embedded").await?;
    println!("{} is {}", record.name, record.status);
    manager.remove("hello-embedded").await?;
    Ok(())
}
