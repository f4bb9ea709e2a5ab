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
//! lines, stamps them, and appends them to the deployment's log store. The consumed
//! offsets are persisted so a manager that adopts the instance later resumes exactly where
//! the previous one stopped. Because the files belong to the app, output keeps being
//! recorded while no manager runs at all — no shim process needed.
//!
//! Trade-offs: timestamps are the time Conan *read* a line (usually within a few
//! milliseconds; for lines written while no manager ran, the time of adoption); ordering
//! between stdout and stderr is approximate (as with two pipes); a crash of the manager
//! between writing a batch to the log file and persisting its offset repeats that batch.
//!
//! # Bounds
//!
//! - **Spools**: consumed space is freed by hole punching, and once a spool was read to
//!   its end past 32 MiB its consumed prefix is removed (`FALLOC_FL_COLLAPSE_RANGE`, on
//!   ext4 and XFS; elsewhere the file stays sparse and only its apparent size grows).
//!   256 KiB past each spool's end are preallocated and refilled as the app writes, so on
//!   a full volume the app's stdout stays writable while the tailer keeps up.
//! - **Long lines**: lines longer than [`MAX_LINE_BYTES`] (64 KiB) are emitted in 64 KiB
//!   pieces as they arrive, every piece but the last ending in [`SPLIT_MARKER`]; at most one
//!   piece per stream is held in memory. Invalid UTF-8 is replaced with U+FFFD.
//! - **A line without a newline** is shown once its stream was quiet for [`QUIET`]; if the
//!   app completes it later, the rest arrives as a line of its own (nothing is repeated).
//! - **Memory** holds the newest lines up to
//!   [`log_memory_bytes`](crate::LocalProviderBuilder::log_memory_bytes) while output flows;
//!   [`IDLE`] after the last line it is trimmed to an eighth of that. Older lines are read
//!   back from the log files (rotated by size, 10 MB × 5 by default), so a query never
//!   misses a line that is still on disk. How many lines left memory is reported in
//!   `RuntimeInfo::details["log_lines_dropped_from_memory"]`; lines rotated out of the
//!   files are announced by a `system` line at the head of a query's answer.
//! - **A full log volume**: a batch of lines that cannot be written to the log file is
//!   dropped and counted (`RuntimeInfo::details["log_lines_dropped_volume_full"]`); when
//!   writing works again one `system` line says `N log lines dropped: log volume full`.
//!   Tailing never stops, and the app keeps running.
//! - **Followers** that fall behind get one notice per gap (see
//!   [`LogQuery::into_stream`](conan_core::LogQuery::into_stream)).
//!
//! # File descriptors
//!
//! An idle deployment holds **no** descriptor for its logs: the spools are opened to be
//! read and `app.log` to be written, and both are closed [`IDLE`] after the last line;
//! the offsets file is opened for each write. While an instance writes, its deployment
//! holds 3 (two spools and `app.log`). The whole process shares one inotify descriptor and
//! one wake-up pipe (2). (Outside this module a deployment holds its port's lock file and,
//! for a child of this process, tokio's pidfd.)
//!
//! A stopped instance's directory (spools, offsets) is deleted once its output is
//! captured (`remove_instance_dir`).

mod capture;
mod lines;
mod spool;
mod store;
mod tailer;

use std::time::Duration;

pub(crate) use capture::{Capture, remove_instance_dir};
pub(crate) use store::{LogStore, LogStoreSettings};

/// Appended to each piece of a line that was split because it exceeded 64 KiB.
pub const SPLIT_MARKER: &str = " [conan: line longer than 64 KiB, continued on the next line]";

/// The longest line kept whole, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How long a stream must be quiet before a line without a newline is shown.
pub const QUIET: Duration = Duration::from_millis(300);

/// How long after its last output a capture closes its files and trims its memory.
pub const IDLE: Duration = Duration::from_secs(2);
