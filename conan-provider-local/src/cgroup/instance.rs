//! One instance's cgroup: made (with its limits) before its first process is moved in,
//! killed as a whole, removed once empty.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use conan_core::Resources;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Base, Layout};
use crate::procfs;

/// The period of a v2 `cpu.max` quota, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts, in microseconds.
const CPU_QUOTA_MIN_US: u64 = 1_000;

/// The cgroup of one instance: a directory in the primary hierarchy (membership, kill),
/// and, on v1, one in the memory and one in the cpu hierarchy for limits.
#[derive(Clone, Debug)]
pub(crate) struct InstanceCgroup {
    primary: PathBuf,
    v2: bool,
    freezer: bool,
    kill_file: bool,
    /// `(dir, v2)` where the memory limit is written, when there is a memory controller.
    memory: Option<(PathBuf, bool)>,
    cpu: Option<(PathBuf, bool)>,
    /// `<base>/<deployment>` and `<base>` of every hierarchy used, removed when empty.
    parents: Vec<PathBuf>,
}

impl InstanceCgroup {
    pub(super) fn new(layout: &Layout, dep: &str, key: &str) -> Self {
        let at = |b: &Base| b.dir.join(dep).join(key);
        let limit = |b: &Result<Base, String>| b.as_ref().ok().map(|b| (at(b), b.v2));
        let mut parents = Vec::new();
        for b in [
            Ok(&layout.primary),
            layout.memory.as_ref(),
            layout.cpu.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            for p in [b.dir.join(dep), b.dir.clone()] {
                if !parents.contains(&p) {
                    parents.push(p);
                }
            }
        }
        // Deepest first, so each is empty when its turn comes.
        parents.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Self {
            primary: at(&layout.primary),
            v2: layout.primary.v2,
            freezer: layout.primary.freezer,
            kill_file: layout.kill_file,
            memory: limit(&layout.memory),
            cpu: limit(&layout.cpu),
            parents,
        }
    }

    /// The primary directory.
    pub fn path(&self) -> &Path {
        &self.primary
    }

    /// Whether the cgroup exists (an instance started with cgroups has one while any of
    /// its processes may live).
    pub fn exists(&self) -> bool {
        self.primary.is_dir()
    }

    /// Every directory of the cgroup that takes processes.
    fn dirs(&self) -> Vec<&Path> {
        let mut dirs = vec![self.primary.as_path()];
        for (d, _) in self.memory.iter().chain(self.cpu.iter()) {
            if !dirs.contains(&d.as_path()) {
                dirs.push(d);
            }
        }
        dirs
    }

    /// The memory limit the kernel enforces on the instance, when one was written
    /// (`memory.max` on v2, `memory.limit_in_bytes` on v1; "max" or an unset v1 limit is
    /// none). A small read of a kernel file.
    pub fn memory_limit(&self) -> Option<u64> {
        let (dir, v2) = self.memory.as_ref()?;
        let file = if *v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let text = fs::read_to_string(dir.join(file)).ok()?;
        let bytes: u64 = text.trim().parse().ok()?;
        // v1 shows an unset limit as a huge page-aligned number.
        (bytes < (1 << 62)).then_some(bytes)
    }

