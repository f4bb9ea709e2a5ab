//! A deployment's log: a bounded in-memory ring (by bytes), a rotated log file, and a
//! broadcast feed for `follow`.
//!
//! The log file (`app.log`, rotated to `app.log.1` .. `app.log.<files-1>`) holds one line
//! per record: `<unix micros> <stream> <level> <source> <message>`. Queries are answered from
//! the ring while it still holds the whole history, otherwise from the files; lines gone
//! from both (rotated out) are reported by a `system` line.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use conan_core::{LogLevel, LogLine, LogQuery, LogStream, OutputStream, Timestamp};
use tokio::sync::broadcast;

/// Sizes of a log store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogStoreSettings {
    pub memory_bytes: usize,
    pub file_max_bytes: u64,
    pub files: u32,
}

const LINE_OVERHEAD: usize = 96;

struct Inner {
    ring: VecDeque<LogLine>,
    ring_bytes: usize,
    /// Lines dropped from the ring (or never loaded in it, after adoption).
    dropped: u64,
    writer: Option<BufWriter<File>>,
    file_size: u64,
    rotated_out: bool,
}

/// One deployment's logs.
pub(crate) struct LogStore {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<LogLine>,
    dir: PathBuf,
    settings: LogStoreSettings,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

fn stream_code(s: OutputStream) -> &'static str {
    s.as_str()
}

fn format_line(l: &LogLine) -> String {
    format!(
        "{} {} {} {} {}\n",
        l.timestamp.as_unix_micros(),
        stream_code(l.stream),
        l.level.as_str(),
        l.source.as_deref().unwrap_or("-"),
        l.message
    )
}

fn parse_line(s: &str) -> Option<LogLine> {
    let mut it = s.splitn(5, ' ');
    let ts = Timestamp::from_unix_micros(it.next()?.parse().ok()?);
    let stream = match it.next()? {
        "stdout" => OutputStream::Stdout,
        "stderr" => OutputStream::Stderr,
        _ => OutputStream::System,
    };
    let level = LogLevel::from_name(it.next()?)?;
    let source = it.next()?;
    let message = it.next().unwrap_or("").to_owned();
    Some(LogLine {
        timestamp: ts,
        stream,
        level,
        message,
        source: (source != "-").then(|| source.to_owned()),
    })
}

impl LogStore {
    /// Opens the store of `dir` (creating it). An existing log file means history from an
    /// earlier manager: queries then read the files.
    pub fn open(dir: &Path, settings: LogStoreSettings) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("app.log");
        let file_size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let rotated = dir.join("app.log.1").exists();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (tx, _) = broadcast::channel(16 * 1024);
        Ok(Self {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                ring_bytes: 0,
                dropped: u64::from(file_size > 0 || rotated),
                writer: Some(BufWriter::with_capacity(256 * 1024, file)),
                file_size,
                rotated_out: false,
            }),
            tx,
            dir: dir.to_path_buf(),
            settings,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends lines (in order) to the file, the ring and the live feed.
    pub fn append(&self, lines: Vec<LogLine>) {
        let mut inner = self.lock();
        for line in lines {
            let text = format_line(&line);
            if inner.file_size + text.len() as u64 > self.settings.file_max_bytes
                && inner.file_size > 0
            {
                self.rotate(&mut inner);
            }
            if let Some(w) = inner.writer.as_mut()
                && let Err(e) = w.write_all(text.as_bytes())
            {
                tracing::warn!(error = %e, "writing the log file failed");
            }
            inner.file_size += text.len() as u64;
            let size = line.message.len() + LINE_OVERHEAD;
            if self.tx.receiver_count() > 0 {
                let _ = self.tx.send(line.clone());
            }
            inner.ring.push_back(line);
            inner.ring_bytes += size;
            while inner.ring_bytes > self.settings.memory_bytes {
                let Some(old) = inner.ring.pop_front() else {
                    break;
                };
                inner.ring_bytes -= old.message.len() + LINE_OVERHEAD;
                inner.dropped += 1;
            }
        }
        if let Some(w) = inner.writer.as_mut()
            && let Err(e) = w.flush()
        {
            tracing::warn!(error = %e, "flushing the log file failed");
        }
    }

