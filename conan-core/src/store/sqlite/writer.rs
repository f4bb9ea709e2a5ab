//! The thread that owns the connection and commits queued commands in groups.
//!
//! Callers send a [`Command`] over an unbounded channel and await a oneshot reply, so the
//! async side never blocks. The thread takes everything queued (up to [`MAX_BATCH`]), runs it
//! in one transaction and answers every caller only after the `COMMIT` returned: a reply of
//! `Ok` means the write is in the database file. Under load the queue fills while a batch
//! runs, so batches grow by themselves and the cost of a commit is shared.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::backup::Backups;
use super::checkpoint::Checkpointer;
use super::schema::{is_transient, sql_error};
use crate::error::{Error, Result};

/// Commands run in one transaction at most; bounds how long a caller waits behind others.
const MAX_BATCH: usize = 1024;

/// Answers the caller once the fate of its transaction is known.
type Finish = Box<dyn FnOnce(Option<&BatchFailure>) + Send>;

/// Runs a call on the writer thread (with no connection when its transaction could not even
/// start) and returns what answers the caller.
type Run = Box<dyn FnOnce(Option<&Connection>) -> Finish + Send>;

/// One queued call.
struct Command {
    write: bool,
    run: Run,
}

/// Why a whole transaction was lost; every command in it gets this error.
struct BatchFailure {
    message: String,
    transient: bool,
}

impl BatchFailure {
    fn from_sql(context: &str, e: &rusqlite::Error) -> Self {
        Self {
            message: format!("sqlite: {context}: {e}"),
            transient: is_transient(e),
        }
    }

    fn to_error(&self) -> Error {
        Error::store(self.message.clone(), self.transient, None)
    }
}

fn stopped() -> Error {
    Error::store("sqlite: the store's writer thread has stopped", false, None)
}

fn dropped() -> Error {
    Error::store(
        "sqlite: the store call failed inside the writer thread (it panicked); the store keeps running",
        true,
        None,
    )
}

