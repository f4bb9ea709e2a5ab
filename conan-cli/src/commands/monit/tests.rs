//! `conan monit` against ratatui's `TestBackend`: what the screen shows for a given state,
//! what keys do, and the whole event loop against a fake data source in virtual time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conan::{LogLine, OutputStream, Timestamp};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use futures::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::{Backend, ClearType, TestBackend, WindowSize};
use ratatui::buffer::{Buffer, Cell};
use ratatui::layout::{Position, Size};

use super::model::{App, Effect, Mode};
use super::source::{Action, DataSource, Live, LogFeed, Row, Sample};
use super::view::{self, SELECTED};
use super::{Pace, run_loop};
use crate::error::{CliError, CliResult};

fn row(name: &str, status: &str) -> Row {
    let running = status == "running";
    Row {
        id: format!("id-{name}"),
        name: name.to_owned(),
        provider: "local".to_owned(),
        status: status.to_owned(),
        health: running.then(|| "healthy".to_owned()),
        health_detail: running.then(|| "GET /health -> 200".to_owned()),
        restarts: running.then_some(2),
        cpu_percent: running.then_some(12.5),
        memory_bytes: running.then_some(48 * 1024 * 1024),
        uptime: running.then_some(Duration::from_secs(125)),
        url: running.then(|| format!("http://127.0.0.1:2{}", name.len())),
        revision: 1,
        instance: running.then(|| "4242".to_owned()),
        ..Row::default()
    }
}

fn samples(cpu: &[f64]) -> Vec<Sample> {
    cpu.iter()
        .enumerate()
        .map(|(i, c)| Sample {
            at: Timestamp::from_unix_micros(1_700_000_000_000_000 + i as i64 * 10_000_000),
            cpu_percent: Some(*c),
            memory_bytes: Some(40_000_000 + i as u64 * 1_000_000),
        })
        .collect()
}

fn app_with(rows: Vec<Row>) -> App {
    let mut app = App::new(false);
    app.set_rows(rows);
    app
}

fn render(app: &App) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).expect("test terminal");
    terminal.draw(|frame| view::draw(frame, app)).expect("draw");
    terminal.backend().buffer().clone()
}

