//! Tailing an instance's spool files into the log store.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use conan_core::{OutputStream, Timestamp};

use nix::fcntl::{FallocateFlags, fallocate};

use super::store::Batch;
use super::tailer::{Registration, Tailer};
use super::{LogStore, MAX_LINE_BYTES, SPLIT_MARKER};

/// The size of one read from a spool.
pub(super) const READ_CHUNK: usize = 256 * 1024;
const PUNCH_EVERY: u64 = 4 * 1024 * 1024;

struct Spool {
    file: File,
    stream: OutputStream,
    offset: u64,
    punched: u64,
    partial: Vec<u8>,
}

impl Spool {
    /// Reads what is available, at most `max_chunks` reads; returns whether anything was
    /// read and whether the budget ran out before the end of the file.
    fn read(
        &mut self,
        buf: &mut [u8],
        out: &mut Vec<Batch>,
        max_chunks: usize,
    ) -> io::Result<(bool, bool)> {
        let mut any = false;
        for _ in 0..max_chunks {
            let n = self.file.read_at(buf, self.offset)?;
            if n == 0 {
                return Ok((any, false));
            }
            any = true;
            self.offset += n as u64;
            let mut batch = Batch::new(Timestamp::now(), self.stream);
            let mut rest = &buf[..n];
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                let (line, tail) = rest.split_at(nl);
                rest = &tail[1..];
                if self.partial.is_empty() {
                    push_line(&mut batch, line);
                } else {
                    self.partial.extend_from_slice(line);
                    let whole = std::mem::take(&mut self.partial);
                    push_line(&mut batch, &whole);
                }
            }
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_LINE_BYTES {
                // Emit the whole pieces now so an endless line never stalls capture.
                let cut = char_boundary(&self.partial, MAX_LINE_BYTES);
                let piece: Vec<u8> = self.partial.drain(..cut).collect();
                push_piece(&mut batch, &piece);
            }
            out.push(batch);
            if n < buf.len() {
                return Ok((any, false));
            }
        }
        Ok((any, true))
    }

    fn flush_partial(&mut self, out: &mut Vec<Batch>) {
        if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            let mut batch = Batch::new(Timestamp::now(), self.stream);
            push_line(&mut batch, &whole);
            out.push(batch);
        }
    }

    fn punch(&mut self) {
        let upto = self.offset - self.offset % 4096;
        if upto >= self.punched + PUNCH_EVERY {
            let (Ok(off), Ok(len)) = (
                i64::try_from(self.punched),
                i64::try_from(upto - self.punched),
            ) else {
                return;
            };
            let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            if let Err(e) = fallocate(&self.file, flags, off, len) {
                tracing::debug!(error = %e, "cannot punch a hole in the log spool");
            }
            self.punched = upto;
        }
    }
}

fn char_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    while cut > 0 && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 { max.min(bytes.len()) } else { cut }
}

/// Adds one raw line to `batch` (split at 64 KiB with a marker; invalid UTF-8 replaced).
fn push_line(batch: &mut Batch, raw: &[u8]) {
    let mut raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    while raw.len() > MAX_LINE_BYTES {
        let cut = char_boundary(raw, MAX_LINE_BYTES);
        push_piece(batch, &raw[..cut]);
        raw = &raw[cut..];
    }
    match std::str::from_utf8(raw) {
        Ok(s) => batch.push(s),
        Err(_) => batch.push(&String::from_utf8_lossy(raw)),
    }
}

fn push_piece(batch: &mut Batch, piece: &[u8]) {
    let mut text = String::from_utf8_lossy(piece).into_owned();
    text.push_str(SPLIT_MARKER);
    batch.push(&text);
}

struct CaptureState {
    spools: Vec<Spool>,
    offsets: File,
    /// Set by `finish` and `detach`: the tailer reads no more.
    stopped: bool,
}

