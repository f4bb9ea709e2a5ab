//! WAL checkpoints on a thread of their own, off the path of the store's calls.
//!
//! SQLite checkpoints on the committing connection by default: the commit that takes the
//! WAL past 1,000 pages also copies the WAL into the database and `fsync`s both, and its
//! caller waits for that. Measured on this machine's ext4, that added 16–18 ms to one
//! `conan deploy` in every few dozen (its last commit before the answer). So this thread
//! runs a `PASSIVE` checkpoint on its own connection, which in WAL mode never blocks the
//! writer, after [`EVERY_WRITES`] write calls (about the pages SQLite waits for) or once
//! the writes stopped for [`IDLE`]; the writer starts the WAL over at its next write once
//! everything was copied. The writer's own connection checkpoints only as a backstop
//! ([`BACKSTOP_PAGES`]), for writes so steady that the WAL never gets to start over.
//!
//! Not more often than that: the first commit after the WAL starts over `fsync`s the new
//! WAL header (0.6 ms here), on the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// A checkpoint runs after this many committed write calls...
pub(super) const EVERY_WRITES: u64 = 200;

/// ...or once no write came for this long (so a quiet store is on disk soon).
pub(super) const IDLE: Duration = Duration::from_secs(1);

/// WAL pages at which the writer's own connection checkpoints anyway (about 16 MB).
pub(super) const BACKSTOP_PAGES: i64 = 4_000;

/// What the writer tells the thread.
#[derive(Default)]
struct Due {
    /// Write calls since the last checkpoint.
    writes: u64,
    /// When the last of them committed; `None`: nothing to checkpoint.
    last: Option<Instant>,
    /// [`EVERY_WRITES`] reached: checkpoint now.
    now: bool,
    /// The store is closing.
    closed: bool,
}

type Shared = Arc<(Mutex<Due>, Condvar)>;

/// Handle to the checkpoint thread; dropping it stops the thread (without a last
/// checkpoint: the writer's connection, closing last, checkpoints the WAL itself).
pub(super) struct Checkpointer {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for the database at `db` (its connection opens at the first
    /// checkpoint). `None` when no thread can be started: the caller then leaves SQLite's
    /// own checkpoints as they are.
    pub(super) fn spawn(db: PathBuf) -> Option<Self> {
        let shared: Shared = Arc::default();
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("conan-sqlite-checkpoint".into())
            .spawn(move || run(&db, &theirs))
            .map_err(|e| tracing::warn!(error = %e, "sqlite store: cannot start the checkpoint thread; the writer checkpoints"))
            .ok()?;
        Some(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the thread that `writes` write calls committed. Wakes it only when that
    /// changes what it waits for, so a commit costs no extra wake-up.
    pub(super) fn written(&self, writes: u64) {
        let (due, wake) = &*self.shared;
        let mut due = due.lock().unwrap_or_else(PoisonError::into_inner);
        due.writes += writes;
        let was_idle = due.last.is_none();
        due.last = Some(Instant::now());
        if due.writes >= EVERY_WRITES && !due.now {
            due.now = true;
            wake.notify_one();
        } else if was_idle {
            wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let (due, wake) = &*self.shared;
            due.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
            wake.notify_one();
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("sqlite store: the checkpoint thread panicked");
        }
    }
}

fn run(db: &Path, shared: &Shared) {
    let (due, wake) = &**shared;
    let mut conn: Option<Connection> = None;
    let mut state = due.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if state.closed {
            return;
        }
        let go = match state.last {
            None => false,
            Some(_) if state.now => true,
            Some(last) => {
                let idle_at = last + IDLE;
                let now = Instant::now();
                if now < idle_at {
                    state = wake
                        .wait_timeout(state, idle_at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                true
            }
        };
        if !go {
            state = wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        *state = Due::default();
        drop(state);
        if conn.is_none() {
            conn = Connection::open_with_flags(
                db,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| tracing::warn!(error = %e, "sqlite store: cannot open the checkpoint connection"))
            .ok();
        }
        if let Some(c) = &conn {
            checkpoint(c);
        }
        state = due.lock().unwrap_or_else(PoisonError::into_inner);
    }
}

/// One `PASSIVE` checkpoint: copies what it can without waiting for anyone.
pub(super) fn checkpoint(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((_, log, copied)) => {
            tracing::trace!(log, copied, "sqlite store: checkpoint");
        }
        Err(e) => {
            tracing::debug!(error = %e, "sqlite store: checkpoint failed; the next write retries it")
        }
    }
}
