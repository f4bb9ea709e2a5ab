//! `conan events [-f]`: the audit log (what happened), or live events.

use std::collections::HashMap;

use conan::{AuditAction, AuditEntry, EventEnvelope};
use hyper::Method;

use crate::api::DeploymentView;
use crate::client::Client;
use crate::error::{CliError, CliResult};
use crate::home::Home;
use crate::output::{self, Color, Style};

/// Audit entries shown without `-f`.
const RECENT: usize = 50;

async fn names(client: &Client) -> HashMap<String, String> {
    client
        .get::<Vec<DeploymentView>>("/deployments")
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.id, v.name))
        .collect()
}

/// `conan events`.
pub async fn run(home: &Home, follow: bool, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let mut known = names(&client).await;
    let style = Style::stdout();
    if !follow {
        let entries: Vec<AuditEntry> = client.get(&format!("/audit?limit={RECENT}")).await?;
        if json {
            output::print_json(&entries);
            return Ok(());
        }
        for e in &entries {
            let name = known
                .get(e.deployment.as_str())
                .map_or(e.deployment.as_str(), String::as_str);
            println!("{}", audit_line(e, name, style));
        }
        return Ok(());
    }
    let mut lines = client.stream::<()>(Method::GET, "/events", None).await?;
    while let Some(line) = lines.next::<EventEnvelope>().await {
        let env = line?;
        if json {
            let text = serde_json::to_string(&env)
                .map_err(|e| CliError::failed(format!("cannot encode an event: {e}")))?;
            println!("{text}");
            continue;
        }
        let id = env.event.deployment().as_str().to_owned();
        if !known.contains_key(&id) {
            known = names(&client).await;
        }
        let name = known.get(&id).map_or(id.as_str(), String::as_str);
        println!("{}", output::event_line(&env, name, style));
    }
    Ok(())
}

fn audit_line(entry: &AuditEntry, name: &str, style: Style) -> String {
    let what = match &entry.action {
        AuditAction::Transition { from, to } => {
            format!("{from} -> {}", style.status(to.as_str()))
        }
        AuditAction::Operation {
            kind,
            revision,
            attempts,
            outcome,
            requested_by,
        } => {
            let rev = revision
                .map(|r| format!(" revision {}", r.0))
                .unwrap_or_default();
            let tries = if *attempts > 1 {
                format!(" after {attempts} attempts")
            } else {
                String::new()
            };
            let result = match outcome {
                conan::Outcome::Succeeded => style.paint(Color::Green, "succeeded"),
                conan::Outcome::Failed { error } => {
                    format!("{}: {error}", style.paint(Color::Red, "failed"))
                }
                conan::Outcome::Cancelled => "cancelled".to_owned(),
            };
            let by = requested_by
                .as_ref()
                .map(|who| format!(" (by {who})"))
                .unwrap_or_default();
            format!("{kind}{rev} {result}{tries}{by}")
        }
        AuditAction::Restart {
            revision,
            attempt,
            exit,
            delay_ms,
        } => format!(
            "{} revision {} (attempt {attempt}, {exit}, in {delay_ms} ms)",
            style.paint(Color::Yellow, "restart"),
            revision.0
        ),
        AuditAction::Scale { from, to, reason } => format!(
            "{} {from} -> {to} replicas ({reason})",
            style.paint(Color::Bold, "scale")
        ),
    };
    format!(
        "{} {} {what}",
        style.paint(Color::Dim, &output::short_time(entry.at)),
        style.paint(Color::Bold, name)
    )
}