/// What the shared tailer learns from [`Capture::tail`].
pub(super) enum Tail {
    /// The read budget ran out: more is waiting.
    More,
    /// Everything written so far was read (or the capture stopped).
    Done,
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

impl Capture {
    /// The spool paths of an instance directory: (stdout, stderr).
    pub fn spool_paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("stdout.spool"), dir.join("stderr.spool"))
    }

    /// Opens (creating) the spools of `dir` for the app to write: `O_APPEND`.
    pub fn open_for_app(dir: &Path) -> io::Result<(File, File)> {
        let (out, err) = Self::spool_paths(dir);
        let open = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
        Ok((open(&out)?, open(&err)?))
    }

    /// Starts capturing `dir`'s spools into `store`, resuming at the persisted offsets.
    /// The shared tailer reads the backlog at once, then whatever the app writes.
    pub fn start(dir: &Path, store: Arc<LogStore>) -> io::Result<Arc<Self>> {
        let (out, err) = Self::spool_paths(dir);
        let offsets = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("offsets"))?;
        let mut saved = [0u8; 16];
        let got = offsets.read_at(&mut saved, 0).unwrap_or(0);
        let (o1, o2) = if got == 16 {
            let (a, b) = saved.split_at(8);
            (
                u64::from_le_bytes(a.try_into().unwrap_or([0; 8])),
                u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
            )
        } else {
            (0, 0)
        };
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(p)
        };
        let spool = |file, stream, offset| Spool {
            file,
            stream,
            offset,
            punched: 0,
            partial: Vec::new(),
        };
        let tailer = Tailer::global()?;
        let id = tailer.next_id();
        let capture = Arc::new(Self {
            state: Mutex::new(CaptureState {
                spools: vec![
                    spool(open(&out)?, OutputStream::Stdout, o1),
                    spool(open(&err)?, OutputStream::Stderr, o2),
                ],
                offsets,
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
            return Tail::Done;
        }
        if self.read_locked(&mut state, buf, max_chunks, false).1 {
            Tail::More
        } else {
            Tail::Done
        }
    }

    /// Reads whatever the app wrote so far into the store; true when something was read.
    pub fn poll(&self) -> bool {
        let mut state = self.lock();
        let mut buf = vec![0u8; READ_CHUNK];
        self.read_locked(&mut state, &mut buf, usize::MAX, false).0
    }

    /// Returns (anything read, budget exhausted).
    fn read_locked(
        &self,
        state: &mut CaptureState,
        buf: &mut [u8],
        max_chunks: usize,
        final_flush: bool,
    ) -> (bool, bool) {
        let CaptureState {
            spools, offsets, ..
        } = state;
        let mut lines = Vec::new();
        let mut any = false;
        let mut more = false;
        for spool in spools.iter_mut() {
            match spool.read(buf, &mut lines, max_chunks) {
                Ok((read, left)) => {
                    any |= read;
                    more |= left;
                }
                Err(e) => tracing::warn!(error = %e, "reading a log spool failed"),
            }
            if final_flush {
                spool.flush_partial(&mut lines);
            }
        }
        if !lines.is_empty() {
            self.store.append_batches(lines);
        }
        if any {
            let mut saved = [0u8; 16];
            saved[..8].copy_from_slice(&spools[0].offset.to_le_bytes());
            saved[8..].copy_from_slice(&spools[1].offset.to_le_bytes());
            if let Err(e) = offsets.write_at(&saved, 0) {
                tracing::warn!(error = %e, "persisting log offsets failed");
            }
            for spool in spools.iter_mut() {
                spool.punch();
            }
        }
        (any, more)
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
            self.read_locked(&mut state, &mut buf, usize::MAX, true);
            state.stopped = true;
        }
    }

    /// Stops tailing without the final flush (the processes keep running: a provider
    /// being dropped, or handing over to a later manager). No read is in progress once
    /// this returns, so the persisted offsets are final.
    pub fn detach(&self) {
        self.unregister();
        self.lock().stopped = true;
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(raw: &[u8]) -> Vec<String> {
        let mut b = Batch::new(Timestamp::now(), OutputStream::Stdout);
        push_line(&mut b, raw);
        b.lines().map(|l| l.message).collect()
    }

    #[test]
    fn long_lines_are_split_with_a_marker() {
        let out = lines(&vec![b'x'; MAX_LINE_BYTES * 2 + 10]);
        assert_eq!(out.len(), 3);
        assert!(out[0].ends_with(SPLIT_MARKER));
        assert!(out[1].ends_with(SPLIT_MARKER));
        assert_eq!(out[2].len(), 10);
    }

    #[test]
    fn splitting_respects_utf8() {
        let mut raw = vec![b'a'; MAX_LINE_BYTES - 1];
        raw.extend_from_slice("é and more".as_bytes());
        let out = lines(&raw);
        assert_eq!(out.len(), 2);
        assert!(out[1].starts_with('é'));
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
