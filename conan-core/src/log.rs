//! The shared log model: [`LogLine`], level detection, and [`LogQuery`] with the one filter
//! implementation every provider reuses.
//!
//! # Levels
//!
//! A line's level is detected from its text ([`LogLevel::detect`]):
//!
//! - JSON lines: a `"level"` (or `"severity"`) field, either pino/bunyan numbers
//!   (10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal) or names as winston, bunyan
//!   and others write them (`"warn"`, `"warning"`, `"err"`, `"critical"`, ...).
//! - logfmt: `level=warn`.
//! - Text prefixes: `ERROR ...`, `[warn] ...`, `WARN: ...`, `error: ...`, also after a
//!   leading timestamp token.
//!
//! A line with no detectable level gets [`LogLevel::Info`] on stdout and [`LogLevel::Error`]
//! on stderr (PM2's convention: stderr is the error log).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::Result;
use crate::time::Timestamp;

/// Which output a line came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Written by Conan itself (build output, supervisor notices).
    System,
}

impl OutputStream {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
            OutputStream::System => "system",
        }
    }
}

impl fmt::Display for OutputStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of a log line, ordered from `Trace` (lowest) to `Fatal`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
    /// Fatal.
    Fatal,
}

impl LogLevel {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
        }
    }

    /// Maps a pino/bunyan numeric level (10..=60); values in between round down.
    #[must_use]
    pub fn from_number(n: f64) -> Option<Self> {
        Some(match n {
            n if n >= 60.0 => LogLevel::Fatal,
            n if n >= 50.0 => LogLevel::Error,
            n if n >= 40.0 => LogLevel::Warn,
            n if n >= 30.0 => LogLevel::Info,
            n if n >= 20.0 => LogLevel::Debug,
            n if n >= 10.0 => LogLevel::Trace,
            _ => return None,
        })
    }

    /// Maps a level name as common loggers write it (case-insensitive).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.trim().to_ascii_lowercase();
        Some(match lower.as_str() {
            "trace" | "silly" | "trc" => LogLevel::Trace,
            "debug" | "verbose" | "dbg" | "debg" => LogLevel::Debug,
            "info" | "information" | "notice" | "http" | "log" | "inf" => LogLevel::Info,
            "warn" | "warning" | "wrn" => LogLevel::Warn,
            "error" | "err" | "eror" => LogLevel::Error,
            "fatal" | "critical" | "crit" | "alert" | "emerg" | "emergency" | "panic" | "ftl" => {
                LogLevel::Fatal
            }
            _ => return None,
        })
    }

    /// Detects the level of a line's text; `None` when the text says nothing about it.
    #[must_use]
    pub fn detect(text: &str) -> Option<Self> {
        let t = text.trim_start();
        if t.starts_with('{')
            && let Some(level) = detect_json(t)
        {
            return Some(level);
        }
        if let Some(level) = detect_logfmt(t) {
            return Some(level);
        }
        detect_prefix(t)
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LogLevel::from_name(s).ok_or_else(|| {
            format!("unknown log level '{s}' (trace, debug, info, warn, error, fatal)")
        })
    }
}

fn detect_json(t: &str) -> Option<LogLevel> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Level {
        Num(f64),
        Name(String),
    }
    #[derive(Deserialize)]
    struct Fields {
        level: Option<Level>,
        severity: Option<Level>,
    }
    let fields: Fields = serde_json::from_str(t).ok()?;
    match fields.level.or(fields.severity)? {
        Level::Num(n) => LogLevel::from_number(n),
        Level::Name(s) => LogLevel::from_name(&s),
    }
}

fn detect_logfmt(t: &str) -> Option<LogLevel> {
    // A byte search for '=' first: most lines have none, and it is much cheaper than the
    // substring search.
    if !t.as_bytes().contains(&b'=') {
        return None;
    }
    let idx = t.find("level=")?;
    if idx > 0 && !t.as_bytes()[idx - 1].is_ascii_whitespace() {
        return None;
    }
    let rest = &t[idx + "level=".len()..];
    let value = rest.split_whitespace().next()?.trim_matches('"');
    LogLevel::from_name(value)
}

