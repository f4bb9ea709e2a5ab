//! Drawing `conan monit`: a header line, the deployments table (with text sparklines of
//! CPU and memory), the selected deployment's detail and followed logs, a footer with the
//! keys or the confirmation prompt, and the help overlay. Plain box-drawing and block
//! characters only, no mouse, no terminal extensions: it reads the same over SSH.

use conan::OutputStream;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Sparkline, Table, TableState,
};

use super::model::{App, Mode};
use super::source::Row;
use super::text::{clip, relative, spark};
use crate::output::{bytes, short_duration};

/// Width of the table's text sparklines.
pub const SPARK_WIDTH: usize = 10;
/// The detail pane's width.
const DETAIL_WIDTH: u16 = 40;
/// At least this many lines stay for the detail and log panes.
const BOTTOM_MIN: u16 = 10;
/// The highlight in front of the selected row.
pub const SELECTED: &str = "> ";

/// The keys, as the help overlay lists them.
pub const KEYS: &[(&str, &str)] = &[
    ("j / Down", "select the next deployment"),
    ("k / Up", "select the previous one"),
    ("g / G", "select the first / the last"),
    ("r", "restart the selected one (then y)"),
    ("s", "stop the selected one (then y)"),
    ("t", "start the selected one (then y)"),
    ("? / h", "this help (any key closes it)"),
    ("q / Esc / Ctrl-C", "quit"),
];

/// CPU sparklines scale to at least this many percent, so idle looks idle.
const CPU_FLOOR: f64 = 5.0;

struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    fn status(&self, status: &str) -> Style {
        match status {
            "running" => self.fg(Color::Green),
            "failed" => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            "stopped" | "removed" => self.fg(Color::DarkGray),
            _ => self.fg(Color::Yellow),
        }
    }

    fn health(&self, health: &str) -> Style {
        match health {
            "healthy" => self.fg(Color::Green),
            "unhealthy" => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            _ => self.fg(Color::Yellow),
        }
    }

    fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let theme = Theme { color: app.color };
    let area = frame.area();
    let table_height = u16::try_from(app.rows.len())
        .unwrap_or(u16::MAX)
        .saturating_add(1)
        .max(2)
        .min(area.height.saturating_sub(2 + BOTTOM_MIN).max(3));
    let [header, table, bottom, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_height),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, app, &theme);
    draw_table(frame, table, app, &theme);
    let [detail, logs] = Layout::horizontal([
        Constraint::Length(DETAIL_WIDTH.min(area.width / 2)),
        Constraint::Min(0),
    ])
    .areas(bottom);
    draw_detail(frame, detail, app, &theme);
    draw_logs(frame, logs, app, &theme);
    draw_footer(frame, footer, app, &theme);
    if app.mode == Mode::Help {
        draw_help(frame, area);
    }
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let count = |status: &str| app.rows.iter().filter(|r| r.status == status).count();
    let mut spans = vec![
        Span::styled("conan monit", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {} deployment{}",
            app.rows.len(),
            if app.rows.len() == 1 { "" } else { "s" }
        )),
        Span::raw(format!(" · {} running", count("running"))),
    ];
    let failed = count("failed");
    if failed > 0 {
        spans.push(Span::styled(
            format!(" · {failed} failed"),
            theme.status("failed"),
        ));
    }
    if let Some(e) = &app.refresh_error {
        spans.push(Span::styled(
            format!(" · daemon unreachable: {e}"),
            theme.status("failed"),
        ));
    }
    spans.push(Span::styled("  (? for help)", theme.dim()));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn dash() -> String {
    "-".to_owned()
}

/// A table column; narrow terminals drop some (see [`columns`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Name,
    Status,
    Health,
    Restarts,
    Cpu,
    CpuSpark,
    Memory,
    MemorySpark,
    Uptime,
    Url,
}

impl Column {
    fn title(self) -> &'static str {
        match self {
            Column::Name => "NAME",
            Column::Status => "STATUS",
            Column::Health => "HEALTH",
            Column::Restarts => "RESTARTS",
            Column::Cpu => "CPU",
            Column::CpuSpark => "cpu",
            Column::Memory => "MEMORY",
            Column::MemorySpark => "memory",
            Column::Uptime => "UPTIME",
            Column::Url => "URL",
        }
    }

    /// Its width (the URL takes what is left, at least this).
    fn width(self, name_width: u16) -> u16 {
        match self {
            Column::Name => name_width,
            Column::Status => 10,
            Column::Health => 9,
            Column::Restarts => 8,
            Column::Cpu => 6,
            Column::CpuSpark | Column::MemorySpark => u16::try_from(SPARK_WIDTH).unwrap_or(10),
            Column::Memory => 9,
            Column::Uptime => 7,
            Column::Url => 22,
        }
    }
}

