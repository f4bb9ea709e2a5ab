//! One spool file as the reader sees it: where it has read to, and keeping the file small
//! and writable while the app appends to it.
//!
//! - **Real size**: consumed bytes are freed with `FALLOC_FL_PUNCH_HOLE` every
//!   [`PUNCH_EVERY`] (and at once when the volume is full).
//! - **Apparent size**: once everything written has been read and the file is past
//!   [`COLLAPSE_AT`], the consumed prefix is removed with `FALLOC_FL_COLLAPSE_RANGE`, which
//!   the kernel serializes with the app's `O_APPEND` writes (a truncate would race them and
//!   lose lines). Filesystems without it (tmpfs, btrfs) keep a sparse file whose apparent
//!   size grows; its real size stays bounded by the punching.
//! - **Writable on a full volume**: [`RESERVE`] bytes past the end of stdout's spool
//!   ([`RESERVE_STDERR`] for stderr's) are preallocated
//!   (`FALLOC_FL_KEEP_SIZE`), refilled as the app writes into them — from the space the
//!   punching frees when the volume is full — so the app's writes need no new blocks while
//!   the tailer keeps up, and it never dies of `ENOSPC` on its stdout. A new instance
//!   whose spools get no reserve at all (the volume is already full) is refused before
//!   its app starts, with the cause ([`Capture::has_room`](super::Capture::has_room)).
//!
//! The file is open only while it is being read: [`Spool::release`] closes it when idle.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};

/// Consumed bytes freed at a time (unless the volume is full).
pub(super) const PUNCH_EVERY: u64 = 4 * 1024 * 1024;
/// The apparent size past which a fully read spool is collapsed.
pub(super) const COLLAPSE_AT: u64 = 32 * 1024 * 1024;
/// Bytes preallocated past the end of stdout's spool: what an app may write between two
/// reads of the tailer (which reads within milliseconds of a write, but a loaded machine
/// can delay it by a second), small enough that instances on a small volume do not fill
/// it with reserves (288 KiB an instance with [`RESERVE_STDERR`]).
pub(super) const RESERVE: u64 = 256 * 1024;
/// Bytes preallocated past the end of stderr's spool (apps write less there).
pub(super) const RESERVE_STDERR: u64 = 32 * 1024;

/// What [`Spool::read`] found.
pub(super) enum Read {
    /// `n` bytes, now in the caller's buffer.
    Data(usize),
    /// Nothing more (end of file).
    End,
}

/// A collapse in progress: persisted before it is made, so a crash between the collapse and
/// persisting the new offset is told apart from one before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Pending {
    pub len: u64,
}

#[derive(Debug)]
pub(super) struct Spool {
    path: PathBuf,
    file: Option<File>,
    /// Bytes read (and handed to the line splitter).
    pub offset: u64,
    punched: u64,
    /// Where the preallocated reserve ends (0: none yet).
    reserved_to: u64,
    block: u64,
    collapse_unsupported: bool,
    reserve_unsupported: bool,
    /// How far past the read offset the reserve reaches.
    reserve: u64,
}

fn to_i64(v: u64) -> Option<i64> {
    i64::try_from(v).ok()
}

impl Spool {
    /// A spool read from `offset`, keeping `reserve` bytes preallocated past it.
    pub fn new(path: PathBuf, offset: u64, reserve: u64) -> Self {
        Self {
            reserve,
            path,
            file: None,
            offset,
            punched: 0,
            reserved_to: 0,
            block: 4096,
            collapse_unsupported: false,
            reserve_unsupported: false,
        }
    }

