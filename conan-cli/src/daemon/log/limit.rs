//! Rate limiting of the daemon's log: a tight loop that logs (an accept loop at the fd
//! limit, a probe failing for every port) must not fill the disk or burn the CPU on
//! formatting.
//!
//! Two rules, each over a [`WINDOW`]:
//! - the same line (same call site, same message and fields) is written at most once; at
//!   the end of the window a summary says how many repeats were suppressed;
//! - one call site writes at most [`PER_SITE`] lines (distinct fields included); the rest
//!   are counted and summarised the same way.
//!
//! Suppressed events are never formatted. The rules are a pure [`Limiter`] (time is an
//! argument, so tests need no clock) and a [`RateLimitLayer`] that applies it to tracing
//! events; summaries are written by the log writer, right before the next line of their
//! kind or by its once-a-second sweep.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, callsite::Identifier};
use tracing_subscriber::layer::{Context, Layer};

use super::LogWriter;

/// The window of both rules.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines one call site may write per window.
pub const PER_SITE: u32 = 100;
/// Keys tracked at once; beyond it, new keys are not limited until the next sweep.
const MAX_KEYS: usize = 4096;
/// Longest description kept for a summary.
const MAX_DESCRIPTION: usize = 240;

/// What the limiter decided about one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; first write these summaries of what was suppressed before it.
    Write(Vec<String>),
    /// Drop it (counted for the summary).
    Suppress,
}

#[derive(Debug)]
struct Entry {
    since: Instant,
    suppressed: u64,
    level: Level,
    target: String,
    description: String,
}

#[derive(Debug)]
struct Site {
    since: Instant,
    written: u32,
    suppressed: u64,
    level: Level,
    target: String,
}

#[derive(Debug, Default)]
struct State {
    lines: HashMap<u64, Entry>,
    sites: HashMap<Identifier, Site>,
}

/// The rules of the module docs, over explicit instants.
#[derive(Debug)]
pub struct Limiter {
    window: Duration,
    per_site: u32,
    state: Mutex<State>,
}

/// One event, as the limiter sees it.
#[derive(Debug)]
pub struct Line<'a> {
    /// The call site.
    pub site: Identifier,
    /// Its level.
    pub level: Level,
    /// Its target (module path).
    pub target: &'a str,
    /// Message and fields: what makes two lines the same.
    pub description: &'a str,
}

impl Limiter {
    /// A limiter with the given window and per-site budget.
    #[must_use]
    pub fn new(window: Duration, per_site: u32) -> Self {
        Self {
            window,
            per_site: per_site.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides about `line` at `now`.
    pub fn check(&self, line: &Line<'_>, now: Instant) -> Verdict {
        let key = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            line.site.hash(&mut hasher);
            line.description.hash(&mut hasher);
            hasher.finish()
        };
        let window = self.window;
        let mut state = self.state();
        let mut summaries = Vec::new();
        if state.lines.len() >= MAX_KEYS {
            summaries.extend(sweep(&mut state, window, now));
        }
        let tracked = state.lines.len() < MAX_KEYS;
        match state.lines.get_mut(&key) {
            Some(entry) if now.saturating_duration_since(entry.since) < window => {
                entry.suppressed += 1;
                return Verdict::Suppress;
            }
            Some(entry) => {
                if let Some(summary) = entry.summary(window) {
                    summaries.push(summary);
                }
                entry.since = now;
                entry.suppressed = 0;
            }
            None if tracked => {
                state.lines.insert(
                    key,
                    Entry {
                        since: now,
                        suppressed: 0,
                        level: line.level,
                        target: line.target.to_owned(),
                        description: truncate(line.description),
                    },
                );
            }
            None => {}
        }
        let per_site = self.per_site;
        let site = state
            .sites
            .entry(line.site.clone())
            .or_insert_with(|| Site {
                since: now,
                written: 0,
                suppressed: 0,
                level: line.level,
                target: line.target.to_owned(),
            });
        if now.saturating_duration_since(site.since) >= window {
            if let Some(summary) = site.summary(window) {
                summaries.push(summary);
            }
            site.since = now;
            site.written = 0;
            site.suppressed = 0;
        }
        if site.written >= per_site {
            site.suppressed += 1;
            // Not written: the next identical line is not a repeat of this one.
            if let Some(entry) = state.lines.get_mut(&key)
                && entry.since == now
                && entry.suppressed == 0
            {
                state.lines.remove(&key);
            }
            return Verdict::Suppress;
        }
        site.written += 1;
        Verdict::Write(summaries)
    }

    /// The summaries of every window that ended by `now`, forgetting those windows.
    pub fn sweep(&self, now: Instant) -> Vec<String> {
        sweep(&mut self.state(), self.window, now)
    }
}

fn sweep(state: &mut State, window: Duration, now: Instant) -> Vec<String> {
    let ended = |since: Instant| now.saturating_duration_since(since) >= window;
    let mut summaries = Vec::new();
    state.lines.retain(|_, entry| {
        if !ended(entry.since) {
            return true;
        }
        summaries.extend(entry.summary(window));
        false
    });
    state.sites.retain(|_, site| {
        if !ended(site.since) {
            return true;
        }
        summaries.extend(site.summary(window));
        false
    });
    summaries
}

impl Entry {
    fn summary(&self, window: Duration) -> Option<String> {
        (self.suppressed > 0).then(|| {
            summary_line(
                self.level,
                &self.target,
                &format!(
                    "the same line was suppressed {} more time{} in {}s: {}",
                    self.suppressed,
                    if self.suppressed == 1 { "" } else { "s" },
                    window.as_secs(),
                    self.description
                ),
            )
        })
    }
}

impl Site {
    fn summary(&self, window: Duration) -> Option<String> {
        (self.suppressed > 0).then(|| {
            summary_line(
                self.level,
                &self.target,
                &format!(
                    "{} more line{} from this place suppressed (at most {} in {}s)",
                    self.suppressed,
                    if self.suppressed == 1 { "" } else { "s" },
                    self.written,
                    window.as_secs()
                ),
            )
        })
    }
}

/// A line in the fmt layer's format: `2026-12-01T15:20:23.123456Z  WARN target: text`.
fn summary_line(level: Level, target: &str, text: &str) -> String {
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    let mut line = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut line));
    let _ = writeln!(line, " {level:>5} {target}: {text}");
    line
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_DESCRIPTION {
        return text.to_owned();
    }
    let mut end = MAX_DESCRIPTION;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Applies a [`Limiter`] to every event that the level filter let through; summaries go
