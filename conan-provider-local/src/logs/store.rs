//! A deployment's log: a bounded in-memory ring (by bytes), a rotated log file, and a
//! broadcast feed for `follow`.
//!
//! Lines travel in [`Batch`]es — the lines of one read, sharing a timestamp and a stream,
//! kept as one string — and become [`LogLine`]s (with their detected level) only when a
//! query, a follower or a failure report asks. That keeps capture cheaper than the app's
//! own writing, so a fast writer never outruns it.
//!
//! The log file (`app.log`, rotated to `app.log.1` .. `app.log.<files-1>`) holds the
//! messages one per line, each batch preceded by a header line `\x1e<unix micros> <stream>`
//! (a message that itself starts with `\x1e` gets a second one). Queries are answered from
//! the ring while it still holds the whole history, otherwise from the files; lines gone
//! from both (rotated out) are reported by a `system` line.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use conan_core::{LogLevel, LogLine, LogQuery, LogStream, OutputStream, Timestamp};
use tokio::sync::broadcast;

/// Sizes of a log store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogStoreSettings {
    pub memory_bytes: usize,
    pub file_max_bytes: u64,
    pub files: u32,
}

const HEADER: char = '\u{1e}';

/// Lines a slow follower may lag behind before it misses some (then it gets one notice per
/// gap). The slots are allocated when the first follower comes, and the monitor follows
/// every running deployment (its log counters): a slot holds an `Arc` (about 32 bytes), so
/// 1,024 cost 32 KiB a deployment (16,384 whole lines cost 1.5 MiB each, 75 MiB with 50
/// idle apps; 1,024 whole lines 100 KiB).
const LIVE_CAPACITY: usize = 1024;

/// Lines captured together: one timestamp, one stream; `text` holds each message followed
/// by `\n`.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    pub timestamp: Timestamp,
    pub stream: OutputStream,
    pub text: String,
    pub count: usize,
}

impl Batch {
    pub fn new(timestamp: Timestamp, stream: OutputStream) -> Self {
        Self::with_capacity(timestamp, stream, 0)
    }

    /// A batch with room for `bytes` of text (a read's size: the text is rarely longer).
    pub fn with_capacity(timestamp: Timestamp, stream: OutputStream, bytes: usize) -> Self {
        Self {
            timestamp,
            stream,
            text: String::with_capacity(bytes),
            count: 0,
        }
    }

    /// Adds one message (which must not contain `\n`).
    pub fn push(&mut self, message: &str) {
        self.push_parts(message, "");
    }

    /// Adds one message made of two parts (a piece of a long line and its marker).
    pub fn push_parts(&mut self, message: &str, suffix: &str) {
        self.text.push_str(message);
        self.text.push_str(suffix);
        self.text.push('\n');
        self.count += 1;
    }

    fn messages(&self) -> std::str::SplitTerminator<'_, char> {
        self.text.split_terminator('\n')
    }

    /// The batch's lines, materialized.
    pub fn lines(&self) -> impl DoubleEndedIterator<Item = LogLine> + '_ {
        self.messages()
            .map(|m| make_line(self.timestamp, self.stream, m))
    }

    fn memory(&self) -> usize {
        self.text.capacity() + self.count * 16 + 64
    }

    /// Frees the text's spare capacity when it is large (a read's buffer that the lines
    /// did not fill), so the ring holds what it accounts for.
    fn trim(&mut self) {
        if self.text.capacity() - self.text.len() > 4096 + self.text.len() / 8 {
            self.text.shrink_to_fit();
        }
    }
}

/// Whether [`LogLevel::detect`] would surely find nothing in `text`: not JSON, no
/// `level=`, and a first word that is neither a tag (`[warn]`, `ERROR`, `error:`) nor a
/// leading timestamp. A cheap pre-check; anything else goes through the full detection.
pub(crate) fn surely_no_level(text: &str) -> bool {
    let t = text.trim_start().as_bytes();
    let Some(&first) = t.first() else {
        return true;
    };
    if !first.is_ascii_lowercase() {
        return false;
    }
    let word_end = t
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(t.len());
    let tag_punct = |b: u8| {
        matches!(
            b,
            b'[' | b']' | b'(' | b')' | b'<' | b'>' | b':' | b'|' | b'-'
        )
    };
    !tag_punct(t[word_end - 1]) && !t.windows(6).any(|w| w == b"level=")
}