/// The screen as lines of text.
fn lines(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            (0..area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}

fn screen(buffer: &Buffer) -> String {
    lines(buffer).join("\n")
}

/// The screen line that shows `text` (the first), for assertions about one table row.
#[track_caller]
fn line_with(buffer: &Buffer, text: &str) -> String {
    lines(buffer)
        .into_iter()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?} on screen:\n{}", screen(buffer)))
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ch(c: char) -> KeyEvent {
    key(KeyCode::Char(c))
}

#[test]
fn the_table_shows_every_deployment_with_status_health_restarts_usage_uptime_and_url() {
    let mut app = app_with(vec![row("web", "running"), row("worker", "failed")]);
    app.rows[1].note = Some("exited before it was ready (exit code 1)".to_owned());
    app.set_history("id-web", Some(&samples(&[1.0, 2.0, 4.0, 8.0, 16.0])));
    let buffer = render(&app);
    let header = line_with(&buffer, "NAME");
    for column in [
        "STATUS", "HEALTH", "RESTARTS", "CPU", "MEMORY", "UPTIME", "URL",
    ] {
        assert!(header.contains(column), "{column} missing in {header:?}");
    }
    let web = line_with(&buffer, "web ");
    for field in [
        "running",
        "healthy",
        " 2 ",
        "12.5%",
        "48.0 MiB",
        "2m 5s",
        "http://127.0.0.1:23",
    ] {
        assert!(web.contains(field), "{field:?} missing in {web:?}");
    }
    assert!(
        web.contains("▁▂▃▅█"),
        "the CPU sparkline rises to the right: {web:?}"
    );
    let worker = line_with(&buffer, "worker");
    assert!(worker.contains("failed"), "{worker:?}");
    assert!(
        !worker.contains('▁'),
        "no history, no sparkline: {worker:?}"
    );
    let text = screen(&buffer);
    assert!(
        text.contains("2 deployments · 1 running · 1 failed"),
        "{text}"
    );
    assert!(
        text.contains("cpu history (max 16.0 %)"),
        "the detail pane charts the selected one's history:\n{text}"
    );
    assert!(
        text.contains("memory history (38.1 MiB to 42.0 MiB)"),
        "memory is charted by its trend, with its range:\n{text}"
    );
    assert!(
        web.contains("▂▄▅▇█"),
        "the memory sparkline rises with memory (40 to 44 MB): {web:?}"
    );
}

#[test]
fn selection_moves_with_j_k_and_the_arrows_and_stops_at_the_ends() {
    let mut app = app_with(vec![
        row("alpha", "running"),
        row("bravo", "stopped"),
        row("charlie", "running"),
    ]);
    let selected = |app: &App| {
        let buffer = render(app);
        let line = line_with(&buffer, SELECTED.trim_end());
        ["alpha", "bravo", "charlie"]
            .into_iter()
            .find(|n| line.contains(n))
            .map(str::to_owned)
    };
    assert_eq!(
        selected(&app).as_deref(),
        Some("alpha"),
        "the first one at start"
    );
    for (keys, expect) in [
        (vec![ch('j')], "bravo"),
        (vec![key(KeyCode::Down)], "charlie"),
        (vec![ch('j'), ch('j')], "charlie"),
        (vec![ch('k')], "bravo"),
        (vec![key(KeyCode::Up), key(KeyCode::Up)], "alpha"),
        (vec![ch('G')], "charlie"),
        (vec![ch('g')], "alpha"),
    ] {
        for k in keys {
            assert_eq!(app.on_key(k), Effect::None);
        }
        assert_eq!(selected(&app).as_deref(), Some(expect));
        // The detail pane shows the same one.
        line_with(&render(&app), &format!("┌ {expect} "));
    }
}

#[test]
fn the_selection_stays_on_its_deployment_when_the_list_changes() {
    let mut app = app_with(vec![row("b", "running"), row("c", "running")]);
    app.on_key(ch('j'));
    assert_eq!(app.selected.as_deref(), Some("id-c"));
    // A new deployment sorts before it: the selection follows "c", not the index.
    app.set_rows(vec![
        row("c", "running"),
        row("a", "running"),
        row("b", "running"),
    ]);
    assert_eq!(app.selected.as_deref(), Some("id-c"));
    // "c" is removed: the row now at its place is selected.
    app.set_rows(vec![row("a", "running"), row("b", "running")]);
    assert_eq!(app.selected.as_deref(), Some("id-b"));
    app.set_rows(vec![]);
    assert_eq!(app.selected, None);
    assert!(screen(&render(&app)).contains("no deployments yet"));
}

#[test]
fn the_help_overlay_lists_the_keys_and_any_key_closes_it() {
    let mut app = app_with(vec![row("web", "running")]);
    assert_eq!(app.on_key(ch('?')), Effect::None);
    assert_eq!(app.mode, Mode::Help);
    let text = screen(&render(&app));
    assert!(text.contains("conan monit: keys"), "{text}");
    for (keys, what) in view::KEYS {
        assert!(text.contains(keys), "{keys} missing:\n{text}");
        assert!(text.contains(what), "{what} missing:\n{text}");
    }
    // `q` closes the help rather than quitting.
    assert_eq!(app.on_key(ch('q')), Effect::None);
    assert_eq!(app.mode, Mode::Normal);
    assert!(!screen(&render(&app)).contains("conan monit: keys"));
}

#[test]
fn restart_and_stop_ask_for_a_one_key_confirmation() {
    let mut app = app_with(vec![row("api", "running"), row("web", "running")]);
    app.on_key(ch('j'));
    assert_eq!(app.on_key(ch('r')), Effect::None, "nothing happens yet");
    let prompt = line_with(&render(&app), "press y");
    assert!(
        prompt.contains("restart web? press y to confirm, any other key cancels"),
        "{prompt:?}"
    );
    assert_eq!(
        app.on_key(ch('y')),
        Effect::Act {
            id: "id-web".to_owned(),
            name: "web".to_owned(),
            action: Action::Restart
        }
    );
    assert!(screen(&render(&app)).contains("restart web…"));
    // While it runs, a second action is refused with a reason.
    app.on_key(ch('s'));
    assert_eq!(app.mode, Mode::Normal);
    assert!(screen(&render(&app)).contains("wait: restart web is still in progress"));
    app.action_done("web", Action::Restart, Ok("running".to_owned()));
    assert!(screen(&render(&app)).contains("restart web: done, now running"));

    // Any other key cancels.
    app.on_key(ch('s'));
    assert!(line_with(&render(&app), "press y").contains("stop web?"));
    assert_eq!(app.on_key(ch('n')), Effect::None);
    assert!(screen(&render(&app)).contains("stop web: cancelled"));
    app.on_key(ch('s'));
    assert_eq!(
        app.on_key(key(KeyCode::Esc)),
        Effect::None,
        "Esc cancels, not quits"
    );
    assert_eq!(app.mode, Mode::Normal);

    app.on_key(ch('s'));
    assert_eq!(
        app.on_key(ch('y')),
        Effect::Act {
            id: "id-web".to_owned(),
            name: "web".to_owned(),
            action: Action::Stop
        }
    );
    app.action_done(
        "web",
        Action::Stop,
        Err("local: no such process".to_owned()),
    );
    assert!(screen(&render(&app)).contains("stop web failed: local: no such process"));
}

#[test]
fn q_esc_and_ctrl_c_quit_and_ctrl_c_quits_from_any_overlay() {
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    let mut app = app_with(vec![row("web", "running")]);
    assert_eq!(app.on_key(ch('q')), Effect::Quit);
    assert_eq!(app.on_key(key(KeyCode::Esc)), Effect::Quit);
    assert_eq!(app.on_key(ctrl_c), Effect::Quit);
    app.on_key(ch('?'));
    assert_eq!(app.on_key(ctrl_c), Effect::Quit);
    app.on_key(ch('r'));
    assert_eq!(app.on_key(ctrl_c), Effect::Quit);
    // Without a deployment there is nothing to confirm.
    let mut empty = app_with(vec![]);
    empty.on_key(ch('r'));
    assert_eq!(empty.mode, Mode::Normal);
}

#[test]
fn app_output_in_the_log_pane_cannot_inject_terminal_escapes() {
    let mut app = app_with(vec![row("web", "running")]);
    app.follow(Some("id-web".to_owned()));
    let nasty = [
        "\u{1b}[2J\u{1b}[Hcleared?",
        "\u{1b}]0;owned\u{7}retitled?",
        "\u{1b}[?1049lleft the alternate screen?",
        "bell\u{7} and \u{1b}[31mred\u{1b}[0m",
    ];
    for text in nasty {
        app.push_log(
            "id-web",
            &LogLine::at(Timestamp::now(), OutputStream::Stdout, text),
        );
    }
    app.push_log(
        "id-other",
        &LogLine::at(Timestamp::now(), OutputStream::Stdout, "not followed"),
    );
    let buffer = render(&app);
    let text = screen(&buffer);
    for shown in [
        "cleared?",
        "retitled?",
        "left the alternate screen?",
        "bell^G and red",
    ] {
        assert!(text.contains(shown), "{shown:?} missing:\n{text}");
    }
    assert!(!text.contains("not followed"));
    assert!(text.contains("logs: web"));
    let controls: Vec<&Cell> = buffer
        .content()
        .iter()
        .filter(|c| c.symbol().chars().any(char::is_control))
        .collect();
    assert!(
        controls.is_empty(),
        "control characters on screen: {controls:?}"
    );
}

#[test]
fn the_log_pane_keeps_a_bounded_tail() {
    let mut app = app_with(vec![row("web", "running")]);
    app.follow(Some("id-web".to_owned()));
    for i in 0..super::model::LOG_LINES_KEPT + 50 {
        app.push_log(
            "id-web",
            &LogLine::at(Timestamp::now(), OutputStream::Stdout, format!("line {i}")),
        );
    }
    assert_eq!(app.logs.len(), super::model::LOG_LINES_KEPT);
    let text = screen(&render(&app));
    let last = format!("line {}", super::model::LOG_LINES_KEPT + 49);
    assert!(text.contains(&last), "the newest line is shown:\n{text}");
    assert!(!text.contains("line 0 "));
}

#[test]
fn sparklines_stay_empty_when_the_daemon_has_no_history_route() {
    let mut app = app_with(vec![row("web", "running")]);
    app.set_history("id-web", None);
    let buffer = render(&app);
    let web = line_with(&buffer, "web ");
    assert!(!web.contains('▁') && !web.contains('█'), "{web:?}");
    assert!(
        web.contains("12.5%"),
        "the live numbers still show: {web:?}"
    );
    assert!(screen(&buffer).contains("no metrics history from this daemon"));
}

#[test]
fn daemon_text_is_sanitized_too_and_refresh_errors_show_in_the_header() {
    let mut bad = row("web", "failed");
    bad.note = Some("crashed: \u{1b}[2Jboom".to_owned());
    let mut app = app_with(vec![bad]);
    app.set_refresh_error("cannot reach the Conan daemon at /x/conan.sock");
    let text = screen(&render(&app));
    assert!(text.contains("crashed: boom"), "{text}");
    assert!(
        text.contains("daemon unreachable: cannot reach the Conan daemon"),
        "{text}"
    );
}

// ---- the event loop, against a fake source, in virtual time ----

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

#[test]
fn a_narrow_terminal_drops_the_sparkline_columns_first_and_keeps_the_url() {
    let mut app = app_with(vec![row("web-frontend", "running"), row("api", "stopped")]);
    // Sorted: api first, web-frontend selected by `j` below.
    app.set_history("id-web-frontend", Some(&samples(&[1.0, 2.0, 4.0])));
    let draw = |app: &App, width: u16| {
        let mut terminal = Terminal::new(TestBackend::new(width, 24)).expect("test terminal");
        terminal.draw(|frame| view::draw(frame, app)).expect("draw");
        terminal.backend().buffer().clone()
    };
    let wide = draw(&app, 120);
    assert!(line_with(&wide, "NAME").contains("memory"));
    let narrow = draw(&app, 80);
    let header = line_with(&narrow, "NAME");
    assert!(
        !header.contains("cpu ") && !header.contains("memory"),
        "{header:?}"
    );
    for column in ["STATUS", "HEALTH", "CPU", "MEMORY", "URL"] {
        assert!(
            header.contains(column),
            "{column} missing at 80 columns: {header:?}"
        );
    }
    let web = line_with(&narrow, "web-frontend");
    assert!(
        web.contains("http://127.0.0.1:212"),
        "the whole URL: {web:?}"
    );
    assert!(
        web.contains("48.0 MiB") && web.contains("healthy"),
        "{web:?}"
    );
    // The detail pane still has what the table dropped.
    app.on_key(ch('j'));
    let narrow = draw(&app, 80);
    let text = screen(&narrow);
    assert!(text.contains("cpu history"), "{text}");
    assert!(text.contains("restarts 2  uptime 2m 5s"), "{text}");
    let tiny = draw(&app, 60);
    assert!(line_with(&tiny, "NAME").contains("URL"));
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
