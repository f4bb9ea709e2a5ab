//! The state of `conan monit` and how keys and data change it: plain synchronous code, no
//! IO, so every behaviour is testable without a terminal or a daemon.

use std::collections::{HashMap, VecDeque};

use conan::{LogLine, OutputStream, Timestamp};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::source::{Action, Live, Row, Sample};
use super::text::sanitize;

/// Log lines kept for the log pane (older ones are dropped).
pub const LOG_LINES_KEPT: usize = 500;

/// What is on top of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The table, the detail and the log pane.
    Normal,
    /// The key list.
    Help,
    /// Waiting for `y` to run `action` on a deployment.
    Confirm {
        /// The action.
        action: Action,
        /// The deployment's id.
        id: String,
        /// Its name, for the prompt.
        name: String,
    },
}

/// What a key asks the event loop to do beyond changing the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more.
    None,
    /// Leave `conan monit`.
    Quit,
    /// Run an action on a deployment.
    Act {
        /// The deployment's id.
        id: String,
        /// Its name.
        name: String,
        /// The action.
        action: Action,
    },
}

/// One line of the log pane, already made safe for the terminal.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// When it was captured.
    pub at: Timestamp,
    /// stdout, stderr or Conan's own.
    pub stream: OutputStream,
    /// The text, sanitized.
    pub text: String,
}

/// A deployment's metrics history, as the sparklines draw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// CPU percent per step (0 where a step had none).
    pub cpu: Vec<f64>,
    /// Memory bytes per step.
    pub memory: Vec<f64>,
}

impl Series {
    fn of(samples: &[Sample]) -> Self {
        #[allow(clippy::cast_precision_loss)] // bytes as a bar height
        Self {
            cpu: samples
                .iter()
                .map(|s| s.cpu_percent.unwrap_or(0.0))
                .collect(),
            memory: samples
                .iter()
                .map(|s| s.memory_bytes.map_or(0.0, |b| b as f64))
                .collect(),
        }
    }
}

/// Everything `conan monit` shows.
#[derive(Debug)]
pub struct App {
    /// The deployments, by name.
    pub rows: Vec<Row>,
    /// The selected deployment's id.
    pub selected: Option<String>,
    /// The last live health and metrics per running deployment id.
    pub live: HashMap<String, Live>,
    /// Metrics history per deployment id.
    pub history: HashMap<String, Series>,
    /// `Some(false)` once the daemon said it has no metrics history.
    pub history_available: Option<bool>,
    /// The log pane: whose lines, and the lines.
    pub logs_of: Option<String>,
    /// The followed lines, oldest first.
    pub logs: VecDeque<LogEntry>,
    /// Why the log stream is not following (ended, failed), if so.
    pub log_note: Option<String>,
    /// What is on top.
    pub mode: Mode,
    /// The footer's message (the outcome of the last action, an error).
    pub message: Option<String>,
    /// The action in flight, if any: `(name, action)`.
    pub pending: Option<(String, Action)>,
    /// Why the last refresh failed, until one succeeds.
    pub refresh_error: Option<String>,
    /// Whether a list arrived yet.
    pub loaded: bool,
    /// Whether to use colours (off with `NO_COLOR`).
    pub color: bool,
}

impl App {
    /// An empty view, waiting for its first data.
    #[must_use]
    pub fn new(color: bool) -> Self {
        Self {
            rows: Vec::new(),
            selected: None,
            live: HashMap::new(),
            history: HashMap::new(),
            history_available: None,
            logs_of: None,
            logs: VecDeque::new(),
            log_note: None,
            mode: Mode::Normal,
            message: None,
            pending: None,
            refresh_error: None,
            loaded: false,
            color,
        }
    }

    /// The selected row's index.
    #[must_use]
    pub fn selected_index(&self) -> Option<usize> {
        let id = self.selected.as_deref()?;
        self.rows.iter().position(|r| r.id == id)
    }

    /// The selected row.
    #[must_use]
    pub fn selected_row(&self) -> Option<&Row> {
        self.selected_index().map(|i| &self.rows[i])
    }

