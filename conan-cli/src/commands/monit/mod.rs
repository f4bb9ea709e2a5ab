//! `conan monit`: a full-screen live view of every deployment.
//!
//! - [`source`]: where the data comes from (the daemon's API, or a fake in tests);
//! - [`model`]: the state and what keys and data do to it (no IO);
//! - [`view`]: drawing it with ratatui;
//! - [`terminal`]: raw mode and the alternate screen, given back on every way out;
//! - this module: the event loop that ties them together.
//!
//! Data flows in over one channel from background tasks: the list every
//! [`Pace::refresh`]; live health and metrics of the selected deployment as often, of the
//! others every [`Pace::live`] (the daemon measures processes for each, so that is the
//! dear request); the metrics history every [`Pace::history`]; the selected deployment's
//! followed logs; and the outcome of actions. Updates only mark the
//! screen dirty; it is redrawn on the next [`Pace::tick`] (4 frames a second at most, so
//! a log flood costs a few redraws, not one per line). A key redraws at once.

mod model;
mod source;
mod terminal;
mod text;
mod view;

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use conan::{LogLine, Timestamp};
use crossterm::event::{Event, EventStream};
use futures::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::client::Client;
use crate::error::{CliError, CliResult};
use crate::home::Home;
use model::{App, Effect};
use source::{Action, DaemonSource, DataSource, Live, Row, Sample};

/// How often `conan monit` asks and redraws.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Redraw at most this often (when something changed).
    pub tick: Duration,
    /// Ask for the list, and the selected deployment's health and metrics, this often.
    pub refresh: Duration,
    /// Ask for the other running deployments' health and metrics this often.
    pub live: Duration,
    /// Ask for the metrics history this often (the daemon samples every 10 s).
    pub history: Duration,
    /// The window the sparklines show.
    pub window: Duration,
    /// The step of the history asked for.
    pub step: Duration,
    /// Log lines shown when the pane starts following a deployment.
    pub tail: usize,
    /// Wait before following again after the log stream ended.
    pub refollow: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(250),
            refresh: Duration::from_secs(1),
            live: Duration::from_secs(5),
            history: Duration::from_secs(10),
            window: Duration::from_secs(10 * 60),
            step: Duration::from_secs(10),
            tail: 100,
            refollow: Duration::from_secs(1),
        }
    }
}

/// What the background tasks tell the event loop.
#[derive(Debug)]
enum Update {
    Rows(Result<Vec<Row>, String>),
    Live(Vec<(String, Option<Live>)>),
    History(String, Option<Vec<Sample>>),
    Log(String, LogLine),
    LogEnded(String, String),
    ActionDone(String, Action, Result<String, String>),
}

/// Aborts the background tasks when the loop ends, however it ends.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// `conan monit`.
pub async fn run(home: &Home) -> CliResult {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(CliError::usage("conan monit needs a terminal")
            .hint("run it in a terminal (or tmux); `conan ls` and `conan status NAME` print the same data"));
    }
    let client = Client::connect(home).await?;
    let quit = quit_signal()?;
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut guard = terminal::TerminalGuard::enter()
        .map_err(|e| CliError::failed(format!("cannot take over the terminal: {e}")))?;
    let result = run_loop(
        &mut guard.terminal,
        DaemonSource::new(client),
        EventStream::new(),
        quit,
        App::new(color),
        Pace::default(),
    )
    .await;
    drop(guard);
    result.map(|_| ())
}

