//! Port allocation. Ports handed out are reserved until released, at two levels:
//!
//! - process-wide, shared by every `LocalProvider` in the process;
//! - machine-wide, with an exclusive `flock` on `<lock dir>/<port>` (by default
//!   `$TMPDIR/conan-ports`), so two managers on one machine (two daemons with different
//!   `CONAN_HOME`s, parallel test processes) never hand out the same port between the check
//!   and the app's own bind.
//!
//! Each candidate is also checked free with a bind. A lock file lives exactly as long as
//! its reservation: it is removed on release, and a lock taken on a file that was removed
//! meanwhile is retried, so removal never lets two holders in.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use conan_core::{Error, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::procfs;

static RESERVED: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// Hands out ports from a range.
#[derive(Debug)]
pub(crate) struct PortAllocator {
    range: RangeInclusive<u16>,
    next: Mutex<u16>,
    locks: MachineLocks,
}

/// Whether `port` can be bound. A bind that failed for want of resources (at the fd
/// limit) says nothing about the port: it is an error, with the OS cause, rather than
/// "taken" (a deploy at the fd limit otherwise reported "no free port left").
fn bind_free(port: u16) -> Result<bool> {
    for ip in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST] {
        match TcpListener::bind((ip, port)) {
            Ok(_) => {}
            Err(e) if out_of_resources(&e) => {
                return Err(Error::provider_with_source(
                    "local",
                    format!("cannot check whether port {port} is free"),
                    false,
                    e,
                ));
            }
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

fn out_of_resources(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|n| {
        matches!(
            Errno::from_raw(n),
            Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
        )
    })
}

fn reserved() -> MutexGuard<'static, HashSet<u16>> {
    RESERVED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Machine-wide port reservations: one locked file per port held by this process.
#[derive(Debug)]
pub(crate) struct MachineLocks {
    dir: PathBuf,
    held: Mutex<HashMap<u16, Flock<File>>>,
}

impl MachineLocks {
    /// Locks in `dir` (created, world-writable with the sticky bit like `/tmp`, so every
    /// user's managers coordinate).
    pub fn new(dir: PathBuf) -> Self {
        if std::fs::create_dir_all(&dir).is_ok() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
        }
        Self {
            dir,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The default directory: `$TMPDIR/conan-ports`.
    pub fn default_dir() -> PathBuf {
        std::env::temp_dir().join("conan-ports")
    }

    fn held(&self) -> MutexGuard<'_, HashMap<u16, Flock<File>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `port` machine-wide; `false` when another holder has it. When the lock
    /// directory is unusable, reservations stay process-wide (logged once per port).
    pub fn try_lock(&self, port: u16) -> bool {
        let path = self.dir.join(port.to_string());
        for _ in 0..3 {
            let file = match File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(port, path = %path.display(), error = %e, "cannot open the port lock; the reservation is only process-wide");
                    return true;
                }
            };
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                return false;
            };
            // The previous holder may have removed the file between our open and our lock:
            // then we hold a lock nobody else can see; try again on the current file.
            if same_file(&path, &lock) {
                self.held().insert(port, lock);
                return true;
            }
        }
        false
    }

    /// Gives `port` back: removes its file while still holding the lock, then unlocks.
    pub fn unlock(&self, port: u16) {
        if let Some(lock) = self.held().remove(&port) {
            let _ = std::fs::remove_file(self.dir.join(port.to_string()));
            drop(lock);
        }
    }
}

fn same_file(path: &Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl PortAllocator {
    pub fn new(range: RangeInclusive<u16>, lock_dir: PathBuf) -> Self {
        let start = *range.start();
        Self {
            range,
            next: Mutex::new(start),
            locks: MachineLocks::new(lock_dir),
        }
    }

    /// A free port from the range, reserved until [`release`](Self::release).
    pub fn allocate(&self) -> Result<u16> {
        let (lo, hi) = (*self.range.start(), *self.range.end());
        let span = u32::from(hi - lo) + 1;
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let mut reserved = reserved();
        for _ in 0..span {
            let port = *next;
            *next = if port >= hi { lo } else { port + 1 };
            if reserved.contains(&port) || !self.locks.try_lock(port) {
                continue;
            }
            match bind_free(port) {
                Ok(true) => {
                    reserved.insert(port);
                    return Ok(port);
                }
                Ok(false) => self.locks.unlock(port),
                Err(e) => {
                    self.locks.unlock(port);
                    return Err(e);
                }
            }
        }
        Err(Error::provider(
            "local",
            format!("no free port left in the range {lo}-{hi}"),
            true,
        ))
    }

    /// Reserves an explicitly configured port, or says who holds it.
    pub fn reserve(&self, port: u16) -> Result<()> {
        let mut reserved = reserved();
        let in_use = || Error::PortInUse {
            port,
            holder: procfs::port_holder(port),
        };
        if reserved.contains(&port) || !self.locks.try_lock(port) {
            return Err(in_use());
        }
        match bind_free(port) {
            Ok(true) => {}
            Ok(false) => {
                self.locks.unlock(port);
                return Err(in_use());
            }
            Err(e) => {
                self.locks.unlock(port);
                return Err(e);
            }
        }
        reserved.insert(port);
        Ok(())
    }

    /// Reserves a port an adopted process already listens on (no bind check).
    pub fn adopt(&self, port: u16) {
        if !self.locks.try_lock(port) {
            tracing::warn!(
                port,
                "another manager holds the port lock of an adopted process"
            );
        }
        reserved().insert(port);
    }

    /// Returns a port.
    pub fn release(&self, port: u16) {
        if reserved().remove(&port) {
            self.locks.unlock(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_distinct_and_explicit_conflicts_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let a = PortAllocator::new(39_000..=39_099, dir.path().to_path_buf());
        let ports: HashSet<u16> = (0..50).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(ports.len(), 50);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = listener.local_addr().unwrap().port();
        match a.reserve(taken) {
            Err(Error::PortInUse { port, holder }) => {
                assert_eq!(port, taken);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        for p in ports {
            a.release(p);
        }
    }

    #[test]
    fn a_port_locked_by_another_manager_is_skipped_and_freed_on_release() {
        let dir = tempfile::tempdir().unwrap();
        // Another manager (another open file description, as in another process) holds
        // 39_200: this allocator must skip it although the port is free to bind.
        let other = MachineLocks::new(dir.path().to_path_buf());
        assert!(other.try_lock(39_200));
        let a = PortAllocator::new(39_200..=39_201, dir.path().to_path_buf());
        assert_eq!(a.allocate().unwrap(), 39_201);
        assert!(matches!(
            a.reserve(39_200),
            Err(Error::PortInUse { port: 39_200, .. })
        ));
        other.unlock(39_200);
        assert!(!dir.path().join("39200").exists(), "lock file removed");
        a.reserve(39_200).unwrap();
        assert!(!other.try_lock(39_200), "now this allocator holds it");
        a.release(39_200);
        a.release(39_201);
        assert!(other.try_lock(39_200));
        assert!(other.try_lock(39_201));
        other.unlock(39_200);
        other.unlock(39_201);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
