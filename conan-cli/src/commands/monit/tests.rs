//! `conan monit` against ratatui's `TestBackend`: what the screen shows for a given state
//! and what keys do (the event loop's tests are in `loop_tests`).

use std::time::Duration;

use conan::{LogLine, OutputStream, Timestamp};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::{Buffer, Cell};

use super::model::{App, Effect, Mode};
use super::source::{Action, Row, Sample};
use super::view::{self, SELECTED};

pub(super) fn row(name: &str, status: &str) -> Row {
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

pub(super) fn samples(cpu: &[f64]) -> Vec<Sample> {
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

pub(super) fn render(app: &App) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).expect("test terminal");
    terminal.draw(|frame| view::draw(frame, app)).expect("draw");
    terminal.backend().buffer().clone()
}

/// The screen as lines of text.
pub(super) fn lines(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            (0..area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}

pub(super) fn screen(buffer: &Buffer) -> String {
    lines(buffer).join("\n")
}

/// The screen line that shows `text` (the first), for assertions about one table row.
#[track_caller]
pub(super) fn line_with(buffer: &Buffer, text: &str) -> String {
    lines(buffer)
        .into_iter()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no line with {text:?} on screen:\n{}", screen(buffer)))
}

pub(super) fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub(super) fn ch(c: char) -> KeyEvent {
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
