//! Following an operation's progress stream: a spinner on a terminal, plain lines
//! otherwise; always on stderr, so stdout holds only the result (`conan deploy . > out.txt`
//! gets the deployment, `--json` stays JSON).
//!
//! Hand-written rather than `indicatif`: the spinner is one redraw of one line on a timer
//! the stream's `select!` already has, and the non-terminal case (plain lines, which
//! indicatif hides) would still be ours.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use conan::Event;

use crate::api::{DeploymentView, ProgressLine};
use crate::client::Lines;
use crate::error::{CliError, CliResult};
use crate::output::{Color, Style};

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Where progress goes.
struct Reporter {
    spinner: bool,
    style: Style,
    label: Option<String>,
    frame: usize,
}

impl Reporter {
    fn new() -> Self {
        Self {
            spinner: std::io::stderr().is_terminal(),
            style: Style::stderr(),
            label: None,
            frame: 0,
        }
    }

    fn write(&self, text: &str) {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(text.as_bytes());
        let _ = e.flush();
    }

    fn phase(&mut self, label: String) {
        if self.spinner {
            self.label = Some(label);
            self.redraw();
        } else {
            self.write(&format!("  {label}\n"));
        }
    }

    fn redraw(&mut self) {
        if let Some(label) = &self.label {
            let frame = self
                .style
                .paint(Color::Yellow, FRAMES[self.frame % FRAMES.len()]);
            self.write(&format!("\r\x1b[2K{frame} {label}"));
            self.frame += 1;
        }
    }

    fn clear(&mut self) {
        if self.spinner && self.label.take().is_some() {
            self.write("\r\x1b[2K");
        }
    }
}

fn describe(event: &Event) -> Option<String> {
    Some(match event {
        Event::Queued { kind, .. } => format!("{kind}: queued"),
        Event::Progress { phase, message, .. } if message.is_empty() => phase.label().to_owned(),
        Event::Progress { phase, message, .. } => format!("{}: {message}", phase.label()),
        Event::StatusChanged { to, .. } => format!("status: {}", to.kind()),
        Event::Retrying { attempt, error, .. } => {
            format!("attempt {attempt} failed ({error}); retrying")
        }
        Event::Restarted { attempt, exit, .. } => format!("restarted (attempt {attempt}, {exit})"),
        Event::Healthy { .. } => "healthy".to_owned(),
        Event::Unhealthy { reason, .. } => format!("unhealthy: {reason}"),
        Event::RolledBack {
            failed, serving, ..
        } => {
            format!(
                "revision {} failed; revision {} keeps serving",
                failed.0, serving.0
            )
        }
        _ => return None,
    })
}

/// Shows the stream's events until its result; returns the deployment after the operation.
///
/// # Errors
/// The operation's error (with the failure bundle), or a broken stream.
pub async fn follow(mut lines: Lines) -> CliResult<DeploymentView> {
    let mut reporter = Reporter::new();
    let mut tick = tokio::time::interval(Duration::from_millis(80));
    let outcome = loop {
        tokio::select! {
            line = lines.next::<ProgressLine>() => match line {
                Some(Ok(ProgressLine::Event(env))) => {
                    if let Some(label) = describe(&env.event) {
                        reporter.phase(label);
                    }
                }
                Some(Ok(ProgressLine::Result(view))) => break Ok(view),
                Some(Ok(ProgressLine::Error(api))) => break Err(CliError::from_api(api)),
                Some(Err(e)) => break Err(e),
                None => break Err(CliError::failed(
                    "the daemon closed the connection before the operation finished",
                ).hint("`conan status NAME` shows where it got to; the daemon's log is CONAN_HOME/daemon.log")),
            },
            _ = tick.tick(), if reporter.spinner => reporter.redraw(),
        }
    };
    reporter.clear();
    outcome
}
