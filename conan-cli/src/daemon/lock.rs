//! One daemon per `CONAN_HOME`: an exclusive `flock` on `daemon.lock`, held for the
//! daemon's lifetime (the kernel releases it when the process dies, however it dies).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DaemonLock {
    _file: Flock<File>,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another daemon holds it (its pid, when the file says).
    Held(Option<u32>),
    /// The file could not be opened or locked.
    Io(io::Error),
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl DaemonLock {
    /// Takes the lock without waiting and writes our pid into the file.
    ///
    /// # Errors
    /// [`LockError::Held`] when another daemon runs on this home.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let file = open(path).map_err(LockError::Io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                let pid = std::process::id();
                let written = locked
                    .set_len(0)
                    .and_then(|()| locked.rewind())
                    .and_then(|()| writeln!(locked, "{pid}"));
                written.map_err(LockError::Io)?;
                Ok(Self { _file: locked })
            }
            Err((mut file, Errno::EWOULDBLOCK)) => Err(LockError::Held(read_pid(&mut file))),
            Err((_, errno)) => Err(LockError::Io(io::Error::from(errno))),
        }
    }

    /// Whether a daemon holds the lock at `path` right now.
    #[must_use]
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = open(path) else { return false };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_released_on_drop) => false,
            Err((_, errno)) => errno == Errno::EWOULDBLOCK,
        }
    }

    /// [`is_held`](Self::is_held) for async code: the check opens and locks a file, so it
    /// runs on the blocking pool.
    pub async fn is_held_async(path: PathBuf) -> bool {
        crate::blocking::infallible(false, move || Self::is_held(&path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.lock");
        assert!(!DaemonLock::is_held(&path));
        let lock = DaemonLock::acquire(&path).unwrap();
        assert!(DaemonLock::is_held(&path));
        match DaemonLock::acquire(&path) {
            Err(LockError::Held(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(lock);
        assert!(!DaemonLock::is_held(&path));
    }
}