    /// Makes the cgroup (idempotent) and writes the limits of `resources` that a
    /// controller exists for.
    pub fn create(&self, resources: &Resources) -> io::Result<()> {
        make_dir(&self.primary)?;
        if let Some(bytes) = resources.memory.map(|m| m.bytes())
            && let Some((dir, v2)) = &self.memory
        {
            make_dir(dir)?;
            if *v2 {
                enable_controller(dir, "memory")?;
                fs::write(dir.join("memory.max"), bytes.to_string())?;
                // Without this the "hard" limit spills into swap.
                let _ = fs::write(dir.join("memory.swap.max"), "0");
            } else {
                fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
            }
        }
        if let Some(cpus) = resources.cpus
            && let Some((dir, v2)) = &self.cpu
        {
            make_dir(dir)?;
            if *v2 {
                enable_controller(dir, "cpu")?;
                let quota = cpu_quota(cpus, CPU_PERIOD_US);
                fs::write(dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                let period = fs::read_to_string(dir.join("cpu.cfs_period_us"))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(CPU_PERIOD_US);
                fs::write(
                    dir.join("cpu.cfs_quota_us"),
                    cpu_quota(cpus, period).to_string(),
                )?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` (with its threads) into the cgroup. A process that is gone
    /// already is not an error.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        for dir in self.dirs() {
            if !dir.is_dir() {
                continue;
            }
            match fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => return Ok(()),
                r => r?,
            }
        }
        Ok(())
    }

    /// The live processes in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        let mut pids = self.listed_procs();
        pids.retain(|&p| procfs::is_alive(p, None));
        pids
    }

    /// The pids `cgroup.procs` lists (a zombie not yet reaped may be among them): one read
    /// of one file, for a caller that reads each process anyway.
    pub fn listed_procs(&self) -> Vec<u32> {
        fs::read_to_string(self.primary.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs everything in the cgroup: `cgroup.kill` where it exists, else frozen
    /// (so nothing forks meanwhile), every member killed, thawed.
    pub fn kill(&self) {
        if !self.exists() {
            return;
        }
        if self.kill_file && fs::write(self.primary.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        let freeze = |on: bool| match (self.v2, self.freezer) {
            (true, _) => fs::write(
                self.primary.join("cgroup.freeze"),
                if on { "1" } else { "0" },
            ),
            (false, true) => fs::write(
                self.primary.join("freezer.state"),
                if on { "FROZEN" } else { "THAWED" },
            ),
            (false, false) => Ok(()),
        };
        let frozen = freeze(true).is_ok();
        for p in self.procs() {
            let _ = kill(
                Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX)),
                Signal::SIGKILL,
            );
        }
        if frozen {
            // Killed processes die once thawed.
            let _ = freeze(false);
        }
    }

    /// Removes the cgroup's directories and their parents that are empty. Fails (with
    /// `EBUSY`) while a process is still inside; gone directories are not an error.
    pub fn remove(&self) -> io::Result<()> {
        for dir in self.dirs().into_iter().rev() {
            match fs::remove_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        for p in &self.parents {
            // Another instance may still use it: ENOTEMPTY / EBUSY are expected.
            let _ = fs::remove_dir(p);
        }
        Ok(())
    }
}

/// `dir` and its parents, retried when a concurrent clean-up removes a parent between two
/// `mkdir`s.
fn make_dir(dir: &Path) -> io::Result<()> {
    let mut attempt = 0;
    loop {
        match fs::create_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 5 => attempt += 1,
            r => return r,
        }
    }
}

/// Enables a v2 `controller` for `dir` in every `cgroup.subtree_control` from the
/// `conan` parent down (the parent's own parent was set when the layout was found).
fn enable_controller(dir: &Path, controller: &str) -> io::Result<()> {
    let (Some(dep), Some(base)) = (dir.parent(), dir.parent().and_then(Path::parent)) else {
        return Ok(());
    };
    for d in [base, dep] {
        let control = d.join("cgroup.subtree_control");
        let on = fs::read_to_string(&control)
            .is_ok_and(|t| t.split_whitespace().any(|c| c == controller));
        if !on {
            fs::write(&control, format!("+{controller}"))?;
        }
    }
    Ok(())
}

/// The CFS quota for `cpus` cores per `period` microseconds.
fn cpu_quota(cpus: f64, period: u64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let q = (cpus * period as f64).round() as u64;
    q.max(CPU_QUOTA_MIN_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_is_cores_times_period_with_the_kernel_minimum() {
        assert_eq!(cpu_quota(1.5, 100_000), 150_000);
        assert_eq!(cpu_quota(0.25, 100_000), 25_000);
        assert_eq!(cpu_quota(0.001, 100_000), CPU_QUOTA_MIN_US);
    }

    #[test]
    fn directories_per_hierarchy_and_parents_deepest_first() {
        let layout = Layout {
            primary: Base {
                dir: "/cg/unified/conan".into(),
                v2: true,
                freezer: false,
            },
            kill_file: true,
            memory: Ok(Base {
                dir: "/cg/memory/conan".into(),
                v2: false,
                freezer: false,
            }),
            cpu: Err("none".into()),
        };
        let cg = InstanceCgroup::new(&layout, "d1", "r1-5-0");
        assert_eq!(cg.path(), Path::new("/cg/unified/conan/d1/r1-5-0"));
        assert_eq!(
            cg.dirs(),
            vec![
                Path::new("/cg/unified/conan/d1/r1-5-0"),
                Path::new("/cg/memory/conan/d1/r1-5-0")
            ]
        );
        assert_eq!(
            cg.parents,
            vec![
                PathBuf::from("/cg/unified/conan/d1"),
                PathBuf::from("/cg/memory/conan/d1"),
                PathBuf::from("/cg/unified/conan"),
                PathBuf::from("/cg/memory/conan"),
            ]
        );
    }
}
