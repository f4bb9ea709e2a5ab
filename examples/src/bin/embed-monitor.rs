//! Embedding the monitor: deploy the hello app, start a [`Monitor`] over the manager, make
//! the app's health check fail, and watch the monitor restart it — then read its health and
//! a few lines of its Prometheus exposition.
//!
//! `cargo run -p conan-examples --bin embed-monitor [APP_DIR]` (default `examples/apps/hello`,
//! whose `GET /toggle-health` flips `/health` to 503).

use std::time::Duration;

use conan::monitor::Monitor;
use conan::prelude::*;
use conan::{Event, OperationKind};
use conan_examples::EventPrinter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "hello-monitored";

#[tokio::main]
async fn main() -> conan::Result<()> {
    let source = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/apps/hello").to_owned());
    let manager = DeploymentManager::builder()
        .provider(LocalProvider::builder().build()?)
        .build()
        .await?;
    // The monitor: probes every running deployment's health check and restarts the ones
    // that fail it `failure_threshold` times in a row, under their restart policy.
    let monitor = Monitor::builder(manager.clone()).build();
    let mut events = EventPrinter::start(&manager);

    let config = DeploymentConfig::builder(NAME)
        .source(source)
        .health_check(
            HealthCheck::http("/health")
                .interval(Duration::from_millis(500))
                .failure_threshold(2),
        )
        .build()?;
    let record = manager.deploy(config).await?;
    events.finished(OperationKind::Deploy).await;
    let url = record
        .runtime
        .as_deref()
        .and_then(|r| r.url.clone())
        .unwrap_or_default();
    println!("{NAME} serves at {url}; making its health check fail");

    let mut rx = manager.subscribe();
    get(&url, "/toggle-health").await;
    // Wait for the monitor's restart to finish (the printer shows the steps).
    let restarted = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(e) = rx.recv().await {
            if matches!(
                e.event,
                Event::Finished {
                    kind: OperationKind::Restart,
                    ..
                }
            ) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    events.finished(OperationKind::Restart).await;
    if restarted {
        println!("restarted by the monitor; waiting for its next probe");
    } else {
        println!("no restart within 30 s");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let health = manager.health(NAME).await?;
    println!(
        "health now: {} ({})",
        health.status,
        health.detail.as_deref().unwrap_or("no probe yet")
    );
    let id = manager.get(NAME)?.id;
    println!(
        "restarts the monitor asked for: {}",
        monitor.health().monitor_restarts(&id)
    );

    println!("from its Prometheus exposition:");
    for line in monitor.render_prometheus().lines().filter(|l| {
        l.contains(NAME)
            && (l.starts_with("conan_deployment_up") || l.starts_with("conan_health_checks_total"))
    }) {
        println!("  {line}");
    }

    monitor.shutdown().await;
    manager.stop(NAME).await?;
    events.finished(OperationKind::Stop).await;
    manager.remove(NAME).await?;
    events.finished(OperationKind::Remove).await;
    Ok(())
}

/// `GET path` on `url` (`http://host:port`), ignoring the answer.
async fn get(url: &str, path: &str) {
    let Some(authority) = url.strip_prefix("http://") else {
        return;
    };
    if let Ok(mut s) = tokio::net::TcpStream::connect(authority).await {
        let _ = s
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    }
}