/// Handle to the writer thread. Dropping it lets the thread finish every queued command,
/// close the connection and exit, and waits for that.
pub(super) struct Writer {
    sender: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Moves `conn` to a new thread, which also schedules `backups` and tells
    /// `checkpoints` about its commits (for a file store).
    pub(super) fn spawn(
        conn: Connection,
        backups: Option<Backups>,
        checkpoints: Option<Checkpointer>,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("conan-sqlite".into())
            .spawn(move || run(conn, &receiver, backups, checkpoints))
            .map_err(|e| {
                Error::store(
                    "sqlite: cannot start the writer thread",
                    false,
                    Some(Box::new(e)),
                )
            })?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Runs `op` on the writer thread inside the current group transaction and returns its
    /// result once that transaction committed. `write` says whether `op` may modify the
    /// database (such a batch takes the write lock up front). If the caller stops waiting,
    /// the command still runs.
    pub(super) async fn call<T, F>(&self, write: bool, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: Run = Box::new(move |conn: Option<&Connection>| -> Finish {
            let result = conn.map(op);
            Box::new(move |failure: Option<&BatchFailure>| {
                let result = match (failure, result) {
                    (Some(failure), _) => Err(failure.to_error()),
                    (None, Some(result)) => result,
                    (None, None) => Err(stopped()),
                };
                // The caller may have given up waiting; the outcome is in the database anyway.
                let _ = tx.send(result);
            })
        });
        let sender = self.sender.as_ref().ok_or_else(stopped)?;
        sender.send(Command { write, run }).map_err(|_| stopped())?;
        // The thread answers every command it takes; a lost answer means the command
        // panicked (the thread caught it and went on).
        rx.await.map_err(|_| dropped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop after it drained every queued command.
        drop(self.sender.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("sqlite store: the writer thread panicked");
        }
    }
}

fn run(
    conn: Connection,
    receiver: &mpsc::Receiver<Command>,
    mut backups: Option<Backups>,
    checkpoints: Option<Checkpointer>,
) {
    if let Some(backups) = &mut backups {
        // The file passed its check at open: keep a copy of this good state.
        backups.start();
    }
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = match backups.as_ref().and_then(Backups::next_due) {
            Some(wait) => match receiver.recv_timeout(wait) {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(backups) = &mut backups {
                        backups.committed(0);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match receiver.recv() {
                Ok(command) => command,
                Err(_) => break,
            },
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        tracing::trace!(commands = batch.len(), "sqlite store: running a batch");
        // Nothing in a batch may end this thread: a panic fails the commands it touched
        // (their callers get an error) and the thread goes on with the next batch.
        let written =
            std::panic::catch_unwind(AssertUnwindSafe(|| run_batch(&conn, batch.drain(..))))
                .unwrap_or_else(|_| {
                    tracing::error!(
                        "sqlite store: a batch panicked; its calls failed, the store goes on"
                    );
                    if !conn.is_autocommit()
                        && let Err(e) = conn.execute_batch("ROLLBACK")
                    {
                        tracing::warn!(error = %e, "sqlite store: rollback after a panic failed");
                    }
                    0
                });
        batch.clear();
        if let Some(backups) = &mut backups {
            backups.committed(written);
        }
        if written > 0
            && let Some(checkpoints) = &checkpoints
        {
            checkpoints.written(written);
        }
    }
    // Its connection closes first, so this one, the last, checkpoints the WAL as it closes.
    drop(checkpoints);
    if let Some(backups) = &mut backups {
        backups.finish();
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "sqlite store: closing the database failed");
    }
    tracing::debug!("sqlite store: writer thread stopped");
}

/// Runs one command, turning a panic into "no answer" (its caller gets an error).
fn run_one(command: Command, conn: Option<&Connection>) -> Option<Finish> {
    std::panic::catch_unwind(AssertUnwindSafe(|| (command.run)(conn)))
        .map_err(|_| tracing::error!("sqlite store: a store call panicked"))
        .ok()
}

/// Runs `commands` in as few transactions as possible: one, unless a command makes SQLite
/// abandon the transaction (I/O error, disk full), in which case the commands before it fail
/// and the rest go on in a new transaction. Returns how many write commands committed.
fn run_batch(conn: &Connection, mut commands: std::vec::Drain<'_, Command>) -> u64 {
    let write = commands.as_slice().iter().any(|c| c.write);
    let begin = if write {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN DEFERRED"
    };
    let mut written = 0;
    while commands.len() > 0 {
        if let Err(e) = conn.execute_batch(begin) {
            tracing::warn!(error = %e, commands = commands.len(), "sqlite store: cannot start a transaction");
            let failure = BatchFailure::from_sql("starting a transaction", &e);
            for command in commands {
                if let Some(finish) = run_one(command, None) {
                    finish(Some(&failure));
                }
            }
            return written;
        }
        let mut finishes = Vec::with_capacity(commands.len());
        let mut writes = 0;
        let mut abandoned = false;
        for command in commands.by_ref() {
            writes += u64::from(command.write);
            if let Some(finish) = run_one(command, Some(conn)) {
                finishes.push(finish);
            }
            if conn.is_autocommit() {
                abandoned = true;
                break;
            }
        }
        let failure = if abandoned {
            tracing::warn!(
                commands = finishes.len(),
                "sqlite store: SQLite rolled a transaction back"
            );
            Some(BatchFailure {
                message: "sqlite: the transaction was rolled back after an error; nothing of it was saved".into(),
                transient: false,
            })
        } else {
            match conn.execute_batch("COMMIT") {
                Ok(()) => {
                    written += writes;
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, commands = finishes.len(), "sqlite store: commit failed");
                    if !conn.is_autocommit()
                        && let Err(e) = conn.execute_batch("ROLLBACK")
                    {
                        tracing::warn!(error = %e, "sqlite store: rollback failed");
                    }
                    Some(BatchFailure::from_sql("committing", &e))
                }
            }
        };
        for finish in finishes {
            finish(failure.as_ref());
        }
    }
    written
}

/// Runs `f` under a savepoint so a command of several statements is all or nothing without
/// undoing the other commands of its batch.
pub(super) fn atomic<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // Cached statements: parsing the savepoint SQL on every command costs more than the
    // row writes it protects.
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
    };
    run("SAVEPOINT command").map_err(|e| sql_error("opening a savepoint", e))?;
    match f(conn) {
        Ok(value) => {
            run("RELEASE command").map_err(|e| sql_error("releasing a savepoint", e))?;
            Ok(value)
        }
        Err(e) => {
            if !conn.is_autocommit()
                && let Err(rollback) = conn.execute_batch("ROLLBACK TO command; RELEASE command")
            {
                tracing::warn!(error = %rollback, "sqlite store: rolling back to a savepoint failed");
            }
            Err(e)
        }
    }
}