/// to the [`LogWriter`] as plain lines.
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
    writer: LogWriter,
}

impl RateLimitLayer {
    /// The layer; `writer` receives the summaries.
    #[must_use]
    pub fn new(limiter: Arc<Limiter>, writer: LogWriter) -> Self {
        Self { limiter, writer }
    }
}

/// Collects an event's message and fields: `message k=v k=v`.
#[derive(Default)]
struct Describe(String);

impl Visit for Describe {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl<S: Subscriber> Layer<S> for RateLimitLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        let mut describe = Describe::default();
        event.record(&mut describe);
        let line = Line {
            site: meta.callsite(),
            level: *meta.level(),
            target: meta.target(),
            description: &describe.0,
        };
        match self.limiter.check(&line, Instant::now()) {
            Verdict::Write(summaries) => {
                for summary in summaries {
                    self.writer.write_raw(summary.into_bytes());
                }
                true
            }
            Verdict::Suppress => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Site(u8);
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("the limiter never asks site {} for metadata", self.0)
        }
    }
    static A: Site = Site(0);
    static B: Site = Site(1);

    fn line<'a>(site: &'static Site, description: &'a str) -> Line<'a> {
        Line {
            site: Identifier(site),
            level: Level::WARN,
            target: "conan_cli::daemon",
            description,
        }
    }

    fn written(v: &Verdict) -> bool {
        matches!(v, Verdict::Write(_))
    }

    /// Regression (issue 10, finding 5): at the fd limit "accept failed" was logged 6.4
    /// million times in 7 s.
    #[test]
    fn the_same_line_is_written_once_per_window_with_a_count_of_the_rest() {
        let limiter = Limiter::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let accept = line(&A, "accept failed error=Too many open files (os error 24)");
        assert_eq!(limiter.check(&accept, t0), Verdict::Write(vec![]));
        for ms in 1..10_000 {
            let v = limiter.check(&accept, t0 + Duration::from_millis(ms));
            assert_eq!(v, Verdict::Suppress);
        }
        // Another line of the same site is its own line.
        assert!(written(&limiter.check(&line(&A, "other"), t0)));
        let Verdict::Write(summaries) = limiter.check(&accept, t0 + Duration::from_secs(10)) else {
            panic!("the line after the window is written");
        };
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        assert!(
            summaries[0].contains(" WARN conan_cli::daemon: the same line was suppressed 9999 more times in 10s: accept failed"),
            "{}",
            summaries[0]
        );
        assert!(summaries[0].ends_with('\n'));
    }

    #[test]
    fn a_flood_that_stops_is_summarised_by_the_sweep() {
        let limiter = Limiter::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let l = line(&A, "probe failed");
        assert!(written(&limiter.check(&l, t0)));
        assert_eq!(
            limiter.check(&l, t0 + Duration::from_secs(1)),
            Verdict::Suppress
        );
        assert!(limiter.sweep(t0 + Duration::from_secs(5)).is_empty());
        let summaries = limiter.sweep(t0 + Duration::from_secs(10));
        assert_eq!(summaries.len(), 1);
        assert!(summaries[0].contains("suppressed 1 more time in 10s: probe failed"));
        // Forgotten: the next one is written at once, with nothing to summarise.
        assert!(limiter.sweep(t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(
            limiter.check(&l, t0 + Duration::from_secs(31)),
            Verdict::Write(vec![])
        );
    }

    #[test]
    fn one_site_writes_at_most_its_budget_of_distinct_lines() {
        let limiter = Limiter::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let texts: Vec<String> = (0..10).map(|port| format!("port={port}")).collect();
        let verdicts: Vec<bool> = texts
            .iter()
            .map(|t| written(&limiter.check(&line(&A, t), t0)))
            .collect();
        assert_eq!(verdicts.iter().filter(|w| **w).count(), 3);
        // Other sites keep their own budget.
        assert!(written(&limiter.check(&line(&B, "port=1"), t0)));
        let Verdict::Write(summaries) =
            limiter.check(&line(&A, "port=99"), t0 + Duration::from_secs(10))
        else {
            panic!("a new window has a new budget");
        };
        assert!(
            summaries
                .iter()
                .any(|s| s.contains("7 more lines from this place suppressed (at most 3 in 10s)")),
            "{summaries:?}"
        );
    }
}
