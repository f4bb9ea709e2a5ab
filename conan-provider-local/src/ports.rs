//! Port allocation. Ports handed out are reserved process-wide (shared by every
//! `LocalProvider` in the process) until released, and each candidate is checked free with
//! a bind, so concurrent deploys never get the same port.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::{LazyLock, Mutex};

use conan_core::{Error, Result};

use crate::procfs;

static RESERVED: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// Hands out ports from a range.
#[derive(Debug)]
pub(crate) struct PortAllocator {
    range: RangeInclusive<u16>,
    next: Mutex<u16>,
}

fn bind_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
        && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn reserved() -> std::sync::MutexGuard<'static, HashSet<u16>> {
    RESERVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PortAllocator {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let start = *range.start();
        Self {
            range,
            next: Mutex::new(start),
        }
    }

    /// A free port from the range, reserved until [`release`](Self::release).
    pub fn allocate(&self) -> Result<u16> {
        let (lo, hi) = (*self.range.start(), *self.range.end());
        let span = u32::from(hi - lo) + 1;
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut reserved = reserved();
        for _ in 0..span {
            let port = *next;
            *next = if port >= hi { lo } else { port + 1 };
            if !reserved.contains(&port) && bind_free(port) {
                reserved.insert(port);
                return Ok(port);
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
        if reserved.contains(&port) || !bind_free(port) {
            return Err(Error::PortInUse {
                port,
                holder: procfs::port_holder(port),
            });
        }
        reserved.insert(port);
        Ok(())
    }

    /// Reserves a port an adopted process already listens on (no bind check).
    pub fn adopt(&self, port: u16) {
        reserved().insert(port);
    }

    /// Returns a port.
    pub fn release(&self, port: u16) {
        reserved().remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_distinct_and_explicit_conflicts_are_reported() {
        let a = PortAllocator::new(39_000..=39_099);
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
}