fn detect_prefix(t: &str) -> Option<LogLevel> {
    let mut tokens = t.split_whitespace();
    for _ in 0..3 {
        let Some(token) = tokens.next() else { break };
        let word = token.trim_matches(|c: char| {
            matches!(c, '[' | ']' | '(' | ')' | '<' | '>' | ':' | '|' | '-')
        });
        // Only whole words written as a tag: `ERROR`, `[warn]`, `error:`; a plain lowercase
        // word in a sentence ("error handling is ...") needs punctuation to count.
        let tagged = word.len() != token.len() || word.bytes().all(|b| b.is_ascii_uppercase());
        if tagged && let Some(level) = LogLevel::from_name(word) {
            return Some(level);
        }
        // A leading timestamp or date token is skipped; anything else ends the search.
        if !token.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            break;
        }
    }
    None
}

/// One line of application output.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LogLine {
    /// When the line was captured.
    pub timestamp: Timestamp,
    /// Which output it came from.
    pub stream: OutputStream,
    /// Its detected (or defaulted) level.
    pub level: LogLevel,
    /// The text, without the trailing newline.
    pub message: String,
    /// Which instance wrote it (a pid, container or replica name), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl LogLine {
    /// A line captured now, with its level detected from the text.
    #[must_use]
    pub fn new(stream: OutputStream, message: impl Into<String>) -> Self {
        Self::at(Timestamp::now(), stream, message)
    }

    /// A line captured at `timestamp`, with its level detected from the text.
    #[must_use]
    pub fn at(timestamp: Timestamp, stream: OutputStream, message: impl Into<String>) -> Self {
        let message = message.into();
        let level = LogLevel::detect(&message).unwrap_or(match stream {
            OutputStream::Stderr => LogLevel::Error,
            OutputStream::Stdout | OutputStream::System => LogLevel::Info,
        });
        Self {
            timestamp,
            stream,
            level,
            message,
            source: None,
        }
    }

    /// The same line attributed to `source`.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// A stream of log lines, as returned by [`Provider::logs`](crate::Provider::logs).
pub type LogStream = BoxStream<'static, Result<LogLine>>;

/// Which log lines to return. All filters combine with AND; `tail` applies last, to the
/// lines that pass the filters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only the last N matching lines of the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Only lines at or before this time (a follow ends once it is passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// Only lines at this level or above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_level: Option<LogLevel>,
    /// Only lines containing this text (case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Only lines of this stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<OutputStream>,
    /// Keep the stream open and deliver new lines as they are written.
    #[serde(default)]
    pub follow: bool,
}

impl LogQuery {
    /// Every line, no follow.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// The last `n` lines.
    #[must_use]
    pub fn tail(n: usize) -> Self {
        Self {
            tail: Some(n),
            ..Self::default()
        }
    }

    /// The same query, following.
    #[must_use]
    pub fn follow(mut self) -> Self {
        self.follow = true;
        self
    }

    /// The same query with a minimum level.
    #[must_use]
    pub fn min_level(mut self, level: LogLevel) -> Self {
        self.min_level = Some(level);
        self
    }

    /// The same query with a substring filter.
    #[must_use]
    pub fn contains(mut self, text: impl Into<String>) -> Self {
        self.contains = Some(text.into());
        self
    }

    /// The same query restricted to one stream.
    #[must_use]
    pub fn stream(mut self, stream: OutputStream) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Whether `line` passes every filter (`tail` and `follow` aside).
    #[must_use]
    pub fn matches(&self, line: &LogLine) -> bool {
        self.since.is_none_or(|s| line.timestamp >= s)
            && self.until.is_none_or(|u| line.timestamp <= u)
            && self.min_level.is_none_or(|l| line.level >= l)
            && self.stream.is_none_or(|s| line.stream == s)
            && self
                .contains
                .as_deref()
                .is_none_or(|c| line.message.contains(c))
    }

    /// Filters a history (oldest first) and keeps the last `tail` matches.
    pub fn apply<'a, I>(&self, lines: I) -> Vec<LogLine>
    where
        I: IntoIterator<Item = &'a LogLine>,
        I::IntoIter: DoubleEndedIterator,
    {
        let matching = lines.into_iter().rev().filter(|l| self.matches(l));
        let mut out: Vec<LogLine> = match self.tail {
            Some(n) => matching.take(n).cloned().collect(),
            None => matching.cloned().collect(),
        };
        out.reverse();
        out
    }

