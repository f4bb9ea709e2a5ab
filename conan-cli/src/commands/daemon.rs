//! `conan daemon stop|status|repair`.

use std::time::{Duration, Instant};

use hyper::Method;

use crate::api::DaemonInfo;
use crate::client::Client;
use crate::daemon::lock::DaemonLock;
use crate::error::{CliError, CliResult};
use crate::home::Home;
use crate::output;

/// How long `daemon stop` waits for running operations to finish.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// `conan daemon stop`: asks the daemon to stop and waits until it released its lock.
pub async fn stop(home: &Home) -> CliResult {
    match stop_daemon(home).await? {
        Some(pid) => {
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            println!("Conan daemon stopped{pid}; deployments keep running");
        }
        None => println!("no Conan daemon is running for {}", home.root().display()),
    }
    Ok(())
}

/// Stops the daemon of `home` if one answers and waits until it released its lock.
/// Returns `None` when none ran, else `Some` of its pid (when it said).
pub(super) async fn stop_daemon(home: &Home) -> CliResult<Option<Option<u32>>> {
    let client = Client::existing(home);
    if !client.answers().await {
        if DaemonLock::is_held_async(home.lock()).await {
            return Err(
                CliError::failed("a Conan daemon holds the lock but does not answer")
                    .hint(format!("see {}", home.log().display())),
            );
        }
        return Ok(None);
    }
    let info: Option<DaemonInfo> = client.get("/daemon").await.ok();
    // The daemon may close the connection as it goes; the lock says when it is gone.
    let _ = client
        .call::<(), serde_json::Value>(Method::POST, "/daemon/shutdown", None)
        .await;
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    while DaemonLock::is_held_async(home.lock()).await {
        if started.elapsed() > STOP_DEADLINE {
            return Err(CliError::failed("the Conan daemon did not stop within 60s")
                .hint(format!("see {}", home.log().display())));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    Ok(Some(info.map(|i| i.pid)))
}

/// `conan daemon status`: exit 0 with its details when one runs, else 1.
pub async fn status(home: &Home, json: bool) -> CliResult {
    let client = Client::existing(home);
    if !client.answers().await {
        return Err(CliError::failed(format!(
            "no Conan daemon is running for {}",
            home.root().display()
        ))
        .hint("any command starts one, e.g. `conan ls`"));
    }
    let info: DaemonInfo = client.get("/daemon").await?;
    if json {
        output::print_json(&info);
        return Ok(());
    }
    println!("running      pid {}", info.pid);
    println!("version      {}", info.version);
    println!("home         {}", info.home.display());
    println!("providers    {}", info.providers.join(", "));
    if let Some(e) = &info.docker_error {
        println!("docker       unavailable: {e}");
    }
    if let Some(c) = &info.containment {
        println!("containment  {c}");
    }
    if let Some(addr) = &info.metrics_addr {
        println!("metrics      http://{addr}/metrics");
    }
    if let Some(e) = &info.metrics_error {
        println!("metrics      unavailable: {e}");
    }
    println!("deployments  {}", info.deployments);
    println!("since        {}", output::short_time(info.started_at));
    print_state(&info);
    println!(
        "settings     {} (the environment overrides it; read at start)",
        home.settings().display()
    );
    for s in &info.settings {
        let from = if s.source == "default" {
            String::new()
        } else {
            format!("  ({})", s.source)
        };
        println!("  {:<20} {}{from}", s.key, s.value);
    }
    Ok(())
}

/// The state database's lines of `daemon status`: damage first, loudly.
fn print_state(info: &DaemonInfo) {
    let state = &info.state;
    if let Some(restore) = &state.restore {
        println!("state        DAMAGED at start: {}", restore.summary());
    }
    for d in &state.damaged {
        let name = d
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        println!(
            "damaged      {} {}{name} is not managed: {}",
            d.kind, d.id, d.error
        );
    }
    if !state.damaged.is_empty() || state.restore.is_some() {
        println!("             run `conan daemon repair` to rebuild what can be rebuilt");
    }
    let unsaved = &info.unsaved;
    if !unsaved.is_clear() {
        println!(
            "unsaved      {} deployment(s) have state changes the store refused{}{}; retrying",
            unsaved.deployments.len(),
            unsaved
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            unsaved
                .since
                .map(|t| format!(" since {}", output::short_time(t)))
                .unwrap_or_default(),
        );
    }
    if state.restore.is_none() && state.damaged.is_empty() && unsaved.is_clear() {
        println!("state        ok");
    }
    match (&state.backup, state.backup_taken_at) {
        (Some(path), Some(at)) => {
            println!(
                "backup       {} ({})",
                path.display(),
                output::short_time(at)
            );
        }
        (Some(path), None) => println!("backup       {} (none yet)", path.display()),
        (None, _) => {}
    }
    if let Some(e) = &state.backup_error {
        println!("             the last backup failed: {e}");
    }
}

pub use super::repair::repair;