/// A log line with its level detected as conan-core does.
pub(crate) fn make_line(ts: Timestamp, stream: OutputStream, message: &str) -> LogLine {
    if surely_no_level(message) {
        LogLine {
            timestamp: ts,
            stream,
            level: match stream {
                OutputStream::Stderr => LogLevel::Error,
                OutputStream::Stdout | OutputStream::System => LogLevel::Info,
            },
            message: message.to_owned(),
            source: None,
        }
    } else {
        LogLine::at(ts, stream, message)
    }
}

fn parse_stream(s: &str) -> OutputStream {
    match s {
        "stdout" => OutputStream::Stdout,
        "stderr" => OutputStream::Stderr,
        _ => OutputStream::System,
    }
}

fn header(b: &Batch) -> String {
    format!(
        "{HEADER}{} {}\n",
        b.timestamp.as_unix_micros(),
        b.stream.as_str()
    )
}

/// Parses a log file's text back into lines.
fn parse_file(text: &str, out: &mut Vec<LogLine>) {
    let mut current = (Timestamp::from_unix_micros(0), OutputStream::Stdout);
    for line in text.split_terminator('\n') {
        if let Some(rest) = line.strip_prefix(HEADER) {
            if !rest.starts_with(HEADER) {
                let mut it = rest.splitn(2, ' ');
                if let (Some(ts), Some(stream)) = (it.next(), it.next()) {
                    current = (
                        Timestamp::from_unix_micros(ts.parse().unwrap_or(0)),
                        parse_stream(stream),
                    );
                }
                continue;
            }
            out.push(make_line(current.0, current.1, rest));
            continue;
        }
        out.push(make_line(current.0, current.1, line));
    }
}

struct Inner {
    ring: VecDeque<Batch>,
    ring_bytes: usize,
    /// Lines dropped from the ring (or never loaded in it, after adoption).
    dropped: u64,
    /// `app.log`, open while lines arrive ([`LogStore::relax`] closes it).
    file: Option<File>,
    file_size: u64,
    rotated_out: bool,
    /// Lines lost because the log file could not be written (ever).
    unwritten: u64,
    /// Of those, the ones not yet announced by a system line, and why.
    unannounced: u64,
    unwritten_reason: &'static str,
}

/// Why lines could not be written, for the system line that announces them.
fn unwritable_reason(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(code) if code == nix::errno::Errno::ENOSPC as i32 => "log volume full",
        Some(code) if code == nix::errno::Errno::EDQUOT as i32 => "log volume quota exceeded",
        _ => "the log file could not be written",
    }
}