    fn file(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.path)?;
            self.block = f.metadata().map_or(4096, |m| m.blksize().max(512));
            self.file = Some(f);
        }
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("spool not open"))
    }

    /// Closes the file (reopened by the next read).
    pub fn release(&mut self) {
        self.file = None;
    }

    /// Reads at the current offset (which it advances).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Read> {
        let offset = self.offset;
        let n = self.file()?.read_at(buf, offset)?;
        if n == 0 {
            return Ok(Read::End);
        }
        self.offset += n as u64;
        Ok(Read::Data(n))
    }

    /// Keeps the reserve past the end topped up; `committed` is how far the content is safely
    /// stored (nothing before it will be read again).
    pub fn keep_writable(&mut self, committed: u64) {
        if self.reserve_unsupported || self.offset + self.reserve / 2 <= self.reserved_to {
            return;
        }
        match self.reserve() {
            Ok(()) => {}
            Err(Errno::ENOSPC | Errno::EDQUOT) => {
                // The volume is full: free what was read, and take that space for the app.
                self.punch(committed, 0);
                if let Err(e) = self.reserve_by_block() {
                    tracing::debug!(error = %e, "cannot preallocate log spool space: the volume is full");
                }
            }
            Err(Errno::EOPNOTSUPP) => self.reserve_unsupported = true,
            Err(e) => tracing::debug!(error = %e, "cannot preallocate log spool space"),
        }
    }

    /// Extends the reserve to `reserve` bytes past the read offset. Only the part not yet
    /// reserved is asked for: a failed `fallocate` may undo what it allocated in its range
    /// (tmpfs does), which must not include the reserve the app is writing into.
    fn reserve(&mut self) -> Result<(), Errno> {
        let from = self.reserved_to.max(self.offset);
        let to = self.offset + self.reserve;
        let file = self.file().map_err(|_| Errno::EBADF)?;
        let (Some(off), Some(len)) = (to_i64(from), to_i64(to - from)) else {
            return Err(Errno::EOVERFLOW);
        };
        fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, off, len)?;
        self.reserved_to = to;
        Ok(())
    }

    /// [`reserve`](Self::reserve) one block at a time, keeping what could be had: on a
    /// full volume the space comes free a block at a time as the app's lines are read.
    fn reserve_by_block(&mut self) -> Result<(), Errno> {
        let to = self.offset + self.reserve;
        let block = self.block;
        let mut from = self.reserved_to.max(self.offset);
        while from < to {
            let step = (to - from).min(block);
            let file = self.file().map_err(|_| Errno::EBADF)?;
            let (Some(off), Some(len)) = (to_i64(from), to_i64(step)) else {
                return Err(Errno::EOVERFLOW);
            };
            fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, off, len)?;
            from += step;
            self.reserved_to = from;
        }
        Ok(())
    }

    /// Whether the app can write now without new blocks: part of the reserve is left (or
    /// the filesystem has no preallocation, and writing is up to it).
    pub fn has_room(&self) -> bool {
        self.reserve_unsupported || self.reserved_to > self.offset
    }

    /// Frees consumed space up to `committed`, once at least `every` bytes can go.
    pub fn punch(&mut self, committed: u64, every: u64) {
        let block = self.block;
        let upto = committed - committed % block;
        if upto <= self.punched || upto < self.punched + every {
            return;
        }
        let (Some(off), Some(len)) = (to_i64(self.punched), to_i64(upto - self.punched)) else {
            return;
        };
        let Ok(file) = self.file() else { return };
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        if let Err(e) = fallocate(file, flags, off, len) {
            tracing::debug!(error = %e, "cannot punch a hole in the log spool");
        }
        self.punched = upto;
    }

    /// The length of the prefix a collapse would remove now: everything up to `committed`
    /// (the whole file read) once the file is past [`COLLAPSE_AT`]; 0 for none.
    pub fn collapsible(&mut self, committed: u64) -> u64 {
        if self.collapse_unsupported || committed != self.offset || committed < COLLAPSE_AT {
            return 0;
        }
        let block = self.block;
        let mut len = committed - committed % block;
        // The range must end before the end of the file.
        if len == committed {
            len = len.saturating_sub(block);
        }
        len
    }

    /// Removes the first `len` bytes (see [`collapsible`](Self::collapsible)); true when done.
    pub fn collapse(&mut self, len: u64) -> bool {
        let Some(l) = to_i64(len) else { return false };
        let Ok(file) = self.file() else { return false };
        match fallocate(file, FallocateFlags::FALLOC_FL_COLLAPSE_RANGE, 0, l) {
            Ok(()) => {
                self.offset -= len;
                self.punched = 0;
                self.reserved_to = 0;
                true
            }
            Err(Errno::EOPNOTSUPP | Errno::EINVAL) => {
                tracing::debug!("the log volume cannot collapse ranges: the spool stays sparse");
                self.collapse_unsupported = true;
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot collapse the log spool");
                false
            }
        }
    }

    /// Whether a collapse of `pending` was made before the manager stopped: the consumed
    /// prefix is a hole until it is collapsed, so data at the start means it was.
    pub fn collapsed(&mut self, pending: Pending) -> bool {
        if pending.len == 0 {
            return false;
        }
        let Ok(file) = self.file() else { return false };
        match nix::unistd::lseek(file, 0, nix::unistd::Whence::SeekData) {
            Ok(data) => u64::try_from(data).is_ok_and(|d| d < pending.len),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_fully_read_spool_is_collapsed_while_the_app_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let app = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut spool = Spool::new(path.clone(), 0, RESERVE);
        let chunk = vec![b'a'; 1 << 20];
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..(COLLAPSE_AT >> 20) + 1 {
            (&app).write_all(&chunk).unwrap();
            while let Read::Data(_) = spool.read(&mut buf).unwrap() {}
        }
        (&app).write_all(b"tail\n").unwrap();
        while let Read::Data(_) = spool.read(&mut buf).unwrap() {}
        let offset = spool.offset;
        let len = spool.collapsible(offset);
        assert!(len > 0);
        if !spool.collapse(len) {
            eprintln!("skipped: this filesystem cannot collapse ranges");
            return;
        }
        assert!(spool.collapsed(Pending { len }));
        assert_eq!(spool.offset, offset - len);
        (&app).write_all(b"after\n").unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 64 * 1024, "apparent size {size}");
        let n = match spool.read(&mut buf).unwrap() {
            Read::Data(n) => n,
            Read::End => 0,
        };
        assert_eq!(&buf[..n], b"after\n");
    }
}
