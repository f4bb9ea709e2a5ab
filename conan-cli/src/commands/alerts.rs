//! `conan alerts`: what fires now, and the notifications waiting in the outbox.

use crate::api::AlertsView;
use crate::client::Client;
use crate::error::CliResult;
use crate::home::Home;
use crate::output::table::{Cell, Table};
use crate::output::{self, Style, format_value, short_duration, short_time};

/// `conan alerts`.
pub async fn run(home: &Home, json: bool) -> CliResult {
    let client = Client::connect(home).await?;
    let view: AlertsView = client.get("/alerts").await?;
    if json {
        output::print_json(&view);
        return Ok(());
    }
    let style = Style::stdout();
    if view.firing.is_empty() {
        println!("no alert fires");
    } else {
        let mut table = Table::new(&["RULE", "DEPLOYMENT", "SINCE", "FOR", "VALUE"]);
        for a in &view.firing {
            table.row(vec![
                Cell::new(&a.rule),
                Cell::new(&a.deployment),
                Cell::new(short_time(a.since)),
                Cell::new(short_duration(a.since.elapsed())),
                Cell::new(format_value(a.value)),
            ]);
        }
        print!("{}", table.render(style));
    }
    if !view.pending.is_empty() {
        println!();
        println!("waiting for delivery:");
        let mut table = Table::new(&[
            "WEBHOOK",
            "RULE",
            "DEPLOYMENT",
            "STATE",
            "ATTEMPTS",
            "NEXT",
            "LAST ERROR",
        ]);
        for p in &view.pending {
            table.row(vec![
                Cell::new(&p.webhook),
                Cell::new(&p.rule),
                Cell::new(&p.deployment),
                Cell::new(p.state.as_str()),
                Cell::new(p.attempts.to_string()),
                Cell::new(short_time(p.next_attempt_at)),
                Cell::new(p.last_error.clone().unwrap_or_else(|| "-".to_owned())),
            ]);
        }
        print!("{}", table.render(style));
    }
    Ok(())
}