/// The columns that fit in `width`: all of them from about 120 columns; narrower, the
/// sparklines go first (the detail pane still charts the selected one), then uptime and
/// restarts.
fn columns(width: u16, name_width: u16) -> Vec<Column> {
    use Column::{Cpu, CpuSpark, Health, Memory, MemorySpark, Name, Restarts, Status, Uptime, Url};
    let mut columns = vec![
        Name,
        Status,
        Health,
        Restarts,
        Cpu,
        CpuSpark,
        Memory,
        MemorySpark,
        Uptime,
        Url,
    ];
    let needed = |columns: &[Column]| -> u16 {
        let highlight = u16::try_from(SELECTED.len()).unwrap_or(2);
        let gaps = u16::try_from(columns.len()).unwrap_or(10).saturating_sub(1);
        columns
            .iter()
            .map(|c| c.width(name_width))
            .fold(highlight + gaps, u16::saturating_add)
    };
    for drop in [MemorySpark, CpuSpark, Uptime, Restarts] {
        if needed(&columns) <= width {
            break;
        }
        columns.retain(|c| *c != drop);
    }
    columns
}

fn cell<'a>(column: Column, row: &'a Row, app: &App, theme: &Theme) -> Cell<'a> {
    let series = app.history.get(&row.id);
    match column {
        Column::Name => Cell::from(row.name.as_str()),
        Column::Status => Cell::from(Span::styled(row.status.as_str(), theme.status(&row.status))),
        Column::Health => {
            let health = row.health.clone().unwrap_or_else(dash);
            let style = theme.health(&health);
            Cell::from(Span::styled(health, style))
        }
        Column::Restarts => Cell::from(row.restarts.map_or_else(dash, |n| n.to_string())),
        Column::Cpu => Cell::from(row.cpu_percent.map_or_else(dash, |c| format!("{c:.1}%"))),
        Column::CpuSpark => Cell::from(Span::styled(
            series.map_or_else(String::new, |s| spark(&s.cpu, SPARK_WIDTH, CPU_FLOOR)),
            theme.fg(Color::Cyan),
        )),
        Column::Memory => Cell::from(row.memory_bytes.map_or_else(dash, bytes)),
        Column::MemorySpark => Cell::from(Span::styled(
            series.map_or_else(String::new, |s| {
                spark(&relative(&s.memory), SPARK_WIDTH, 1.0)
            }),
            theme.fg(Color::Magenta),
        )),
        Column::Uptime => Cell::from(row.uptime.map_or_else(dash, short_duration)),
        Column::Url => Cell::from(row.url.clone().unwrap_or_else(dash)),
    }
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    if app.rows.is_empty() {
        let text = if app.loaded {
            "no deployments yet; deploy one with `conan deploy PATH`"
        } else {
            "asking the daemon…"
        };
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    let name_width = app
        .rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 28);
    let name_width = u16::try_from(name_width).unwrap_or(28);
    let columns = columns(area.width, name_width);
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|c| match c {
            Column::Url => Constraint::Min(c.width(name_width)),
            c => Constraint::Length(c.width(name_width)),
        })
        .collect();
    let header = TableRow::new(columns.iter().map(|c| c.title()))
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = app.rows.iter().map(|r| {
        TableRow::new(
            columns
                .iter()
                .map(|c| cell(*c, r, app, theme))
                .collect::<Vec<_>>(),
        )
    });
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol(SELECTED);
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_detail(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let Some(row) = app.selected_row() else {
        frame.render_widget(Block::bordered().title(" detail "), area);
        return;
    };
    let block = Block::bordered().title(format!(" {} ", clip(&row.name, 30)));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let mut lines = vec![Line::from(vec![
        Span::styled("status   ", theme.dim()),
        Span::styled(row.status.as_str(), theme.status(&row.status)),
        Span::raw(format!("  rev {}", row.revision)),
    ])];
    if let Some(note) = &row.note {
        lines.push(Line::from(clip(note, width)));
    }
    let health = match (&row.health, &row.health_detail) {
        (Some(h), Some(d)) => format!("{h} ({d})"),
        (Some(h), None) => h.clone(),
        (None, _) => dash(),
    };
    lines.push(Line::from(vec![
        Span::styled("health   ", theme.dim()),
        Span::raw(clip(&health, width.saturating_sub(9))),
    ]));
    lines.push(Line::from(vec![
        Span::styled("provider ", theme.dim()),
        Span::raw(format!(
            "{}  {}",
            row.provider,
            row.instance.clone().unwrap_or_else(dash)
        )),
    ]));
    lines.push(Line::from(vec![
        Span::styled("restarts ", theme.dim()),
        Span::raw(format!(
            "{}  uptime {}",
            row.restarts.map_or_else(dash, |n| n.to_string()),
            row.uptime.map_or_else(dash, short_duration)
        )),
    ]));
    lines.push(Line::from(vec![
        Span::styled("url      ", theme.dim()),
        Span::raw(row.url.clone().unwrap_or_else(dash)),
    ]));
    let memory = match (row.memory_bytes, row.memory_limit_bytes) {
        (Some(m), Some(l)) => format!("{} / {}", bytes(m), bytes(l)),
        (Some(m), None) => bytes(m),
        _ => dash(),
    };
    lines.push(Line::from(vec![
        Span::styled("cpu      ", theme.dim()),
        Span::raw(row.cpu_percent.map_or_else(dash, |c| format!("{c:.1} %"))),
        Span::styled("   memory ", theme.dim()),
        Span::raw(memory),
    ]));
    let text_height = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let [text, charts] =
        Layout::vertical([Constraint::Length(text_height), Constraint::Min(0)]).areas(inner);
    frame.render_widget(Paragraph::new(lines), text);
    draw_charts(frame, charts, app, row, theme);
}

