//! Runnable example programs (`src/bin/`) and sample Node.js apps (`apps/`).
//!
//! - `cargo run -p conan-examples --bin memory-demo`: the manager on the in-memory provider.
//! - `cargo run -p conan-examples --bin embed-local`: embed Conan in a Rust program and run
//!   the hello app as a supervised local process.
//!
//! The helpers below print events and sizes the way the examples show them.

use std::time::Duration;

use conan::{DeploymentManager, Event, EventEnvelope, OperationKind, Outcome};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// Prints every event of a manager as it happens, on a task of its own, and lets the
/// program wait until the events of an operation are printed, so that what it prints
/// about the operation's result comes after them.
#[derive(Debug)]
pub struct EventPrinter {
    finished: mpsc::UnboundedReceiver<OperationKind>,
}

impl EventPrinter {
    /// Starts printing the events of `manager` (indented, one per line).
    #[must_use]
    pub fn start(manager: &DeploymentManager) -> Self {
        let mut events = manager.subscribe();
        let (finished_tx, finished) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(envelope) => {
                        println!("    {}", event_line(&envelope));
                        if let Event::Finished { kind, .. } = envelope.event {
                            let _ = finished_tx.send(kind);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => println!("    ({missed} events missed)"),
                    Err(RecvError::Closed) => break,
                }
            }
        });
        Self { finished }
    }

    /// Waits until the end of the next operation of `kind` is printed (at most a few
    /// seconds: the operation's result is what counts, the events only make the output
    /// read in order).
    pub async fn finished(&mut self, kind: OperationKind) {
        let seen = async {
            while let Some(k) = self.finished.recv().await {
                if k == kind {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), seen).await;
    }
}

/// One event as a short line: the time of day (to the millisecond) and what happened.
///
/// ```
/// # use conan::{DeploymentId, Event, EventBus};
/// let bus = EventBus::new(8);
/// let mut rx = bus.subscribe();
/// bus.emit(Event::Healthy { deployment: DeploymentId::new("dep-1") });
/// let line = conan_examples::event_line(&rx.try_recv().unwrap());
/// assert!(line.ends_with("healthy"), "{line}");
/// ```
#[must_use]
pub fn event_line(envelope: &EventEnvelope) -> String {
    let time = envelope.at.to_string();
    // `2026-05-01T10:00:00.123456Z` -> `10:00:00.123`
    let time = time.get(11..23).unwrap_or(&time);
    format!("{time}  {}", describe(&envelope.event))
}

/// What an event says, in words.
#[must_use]
pub fn describe(event: &Event) -> String {
    match event {
        Event::Queued { kind, .. } => format!("{kind} queued"),
        Event::Started { kind, .. } => format!("{kind} started"),
        Event::Retrying {
            attempt,
            delay_ms,
            error,
            ..
        } => format!("attempt {attempt} failed ({error}); retrying in {delay_ms} ms"),
        Event::Finished { kind, outcome, .. } => match outcome {
            Outcome::Succeeded => format!("{kind} succeeded"),
            Outcome::Failed { error } => format!("{kind} failed: {error}"),
            Outcome::Cancelled => format!("{kind} cancelled"),
        },
        Event::StatusChanged {
            from, to, revision, ..
        } => format!("status {from} -> {to} (revision {revision})"),
        Event::Progress { phase, message, .. } => format!("{}: {message}", phase.label()),
        Event::Healthy { .. } => "healthy".to_owned(),
        Event::Unhealthy { reason, .. } => format!("unhealthy: {reason}"),
        Event::Restarted {
            attempt,
            exit,
            delay_ms,
            ..
        } => format!("restarted (attempt {attempt}, {exit}, after {delay_ms} ms)"),
        Event::Failed { failure, .. } => format!("failed: {}", failure.reason),
        Event::RolledBack {
            failed,
            serving,
            reason,
            ..
        } => format!("revision {failed} failed ({reason}); revision {serving} serves"),
        Event::MonitorRestart {
            attempt,
            delay_ms,
            cause,
            ..
        } => format!("the monitor restarts it in {delay_ms} ms (attempt {attempt}): {cause}"),
        Event::Recovered { status, .. } => format!("recovered as {status}"),
        Event::Removed { .. } => "removed".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A byte count in MiB with one decimal (`"44.3 MiB"`), or `"unknown"`.
///
/// ```
/// assert_eq!(conan_examples::mib(Some(46_415_872)), "44.3 MiB");
/// assert_eq!(conan_examples::mib(None), "unknown");
/// ```
#[must_use]
pub fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "unknown".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    )
}
