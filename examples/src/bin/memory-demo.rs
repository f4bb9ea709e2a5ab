//! The deployment manager on the in-memory reference provider: deploy, a failed update
//! that keeps the old revision serving, a rollback, and every event printed as JSON.
//! No processes, no Docker: this shows the model.

use std::time::Duration;

use conan::prelude::*;
use conan::testing::{Fault, MemoryProvider, ProviderOp};
use conan::{Event, RetryPolicy};

#[tokio::main]
async fn main() -> conan::Result<()> {
    let provider = MemoryProvider::new();
    let manager = DeploymentManager::builder()
        .provider(provider.clone())
        .retry(RetryPolicy {
            initial_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        })
        .build()
        .await?;

    let mut events = manager.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(envelope) = events.recv().await {
            let line = serde_json::to_string(&envelope).unwrap_or_default();
            println!("event  {line}");
            if matches!(envelope.event, Event::Removed { .. }) {
                break;
            }
        }
    });

    // The first deploy hits two transient faults and is retried.
    provider.inject(ProviderOp::Deploy, Fault::Transient(2));
    let record = manager
        .deploy(
            DeploymentConfig::builder("hello")
                .env("GREETING", "hi")
                .build()?,
        )
        .await?;
    println!(
        "deployed {} ({}) revision {} -> {}",
        record.name, record.id, record.revision, record.status
    );

    // An update whose new revision never becomes healthy: the old one keeps serving.
    let broken = DeploymentConfig::builder("hello")
        .label(MemoryProvider::FAIL_LABEL, "yes")
        .build()?;
    match manager.update("hello", broken).await {
        Err(e) => println!("update failed as intended: {e}"),
        Ok(_) => println!("unexpected: the broken update succeeded"),
    }
    let record = manager.get("hello")?;
    println!(
        "still serving revision {} -> {}",
        record.revision, record.status
    );

    let record = manager.rollback("hello", Some(Revision(1))).await?;
    println!(
        "rolled back: now revision {} -> {}",
        record.revision, record.status
    );
    for rev in manager.history("hello").await? {
        println!("history  r{} {:?} {:?}", rev.revision, rev.cause, rev.state);
    }

    manager.remove("hello").await?;
    let _ = printer.await;
    println!("queue: {:?}", manager.queue_stats());
    Ok(())
}