    /// Builds the answer to this query from a filtered `history` and, when following, a
    /// live feed of new lines. Lines of the feed are filtered the same way; the stream ends
    /// when the feed closes or a line is past `until`. A subscriber that falls behind the
    /// feed gets one [`OutputStream::System`] line per gap saying how many lines it missed:
    /// on falling behind it skips to the newest line of the feed (counting what it skips), so
    /// a reader slower than a flood gets a full feed of slack before its next gap instead of
    /// a notice after every line.
    ///
    /// The feed carries `Arc<LogLine>`: a broadcast channel allocates all its slots up
    /// front, and a pointer per slot keeps an idle feed of 1,024 lines at 32 KiB rather
    /// than 100 KiB (the text is shared by every subscriber, not copied into each slot).
    pub fn into_stream(
        self,
        history: Vec<LogLine>,
        live: Option<broadcast::Receiver<Arc<LogLine>>>,
    ) -> LogStream {
        let head = stream::iter(history.into_iter().map(Ok));
        match (self.follow, live) {
            (true, Some(rx)) => {
                let query = self;
                let tail = stream::unfold((rx, query), |(mut rx, query)| async move {
                    loop {
                        match rx.recv().await {
                            Ok(line) => {
                                if query.until.is_some_and(|u| line.timestamp > u) {
                                    return None;
                                }
                                if query.matches(&line) {
                                    return Some((Ok(Arc::unwrap_or_clone(line)), (rx, query)));
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                let skipped = n.saturating_add(skip_to_newest(&mut rx));
                                let notice = LogLine::new(
                                    OutputStream::System,
                                    format!(
                                        "[conan] {skipped} log lines skipped: this reader fell behind"
                                    ),
                                );
                                return Some((Ok(notice), (rx, query)));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                });
                head.chain(tail).boxed()
            }
            _ => head.boxed(),
        }
    }
}

/// Drops every line `rx` has not received yet (the reader fell behind: what is left of the
/// feed is about to be overwritten), returning how many it dropped.
fn skip_to_newest<T: Clone>(rx: &mut broadcast::Receiver<T>) -> u64 {
    let mut skipped = 0u64;
    loop {
        match rx.try_recv() {
            Ok(_) => skipped += 1,
            Err(broadcast::error::TryRecvError::Lagged(n)) => skipped = skipped.saturating_add(n),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                return skipped;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(s: &str) -> Option<LogLevel> {
        LogLevel::detect(s)
    }

    #[test]
    fn pino_numeric_levels() {
        assert_eq!(detect(r#"{"level":10,"msg":"x"}"#), Some(LogLevel::Trace));
        assert_eq!(detect(r#"{"level":20,"msg":"x"}"#), Some(LogLevel::Debug));
        assert_eq!(detect(r#"{"level":30,"msg":"x"}"#), Some(LogLevel::Info));
        assert_eq!(detect(r#"{"level":40,"msg":"x"}"#), Some(LogLevel::Warn));
        assert_eq!(detect(r#"{"level":50,"msg":"x"}"#), Some(LogLevel::Error));
        assert_eq!(detect(r#"{"level":60,"msg":"x"}"#), Some(LogLevel::Fatal));
        assert_eq!(detect(r#"{"level":5}"#), None);
    }

    #[test]
    fn named_json_levels() {
        assert_eq!(
            detect(r#"{"level":"warn","message":"w"}"#),
            Some(LogLevel::Warn)
        );
        assert_eq!(
            detect(r#"{"message":"w","level":"ERROR"}"#),
            Some(LogLevel::Error)
        );
        assert_eq!(detect(r#"{"severity":"WARNING"}"#), Some(LogLevel::Warn));
        assert_eq!(detect(r#"{"level":"silly"}"#), Some(LogLevel::Trace));
        assert_eq!(detect(r#"{"msg":"no level"}"#), None);
    }

    #[test]
    fn text_prefixes() {
        assert_eq!(detect("ERROR something broke"), Some(LogLevel::Error));
        assert_eq!(detect("[warn] disk almost full"), Some(LogLevel::Warn));
        assert_eq!(detect("WARN: careful"), Some(LogLevel::Warn));
        assert_eq!(detect("error: cannot connect"), Some(LogLevel::Error));
        assert_eq!(detect("[INFO] listening"), Some(LogLevel::Info));
        assert_eq!(
            detect("2026-11-28T07:48:02Z ERROR boom"),
            Some(LogLevel::Error)
        );
        assert_eq!(detect("ts=1 level=debug msg=hi"), Some(LogLevel::Debug));
        assert_eq!(detect("error handling is fine here"), None);
        assert_eq!(detect("listening on port 3000"), None);
    }

    #[test]
    fn default_level_depends_on_stream() {
        assert_eq!(
            LogLine::new(OutputStream::Stdout, "hello").level,
            LogLevel::Info
        );
        assert_eq!(
            LogLine::new(OutputStream::Stderr, "hello").level,
            LogLevel::Error
        );
        assert_eq!(
            LogLine::new(OutputStream::Stderr, "[warn] x").level,
            LogLevel::Warn
        );
    }

    fn history() -> Vec<LogLine> {
        (0..10)
            .map(|i| {
                let stream = if i % 2 == 0 {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                };
                LogLine::at(
                    Timestamp::from_unix_micros(1_000_000 * i),
                    stream,
                    format!("line {i}"),
                )
            })
            .collect()
    }

    #[test]
    fn query_filters_then_tails() {
        let h = history();
        let q = LogQuery::tail(2).stream(OutputStream::Stdout);
        let got: Vec<_> = q.apply(&h).into_iter().map(|l| l.message).collect();
        assert_eq!(got, vec!["line 6", "line 8"]);

        let q = LogQuery {
            since: Some(Timestamp::from_unix_micros(3_000_000)),
            until: Some(Timestamp::from_unix_micros(5_000_000)),
            ..LogQuery::all()
        };
        let got: Vec<_> = q.apply(&h).into_iter().map(|l| l.message).collect();
        assert_eq!(got, vec!["line 3", "line 4", "line 5"]);

        let q = LogQuery::all().min_level(LogLevel::Error);
        assert_eq!(q.apply(&h).len(), 5);
        let q = LogQuery::all().contains("line 7");
        assert_eq!(q.apply(&h).len(), 1);
    }

    /// Regression (issue 10, finding 10): a reader that fell behind got a notice after
    /// nearly every line while the writer kept going, thousands in a flood.
    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_one_notice_per_gap() {
        let (tx, rx) = broadcast::channel(8);
        let mut s = LogQuery::all().follow().into_stream(Vec::new(), Some(rx));
        let line = |i: u32| LogLine::new(OutputStream::Stdout, format!("line {i}"));
        let mut next = 0;
        let mut got = Vec::new();
        // The writer is 20 lines ahead of a reader that holds 8, and keeps writing two
        // lines for each one read: one gap, then everything arrives.
        for _ in 0..20 {
            tx.send(Arc::new(line(next))).unwrap();
            next += 1;
        }
        for _ in 0..6 {
            got.push(s.next().await.unwrap().unwrap().message);
            for _ in 0..2 {
                tx.send(Arc::new(line(next))).unwrap();
                next += 1;
            }
        }
        drop(tx);
        while let Some(l) = s.next().await {
            got.push(l.unwrap().message);
        }
        let notices: Vec<_> = got.iter().filter(|m| m.contains("fell behind")).collect();
        assert_eq!(notices.len(), 1, "{got:?}");
        assert_eq!(
            notices[0],
            "[conan] 20 log lines skipped: this reader fell behind"
        );
        let delivered = got.iter().filter(|m| m.starts_with("line ")).count();
        assert_eq!(delivered, 12, "everything after the gap arrives: {got:?}");
    }

    #[tokio::test]
    async fn follow_delivers_history_then_live_lines() {
        let (tx, rx) = broadcast::channel(16);
        let q = LogQuery::tail(1).follow().contains("keep");
        let history = q.apply(&[LogLine::new(OutputStream::Stdout, "keep old")]);
        let mut s = q.into_stream(history, Some(rx));
        tx.send(Arc::new(LogLine::new(OutputStream::Stdout, "drop me")))
            .unwrap();
        tx.send(Arc::new(LogLine::new(OutputStream::Stdout, "keep new")))
            .unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(line) = s.next().await {
            got.push(line.unwrap().message);
        }
        assert_eq!(got, vec!["keep old", "keep new"]);
    }
}