/// The selected deployment's CPU and memory history as two sparklines.
fn draw_charts(frame: &mut Frame<'_>, area: Rect, app: &App, row: &Row, theme: &Theme) {
    if area.height < 2 {
        return;
    }
    let series = app.history.get(&row.id);
    if app.history_available == Some(false) || series.is_none_or(|s| s.cpu.is_empty()) {
        let why = if app.history_available == Some(false) {
            "no metrics history from this daemon"
        } else {
            "no metrics history yet"
        };
        frame.render_widget(Paragraph::new(Span::styled(why, theme.dim())), area);
        return;
    }
    let [cpu, memory] =
        Layout::vertical([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)]).areas(area);
    let width = usize::from(area.width);
    let series = series.cloned().unwrap_or_default();
    // Whole units are enough to draw bars: hundredths of a percent, kibibytes.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let scaled = |values: &[f64], unit: f64| -> Vec<u64> {
        values[values.len().saturating_sub(width)..]
            .iter()
            .map(|v| (v.max(0.0) / unit) as u64)
            .collect()
    };
    let cpu_max = series.cpu.iter().copied().fold(0.0, f64::max);
    let cpu_data = scaled(&series.cpu, 0.01);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let cpu_top = cpu_data
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max((CPU_FLOOR * 100.0) as u64);
    frame.render_widget(
        Sparkline::default()
            .block(Block::new().borders(Borders::NONE).title(Span::styled(
                format!("cpu history (max {cpu_max:.1} %)"),
                theme.dim(),
            )))
            .data(cpu_data)
            .max(cpu_top)
            .style(theme.fg(Color::Cyan)),
        cpu,
    );
    // Memory by its trend, between its smallest and largest value (the title says which).
    let positive = series.memory.iter().copied().filter(|m| *m > 0.0);
    let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), m| {
        (lo.min(m), hi.max(m))
    });
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let range = if hi > 0.0 {
        format!("{} to {}", bytes(lo as u64), bytes(hi as u64))
    } else {
        dash()
    };
    frame.render_widget(
        Sparkline::default()
            .block(Block::new().title(Span::styled(
                format!("memory history ({range})"),
                theme.dim(),
            )))
            .data(scaled(&relative(&series.memory), 0.001))
            .max(1000)
            .style(theme.fg(Color::Magenta)),
        memory,
    );
}

fn draw_logs(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let whose = app
        .logs_of
        .as_deref()
        .and_then(|id| app.rows.iter().find(|r| r.id == id))
        .map_or_else(|| "-".to_owned(), |r| r.name.clone());
    let mut title = format!(" logs: {whose} ");
    if let Some(note) = &app.log_note {
        title.push_str(&format!("({note}) "));
    }
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let shown = usize::from(inner.height);
    let lines: Vec<Line<'_>> = app
        .logs
        .iter()
        .skip(app.logs.len().saturating_sub(shown))
        .map(|entry| {
            let time = entry.at.to_string();
            let time = time.get(11..19).unwrap_or("").to_owned();
            let (stream, style) = match entry.stream {
                OutputStream::Stdout => ("out", Style::new()),
                OutputStream::Stderr => ("err", theme.fg(Color::Red)),
                OutputStream::System => ("sys", theme.fg(Color::Yellow)),
            };
            Line::from(vec![
                Span::styled(format!("{time} {stream} "), theme.dim()),
                Span::styled(entry.text.as_str(), style),
            ])
        })
        .collect();
    if lines.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("no log lines yet", theme.dim())),
            inner,
        );
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let line = match &app.mode {
        Mode::Confirm { action, name, .. } => Line::from(vec![Span::styled(
            format!(
                "{} {name}? press y to confirm, any other key cancels",
                action.as_str()
            ),
            theme
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        )]),
        _ => match &app.message {
            Some(message) => Line::from(message.as_str()),
            None => Line::from(Span::styled(
                "j/k select  r restart  s stop  t start  ? help  q quit",
                theme.dim(),
            )),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let height = u16::try_from(KEYS.len()).unwrap_or(8) + 4;
    let width = 56.min(area.width);
    let popup = Rect {
        x: area.x + area.width.saturating_sub(width) / 2,
        y: area.y + area.height.saturating_sub(height) / 2,
        width,
        height: height.min(area.height),
    };
    let mut lines: Vec<Line<'_>> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{key:<18}"),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from("the log pane follows the selected deployment"));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" conan monit: keys ")),
        popup,
    );
}
