//! Port allocation. Ports handed out are reserved until released, at two levels:
//!
//! - process-wide, shared by every `LocalProvider` in the process;
//! - machine-wide, with an exclusive `flock` on `<lock dir>/<port>`, so two managers of
//!   one user (two daemons with different `CONAN_HOME`s, parallel test processes) never
//!   hand out the same port between the check and the app's own bind.
//!
//! The lock directory is the user's own (by default `/run/conan/ports` for root, else
//! `$XDG_RUNTIME_DIR/conan/ports`, else `$TMPDIR/conan-ports-<uid>`): created with mode
//! 0700, opened without following links, and refused when another user owns it or group
//! or others may write in it (reservations are then process-wide only, with a warning).
//! Lock files are opened relative to it with `O_NOFOLLOW`. A shared world-writable
//! directory let any local user plant links (files created wherever they point) or hold
//! every port's lock (no deploy gets a port). Managers of *different* users therefore do
//! not see each other's locks; the bind check still skips every port already bound.
//!
//! Each candidate is also checked free with a bind. A lock file lives exactly as long as
//! its reservation: it is removed on release, and a lock taken on a file that was removed
//! meanwhile is retried, so removal never lets two holders in.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use conan_core::{Error, Result};
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

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
    /// The lock directory, opened once and checked ([`open_lock_dir`]); `None` when it
    /// was refused or cannot be made: reservations are then only process-wide.
    fd: Option<OwnedFd>,
    held: Mutex<HashMap<u16, Flock<File>>>,
}

/// Why a lock directory is not used.
fn refuse(dir: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{}: {why}", dir.display()),
    )
}

/// Creates `dir` (mode 0700; missing parents too) and opens it without following a
/// symlink, then refuses it unless this user owns it and neither group nor others may
/// write in it: whoever can write there could plant links or hold every port's lock.
fn open_lock_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refuse(dir, &format!("cannot open it without following links: {e}")))?;
    let stat = nix::sys::stat::fstat(&fd).map_err(std::io::Error::from)?;
    let me = nix::unistd::geteuid().as_raw();
    if stat.st_uid != me {
        return Err(refuse(
            dir,
            &format!("owned by uid {}, not by this user (uid {me})", stat.st_uid),
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(refuse(
            dir,
            &format!(
                "mode {:o} lets group or others write in it",
                stat.st_mode & 0o7777
            ),
        ));
    }
    Ok(fd)
}

impl MachineLocks {
    /// Locks in `dir`, created with mode 0700 when missing. A directory this user does
    /// not own, or that group or others can write, is refused (see [`open_lock_dir`]):
    /// reservations then stay process-wide, and a warning says why.
    pub fn new(dir: PathBuf) -> Self {
        let fd = match open_lock_dir(&dir) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "port lock directory refused; port reservations are only process-wide");
                None
            }
        };
        Self {
            dir,
            fd,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The default directory, one per user so that only that user's managers can touch
    /// it (they all share it, whatever their `CONAN_HOME`): `/run/conan/ports` for root,
    /// else `$XDG_RUNTIME_DIR/conan/ports`, else `$TMPDIR/conan-ports-<uid>`.
    pub fn default_dir() -> PathBuf {
        default_dir_for(
            nix::unistd::geteuid().as_raw(),
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            std::env::temp_dir(),
        )
    }

    /// The directory in use, when not refused.
    #[cfg(test)]
    fn usable(&self) -> bool {
        self.fd.is_some()
    }

    fn held(&self) -> MutexGuard<'_, HashMap<u16, Flock<File>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `port` machine-wide; `false` when another holder has it. When the lock
    /// directory is unusable, reservations stay process-wide.
    pub fn try_lock(&self, port: u16) -> bool {
        let Some(dir) = &self.fd else {
            return true;
        };
        let name = port.to_string();
        for _ in 0..3 {
            // Never through a link (`O_NOFOLLOW`), and relative to the directory opened
            // and checked at start, so a rename of a path component changes nothing.
            let file = match nix::fcntl::openat(
                dir,
                name.as_str(),
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => File::from(fd),
                Err(e) => {
                    tracing::warn!(port, dir = %self.dir.display(), error = %e, "cannot open the port lock; the reservation is only process-wide");
                    return true;
                }
            };
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                return false;
            };
            // The previous holder may have removed the file between our open and our lock:
            // then we hold a lock nobody else can see; try again on the current file.
            if same_file(dir, &name, &lock) {
                self.held().insert(port, lock);
                return true;
            }
        }
        false
    }

    /// Gives `port` back: removes its file while still holding the lock, then unlocks.
    pub fn unlock(&self, port: u16) {
        if let Some(lock) = self.held().remove(&port) {
            if let Some(dir) = &self.fd {
                let _ = nix::unistd::unlinkat(
                    dir,
                    port.to_string().as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
            drop(lock);
        }
    }
}

/// `/run/conan/ports` for root, else `$XDG_RUNTIME_DIR/conan/ports` (an absolute one),
/// else `TMP/conan-ports-<uid>`.
fn default_dir_for(uid: u32, runtime_dir: Option<PathBuf>, tmp: PathBuf) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/run/conan/ports");
    }
    match runtime_dir {
        Some(dir) if dir.is_absolute() => dir.join("conan/ports"),
        _ => tmp.join(format!("conan-ports-{uid}")),
    }
}

