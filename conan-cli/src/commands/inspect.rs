//! Read-only commands: ls, status, history.

use crate::api::{DeploymentView, RevisionView, StatusView, query};
use crate::client::Client;
use crate::error::CliResult;
use crate::home::Home;
use crate::output::table::{Cell, Table};
use crate::output::{self, Style, short_duration};

fn target(name: &str) -> String {
    query::encode(&[("", name.to_owned())])
        .trim_start_matches('=')
        .to_owned()
}

/// `conan ls`.
pub async fn list(home: &Home, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let views: Vec<DeploymentView> = client.get("/deployments").await?;
    if json {
        output::print_json(&views);
        return Ok(());
    }
    if views.is_empty() {
        println!("no deployments yet; deploy one with `conan deploy PATH`");
        return Ok(());
    }
    let mut table = Table::new(&[
        "NAME",
        "STATUS",
        "PROVIDER",
        "REV",
        "PID/CONTAINER",
        "UPTIME",
        "URL",
    ]);
    for v in &views {
        // A restarting deployment's last pid is dead: not shown.
        let instance = v
            .pid
            .filter(|_| v.restart.is_none())
            .map(|p| p.to_string())
            .or_else(|| v.container.as_ref().map(|c| c.chars().take(12).collect()))
            .map(|first| match v.instances.len() {
                n if n > 1 => format!("{first} (+{} replicas)", n - 1),
                _ => first,
            })
            .unwrap_or_else(|| "-".to_owned());
        let uptime = match (v.status.as_str(), v.started_at) {
            ("running" | "updating", Some(t)) => short_duration(t.elapsed()),
            _ => "-".to_owned(),
        };
        table.row(vec![
            Cell::new(&v.name),
            Cell::status(&v.status),
            Cell::new(&v.provider),
            Cell::new(v.revision.to_string()),
            Cell::new(instance),
            Cell::new(uptime),
            Cell::new(v.url.clone().unwrap_or_else(|| "-".to_owned())),
        ]);
    }
    print!("{}", table.render(Style::stdout()));
    Ok(())
}

/// `conan status NAME`.
pub async fn status(home: &Home, name: &str, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let view: StatusView = client
        .get(&format!("/deployments/{}", target(name)))
        .await?;
    if json {
        output::print_json(&view);
        return Ok(());
    }
    output::print_deployment(&view.deployment, Some(&view), Style::stdout());
    if let (Some(failure), "failed") = (
        &view.deployment.last_failure,
        view.deployment.status.as_str(),
    ) {
        println!();
        println!("last failure:");
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        for line in output::failure_lines(failure) {
            println!("{}", output::escape::for_output(&line, tty));
        }
    }
    Ok(())
}

/// `conan history NAME`.
pub async fn history(home: &Home, name: &str, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let revisions: Vec<RevisionView> = client
        .get(&format!("/deployments/{}/history", target(name)))
        .await?;
    if json {
        output::print_json(&revisions);
        return Ok(());
    }
    let mut table = Table::new(&["REV", "STATE", "CAUSE", "CREATED", "NOTE"]);
    let mut truncated = false;
    for r in &revisions {
        let mut note = Vec::new();
        if r.serving {
            note.push("serving".to_owned());
        }
        if let Some(src) = r.source_revision {
            note.push(format!("config of revision {src}"));
        }
        if let Some(reason) = &r.reason {
            note.push(reason.clone());
        }
        table.row(vec![
            Cell::new(r.revision.to_string()),
            Cell::status(&r.state),
            Cell::new(&r.cause),
            Cell::new(format!("{} ago", short_duration(r.created_at.elapsed()))),
            Cell::new(truncate_note(&note.join("; "), &mut truncated)),
        ]);
    }
    print!("{}", table.render(Style::stdout()));
    if truncated {
        eprintln!("notes are cut short; `conan history {name} --json` has them in full");
    }
    Ok(())
}

/// Longest NOTE shown in `history`'s table (a failure reason can be a paragraph).
const NOTE_CHARS: usize = 60;

/// `note` on one line and at most [`NOTE_CHARS`] long (with `…`); sets `truncated`.
fn truncate_note(note: &str, truncated: &mut bool) -> String {
    let one_line = note.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= NOTE_CHARS {
        return one_line;
    }
    *truncated = true;
    let mut cut: String = one_line.chars().take(NOTE_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 11: a failure reason in NOTE broke `history`'s table.
    #[test]
    fn long_or_multi_line_notes_are_cut_to_one_short_line() {
        let mut truncated = false;
        assert_eq!(truncate_note("serving", &mut truncated), "serving");
        assert!(!truncated);
        let long = format!("build failed\n--- build output ---\n{}", "x".repeat(200));
        let cut = truncate_note(&long, &mut truncated);
        assert!(truncated);
        assert_eq!(cut.chars().count(), NOTE_CHARS);
        assert!(!cut.contains('\n') && cut.ends_with('…'), "{cut}");
    }
}
