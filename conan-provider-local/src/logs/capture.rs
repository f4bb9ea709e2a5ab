//! Tailing an instance's spool files into the log store.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use conan_core::{OutputStream, Timestamp};

use super::LogStore;
use super::lines::LineSplitter;
use super::spool::{PUNCH_EVERY, Pending, RESERVE, RESERVE_STDERR, Read, Spool};
use super::store::Batch;
use super::tailer::{Registration, Tailer};
use super::{IDLE, QUIET};

/// The size of one read from a spool.
pub(super) const READ_CHUNK: usize = 256 * 1024;

/// One output stream of the instance: its spool and the line being assembled.
struct Stream {
    spool: Spool,
    stream: OutputStream,
    lines: LineSplitter,
    /// When bytes last arrived.
    last_data: Instant,
    /// A collapse being made (persisted with the offsets).
    pending: Pending,
}

impl Stream {
    /// How far the spool's content is in the store: what was read, less the start of a
    /// line still being assembled (read again after a crash).
    fn committed(&self) -> u64 {
        self.spool.offset - self.lines.held() as u64
    }

    /// Reads at most `max_chunks` chunks into the store; returns (anything read, budget
    /// exhausted before the end).
    fn read(
        &mut self,
        buf: &mut [u8],
        store: &LogStore,
        max_chunks: usize,
        now: Instant,
    ) -> (bool, bool) {
        let mut any = false;
        for _ in 0..max_chunks {
            match self.spool.read(buf) {
                Ok(Read::End) => return (any, false),
                Ok(Read::Data(n)) => {
                    any = true;
                    self.last_data = now;
                    let mut batch = Batch::with_capacity(Timestamp::now(), self.stream, n);
                    self.lines.feed(&buf[..n], &mut batch);
                    store.append_batches([batch]);
                    if n < buf.len() {
                        return (any, false);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, stream = %self.stream, "reading a log spool failed");
                    return (any, false);
                }
            }
        }
        (any, true)
    }

    /// Emits the held start of a line once the stream was quiet for [`QUIET`] (or at
    /// once when `now` is `None`: the instance is gone).
    fn flush_held(&mut self, store: &LogStore, now: Option<Instant>) {
        let due = now.is_none_or(|n| n.duration_since(self.last_data) >= QUIET);
        if self.lines.held() > 0 && due {
            let mut batch = Batch::new(Timestamp::now(), self.stream);
            self.lines.flush(&mut batch);
            store.append_batches([batch]);
        }
    }
}

struct CaptureState {
    streams: [Stream; 2],
    /// The offsets last written to the offsets file.
    persisted: [(u64, u64); 2],
    /// When output last arrived; files are closed and memory given back [`IDLE`] later.
    last_activity: Instant,
    relaxed: bool,
    /// Set by `finish` and `detach`: the tailer reads no more.
    stopped: bool,
}

/// What the shared tailer learns from [`Capture::tail`].
pub(super) enum Tail {
    /// The read budget ran out: more is waiting.
    More,
    /// Everything written so far was read; call again at this time if given (a held line
    /// becomes due, or the capture goes idle), else on the next write.
    Idle(Option<Instant>),
}

/// The capture of one instance: its spool files, their registration with the shared
/// tailer, and the persisted offsets.
pub(crate) struct Capture {
    state: Mutex<CaptureState>,
    store: Arc<LogStore>,
    dir: PathBuf,
    id: u64,
    tailer: Arc<Tailer>,
    registration: Mutex<Option<Registration>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("dir", &self.dir).finish()
    }
}

/// The offsets file: per stream (stdout, stderr) the committed offset and the length of a
/// collapse in progress, little-endian u64s (an older 16-byte file has the offsets only).
fn read_offsets(path: &Path) -> [(u64, u64); 2] {
    let Ok(bytes) = std::fs::read(path) else {
        return [(0, 0); 2];
    };
    let word = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    match bytes.len() {
        32 => [(word(0), word(1)), (word(2), word(3))],
        16 => [(word(0), 0), (word(1), 0)],
        _ => [(0, 0); 2],
    }
}

fn write_offsets(path: &Path, offsets: [(u64, u64); 2]) -> io::Result<()> {
    let mut bytes = [0u8; 32];
    for (i, (offset, pending)) in offsets.iter().enumerate() {
        bytes[i * 16..i * 16 + 8].copy_from_slice(&offset.to_le_bytes());
        bytes[i * 16 + 8..i * 16 + 16].copy_from_slice(&pending.to_le_bytes());
    }
    // Opened for each write: an idle deployment keeps no descriptor of it.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all_at(&bytes, 0)
}

