//! Embedding the proxy: a stable endpoint in front of a local deployment that survives an
//! update. Deploys the ws-echo app as revision r1 behind `127.0.0.1:18080` (or the address
//! given), updates it to r2 while the endpoint keeps answering, prints the proxy's counters,
//! then removes it.
//!
//! `cargo run -p conan-examples --bin embed-proxy [LISTEN_ADDR]`

use std::net::SocketAddr;
use std::time::Duration;

use conan::prelude::*;
use conan::proxy::{Proxy, ProxySettings};

const NAME: &str = "ws-echo-embedded";

#[tokio::main]
async fn main() -> conan::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_owned())
        .parse()
        .map_err(|e| conan::Error::InvalidConfig {
            problems: vec![conan::ConfigProblem::new("LISTEN_ADDR", format!("{e}"))],
        })?;
    let proxy = Proxy::new(ProxySettings::default())?;
    let manager = DeploymentManager::builder()
        .provider(LocalProvider::builder().build()?)
        .traffic(proxy.clone())
        .build()
        .await?;
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/apps/ws-echo");
    let config = |rev: &str| {
        DeploymentConfig::builder(NAME)
            .source(source)
            .env("REV", rev)
            .health_check(HealthCheck::http("/health").interval(Duration::from_secs(1)))
            .listen(listen)
            .build()
    };
    let record = manager.deploy(config("r1")?).await?;
    let port = record
        .runtime
        .as_deref()
        .and_then(|r| r.instances.first())
        .and_then(|i| i.port);
    println!("{NAME} serves at http://{listen} (its instance on port {port:?})");
    let record = manager.update(NAME, config("r2")?).await?;
    let port = record
        .runtime
        .as_deref()
        .and_then(|r| r.instances.first())
        .and_then(|i| i.port);
    println!(
        "updated to revision {}: still http://{listen}, the instance now on {port:?}",
        record.revision
    );
    if let Some(stats) = manager.traffic_stats(NAME)? {
        for r in &stats.revisions {
            println!(
                "revision {}: {} requests, {} in flight, 5xx ratio {:.3}",
                r.revision,
                r.requests,
                r.in_flight,
                r.error_ratio()
            );
        }
    }
    manager.remove(NAME).await?;
    println!("{NAME} removed; the endpoint is closed");
    Ok(())
}
