//! Signalling and killing a whole process tree.
//!
//! With cgroups (see [`crate::cgroup`]) an instance's processes are the members of its
//! cgroup, whatever they did (`setsid`, a scrubbed environment, a double fork), and the
//! tree is killed by its cgroup. Without, and as a second net beside the cgroup:
//! an instance runs in its own process group, so `killpg` reaches everything that stayed
//! in it. A grandchild that called `setsid` (Node's `spawn(.., { detached: true })`) leaves
//! the group; it is still found by its ancestry while its parent lives, and afterwards by
//! the marker variable (`CONAN_INSTANCE=<id>/<key>`) it inherited in its environment.
//!
//! A stop sends the configured signal **once to each process** (`killpg` for the group,
//! `kill` for members outside it), waits, SIGKILLs what is left, and returns only once
//! nothing of the tree is alive (and its cgroup is removed).

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

use crate::cgroup::InstanceCgroup;
use crate::procfs::{self, ProcStat};
use crate::settings::LocalSettings;

/// How long a clean-up waits for an emptied cgroup to become removable.
const CGROUP_REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The instance's cgroup (`<parent>/<id>/<key>`), when one exists: found by its path
    /// alone, so a manager started later kills by the cgroup an earlier one made.
    pub fn cgroup(&self) -> Option<InstanceCgroup> {
        self.cgroup_path().filter(InstanceCgroup::exists)
    }

    /// Where the instance's cgroup is (or would be), when a provider of this process
    /// found cgroups.
    fn cgroup_path(&self) -> Option<InstanceCgroup> {
        let name = self.marker.strip_prefix("CONAN_INSTANCE=")?;
        crate::cgroup::layout()?.instance(name)
    }

    /// Moves a just-spawned leader into the instance's cgroup (made with the limits of
    /// `resources`), then whatever it forked before the move, so nothing started
    /// between `exec` and the move stays outside. Without cgroups (or when making one
    /// fails: logged) the tree stays tracked by group, ancestry and marker.
    pub fn contain(&self, settings: &LocalSettings, resources: &conan_core::Resources) {
        if !settings.cgroups {
            return;
        }
        // Moving a process into a cgroup waits for the kernel (an RCU grace period: 10–25
        // ms, more under load): `Instance::spawn` calls this on a blocking thread.
        let (Some(leader), Some(cg)) = (self.leader, self.cgroup_path()) else {
            return;
        };
        if let Err(e) = cg.create(resources).and_then(|()| cg.add(leader)) {
            tracing::warn!(cgroup = %cg.path().display(), error = %e, "cannot put the instance in its cgroup; tracking it by process markers");
            return;
        }
        // Only the leader's descendants can have been forked before the move: the
        // kernel's children lists find them without reading every process (one whose
        // parent already exited is still killed by its marker). A fork racing the scan
        // is caught by the next round (its parent was moved, so anything it forks from
        // then on is inside).
        for _ in 0..3 {
            let inside = cg.procs();
            let outside: Vec<u32> = procfs::descendants(leader)
                .into_iter()
                .filter(|p| !inside.contains(p))
                .collect();
            if outside.is_empty() {
                break;
            }
            for p in outside {
                if let Err(e) = cg.add(p) {
                    tracing::debug!(pid = p, error = %e, "cannot move a process into the cgroup");
                }
            }
        }
    }

    /// The tree by group, ancestry and marker (not by cgroup).
    fn scan(&self) -> Vec<ProcStat> {
        procfs::tree_members(self.leader, self.leader, &self.marker, self.since)
    }

    /// Every live process of the tree: the cgroup's members and what the scan finds.
    fn member_stats(&self, cgroup: Option<&InstanceCgroup>) -> Vec<ProcStat> {
        let mut members = self.scan();
        if let Some(cg) = cgroup {
            for p in cg.procs() {
                if !members.iter().any(|m| m.pid == p)
                    && let Some(s) = procfs::stat(p).filter(|s| !s.is_dead())
                {
                    members.push(s);
                }
            }
        }
        members
    }

    /// The live processes to measure, read cheaply: the cgroup's members when the
    /// instance has one (nothing leaves it), else the leader and its descendants by the
    /// kernel's children lists. Unlike [`members`](Self::members) it never reads every
    /// process on the machine, so a sampler can call it often; a grandchild that left
    /// the group and lost its parent is not measured without a cgroup (it is still
    /// killed with the tree).
    /// `cgroup` is the instance's [`cgroup`](Self::cgroup), looked up once by the caller;
    /// its members are listed as the kernel has them (some may be exiting).
    pub fn measured_members(&self, cgroup: Option<&InstanceCgroup>) -> Vec<u32> {
        if let Some(cg) = cgroup {
            return cg.listed_procs();
        }
        let ours = |pid: u32| {
            procfs::stat(pid).is_some_and(|s| !s.is_dead() && s.start_time >= self.since)
        };
        let Some(leader) = self.leader.filter(|&l| ours(l)) else {
            return Vec::new();
        };
        let mut pids = procfs::descendants(leader);
        pids.retain(|&p| ours(p));
        pids.insert(0, leader);
        pids
    }

    /// Every live process of the tree.
    pub fn members(&self) -> Vec<u32> {
        self.member_stats(self.cgroup().as_ref())
            .into_iter()
            .map(|s| s.pid)
            .collect()
    }

    /// Sends `signal` once to every process of the tree: `killpg` to the leader's group,
    /// `kill` to each member outside it. Returns how many processes were signalled.
    pub fn signal(&self, signal: Signal) -> usize {
        let members = self.member_stats(self.cgroup().as_ref());
        // killpg only while the leader is still our process: once it is gone its pid (and
        // so the group id) could be recycled by a stranger; members are then signalled
        // one by one.
        let group = self.leader.filter(|&leader| {
            procfs::stat(leader).is_some_and(|s| s.start_time >= self.since && s.pgid == leader)
        });
        if let Some(g) = group {
            let _ = killpg(pid(g), signal);
        }
        for m in &members {
            if Some(m.pgid) != group {
                let _ = kill(pid(m.pid), signal);
            }
        }
        members.len()
    }

    /// Sends `signal`, waits up to `timeout` for the tree to exit, then SIGKILLs whatever
    /// is left and waits until nothing of it is alive. Returns whether SIGKILL was needed.
    pub async fn terminate(&self, signal: Signal, timeout: Duration) -> bool {
        if self.signal(signal) == 0 || self.wait_gone(timeout).await {
            self.remove_cgroup().await;
            return false;
        }
        self.kill_all().await;
        true
    }

    /// SIGKILLs the tree (by its cgroup first) until no member is left (bounded: gives
    /// up after 10 s), then removes its cgroup.
    pub async fn kill_all(&self) {
        let cgroup = self.cgroup();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(cg) = &cgroup {
                cg.kill();
            }
            if self.signal(Signal::SIGKILL) == 0 {
                break;
            }
            if self.wait_gone(Duration::from_millis(500)).await || Instant::now() > deadline {
                if !self.members().is_empty() {
                    tracing::warn!(marker = %self.marker, "processes survived SIGKILL");
                }
                break;
            }
        }
        self.remove_cgroup().await;
    }

    /// Removes the (emptied) cgroup, waiting briefly for the kernel to let the last
    /// exiting process go.
    async fn remove_cgroup(&self) {
        let Some(cg) = self.cgroup() else { return };
        let deadline = Instant::now() + CGROUP_REMOVE_TIMEOUT;
        let mut delay = Duration::from_millis(1);
        loop {
            match cg.remove() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!(cgroup = %cg.path().display(), error = %e, "cannot remove the instance's cgroup");
                    return;
                }
                Err(_) => {}
            }
            sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// Polls until the tree is empty or `timeout` passes; true when empty.
    async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = crate::lifecycle::after(timeout);
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
