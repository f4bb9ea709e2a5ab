//! Log capture and storage.
//!
//! # Design: the app writes to files, Conan tails them
//!
//! An instance's stdout and stderr are not pipes: they are two *spool files* opened with
//! `O_APPEND` in the instance's state directory. Node writes to files synchronously, so
//! nothing is queued inside the app when it calls `process.exit()` (on a pipe, Node drops
//! queued writes at exit, which is how PM2 loses the crash message), and a burst costs the
//! app exactly what writing to a file costs. One tailer thread for the whole process reads
//! the spools of every instance — it sleeps in the kernel on a single inotify descriptor
//! while nothing is written, so an idle deployment costs no thread and no wake-ups — splits
//! lines, stamps them, and appends them to the deployment's log store; consumed
//! spool space is freed with `fallocate(PUNCH_HOLE)`, which needs no cooperation from the
//! writer, and the consumed offsets are persisted so a manager that adopts the instance
//! later resumes exactly where the previous one stopped. Because the files belong to the
//! app, output keeps being recorded while no manager runs at all — no shim process needed.
//!
//! Trade-offs: timestamps are the time Conan *read* a line (usually within a few
//! milliseconds; for lines written while no manager ran, the time of adoption); ordering
//! between stdout and stderr is approximate (as with two pipes); a crash of the manager
//! between writing a batch to the log file and persisting its offset repeats that batch.
//!
//! Memory holds the newest lines up to
//! [`log_memory_bytes`](crate::LocalProviderBuilder::log_memory_bytes); older ones are read
//! back from the log files (rotated by size, 10 MB × 5 by default), so a query never misses
//! a line that is still on disk. How many lines left memory is reported in
//! `RuntimeInfo::details["log_lines_dropped_from_memory"]`; lines rotated out of the files
//! are announced by a `system` line at the head of a query's answer.
//!
//! Lines longer than 64 KiB are split into 64 KiB pieces, every piece but the last ending in
//! [`SPLIT_MARKER`]; invalid UTF-8 is replaced with U+FFFD.

mod capture;
mod store;
mod tailer;

pub(crate) use capture::Capture;
pub(crate) use store::{LogStore, LogStoreSettings};

/// Appended to each piece of a line that was split because it exceeded 64 KiB.
pub const SPLIT_MARKER: &str = " [conan: line longer than 64 KiB, continued on the next line]";

/// The longest line kept whole, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