impl Capture {
    /// The spool paths of an instance directory: (stdout, stderr).
    pub fn spool_paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("stdout.spool"), dir.join("stderr.spool"))
    }

    /// Opens (creating) the spools of `dir` for the app to write: `O_APPEND`.
    pub fn open_for_app(dir: &Path) -> io::Result<(File, File)> {
        let (out, err) = Self::spool_paths(dir);
        // Mode 0600 like every state file: the app's output may hold secrets.
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(p)
        };
        Ok((open(&out)?, open(&err)?))
    }

    fn offsets_path(&self) -> PathBuf {
        self.dir.join("offsets")
    }

    /// Starts capturing `dir`'s spools into `store`, resuming at the persisted offsets.
    /// The shared tailer reads the backlog at once, then whatever the app writes.
    pub fn start(dir: &Path, store: Arc<LogStore>) -> io::Result<Arc<Self>> {
        let (out, err) = Self::spool_paths(dir);
        let saved = read_offsets(&dir.join("offsets"));
        // The spools exist before the app starts (and before they are watched).
        Self::open_for_app(dir)?;
        let now = Instant::now();
        let stream = |path: &Path, stream: OutputStream, (offset, pending): (u64, u64)| {
            let reserve = if stream == OutputStream::Stderr {
                RESERVE_STDERR
            } else {
                RESERVE
            };
            let mut spool = Spool::new(path.to_path_buf(), offset, reserve);
            let pending = Pending { len: pending };
            if spool.collapsed(pending) {
                spool.offset = offset.saturating_sub(pending.len);
            }
            Stream {
                spool,
                stream,
                lines: LineSplitter::default(),
                last_data: now,
                pending: Pending::default(),
            }
        };
        let mut streams = [
            stream(&out, OutputStream::Stdout, saved[0]),
            stream(&err, OutputStream::Stderr, saved[1]),
        ];
        // Room for the app's first writes, even if the volume fills before it starts.
        for s in &mut streams {
            let committed = s.committed();
            s.spool.keep_writable(committed);
        }
        let tailer = Tailer::global()?;
        let id = tailer.next_id();
        let capture = Arc::new(Self {
            state: Mutex::new(CaptureState {
                persisted: [(streams[0].spool.offset, 0), (streams[1].spool.offset, 0)],
                streams,
                last_activity: now,
                relaxed: false,
                stopped: false,
            }),
            store,
            dir: dir.to_path_buf(),
            id,
            tailer: Arc::clone(&tailer),
            registration: Mutex::new(None),
        });
        // Registered before the first read: a write after it raises an event.
        let registration = tailer.register(&capture, id, &[&out, &err]);
        *capture
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(registration);
        Ok(capture)
    }

    /// Whether both spools have room for the app's first writes. False on a full volume,
    /// where a new app would die of `ENOSPC` at its first line.
    pub fn has_room(&self) -> bool {
        self.lock().streams.iter().all(|s| s.spool.has_room())
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tailer's read: at most `max_chunks` chunks per spool into `buf`.
    pub(super) fn tail(&self, buf: &mut [u8], max_chunks: usize) -> Tail {
        let mut state = self.lock();
        if state.stopped {
            return Tail::Idle(None);
        }
        self.step(&mut state, buf, max_chunks, Instant::now())
    }

    /// Reads whatever the app wrote so far into the store.
    pub fn poll(&self) {
        let mut state = self.lock();
        if !state.stopped {
            let mut buf = vec![0u8; READ_CHUNK];
            self.step(&mut state, &mut buf, usize::MAX, Instant::now());
        }
    }

    /// One step of tailing: read, emit held lines that became due, keep the spools small
    /// and writable, persist the offsets, and go idle when nothing arrived for a while.
    fn step(
        &self,
        state: &mut CaptureState,
        buf: &mut [u8],
        max_chunks: usize,
        now: Instant,
    ) -> Tail {
        let mut any = false;
        let mut more = false;
        for s in &mut state.streams {
            let (read, left) = s.read(buf, &self.store, max_chunks, now);
            any |= read;
            more |= left;
            s.flush_held(&self.store, Some(now));
            if read {
                let committed = s.committed();
                s.spool.keep_writable(committed);
                s.spool.punch(committed, PUNCH_EVERY);
            }
        }
        if any {
            state.last_activity = now;
            state.relaxed = false;
        }
        self.persist(state);
        if more {
            return Tail::More;
        }
        self.collapse(state);
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        for s in &state.streams {
            if s.lines.held() > 0 {
                at(s.last_data + QUIET);
            }
        }
        if !state.relaxed {
            if now.duration_since(state.last_activity) >= IDLE {
                self.relax(state);
            } else {
                at(state.last_activity + IDLE);
            }
        }
        Tail::Idle(wake)
    }

    /// Idle: the spools are closed and the store gives back what a burst took.
    fn relax(&self, state: &mut CaptureState) {
        for s in &mut state.streams {
            s.spool.release();
        }
        self.store.relax();
        state.relaxed = true;
    }

    /// Removes the consumed prefix of a fully read spool (see [`Spool`]'s docs), recording
    /// the collapse first so a crash in between is recognized on resume.
    fn collapse(&self, state: &mut CaptureState) {
        for i in 0..state.streams.len() {
            let s = &mut state.streams[i];
            let committed = s.committed();
            let len = s.spool.collapsible(committed);
            if len == 0 {
                continue;
            }
            s.spool.punch(len, 0);
            s.pending = Pending { len };
            if !self.persist(state) {
                state.streams[i].pending = Pending::default();
                continue;
            }
            let s = &mut state.streams[i];
            s.spool.collapse(len);
            s.pending = Pending::default();
            self.persist(state);
        }
    }

    /// Writes the offsets when they changed; false when that failed.
    fn persist(&self, state: &mut CaptureState) -> bool {
        let now = [0, 1].map(|i| {
            let s = &state.streams[i];
            (s.committed(), s.pending.len)
        });
        if now == state.persisted {
            return true;
        }
        match write_offsets(&self.offsets_path(), now) {
            Ok(()) => {
                state.persisted = now;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "persisting log offsets failed");
                false
            }
        }
    }

    fn unregister(&self) {
        let registration = self
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(r) = registration {
            self.tailer.unregister(r);
        }
    }

    /// Reads everything left, including a last unterminated line, and stops tailing.
    /// Call once the instance's processes are gone.
    pub fn finish(&self) {
        self.unregister();
        let mut state = self.lock();
        if !state.stopped {
            let mut buf = vec![0u8; READ_CHUNK];
            self.step(&mut state, &mut buf, usize::MAX, Instant::now());
            for s in &mut state.streams {
                s.flush_held(&self.store, None);
            }
            self.persist(&mut state);
            self.relax(&mut state);
            state.stopped = true;
        }
    }

    /// Stops tailing without the final flush (the processes keep running: a provider
    /// being dropped, or handing over to a later manager). No read is in progress once
    /// this returns, so the persisted offsets are final.
    pub fn detach(&self) {
        self.unregister();
        let mut state = self.lock();
        for s in &mut state.streams {
            s.spool.release();
        }
        state.stopped = true;
    }

    /// Bytes held in memory for lines not yet complete (at most one piece per stream).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.lock().streams.iter().map(|s| s.lines.held()).sum()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Deletes the directory of an instance whose processes are gone and whose output was
