//! Commands that change deployments: deploy, stop, start, restart, rm, update, rollback.

use std::path::Path;

use hyper::Method;

use super::progress;
use crate::api::{DeploymentView, RollbackBody, UpdateBody, query};
use crate::cli::StrategyArg;
use crate::client::Client;
use crate::error::CliResult;
use crate::home::Home;
use crate::output::{self, Color, Style};
use crate::project::{Overrides, Project};

fn path_of(name: &str, action: &str) -> String {
    format!(
        "/deployments/{}/{action}?progress=1",
        query::encode(&[("", name.to_owned())]).trim_start_matches('=')
    )
}

fn target(name: &str) -> String {
    query::encode(&[("", name.to_owned())])
        .trim_start_matches('=')
        .to_owned()
}

fn report(view: &DeploymentView, headline: &str, json: bool) {
    if json {
        output::print_json(view);
        return;
    }
    let style = Style::stdout();
    let mark = if view.status == "failed" {
        style.paint(Color::Red, "✗")
    } else {
        style.paint(Color::Green, "✓")
    };
    // One write for the whole answer: it is the last thing between the result and exit.
    print!(
        "{mark} {headline}\n{}",
        output::deployment_text(view, None, style)
    );
}

/// `conan deploy`.
pub async fn deploy(
    home: &Home,
    path: Option<&Path>,
    overrides: &Overrides,
    json: bool,
) -> CliResult {
    // Reads conan.toml right here: nothing else runs on this command's runtime yet, and
    // a thread of the blocking pool would cost its start and two wake-ups (about half a
    // millisecond) on the path of every deploy.
    let config = Project::locate(path)?.config(overrides)?;
    let client = Client::connect(home).await?;
    let lines = client
        .stream(Method::POST, "/deployments?progress=1", Some(&config))
        .await?;
    let view = progress::follow(lines).await?;
    report(&view, &format!("{} is {}", view.name, view.status), json);
    Ok(())
}

/// `conan stop|start|restart NAME`.
pub async fn action(home: &Home, name: &str, action: &str, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let lines = client
        .stream::<()>(Method::POST, &path_of(name, action), None)
        .await?;
    let view = progress::follow(lines).await?;
    let done = match action {
        "stop" => "stopped",
        "start" => "started",
        _ => "restarted",
    };
    report(
        &view,
        &format!("{done} {} ({})", view.name, view.status),
        json,
    );
    Ok(())
}

/// `conan rm NAME [--force]`.
pub async fn remove(home: &Home, name: &str, force: bool, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let force = if force { "&force=1" } else { "" };
    let path = format!("/deployments/{}?progress=1{force}", target(name));
    let lines = client.stream::<()>(Method::DELETE, &path, None).await?;
    let view = progress::follow(lines).await?;
    if json {
        output::print_json(&view);
    } else {
        println!(
            "{} removed {}",
            Style::stdout().paint(Color::Green, "✓"),
            view.name
        );
    }
    Ok(())
}

/// `conan update NAME [PATH] [--env K=V]... [--strategy S]`.
pub async fn update(
    home: &Home,
    name: &str,
    path: Option<&Path>,
    env: Vec<(String, String)>,
    strategy: Option<StrategyArg>,
    json: bool,
) -> CliResult {
    let mut body = UpdateBody {
        env: env.into_iter().collect(),
        strategy: strategy.map(Into::into),
        ..UpdateBody::default()
    };
    let client = Client::connect(home).await?;
    // Without a path, the deployment's own source directory: its conan.toml is read again,
    // so an edited file is rolled out (and an unchanged one creates no revision).
    let path = match path {
        Some(path) => Some(path.to_path_buf()),
        None => {
            let view: DeploymentView = client
                .get(&format!("/deployments/{}", target(name)))
                .await?;
            view.source
                .join(crate::project::FILE_NAME)
                .is_file()
                .then_some(view.source)
        }
    };
    if let Some(path) = path {
        let overrides = Overrides {
            name: Some(name.to_owned()),
            ..Overrides::default()
        };
        // Reads conan.toml: on the blocking pool, not on the runtime's only thread.
        let (config, source) = crate::blocking::run(move || {
            let project = Project::locate(Some(&path))?;
            Ok(match project.file {
                Some(_) => (Some(project.config(&overrides)?), None),
                None => (None, Some(project.dir)),
            })
        })
        .await?;
        body.config = config;
        body.source = source;
    }
    let lines = match client
        .stream(Method::POST, &path_of(name, "update"), Some(&body))
        .await
    {
        Err(e) if e.api.as_ref().is_some_and(|a| a.code == "unchanged") => {
            if json {
                if let Some(api) = &e.api {
                    output::print_json(api);
                }
            } else {
                eprintln!("{}", e.message);
            }
            return Ok(());
        }
        other => other?,
    };
    let view = progress::follow(lines).await?;
    report(
        &view,
        &format!(
            "{} is {} on revision {}",
            view.name, view.status, view.revision
        ),
        json,
    );
    Ok(())
}

/// `conan rollback NAME [--to REV]`.
pub async fn rollback(home: &Home, name: &str, to: Option<u64>, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let lines = client
        .stream(
            Method::POST,
            &path_of(name, "rollback"),
            Some(&RollbackBody { to }),
        )
        .await?;
    let view = progress::follow(lines).await?;
    report(
        &view,
        &format!(
            "{} rolled back: {} on revision {}",
            view.name, view.status, view.revision
        ),
        json,
    );
    Ok(())
}

/// `conan scale NAME N`: another number of replicas, same revision.
pub async fn scale(home: &Home, name: &str, replicas: u32, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let lines = client
        .stream(
            Method::POST,
            &path_of(name, "scale"),
            Some(&crate::api::ScaleBody { replicas }),
        )
        .await?;
    let view = progress::follow(lines).await?;
    report(
        &view,
        &format!(
            "scaled {} to {} replicas ({})",
            view.name, view.replicas, view.status
        ),
        json,
    );
    Ok(())
}

/// `conan pause`, `resume`, `maintenance`: the deployment's endpoint at the proxy.
pub async fn endpoint(
    home: &Home,
    name: &str,
    action: &str,
    body: &serde_json::Value,
    json: bool,
) -> CliResult {
    let client = Client::connect(home).await?;
    let stats: conan::traffic::TrafficStats = client
        .call(
            Method::POST,
            &format!("/deployments/{}/{action}", target(name)),
            Some(body),
        )
        .await?;
    if json {
        output::print_json(&stats);
        return Ok(());
    }
    let at = stats
        .endpoint
        .map_or_else(|| "-".to_owned(), |a| format!("http://{a}"));
    let state = if stats.maintenance {
        "in maintenance (503 to every request)"
    } else if stats.paused {
        "paused (new requests are held)"
    } else {
        "serving"
    };
    let style = Style::stdout();
    println!("{} {name} at {at}: {state}", style.paint(Color::Green, "✓"));
    Ok(())
}