    /// A new list: sorted by name, with the last live numbers of the running ones (a
    /// deployment that stopped loses them); the selection stays on its deployment, or on
    /// its position when that one is gone; history of removed deployments is dropped.
    pub fn set_rows(&mut self, mut rows: Vec<Row>) {
        self.live
            .retain(|id, _| rows.iter().any(|r| &r.id == id && r.is_running()));
        for row in &mut rows {
            if let Some(live) = self.live.get(&row.id) {
                live.apply_to(row);
            }
            sanitize_row(row);
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let old_index = self.selected_index();
        self.rows = rows;
        self.loaded = true;
        self.refresh_error = None;
        if self.selected_index().is_none() {
            self.selected = old_index
                .map(|i| i.min(self.rows.len().saturating_sub(1)))
                .and_then(|i| self.rows.get(i))
                .or_else(|| self.rows.first())
                .map(|r| r.id.clone());
        }
        let ids: Vec<&str> = self.rows.iter().map(|r| r.id.as_str()).collect();
        self.history.retain(|id, _| ids.contains(&id.as_str()));
    }

    /// Live numbers of some deployments (`None`: it does not run any more).
    pub fn set_live(&mut self, live: Vec<(String, Option<Live>)>) {
        for (id, live) in live {
            match live {
                Some(live) => {
                    if let Some(row) = self.rows.iter_mut().find(|r| r.id == id) {
                        live.apply_to(row);
                        sanitize_row(row);
                    }
                    self.live.insert(id, live);
                }
                None => {
                    self.live.remove(&id);
                }
            }
        }
    }

    /// A refresh failed (the daemon went away): say so, keep the last data.
    pub fn set_refresh_error(&mut self, error: &str) {
        self.refresh_error = Some(sanitize(error));
    }

    /// A deployment's history arrived (`None`: the daemon has none to give).
    pub fn set_history(&mut self, id: &str, samples: Option<&[Sample]>) {
        match samples {
            Some(samples) => {
                self.history_available = Some(true);
                self.history.insert(id.to_owned(), Series::of(samples));
            }
            None => {
                self.history_available = Some(false);
                self.history.remove(id);
            }
        }
    }

    /// The log pane now shows `id`'s lines (from scratch).
    pub fn follow(&mut self, id: Option<String>) {
        self.logs_of = id;
        self.logs.clear();
        self.log_note = None;
    }

    /// A followed line; ignored when it is not the followed deployment's any more.
    pub fn push_log(&mut self, id: &str, line: &LogLine) {
        if self.logs_of.as_deref() != Some(id) {
            return;
        }
        self.log_note = None;
        if self.logs.len() == LOG_LINES_KEPT {
            self.logs.pop_front();
        }
        self.logs.push_back(LogEntry {
            at: line.timestamp,
            stream: line.stream,
            text: sanitize(&line.message),
        });
    }

    /// The followed stream ended or failed.
    pub fn log_ended(&mut self, id: &str, why: &str) {
        if self.logs_of.as_deref() == Some(id) {
            self.log_note = Some(sanitize(why));
        }
    }

    /// The outcome of an action.
    pub fn action_done(&mut self, name: &str, action: Action, outcome: Result<String, String>) {
        self.pending = None;
        self.message = Some(match outcome {
            Ok(status) => format!("{} {name}: done, now {status}", action.as_str()),
            Err(e) => format!("{} {name} failed: {}", action.as_str(), sanitize(&e)),
        });
    }

    /// One key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Effect {
        if key.kind == KeyEventKind::Release {
            return Effect::None;
        }
        // In raw mode Ctrl-C is a key, not a signal: it always quits.
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            // Any key closes the help.
            Mode::Help => Effect::None,
            Mode::Confirm { action, id, name } => {
                if key.code == KeyCode::Char('y') || key.code == KeyCode::Char('Y') {
                    self.pending = Some((name.clone(), action));
                    self.message = Some(format!("{} {name}…", action.as_str()));
                    Effect::Act { id, name, action }
                } else {
                    self.message = Some(format!("{} {name}: cancelled", action.as_str()));
                    Effect::None
                }
            }
            Mode::Normal => self.on_normal_key(key),
        }
    }

    fn on_normal_key(&mut self, key: KeyEvent) -> Effect {
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Effect::Quit,
            KeyCode::Char('?' | 'h') | KeyCode::F(1) => self.mode = Mode::Help,
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Home | KeyCode::Char('g') => self.select_at(0),
            KeyCode::End | KeyCode::Char('G') => self.select_at(self.rows.len().saturating_sub(1)),
            KeyCode::Char('r') => self.confirm(Action::Restart),
            KeyCode::Char('s') => self.confirm(Action::Stop),
            KeyCode::Char('t') => self.confirm(Action::Start),
            _ => {}
        }
        Effect::None
    }

    fn confirm(&mut self, action: Action) {
        if let Some((name, running)) = &self.pending {
            self.message = Some(format!(
                "wait: {} {name} is still in progress",
                running.as_str()
            ));
            return;
        }
        if let Some(row) = self.selected_row() {
            self.mode = Mode::Confirm {
                action,
                id: row.id.clone(),
                name: row.name.clone(),
            };
        }
    }

    fn move_selection(&mut self, by: isize) {
        let Some(last) = self.rows.len().checked_sub(1) else {
            return;
        };
        let at = self.selected_index().unwrap_or(0);
        let next = at.saturating_add_signed(by).min(last);
        self.select_at(next);
    }

    fn select_at(&mut self, index: usize) {
        if let Some(row) = self.rows.get(index) {
            self.selected = Some(row.id.clone());
        }
    }
}

fn sanitize_row(row: &mut Row) {
    for text in [
        &mut row.name,
        &mut row.status,
        &mut row.provider,
        &mut row.id,
    ] {
        *text = sanitize(text);
    }
    for text in [
        &mut row.note,
        &mut row.health,
        &mut row.health_detail,
        &mut row.url,
        &mut row.instance,
    ]
    .into_iter()
    .flatten()
    {
        *text = sanitize(text);
    }
}
