//! The daemon's file descriptor limit. Every deployment holds a few descriptors (its
//! pipes, log files, port lock) and every API connection one, and the distribution's
//! default soft limit (often 1024) is far below the hard one: the daemon raises its soft
//! `RLIMIT_NOFILE` to the hard limit at start, as systemd recommends for services, and logs
//! both. The apps it starts inherit the raised limit.

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// The limit before and after [`raise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the daemon was started with.
    pub was: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft fd limit to the hard one and logs what it did.
pub fn raise() -> Option<FdLimit> {
    let (was, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file descriptor limit");
            return None;
        }
    };
    // An unlimited hard limit still cannot be the soft one on Linux: the kernel caps both
    // at fs.nr_open.
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    let mut soft = was;
    if was < target {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => soft = target,
            Err(e) => tracing::warn!(
                soft = was,
                hard,
                error = %e,
                "cannot raise the soft file descriptor limit to the hard limit"
            ),
        }
    }
    let limit = FdLimit { was, soft, hard };
    tracing::info!(
        soft = limit.soft,
        hard = limit.hard,
        started_with = limit.was,
        "file descriptor limit"
    );
    Some(limit)
}

/// The soft fd limit now in force.
#[must_use]
pub fn current() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}
