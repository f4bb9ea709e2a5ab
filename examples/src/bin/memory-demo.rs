//! The deployment manager on the in-memory reference provider: a deploy that is retried
//! after transient faults, a failed update that keeps the old revision serving, a
//! rollback, and every event as it happens. No processes, no Docker: this shows the model.
//!
//! `cargo run -p conan-examples --bin memory-demo`.

use std::time::Duration;

use conan::RevisionState;
use conan::prelude::*;
use conan::testing::{Fault, ProviderOp};
use conan_examples::EventPrinter;

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
    let mut events = EventPrinter::start(&manager);

    println!("1. deploy 'hello'; the provider fails twice with a transient error first");
    provider.inject(ProviderOp::Deploy, Fault::Transient(2));
    let config = DeploymentConfig::builder("hello")
        .env("GREETING", "hi")
        .build()?;
    let record = manager.deploy(config).await?;
    events.finished(OperationKind::Deploy).await;
    println!(
        "=> {} ({}) is {} on revision {}\n",
        record.name, record.id, record.status, record.revision
    );

    println!("2. update to a revision that never becomes healthy");
    let broken = DeploymentConfig::builder("hello")
        .label(MemoryProvider::FAIL_LABEL, "yes")
        .build()?;
    let outcome = manager.update("hello", broken).await;
    events.finished(OperationKind::Update).await;
    match outcome {
        Err(e) => println!("=> the update failed: {e}"),
        Ok(_) => println!("=> unexpected: the broken update succeeded"),
    }
    let record = manager.get("hello")?;
    println!(
        "=> revision {} still serves: {}\n",
        record.revision, record.status
    );

    println!("3. roll back to revision 1");
    let record = manager.rollback("hello", Some(Revision(1))).await?;
    events.finished(OperationKind::Rollback).await;
    println!(
        "=> {} is {} on revision {}, a new revision with the config of revision 1\n",
        record.name, record.status, record.revision
    );

    println!("history of 'hello':");
    for rev in manager.history("hello").await? {
        let from = rev
            .source_revision
            .map(|r| format!(" of revision {r}"))
            .unwrap_or_default();
        let state = match &rev.state {
            RevisionState::Pending => "pending".to_owned(),
            RevisionState::Succeeded => "served".to_owned(),
            RevisionState::Failed { reason } => format!("failed: {reason}"),
        };
        println!("  revision {} ({}{from}): {state}", rev.revision, rev.cause);
    }

    println!("\n4. remove it");
    manager.remove("hello").await?;
    events.finished(OperationKind::Remove).await;
    let stats = manager.queue_stats();
    println!(
        "=> removed; {} operations completed, {} failed",
        stats.completed, stats.failed
    );
    Ok(())
}