    /// Adds a line written by Conan itself (`[conan] restarting ...`).
    pub fn system(&self, message: impl Into<String>) {
        self.append(vec![LogLine::new(OutputStream::System, message)]);
    }

    fn rotate(&self, inner: &mut Inner) {
        if let Some(mut w) = inner.writer.take() {
            let _ = w.flush();
        }
        let files = self.settings.files.max(1);
        let name = |i: u32| {
            if i == 0 {
                self.dir.join("app.log")
            } else {
                self.dir.join(format!("app.log.{i}"))
            }
        };
        if files == 1 {
            let _ = fs::remove_file(name(0));
        } else {
            if name(files - 1).exists() {
                inner.rotated_out = true;
            }
            for i in (0..files - 1).rev() {
                let _ = fs::rename(name(i), name(i + 1));
            }
        }
        if files == 1 {
            inner.rotated_out = true;
        }
        inner.file_size = 0;
        match OpenOptions::new().create(true).append(true).open(name(0)) {
            Ok(f) => inner.writer = Some(BufWriter::with_capacity(256 * 1024, f)),
            Err(e) => tracing::warn!(error = %e, "reopening the log file failed"),
        }
    }

    fn read_files(&self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for i in (0..self.settings.files.max(1)).rev() {
            let path = if i == 0 {
                self.dir.join("app.log")
            } else {
                self.dir.join(format!("app.log.{i}"))
            };
            let Ok(f) = File::open(&path) else { continue };
            for line in BufReader::with_capacity(256 * 1024, f).lines() {
                match line {
                    Ok(l) => out.extend(parse_line(&l)),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the log file failed");
                        break;
                    }
                }
            }
        }
        out
    }

    /// The last `n` lines (for failure reports).
    pub fn last(&self, n: usize) -> Vec<LogLine> {
        LogQuery::tail(n).apply(&self.lock().ring)
    }

    /// Answers `query`: history from memory (or the files when memory no longer holds it
    /// all), then live lines when following.
    pub fn query(&self, query: &LogQuery) -> LogStream {
        let mut inner = self.lock();
        let live = query.follow.then(|| self.tx.subscribe());
        let history = if inner.dropped == 0 {
            query.apply(&inner.ring)
        } else {
            // The lock stays held while the files are read, so no line is both in the
            // history and in the live feed, and none falls between them.
            if let Some(w) = inner.writer.as_mut() {
                let _ = w.flush();
            }
            let mut all = self.read_files();
            if inner.rotated_out {
                all.insert(
                    0,
                    LogLine::new(
                        OutputStream::System,
                        "[conan] older lines were rotated out of the log files",
                    ),
                );
            }
            query.apply(&all)
        };
        drop(inner);
        query.clone().into_stream(history, live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn settings(memory_bytes: usize, file_max_bytes: u64) -> LogStoreSettings {
        LogStoreSettings {
            memory_bytes,
            file_max_bytes,
            files: 3,
        }
    }

    async fn all(store: &LogStore) -> Vec<String> {
        store
            .query(&LogQuery::all())
            .map(|l| l.unwrap().message)
            .collect()
            .await
    }

    #[tokio::test]
    async fn ring_overflow_falls_back_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), settings(1000, 1 << 20)).unwrap();
        let lines: Vec<_> = (0..100)
            .map(|i| LogLine::new(OutputStream::Stdout, format!("line {i}")).with_source("7"))
            .collect();
        store.append(lines);
        let got = all(&store).await;
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], "line 99");
        let text = format_line(&LogLine::new(OutputStream::Stderr, "a b  c").with_source("9"));
        let parsed = parse_line(text.trim_end_matches('\n')).unwrap();
        assert_eq!(
            (parsed.message.as_str(), parsed.stream),
            ("a b  c", OutputStream::Stderr)
        );
    }

    #[tokio::test]
    async fn rotation_keeps_at_most_n_files_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), settings(100, 200)).unwrap();
        for i in 0..100 {
            store.append(vec![LogLine::new(
                OutputStream::Stdout,
                format!("line {i}"),
            )]);
        }
        assert!(dir.path().join("app.log.2").exists());
        assert!(!dir.path().join("app.log.3").exists());
        let got = all(&store).await;
        assert!(got[0].contains("rotated out"), "{got:?}");
        assert_eq!(got.last().unwrap(), "line 99");
    }
}