fn same_file(dir: &OwnedFd, name: &str, file: &File) -> bool {
    match (
        nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        file.metadata(),
    ) {
        (Ok(a), Ok(b)) => a.st_dev == b.dev() && a.st_ino == b.ino(),
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
        // Ports below the ephemeral range (32768-60999 here), so no other test's outgoing
        // connection can hold one. Another manager (another open file description, as in
        // another process) holds 31_872: this allocator must skip it although the port is
        // free to bind.
        let other = MachineLocks::new(dir.path().to_path_buf());
        assert!(other.try_lock(31_872));
        let a = PortAllocator::new(31_872..=31_873, dir.path().to_path_buf());
        assert_eq!(a.allocate().unwrap(), 31_873);
        assert!(matches!(
            a.reserve(31_872),
            Err(Error::PortInUse { port: 31_872, .. })
        ));
        other.unlock(31_872);
        assert!(!dir.path().join("31872").exists(), "lock file removed");
        a.reserve(31_872).unwrap();
        assert!(!other.try_lock(31_872), "now this allocator holds it");
        a.release(31_872);
        a.release(31_873);
        assert!(other.try_lock(31_872));
        assert!(other.try_lock(31_873));
        other.unlock(31_872);
        other.unlock(31_873);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_lock_directory_is_private_and_links_in_it_are_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/ports");
        let locks = MachineLocks::new(dir.clone());
        assert!(locks.usable());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700, "created private");
        // A link planted for a port is neither followed nor replaced: that port is
        // reported as held (not created where the link points), the others work.
        let target = root.path().join("pwned");
        std::os::unix::fs::symlink(&target, dir.join("39300")).unwrap();
        assert!(locks.try_lock(39_301));
        assert!(
            locks.try_lock(39_300),
            "an unopenable lock falls back to process-wide"
        );
        assert!(!target.exists(), "the link was followed");
        locks.unlock(39_301);
        // A directory group or others may write in is refused: reservations stay
        // process-wide and nothing is created in it.
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(&target, open.join("39302")).unwrap();
        let refused = MachineLocks::new(open.clone());
        assert!(!refused.usable());
        assert!(refused.try_lock(39_302));
        assert!(!target.exists());
        let mode = std::fs::metadata(&open).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o777, "its mode is left alone");
        // The directory itself as a link is refused too.
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(!MachineLocks::new(link).usable());
    }

    #[test]
    fn the_default_lock_directory_belongs_to_the_user() {
        let tmp = PathBuf::from("/tmp");
        assert_eq!(
            default_dir_for(0, Some("/run/user/0".into()), tmp.clone()),
            PathBuf::from("/run/conan/ports")
        );
        assert_eq!(
            default_dir_for(1000, Some("/run/user/1000".into()), tmp.clone()),
            PathBuf::from("/run/user/1000/conan/ports")
        );
        assert_eq!(
            default_dir_for(1000, Some("relative".into()), tmp.clone()),
            PathBuf::from("/tmp/conan-ports-1000")
        );
        assert_eq!(
            default_dir_for(1000, None, tmp),
            PathBuf::from("/tmp/conan-ports-1000")
        );
    }
}
