//! `conan monit`'s event loop against a fake data source, in virtual time: what it asks
//! and how often, what keys start, how often it draws.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conan::{LogLine, OutputStream, Timestamp};
use crossterm::event::{Event, KeyEvent};
use futures::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::{Backend, ClearType, TestBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Size};

use super::model::App;
use super::source::{Action, DataSource, Live, LogFeed, Row, Sample};
use super::tests::{ch, line_with, row, samples, screen};
use super::{Pace, run_loop};
use crate::error::{CliError, CliResult};

#[derive(Default)]
struct FakeState {
    rows: Vec<Row>,
    history: Option<Vec<Sample>>,
    logs: HashMap<String, Vec<String>>,
    acted: Vec<(String, Action)>,
    followed: Vec<String>,
    history_asked: usize,
    list_calls: usize,
    live_calls: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DataSource for Fake {
    async fn list(&self) -> CliResult<Vec<Row>> {
        let mut state = self.state();
        state.list_calls += 1;
        // The list has no live numbers: those come from `live`.
        Ok(state
            .rows
            .iter()
            .map(|r| Row {
                health: None,
                health_detail: None,
                restarts: None,
                cpu_percent: None,
                memory_bytes: None,
                memory_limit_bytes: None,
                ..r.clone()
            })
            .collect())
    }

    async fn live(&self, id: &str) -> CliResult<Option<Live>> {
        let mut state = self.state();
        state.live_calls.push(id.to_owned());
        Ok(state
            .rows
            .iter()
            .find(|r| r.id == id && r.is_running())
            .map(|r| Live {
                health: r.health.clone(),
                health_detail: r.health_detail.clone(),
                restarts: r.restarts,
                cpu_percent: r.cpu_percent,
                memory_bytes: r.memory_bytes,
                memory_limit_bytes: r.memory_limit_bytes,
            }))
    }

    async fn history(
        &self,
        _id: &str,
        _window: Duration,
        _step: Duration,
    ) -> CliResult<Option<Vec<Sample>>> {
        let mut state = self.state();
        state.history_asked += 1;
        Ok(state.history.clone())
    }

    async fn follow_logs(
        &self,
        id: &str,
        _tail: usize,
        _since: Option<Timestamp>,
    ) -> CliResult<LogFeed> {
        let mut state = self.state();
        state.followed.push(id.to_owned());
        let lines: Vec<CliResult<LogLine>> = state
            .logs
            .get(id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                Ok(LogLine::at(
                    Timestamp::from_unix_micros(1_700_000_000_000_000 + i as i64),
                    OutputStream::Stdout,
                    text,
                ))
            })
            .collect();
        // Open until the follower is dropped, like a real follow.
        Ok(futures::stream::iter(lines)
            .chain(futures::stream::pending())
            .boxed())
    }

    async fn act(&self, id: &str, action: Action) -> CliResult<String> {
        let mut state = self.state();
        state.acted.push((id.to_owned(), action));
        match state.rows.iter_mut().find(|r| r.id == id) {
            Some(row) => {
                row.restarts = Some(row.restarts.unwrap_or(0) + 1);
                Ok(row.status.clone())
            }
            None => Err(CliError::failed("no such deployment")),
        }
    }
}

/// Key presses, each after a pause in virtual time; then silence (the terminal stays open).
fn script(steps: Vec<(u64, KeyEvent)>) -> impl Stream<Item = std::io::Result<Event>> + Unpin {
    Box::pin(
        futures::stream::iter(steps)
            .then(|(ms, k)| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Event::Key(k))
            })
            .chain(futures::stream::pending()),
    )
}

#[tokio::test(start_paused = true)]
async fn the_loop_follows_the_selection_runs_a_confirmed_restart_and_quits() {
    let fake = Fake::default();
    {
        let mut state = fake.state();
        state.rows = vec![row("api", "running"), row("web", "running")];
        state.history = Some(samples(&[3.0, 6.0]));
        state
            .logs
            .insert("id-api".to_owned(), vec!["api says hi".to_owned()]);
        state
            .logs
            .insert("id-web".to_owned(), vec!["web listening".to_owned()]);
    }
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).expect("test terminal");
    let keys = script(vec![
        (2000, ch('j')),
        (1000, ch('r')),
        (500, ch('y')),
        (1500, ch('q')),
    ]);
    let app = run_loop(
        &mut terminal,
        fake.clone(),
        keys,
        std::future::pending(),
        App::new(false),
        Pace::default(),
    )
    .await
    .expect("the loop ends on q");
    let state = fake.state();
    assert_eq!(state.acted, vec![("id-web".to_owned(), Action::Restart)]);
    assert_eq!(
        state.followed,
        vec!["id-api".to_owned(), "id-web".to_owned()]
    );
    assert!(
        state.history_asked >= 2,
        "history of both running deployments"
    );
    assert_eq!(
        app.message.as_deref(),
        Some("restart web: done, now running")
    );
    assert_eq!(
        app.rows[1].restarts,
        Some(3),
        "the list was refreshed after the restart"
    );
    let buffer = terminal.backend().buffer();
    let text = screen(buffer);
    assert!(text.contains("logs: web"), "{text}");
    assert!(text.contains("web listening"), "{text}");
    assert!(
        !text.contains("api says hi"),
        "the pane switched deployments:\n{text}"
    );
    assert!(
        line_with(buffer, "web ").contains("▅█"),
        "sparklines drawn:\n{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_quit_signal_ends_the_loop() {
    let fake = Fake::default();
    fake.state().rows = vec![row("api", "running")];
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    let app = run_loop(
        &mut terminal,
        fake,
        script(vec![]),
        tokio::time::sleep(Duration::from_secs(3)),
        App::new(false),
        Pace::default(),
    )
    .await
    .expect("the loop ends on the signal");
    assert_eq!(app.rows.len(), 1);
    assert!(screen(terminal.backend().buffer()).contains("api"));
}

