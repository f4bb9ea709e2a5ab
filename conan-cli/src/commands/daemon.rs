//! `conan daemon stop|status`.

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
    let client = Client::existing(home);
    if !client.answers().await {
        if DaemonLock::is_held_async(home.lock()).await {
            return Err(
                CliError::failed("a Conan daemon holds the lock but does not answer")
                    .hint(format!("see {}", home.log().display())),
            );
        }
        println!("no Conan daemon is running for {}", home.root().display());
        return Ok(());
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
    let pid = info
        .map(|i| format!(" (pid {})", i.pid))
        .unwrap_or_default();
    println!("Conan daemon stopped{pid}; deployments keep running");
    Ok(())
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
    println!("deployments  {}", info.deployments);
    println!("since        {}", output::short_time(info.started_at));
    Ok(())
}