/// captured ([`Capture::finish`]): its spools and offsets are no longer needed (the lines
/// are in the deployment's log files), so stopped instances of old revisions do not pile up.
pub(crate) fn remove_instance_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a stopped instance's directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> crate::logs::LogStoreSettings {
        crate::logs::LogStoreSettings {
            memory_bytes: 1 << 20,
            file_max_bytes: 16 << 20,
            files: 2,
        }
    }

    /// Regression (issue 10, finding 9): the capture held an unterminated line whole (it cut
    /// one 64 KiB piece per 256 KiB read), so a 300 MB write without a newline raised the
    /// daemon's memory by hundreds of MB; the pieces now reach the store as they are cut.
    #[test]
    fn a_long_line_reaches_the_store_as_it_arrives_holding_one_piece() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("i");
        std::fs::create_dir_all(&inst).unwrap();
        let store = Arc::new(LogStore::open(&dir.path().join("logs"), settings()).unwrap());
        let c = Capture::start(&inst, Arc::clone(&store)).unwrap();
        c.detach(); // read here, by `poll`, not by the tailer thread
        c.lock().stopped = false;
        let (out, _) = Capture::open_for_app(&inst).unwrap();
        let chunk = vec![b'z'; 1_000_000];
        let mut max_held = 0;
        for _ in 0..64 {
            (&out).write_all(&chunk).unwrap();
            c.poll();
            max_held = max_held.max(c.held());
        }
        assert!(
            max_held <= crate::logs::MAX_LINE_BYTES,
            "held {max_held} bytes"
        );
        (&out).write_all(b"END\n").unwrap();
        c.poll();
        let last = store.last(1);
        assert!(last[0].message.ends_with("zEND"), "the end arrives");
        assert_eq!(c.held(), 0);
    }

    /// `cargo test --release -p conan-provider-local --lib capture_throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement"]
    fn capture_throughput() {
        use crate::logs::LogStoreSettings;
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("i");
        std::fs::create_dir_all(&inst).unwrap();
        let mut text = String::new();
        for i in 1..=1_000_000 {
            text.push_str(&format!("line {i:07}\n"));
        }
        std::fs::write(inst.join("stdout.spool"), &text).unwrap();
        let settings = LogStoreSettings {
            memory_bytes: 8 << 20,
            file_max_bytes: 64 << 20,
            files: 5,
        };
        let store = Arc::new(LogStore::open(&dir.path().join("logs"), settings).unwrap());
        let t = std::time::Instant::now();
        let c = Capture::start(&inst, Arc::clone(&store)).unwrap();
        c.finish();
        eprintln!("1M lines captured in {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let n = store.last(usize::MAX).len();
        eprintln!("{n} lines materialized from memory in {:?}", t.elapsed());
    }
}
