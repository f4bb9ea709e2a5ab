//! Output for humans and scripts: colour only on a terminal (and never with `NO_COLOR`),
//! aligned tables, short durations and sizes, and the failure bundle.

pub mod escape;
mod render;
pub mod table;

use std::io::IsTerminal;
use std::time::Duration;

pub use render::{
    deployment_text, event_line, failure_lines, format_value, log_line, print_deployment,
    short_time,
};

/// Whether and how to colour one output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

/// A colour for [`Style::paint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    /// Success, running.
    Green,
    /// In progress, warnings.
    Yellow,
    /// Failures, stderr.
    Red,
    /// Secondary text.
    Dim,
    /// Emphasis.
    Bold,
}

fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Style {
    /// Colour for stdout when it is a terminal and `NO_COLOR` is unset.
    #[must_use]
    pub fn stdout() -> Self {
        Self {
            color: std::io::stdout().is_terminal() && !no_color(),
        }
    }

    /// Colour for stderr when it is a terminal and `NO_COLOR` is unset.
    #[must_use]
    pub fn stderr() -> Self {
        Self {
            color: std::io::stderr().is_terminal() && !no_color(),
        }
    }

    /// Plain text.
    #[must_use]
    pub fn plain() -> Self {
        Self { color: false }
    }

    /// `text` in `color` (unchanged without colour).
    #[must_use]
    pub fn paint(self, color: Color, text: &str) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match color {
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Red => "31",
            Color::Dim => "2",
            Color::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// A status name in its colour.
    #[must_use]
    pub fn status(self, status: &str) -> String {
        let color = match status {
            "running" | "succeeded" => Color::Green,
            "failed" => Color::Red,
            "stopped" | "removed" => Color::Dim,
            _ => Color::Yellow,
        };
        self.paint(color, status)
    }
}

/// `1h 2m`, `3m 4s`, `5s`: the two largest units.
#[must_use]
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `12.3 MiB`.
#[must_use]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(short_duration(Duration::from_secs(5)), "5s");
        assert_eq!(short_duration(Duration::from_secs(125)), "2m 5s");
        assert_eq!(short_duration(Duration::from_secs(7260)), "2h 1m");
        assert_eq!(short_duration(Duration::from_secs(90_000)), "1d 1h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 300_000), "3.3 MiB");
    }

    #[test]
    fn alert_events_and_values_read_well() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.9123), "0.912");
        assert_eq!(format_value(0.0), "0");
        let envelope = conan::EventEnvelope {
            seq: 1,
            at: conan::Timestamp::now(),
            event: conan::Event::Alert {
                deployment: conan::DeploymentId::new("dep-1"),
                rule: "web-down".to_owned(),
                state: conan::AlertState::Firing,
                value: 2.5,
            },
        };
        let line = event_line(&envelope, "web", Style::plain());
        assert!(
            line.ends_with("web alert web-down firing (value 2.5)"),
            "{line}"
        );
    }

    #[test]
    fn plain_style_never_emits_escapes() {
        assert_eq!(Style::plain().paint(Color::Red, "x"), "x");
        assert_eq!(
            Style { color: true }.paint(Color::Red, "x"),
            "\x1b[31mx\x1b[0m"
        );
    }
}