/// A `TestBackend` that counts frames.
struct Counting {
    inner: TestBackend,
    frames: Arc<Mutex<usize>>,
}

impl Backend for Counting {
    type Error = <TestBackend as Backend>::Error;

    fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.inner.draw(content)
    }
    fn hide_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.hide_cursor()
    }
    fn show_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.show_cursor()
    }
    fn get_cursor_position(&mut self) -> Result<Position, Self::Error> {
        self.inner.get_cursor_position()
    }
    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Self::Error> {
        self.inner.set_cursor_position(position)
    }
    fn clear(&mut self) -> Result<(), Self::Error> {
        self.inner.clear()
    }
    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Self::Error> {
        self.inner.clear_region(clear_type)
    }
    fn size(&self) -> Result<Size, Self::Error> {
        self.inner.size()
    }
    fn window_size(&mut self) -> Result<WindowSize, Self::Error> {
        self.inner.window_size()
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        *self
            .frames
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.inner.flush()
    }
}

#[tokio::test(start_paused = true)]
async fn a_log_flood_is_drawn_a_few_times_a_second_not_once_per_line() {
    let fake = Fake::default();
    {
        let mut state = fake.state();
        state.rows = vec![row("chatty", "running")];
        state.logs.insert(
            "id-chatty".to_owned(),
            (0..5000).map(|i| format!("line {i}")).collect(),
        );
    }
    let frames = Arc::new(Mutex::new(0));
    let mut terminal = Terminal::new(Counting {
        inner: TestBackend::new(100, 30),
        frames: frames.clone(),
    })
    .expect("test terminal");
    let pace = Pace::default();
    let app = run_loop(
        &mut terminal,
        fake,
        script(vec![]),
        tokio::time::sleep(Duration::from_secs(2)),
        App::new(false),
        pace,
    )
    .await
    .expect("the loop ends on the signal");
    assert_eq!(app.logs.back().map(|l| l.text.as_str()), Some("line 4999"));
    let frames = *frames
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // 2 s at one frame per 250 ms tick, plus the first: 9 at most.
    assert!(
        (1..=9).contains(&frames),
        "{frames} frames for 5000 lines and 2 refreshes a second"
    );
    assert!(screen(terminal.backend().inner.buffer()).contains("line 4999"));
}

#[tokio::test(start_paused = true)]
async fn live_numbers_are_asked_every_second_for_the_selected_one_and_every_5_s_for_the_others() {
    let fake = Fake::default();
    fake.state().rows = vec![
        row("a", "running"),
        row("b", "running"),
        row("c", "stopped"),
    ];
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).expect("test terminal");
    let app = run_loop(
        &mut terminal,
        fake.clone(),
        script(vec![]),
        tokio::time::sleep(Duration::from_millis(10_500)),
        App::new(false),
        Pace::default(),
    )
    .await
    .expect("the loop ends on the signal");
    let state = fake.state();
    let asked = |id: &str| state.live_calls.iter().filter(|c| *c == id).count();
    // t = 0..10 s: the list and the selected one 11 times (once more when the selection
    // was first made), the other running one at 0, 5 and 10 s, the stopped one never.
    assert!(
        (11..=12).contains(&state.list_calls),
        "{}",
        state.list_calls
    );
    assert!((11..=12).contains(&asked("id-a")), "{:?}", state.live_calls);
    assert_eq!(asked("id-b"), 3, "{:?}", state.live_calls);
    assert_eq!(asked("id-c"), 0);
    // Between its live refreshes a row keeps its last numbers.
    let b = line_with(terminal.backend().buffer(), "  b ");
    assert!(b.contains("healthy") && b.contains("12.5%"), "{b:?}");
    assert_eq!(app.live.len(), 2);
}
