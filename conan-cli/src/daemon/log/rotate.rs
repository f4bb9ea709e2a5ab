//! `daemon.log` rotated by size: when a line would take the file past its limit, the file
//! becomes `daemon.log.1` (`.1` becomes `.2`, and so on; the oldest is deleted) and a new
//! `daemon.log` is started. Lines are never split: a rotation happens between two lines.
//!
//! The new file is created (as `daemon.log.new`) before anything is renamed, so a rotation
//! that cannot create it (at the fd limit, on a read-only directory) changes nothing: the
//! current file keeps receiving lines up to twice the limit, then lines are dropped and
//! counted until a rotation succeeds (tried again at most once a second), and the first
//! line of the next file says how many were lost. The directory never holds more than
//! `keep + 1` files of at most twice the limit each.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Size at which `daemon.log` is rotated.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept besides `daemon.log` (`daemon.log.1`, `daemon.log.2`).
pub const KEEP: usize = 2;

/// How often a failed rotation is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A log file rotated by size; see the module docs.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
    /// Point stdout and stderr at each new file (the daemon's own stdio is its log, so a
    /// panic message or a stray `eprintln!` lands in the current file too).
    redirect_stdio: bool,
    dropped: u64,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

impl RotatingFile {
    /// Appends to `path`, rotating it past `max_bytes` and keeping `keep` older files.
    ///
    /// # Errors
    /// When `path` cannot be opened.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = open_append(path)?;
        Ok(Self::with_file(path, file, max_bytes, keep))
    }

    /// Rotates `path`, to which `file` (the daemon's stderr) already appends, and points
    /// stdout and stderr at each new file.
    pub fn for_stdio(path: &Path, file: File, max_bytes: u64, keep: usize) -> Self {
        let mut rotating = Self::with_file(path, file, max_bytes, keep);
        rotating.redirect_stdio = true;
        rotating
    }

    fn with_file(path: &Path, file: File, max_bytes: u64, keep: usize) -> Self {
        let size = file.metadata().map_or(0, |m| m.len());
        Self {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
            redirect_stdio: false,
            dropped: 0,
            retry_at: None,
            last_error: None,
        }
    }

    /// Writes one whole line (rotating first when it would not fit); see the module docs.
    pub fn write_line(&mut self, line: &[u8]) {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate();
        }
        if self.size > 0 && self.size + len > self.max_bytes.saturating_mul(2) {
            self.dropped += 1;
            return;
        }
        if self.file.write_all(line).is_ok() {
            self.size += len;
        }
    }

    /// Lines dropped because the file could not be rotated (since the last rotation).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        match self.try_rotate() {
            Ok(()) => {
                self.retry_at = None;
                self.size = 0;
                let note = match (self.dropped, self.last_error.take()) {
                    (0, _) => None,
                    (n, error) => Some(format!(
                        "conan: {n} log lines dropped: {} could not be rotated ({})\n",
                        self.path.display(),
                        error.unwrap_or_default()
                    )),
                };
                self.dropped = 0;
                if let Some(note) = note
                    && self.file.write_all(note.as_bytes()).is_ok()
                {
                    self.size += note.len() as u64;
                }
            }
            Err(e) => {
                self.retry_at = Some(now + RETRY);
                self.last_error = Some(e.to_string());
            }
        }
    }

    fn try_rotate(&mut self) -> io::Result<()> {
        let mut fresh = self.path.as_os_str().to_owned();
        fresh.push(".new");
        let fresh = PathBuf::from(fresh);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&fresh)?;
        if self.keep == 0 {
            std::fs::rename(&fresh, &self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                rename_if_exists(&self.rotated(n), &self.rotated(n + 1))?;
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            std::fs::rename(&fresh, &self.path)?;
        }
        // Only the writer thread writes to stdout and stderr through Rust, and it is here.
        if self.redirect_stdio {
            let _ = nix::unistd::dup2_stdout(&file);
            let _ = nix::unistd::dup2_stderr(&file);
        }
        self.file = file;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Regression (issue 10, finding 5): `daemon.log` reached 690 MB and was never rotated.
    #[test]
    fn rotates_by_size_between_lines_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.log");
        let mut log = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..60 {
            log.write_line(format!("line {i:02} of the daemon log\n").as_bytes());
        }
        // 26 bytes a line, 3 lines a file.
        for file in ["daemon.log", "daemon.log.1", "daemon.log.2"] {
            let text = read(&dir.path().join(file));
            assert!(text.len() <= 100, "{file}: {} bytes", text.len());
            assert!(
                text.lines()
                    .all(|l| l.len() == 25 && l.starts_with("line ")),
                "{file} holds a cut line: {text:?}"
            );
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["daemon.log", "daemon.log.1", "daemon.log.2"]);
        // The newest lines are in daemon.log, the ones before them in .1 and .2, in order.
        let all = [
            read(&dir.path().join("daemon.log.2")),
            read(&dir.path().join("daemon.log.1")),
            read(&path),
        ]
        .concat();
        let expected: String = (51..60)
            .map(|i| format!("line {i:02} of the daemon log\n"))
            .collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn an_existing_file_counts_towards_the_limit_and_a_long_line_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.log");
        std::fs::write(&path, "x".repeat(90) + "\n").unwrap();
        let mut log = RotatingFile::open(&path, 100, 1).unwrap();
        let long = "y".repeat(300) + "\n";
        log.write_line(long.as_bytes());
        assert_eq!(read(&dir.path().join("daemon.log.1")).len(), 91);
        assert_eq!(read(&path), long);
        log.write_line(b"z\n");
        assert_eq!(read(&path), "z\n");
        assert_eq!(read(&dir.path().join("daemon.log.1")), long);
    }

    #[test]
    fn a_file_that_cannot_be_rotated_is_capped_and_the_loss_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.log");
        let mut log = RotatingFile::open(&path, 100, 2).unwrap();
        // A directory where the next file would be created makes every rotation fail.
        let blocker = dir.path().join("daemon.log.new");
        std::fs::create_dir(&blocker).unwrap();
        for _ in 0..100 {
            log.write_line(b"0123456789\n");
        }
        assert!(read(&path).len() <= 200, "{} bytes", read(&path).len());
        assert!(log.dropped() > 70, "{} dropped", log.dropped());
        std::fs::remove_dir(&blocker).unwrap();
        log.retry_at = None;
        log.write_line(b"after\n");
        let text = read(&path);
        assert!(
            text.starts_with("conan: ") && text.contains("log lines dropped"),
            "{text}"
        );
        assert!(text.ends_with("after\n"), "{text}");
        assert_eq!(log.dropped(), 0);
    }
}
