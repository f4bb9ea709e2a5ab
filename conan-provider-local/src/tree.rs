//! Signalling and killing a whole process tree.
//!
//! An instance runs in its own process group, so `killpg` reaches everything that stayed in
//! it. A grandchild that called `setsid` (Node's `spawn(.., { detached: true })`) leaves the
//! group; it is still found by its ancestry while its parent lives, and afterwards by the
//! marker variable (`CONAN_INSTANCE=<id>/<key>`) it inherited in its environment. Stopping
//! signals every member, waits, SIGKILLs what is left, and returns only once nothing of the
//! tree is alive.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

use crate::procfs;

/// How to find the processes of one instance.
#[derive(Clone, Debug)]
pub(crate) struct TreeRef {
    /// The leader's pid, which is also the process group id.
    pub leader: Option<u32>,
    /// `CONAN_INSTANCE=<id>/<key>`.
    pub marker: String,
    /// The start time of the instance's first process (0 when unknown): older processes
    /// cannot belong to the tree.
    pub since: u64,
}

impl TreeRef {
    /// Every live process of the tree.
    pub fn members(&self) -> Vec<u32> {
        procfs::tree_members(self.leader, self.leader, &self.marker, self.since)
    }

    /// Sends `signal` to the group and to every member; returns how many were signalled.
    pub fn signal(&self, signal: Signal) -> usize {
        // killpg only while the leader is still our process: once it is gone its pid (and
        // so the group id) could be recycled by a stranger; members are signalled one by
        // one below anyway.
        if let Some(leader) = self.leader
            && procfs::stat(leader).is_some_and(|s| s.start_time >= self.since && s.pgid == leader)
        {
            let _ = killpg(pid(leader), signal);
        }
        let members = self.members();
        for &m in &members {
            let _ = kill(pid(m), signal);
        }
        members.len()
    }

    /// Sends `signal`, waits up to `timeout` for the tree to exit, then SIGKILLs whatever
    /// is left and waits until nothing of it is alive. Returns whether SIGKILL was needed.
    pub async fn terminate(&self, signal: Signal, timeout: Duration) -> bool {
        if self.signal(signal) == 0 {
            return false;
        }
        if self.wait_gone(timeout).await {
            return false;
        }
        self.kill_all().await;
        true
    }

    /// SIGKILLs the tree until no member is left (bounded: gives up after 10 s).
    pub async fn kill_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.signal(Signal::SIGKILL) == 0 {
                return;
            }
            if self.wait_gone(Duration::from_millis(500)).await || Instant::now() > deadline {
                if !self.members().is_empty() {
                    tracing::warn!(marker = %self.marker, "processes survived SIGKILL");
                }
                return;
            }
        }
    }

    /// Polls until the tree is empty or `timeout` passes; true when empty.
    async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut known = self.members();
        let mut delay = Duration::from_millis(1);
        loop {
            known.retain(|&p| procfs::is_alive(p, None));
            if known.is_empty() {
                // A full rescan catches anything forked while we were waiting.
                known = self.members();
                if known.is_empty() {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }
}

fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX))
}

/// The nix signal for a configured stop signal.
pub(crate) fn signal_of(s: conan_core::StopSignal) -> Signal {
    Signal::try_from(s.number()).unwrap_or(Signal::SIGTERM)
}