/// Resolves on SIGTERM, SIGHUP (the SSH session went away) or SIGINT (sent by `kill`: in
/// raw mode Ctrl-C arrives as a key).
fn quit_signal() -> CliResult<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind| {
        signal(kind).map_err(|e| CliError::failed(format!("cannot listen for signals: {e}")))
    };
    let mut term = listen(SignalKind::terminate())?;
    let mut hup = listen(SignalKind::hangup())?;
    let mut int = listen(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = hup.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Runs the view on `terminal` until a quitting key, the end of `events`, or `quit`;
/// answers the final state.
///
/// # Errors
/// When drawing or reading the terminal fails.
pub(crate) async fn run_loop<B, S, E>(
    terminal: &mut Terminal<B>,
    source: S,
    mut events: E,
    quit: impl Future<Output = ()>,
    mut app: App,
    pace: Pace,
) -> CliResult<App>
where
    B: Backend,
    S: DataSource,
    E: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Update>(256);
    let refresh_now = std::sync::Arc::new(Notify::new());
    let (selected_tx, selected_rx) = watch::channel(None);
    let mut tasks = Tasks(vec![tokio::spawn(refresher(
        source.clone(),
        tx.clone(),
        Wakers {
            refresh_now: refresh_now.clone(),
            selected: selected_rx,
        },
        pace,
    ))]);
    let mut follower: Option<JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(pace.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut dirty = true;
    tokio::pin!(quit);
    let outcome = loop {
        // The log pane follows the selection.
        if app.selected != app.logs_of {
            if let Some(old) = follower.take() {
                old.abort();
            }
            app.follow(app.selected.clone());
            selected_tx.send_replace(app.selected.clone());
            // Its live numbers now, not at the next refresh.
            refresh_now.notify_one();
            follower = app
                .selected
                .clone()
                .map(|id| tokio::spawn(follow(source.clone(), id, tx.clone(), pace)));
            dirty = true;
        }
        let mut draw_now = false;
        let mut ticked = false;
        tokio::select! {
            () = &mut quit => break Ok(()),
            event = events.next() => match event {
                None => break Ok(()),
                Some(Err(e)) => break Err(CliError::failed(format!("cannot read the terminal: {e}"))),
                Some(Ok(Event::Key(key))) => match app.on_key(key) {
                    Effect::Quit => break Ok(()),
                    Effect::None => draw_now = true,
                    Effect::Act { id, name, action } => {
                        draw_now = true;
                        let (source, tx, refresh_now) = (source.clone(), tx.clone(), refresh_now.clone());
                        tasks.0.retain(|t| !t.is_finished());
                        tasks.0.push(tokio::spawn(async move {
                            let outcome = source.act(&id, action).await.map_err(|e| e.message);
                            let _ = tx.send(Update::ActionDone(name, action, outcome)).await;
                            refresh_now.notify_one();
                        }));
                    }
                },
                Some(Ok(Event::Resize(..))) => draw_now = true,
                Some(Ok(_)) => {}
            },
            Some(update) = rx.recv() => {
                apply(&mut app, update);
                dirty = true;
            }
            _ = tick.tick() => ticked = true,
        }
        if draw_now || (dirty && ticked) {
            if let Err(e) = terminal.draw(|frame| view::draw(frame, &app)) {
                break Err(CliError::failed(format!("cannot draw: {e}")));
            }
            dirty = false;
        }
    };
    if let Some(f) = follower {
        f.abort();
    }
    drop(tasks);
    outcome.map(|()| app)
}

fn apply(app: &mut App, update: Update) {
    match update {
        Update::Rows(Ok(rows)) => app.set_rows(rows),
        Update::Rows(Err(e)) => app.set_refresh_error(&e),
        Update::Live(live) => app.set_live(live),
        Update::History(id, samples) => app.set_history(&id, samples.as_deref()),
        Update::Log(id, line) => app.push_log(&id, &line),
        Update::LogEnded(id, why) => app.log_ended(&id, &why),
        Update::ActionDone(name, action, outcome) => app.action_done(&name, action, outcome),
    }
}

/// What else makes the refresher ask, and whom it asks about first.
struct Wakers {
    /// An action finished or the selection changed: ask now.
    refresh_now: std::sync::Arc<Notify>,
    /// The selected deployment's id.
    selected: watch::Receiver<Option<String>>,
}

/// Asks for the list every `pace.refresh` (or at once when woken), for the live numbers of
/// the selected deployment as often and of every running one every `pace.live`, and for
/// the history of the running ones every `pace.history` (and of one that just appeared).
async fn refresher<S: DataSource>(source: S, tx: mpsc::Sender<Update>, wakers: Wakers, pace: Pace) {
    let mut list = tokio::time::interval(pace.refresh);
    list.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut known: Vec<String> = Vec::new();
    let mut all_live_at: Option<tokio::time::Instant> = None;
    let mut history_at: Option<tokio::time::Instant> = None;
    // Once the daemon says it has no history route, asking again every 10 s is pointless.
    let mut has_history = true;
    loop {
        tokio::select! {
            _ = list.tick() => {}
            () = wakers.refresh_now.notified() => {}
        }
        let rows = source.list().await;
        let running: Vec<String> = match &rows {
            Ok(rows) => rows
                .iter()
                .filter(|r| r.is_running())
                .map(|r| r.id.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        // A deployment that just appeared gets its numbers and history now.
        let appeared = running.iter().any(|id| !known.contains(id));
        known.clone_from(&running);
        if tx
            .send(Update::Rows(rows.map_err(|e| e.message)))
            .await
            .is_err()
        {
            return;
        }
        let now = tokio::time::Instant::now();
        let due = |at: Option<tokio::time::Instant>, every: Duration| {
            appeared || at.is_none_or(|at| now - at >= every)
        };
        let all_due = due(all_live_at, pace.live);
        let history_due = due(history_at, pace.history);
        if history_due {
            history_at = Some(now);
        }
        let selected = wakers.selected.borrow().clone();
        let ask: Vec<&String> = running
            .iter()
            .filter(|id| all_due || selected.as_ref() == Some(*id))
            .collect();
        if all_due {
            all_live_at = Some(now);
        }
        let live = futures::future::join_all(ask.into_iter().map(|id| {
            let source = &source;
            async move {
                match source.live(id).await {
                    Ok(live) => Some((id.clone(), live)),
                    // Gone meanwhile, or the daemon went away: the list says which.
                    Err(_) => None,
                }
            }
        }))
        .await;
        let live: Vec<_> = live.into_iter().flatten().collect();
        if !live.is_empty() && tx.send(Update::Live(live)).await.is_err() {
            return;
        }
        if history_due && has_history {
            for id in running {
                let samples = match source.history(&id, pace.window, pace.step).await {
                    Ok(samples) => samples,
                    Err(e) => {
                        tracing::debug!(error = %e.message, "metrics history");
                        continue;
                    }
                };
                has_history = samples.is_some();
                if tx.send(Update::History(id, samples)).await.is_err() {
                    return;
                }
                if !has_history {
                    break;
                }
            }
        }
    }
}

/// Follows one deployment's logs into the loop, following again (from the last line
/// seen) when the stream ends or fails, until aborted.
async fn follow<S: DataSource>(source: S, id: String, tx: mpsc::Sender<Update>, pace: Pace) {
    let mut last: Option<Timestamp> = None;
    loop {
        let tail = if last.is_some() {
            pace.tail * 4
        } else {
            pace.tail
        };
        let why = match source.follow_logs(&id, tail, last).await {
            Ok(mut lines) => loop {
                match lines.next().await {
                    Some(Ok(line)) => {
                        // Following again from `last` repeats the lines at that instant.
                        if last.is_some_and(|t| line.timestamp <= t) {
                            continue;
                        }
                        last = Some(line.timestamp);
                        if tx.send(Update::Log(id.clone(), line)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => break e.message,
                    None => break "log stream ended; following again".to_owned(),
                }
            },
            Err(e) => e.message,
        };
        if tx.send(Update::LogEnded(id.clone(), why)).await.is_err() {
            return;
        }
        tokio::time::sleep(pace.refollow).await;
    }
}

#[cfg(test)]
mod loop_tests;
#[cfg(test)]
mod tests;