/// `write_all` for a list of slices (`Write::write_all_vectored` is unstable).
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One deployment's logs.
pub(crate) struct LogStore {
    inner: Mutex<Inner>,
    /// The live feed, created by the first `follow` (its slots are allocated up front).
    tx: OnceLock<broadcast::Sender<Arc<LogLine>>>,
    dir: PathBuf,
    settings: LogStoreSettings,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

impl LogStore {
    /// Opens the store of `dir` (creating it). An existing log file means history from an
    /// earlier manager: queries then read the files.
    pub fn open(dir: &Path, settings: LogStoreSettings) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("app.log");
        let file_size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let rotated = dir.join("app.log.1").exists();
        // Created now so that a directory we cannot write is an error of `open`.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                ring_bytes: 0,
                dropped: u64::from(file_size > 0 || rotated),
                file: None,
                file_size,
                rotated_out: false,
                unwritten: 0,
                unannounced: 0,
                unwritten_reason: "",
            }),
            tx: OnceLock::new(),
            dir: dir.to_path_buf(),
            settings,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends batches (in order) to the file, the ring and the live feed.
    ///
    /// A batch the file cannot take (a full volume) is dropped — not kept in memory
    /// either, so memory and files tell the same story — and counted; once writing works
    /// again a `system` line says how many lines were lost. Never fails.
    pub fn append_batches(&self, batches: impl IntoIterator<Item = Batch>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let live = self.tx.get().filter(|tx| tx.receiver_count() > 0);
        for mut batch in batches {
            if batch.count == 0 {
                continue;
            }
            if inner.unannounced > 0 {
                let mut notice = Batch::new(Timestamp::now(), OutputStream::System);
                notice.push(&format!(
                    "[conan] {} log lines dropped: {}",
                    inner.unannounced, inner.unwritten_reason
                ));
                let lost = inner.unannounced;
                if self.write_batch(inner, &notice) {
                    inner.unannounced -= lost;
                    self.keep(inner, notice, live);
                }
            }
            if !self.write_batch(inner, &batch) {
                continue;
            }
            batch.trim();
            self.keep(inner, batch, live);
        }
    }

    fn keep(
        &self,
        inner: &mut Inner,
        batch: Batch,
        live: Option<&broadcast::Sender<Arc<LogLine>>>,
    ) {
        if let Some(tx) = live {
            for line in batch.lines() {
                let _ = tx.send(Arc::new(line));
            }
        }
        inner.ring_bytes += batch.memory();
        inner.ring.push_back(batch);
        self.trim_ring(inner, self.settings.memory_bytes);
    }

    fn trim_ring(&self, inner: &mut Inner, budget: usize) {
        while inner.ring_bytes > budget && !inner.ring.is_empty() {
            if inner.ring.len() == 1 && budget == self.settings.memory_bytes {
                break;
            }
            let Some(old) = inner.ring.pop_front() else {
                break;
            };
            inner.ring_bytes -= old.memory();
            inner.dropped += old.count as u64;
        }
    }

    /// Called when the deployment's output went quiet: closes the log file and gives back
    /// memory a burst took, keeping an eighth of the memory budget (queries read the older
    /// lines from the files).
    pub fn relax(&self) {
        let mut inner = self.lock();
        inner.file = None;
        let resting = self.settings.memory_bytes / 8;
        self.trim_ring(&mut inner, resting);
        // The lines kept are the newest, allocated last, at the top of the allocator's heap,
        // where they would keep everything a burst freed below them mapped. Copied, they
        // move into that freed space and the heap's top can be returned to the system
        // (without them, RSS stayed ~10 MiB above idle after a 50 MB/s flood).
        for b in &mut inner.ring {
            b.text = b.text.as_str().to_owned();
        }
        inner.ring.shrink_to_fit();
    }

    /// Lines lost because the log file could not be written (a full volume).
    pub fn unwritten(&self) -> u64 {
        self.lock().unwritten
    }

    /// Appends lines (grouping neighbours with the same time and stream).
    #[cfg(test)]
    pub fn append(&self, lines: Vec<LogLine>) {
        let mut batches: Vec<Batch> = Vec::new();
        for l in lines {
            match batches.last_mut() {
                Some(b) if b.timestamp == l.timestamp && b.stream == l.stream => {
                    b.push(&l.message);
                }
                _ => {
                    let mut b = Batch::new(l.timestamp, l.stream);
                    b.push(&l.message);
                    batches.push(b);
                }
            }
        }
        self.append_batches(batches);
    }

    /// Writes `batch` to the log file; false (the batch counted as unwritten) when it
    /// could not be written whole.
    fn write_batch(&self, inner: &mut Inner, batch: &Batch) -> bool {
        match self.try_write_batch(inner, batch) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "writing the log file failed; lines dropped");
                // What was written of the batch is cut off, so the file stays parseable.
                if let Some(f) = inner.file.as_ref()
                    && f.set_len(inner.file_size).is_err()
                {
                    inner.file = None;
                }
                inner.unwritten += batch.count as u64;
                inner.unannounced += batch.count as u64;
                inner.unwritten_reason = unwritable_reason(&e);
                false
            }
        }
    }

    fn open_file(&self, inner: &mut Inner) -> io::Result<()> {
        if inner.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.dir.join("app.log"))?;
            inner.file_size = f.metadata().map_or(inner.file_size, |m| m.len());
            inner.file = Some(f);
        }
        Ok(())
    }

    /// Writes the batch; on failure `file_size` is where the file's intact content ends.
    fn try_write_batch(&self, inner: &mut Inner, batch: &Batch) -> io::Result<()> {
        self.open_file(inner)?;
        let head = header(batch);
        let size = (head.len() + batch.text.len()) as u64;
        let fits = inner.file_size + size <= self.settings.file_max_bytes;
        if fits && !batch.text.contains(HEADER) {
            Self::write_out(
                inner,
                &mut [
                    IoSlice::new(head.as_bytes()),
                    IoSlice::new(batch.text.as_bytes()),
                ],
            )?;
            inner.file_size += size;
            return Ok(());
        }
        // Line by line: rotating where the file is full, escaping header-like messages.
        let mut need_header = true;
        let mut out: Vec<u8> = Vec::new();
        for m in batch.messages() {
            let escape = m.starts_with(HEADER);
            let len = (m.len() + 1 + usize::from(escape) * HEADER.len_utf8()) as u64;
            let head_len = if need_header { head.len() as u64 } else { 0 };
            let used = inner.file_size + out.len() as u64;
            if used > 0 && used + head_len + len > self.settings.file_max_bytes {
                Self::write_out(inner, &mut [IoSlice::new(&out)])?;
                inner.file_size += out.len() as u64;
                out.clear();
                self.rotate(inner);
                self.open_file(inner)?;
                need_header = true;
            }
            if need_header {
                out.extend_from_slice(head.as_bytes());
                need_header = false;
            }
            if escape {
                out.extend_from_slice(HEADER.to_string().as_bytes());
            }
            out.extend_from_slice(m.as_bytes());
            out.push(b'\n');
        }
        Self::write_out(inner, &mut [IoSlice::new(&out)])?;
        inner.file_size += out.len() as u64;
        Ok(())
    }

    fn write_out(inner: &mut Inner, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        match inner.file.as_mut() {
            Some(f) => write_all_vectored(f, slices),
            None => Err(io::Error::other("the log file is not open")),
        }
    }

    /// Adds a line written by Conan itself (`[conan] restarting ...`).
    pub fn system(&self, message: impl Into<String>) {
        let mut b = Batch::new(Timestamp::now(), OutputStream::System);
        b.push(&message.into().replace('\n', " "));
        self.append_batches(vec![b]);
    }

    fn rotate(&self, inner: &mut Inner) {
        inner.file = None;
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
            inner.rotated_out = true;
        } else {
            if name(files - 1).exists() {
                inner.rotated_out = true;
            }
            for i in (0..files - 1).rev() {
                let _ = fs::rename(name(i), name(i + 1));
            }
        }
        inner.file_size = 0;
    }

    fn read_files(&self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for i in (0..self.settings.files.max(1)).rev() {
            let path = if i == 0 {
                self.dir.join("app.log")
            } else {
                self.dir.join(format!("app.log.{i}"))
            };
            match fs::read(&path) {
                Ok(bytes) => parse_file(&String::from_utf8_lossy(&bytes), &mut out),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "reading the log file failed"),
            }
        }
        out
    }

    /// Lines no longer held in memory (they remain in the log files until rotated out).
    pub fn dropped_from_memory(&self) -> u64 {
        self.lock().dropped
    }

    /// The last `n` lines (for failure reports): from memory, or from the files when
    /// memory holds fewer (history written by an earlier manager).
    pub fn last(&self, n: usize) -> Vec<LogLine> {
        let inner = self.lock();
        let mut out: Vec<LogLine> = inner
            .ring
            .iter()
            .rev()
            .flat_map(|b| b.lines().rev())
            .take(n)
            .collect();
        if out.len() < n && inner.dropped > 0 {
            let all = self.read_files();
            return all[all.len().saturating_sub(n)..].to_vec();
        }
        out.reverse();
        out
    }

    /// Answers `query`: history from memory (or the files when memory no longer holds it
    /// all), then live lines when following.
    pub fn query(&self, query: &LogQuery) -> LogStream {
        let inner = self.lock();
        // Subscribed under the lock that `append_batches` holds: no line is missed.
        let live = query.follow.then(|| {
            self.tx
                .get_or_init(|| broadcast::channel(LIVE_CAPACITY).0)
                .subscribe()
        });
        let history = if inner.dropped == 0 {
            let all: Vec<LogLine> = inner.ring.iter().flat_map(Batch::lines).collect();
            query.apply(&all)
        } else {
            // The lock stays held while the files are read, so no line is both in the
            // history and in the live feed, and none falls between them.
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
            .map(|i| LogLine::new(OutputStream::Stdout, format!("line {i}")))
            .collect();
        store.append(lines);
        store.append(vec![
            LogLine::new(OutputStream::Stderr, "\u{1e}odd  one"),
            LogLine::new(OutputStream::Stderr, "WARN x"),
        ]);
        let got = all(&store).await;
        assert_eq!(got.len(), 102);
        assert_eq!(got[99], "line 99");
        assert_eq!(got[100], "\u{1e}odd  one");
        let last = store.last(1);
        assert_eq!(last[0].level, LogLevel::Warn);
        assert_eq!(last[0].stream, OutputStream::Stderr);
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
        for f in ["app.log", "app.log.1", "app.log.2"] {
            assert!(fs::metadata(dir.path().join(f)).unwrap().len() <= 200);
        }
        let got = all(&store).await;
        assert!(got[0].contains("rotated out"), "{got:?}");
        assert_eq!(got.last().unwrap(), "line 99");
    }

    #[test]
    fn the_level_pre_check_agrees_with_core() {
        for text in [
            "line 0000001",
            "listening on port 3000",
            "error: boom",
            "error handling is fine here",
            "ERROR boom",
            "[warn] x",
            "warn| x",
            "ts=1 level=debug msg=hi",
            "2026-11-28 ERROR x",
            r#"{"level":50}"#,
            "info- started",
            "  fatal: indented",
            "",
            "é",
        ] {
            if surely_no_level(text) {
                assert_eq!(LogLevel::detect(text), None, "{text}");
            }
        }
        assert!(surely_no_level("line 0000001"));
    }
}
