//! One function per command; each talks to the daemon through [`Client`](crate::client::Client).

mod alerts;
mod daemon;
mod docker;
mod events;
mod inspect;
mod logs;
mod mcp;
mod metrics;
mod monit;
mod operate;
mod progress;
mod repair;

use std::path::PathBuf;

use crate::cli::{Command, DaemonAction};
use crate::error::{CliError, CliResult};
use crate::home::Home;
use crate::project::{self, Overrides};

/// Runs a parsed command line.
///
/// # Errors
/// The command's error, ready to print.
pub fn run(command: Command) -> CliResult {
    match command {
        Command::Init { path } => init(path),
        Command::Docker {
            action: crate::cli::DockerAction::BaseImage { tag, node },
        } => docker::base_image(&home()?, &tag, &node),
        Command::Daemon {
            action: None,
            background: true,
        } => crate::launch::detach(),
        Command::Daemon { action: None, .. } => crate::daemon::run(&home()?),
        other => {
            let home = home()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
            let result = runtime.block_on(async {
                let result = dispatch(&home, other).await;
                crate::client::settings_checked().await;
                result
            });
            // Nothing runs on the blocking pool once the command is done: exit without
            // waiting for its idle threads to wind down.
            runtime.shutdown_background();
            result
        }
    }
}

fn home() -> CliResult<Home> {
    Home::from_env().map_err(|e| CliError::usage(e.to_string()))
}

fn parse_env(env: &[String]) -> CliResult<Vec<(String, String)>> {
    env.iter().map(|e| project::parse_env(e)).collect()
}

async fn dispatch(home: &Home, command: Command) -> CliResult {
    match command {
        Command::Deploy {
            path,
            name,
            provider,
            port,
            env,
            start,
            health,
            replicas,
            json,
        } => {
            let overrides = Overrides {
                name,
                provider: provider.map(|p| p.as_str().to_owned()),
                port,
                env: parse_env(&env)?,
                start_command: start,
                health_path: health,
                replicas,
            };
            operate::deploy(home, path.as_deref(), &overrides, json.json).await
        }
        Command::Ls { json } => inspect::list(home, json.json).await,
        Command::Status { name, json } => inspect::status(home, &name, json.json).await,
        Command::History { name, json } => inspect::history(home, &name, json.json).await,
        Command::Logs(args) => logs::run(home, &args).await,
        Command::Monit => monit::run(home).await,
        Command::Mcp => mcp::run(home).await,
        Command::Metrics {
            name,
            since,
            step,
            json,
        } => metrics::run(home, &name, since.as_deref(), step.as_deref(), json.json).await,
        Command::Stop { name, json } => operate::action(home, &name, "stop", json.json).await,
        Command::Start { name, json } => operate::action(home, &name, "start", json.json).await,
        Command::Restart { name, json } => operate::action(home, &name, "restart", json.json).await,
        Command::Pause {
            name,
            timeout,
            json,
        } => {
            operate::endpoint(
                home,
                &name,
                "pause",
                &serde_json::json!({ "timeout": timeout }),
                json.json,
            )
            .await
        }
        Command::Resume { name, json } => {
            operate::endpoint(home, &name, "resume", &serde_json::json!({}), json.json).await
        }
        Command::Maintenance {
            name,
            state,
            body,
            json,
        } => {
            let on = state == "on";
            operate::endpoint(
                home,
                &name,
                "maintenance",
                &serde_json::json!({ "on": on, "body": body }),
                json.json,
            )
            .await
        }
        Command::Rm { name, force, json } => operate::remove(home, &name, force, json.json).await,
        Command::Update {
            name,
            path,
            env,
            strategy,
            json,
        } => {
            let env = parse_env(&env)?;
            operate::update(home, &name, path.as_deref(), env, strategy, json.json).await
        }
        Command::Rollback { name, to, json } => operate::rollback(home, &name, to, json.json).await,
        Command::Scale {
            name,
            replicas,
            json,
        } => operate::scale(home, &name, replicas, json.json).await,
        Command::Events { follow, json } => events::run(home, follow, json.json).await,
        Command::Alerts { json } => alerts::run(home, json.json).await,
        Command::Daemon {
            action: Some(DaemonAction::Stop),
            ..
        } => daemon::stop(home).await,
        Command::Daemon {
            action: Some(DaemonAction::Status { json }),
            ..
        } => daemon::status(home, json.json).await,
        Command::Daemon {
            action: Some(DaemonAction::Repair { json }),
            ..
        } => daemon::repair(home, json.json).await,
        Command::Init { .. } | Command::Docker { .. } | Command::Daemon { action: None, .. } => {
            Ok(())
        }
    }
}

fn init(path: Option<PathBuf>) -> CliResult {
    let dir = path.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.display())))?;
    let dir = std::fs::canonicalize(&dir)
        .map_err(|e| CliError::failed(format!("cannot open {}: {e}", dir.display())))?;
    let file = dir.join(project::FILE_NAME);
    if file.exists() {
        return Err(
            CliError::failed(format!("{} already exists", file.display()))
                .hint("edit it, or remove it to start over"),
        );
    }
    let health = project::serves_health(&dir);
    std::fs::write(
        &file,
        project::starter(&project::default_name(&dir), health),
    )
    .map_err(|e| CliError::failed(format!("cannot write {}: {e}", file.display())))?;
    println!("wrote {}", file.display());
    if !health {
        println!(
            "no GET /health route found in the app: its health check is commented out (ready = accepts TCP on its PORT)"
        );
    }
    println!("deploy it with `conan deploy {}`", dir.display());
    Ok(())
}
