//! Containment: each instance in its own cgroup, killed by cgroup, with hard limits.
//!
//! Where the machine allows it, every instance gets a cgroup
//! `<parent>/<deployment id>/<instance key>`, where `<parent>` is `conan` under the root of
//! a cgroup hierarchy this process may write (as root), else `conan` under this process's
//! own cgroup (a delegated subtree, e.g. a systemd user service with `Delegate=yes`). The
//! path depends only on the deployment and the instance, so a manager started later finds
//! the cgroup again and kills by it.
//!
//! The instance's first process is moved in right after it is spawned, then whatever it
//! already forked (found by ancestry or the `CONAN_INSTANCE` marker),
//! so nothing started between `exec` and the move stays outside. Everything forked later is
//! in the cgroup whatever it does (`setsid`, a scrubbed environment, a double fork).
//!
//! - **cgroup v2** (the unified hierarchy, pure or beside v1): membership and kill by
//!   `cgroup.kill` (Linux ≥ 5.14; else freeze with `cgroup.freeze`, SIGKILL every pid in
//!   `cgroup.procs`, thaw, until empty).
//! - **cgroup v1**: the `freezer` hierarchy (else `pids`, else any controller's): freeze,
//!   SIGKILL every member, thaw, until empty.
//! - **Limits**: `resources.memory` becomes `memory.max` (with `memory.swap.max` 0) on v2
//!   when the memory controller reaches the parent, else `memory.limit_in_bytes` (and
//!   `memory.memsw.limit_in_bytes`) in the v1 memory hierarchy; `resources.cpus` becomes
//!   `cpu.max` on v2, else `cpu.cfs_quota_us` in the v1 cpu hierarchy. Where neither
//!   exists the limit is not enforced and the deploy says so.
//! - **Fallback**: where no cgroup can be made (no hierarchy mounted, read-only, not root
//!   and nothing delegated, or disabled with
//!   [`cgroups(false)`](crate::LocalProviderBuilder::cgroups)), instances are tracked by
//!   process group, ancestry and marker as before; a process that scrubs its environment
//!   and leaves its session and parent escapes that tracking.
//!
//! [`LocalProvider::containment`](crate::LocalProvider::containment) says which applies.

mod instance;
mod mounts;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub(crate) use instance::InstanceCgroup;
use mounts::Hierarchy;

/// The directory name of Conan's cgroups under a hierarchy (or a delegated cgroup).
const PARENT: &str = "conan";

/// How a local provider keeps each instance's processes together and kills them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContainmentKind {
    /// One cgroup v2 per instance.
    CgroupV2,
    /// One cgroup per instance in a cgroup v1 hierarchy.
    CgroupV1,
    /// Process group, ancestry and the `CONAN_INSTANCE` marker (no cgroup).
    ProcessMarkers,
}

/// What [`LocalProvider::containment`](crate::LocalProvider::containment) reports: the
/// mechanism in force, where its cgroups live, and whether resource limits are enforced.
/// Its `Display` is the one line `conan daemon status` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Containment {
    kind: ContainmentKind,
    parent: Option<PathBuf>,
    how: String,
    memory: Result<String, String>,
    cpus: Result<String, String>,
}

impl Containment {
    /// The mechanism in force.
    #[must_use]
    pub fn kind(&self) -> ContainmentKind {
        self.kind
    }

    /// Whether instances get a cgroup (and are killed by it).
    #[must_use]
    pub fn uses_cgroups(&self) -> bool {
        self.kind != ContainmentKind::ProcessMarkers
    }

    /// The directory under which instance cgroups are made (`.../conan`), with cgroups.
    #[must_use]
    pub fn cgroup_parent(&self) -> Option<&Path> {
        self.parent.as_deref()
    }

    /// Whether `resources.memory` is a hard limit.
    #[must_use]
    pub fn enforces_memory(&self) -> bool {
        self.memory.is_ok()
    }

    /// Whether `resources.cpus` is a hard limit.
    #[must_use]
    pub fn enforces_cpus(&self) -> bool {
        self.cpus.is_ok()
    }

    fn markers(reason: String) -> Self {
        Self {
            kind: ContainmentKind::ProcessMarkers,
            parent: None,
            how: reason.clone(),
            memory: Err(reason.clone()),
            cpus: Err(reason),
        }
    }

    /// The progress notice of a deploy with resource limits: which are enforced, how.
    pub(crate) fn limits_notice(&self, resources: &conan_core::Resources) -> Option<String> {
        let mut parts = Vec::new();
        let mut describe = |what: &str, set: bool, by: &Result<String, String>| {
            if set {
                parts.push(match by {
                    Ok(file) => format!("{what} enforced ({file})"),
                    Err(why) => format!("{what} not enforced ({why})"),
                });
            }
        };
        describe("resources.memory", resources.memory.is_some(), &self.memory);
        describe("resources.cpus", resources.cpus.is_some(), &self.cpus);
        (!parts.is_empty()).then(|| format!("resource limits: {}", parts.join(", ")))
    }
}

impl fmt::Display for Containment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = |r: &Result<String, String>| match r {
            Ok(file) => file.clone(),
            Err(_) => "not enforced".to_owned(),
        };
        match self.kind {
            ContainmentKind::ProcessMarkers => {
                write!(f, "process markers (no cgroup: {})", self.how)
            }
            kind => {
                let v = if kind == ContainmentKind::CgroupV2 {
                    "v2"
                } else {
                    "v1"
                };
                let parent = self.parent.as_deref().unwrap_or(Path::new("?"));
                write!(
                    f,
                    "cgroup {v} ({}, {}); memory limit: {}; cpu limit: {}",
                    parent.display(),
                    self.how,
                    limit(&self.memory),
                    limit(&self.cpus)
                )
            }
        }
    }
}

/// Where one role's cgroups live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Base {
    /// `<hierarchy>/conan` or `<own cgroup>/conan`.
    pub dir: PathBuf,
    pub v2: bool,
    /// A v1 freezer hierarchy (can freeze before killing).
    pub freezer: bool,
}

/// The machine's usable cgroups, found once per process.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// Membership and kill.
    pub primary: Base,
    /// Whether `cgroup.kill` exists (v2 on Linux ≥ 5.14).
    pub kill_file: bool,
    pub memory: Result<Base, String>,
    pub cpu: Result<Base, String>,
}

impl Layout {
    /// The cgroup of instance `<deployment>/<key>` (as in the `CONAN_INSTANCE` marker),
    /// whether it exists or not; `None` for a name that is not two plain path components.
    pub fn instance(&self, name: &str) -> Option<InstanceCgroup> {
        let (dep, key) = name.split_once('/')?;
        let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('/');
        if !plain(dep) || !plain(key) {
            return None;
        }
        Some(InstanceCgroup::new(self, dep, key))
    }

    fn containment(&self) -> Containment {
        let file = |b: &Result<Base, String>, v2: &str, v1: &str| match b {
            Ok(b) if b.v2 => Ok(v2.to_owned()),
            Ok(b) => Ok(format!("v1 {v1} in {}", b.dir.display())),
            Err(e) => Err(e.clone()),
        };
        Containment {
            kind: if self.primary.v2 {
                ContainmentKind::CgroupV2
            } else {
                ContainmentKind::CgroupV1
            },
            parent: Some(self.primary.dir.clone()),
            how: match (self.primary.v2, self.kill_file, self.primary.freezer) {
                (true, true, _) => "kill by cgroup.kill".into(),
                (true, false, _) => "kill by cgroup.freeze + SIGKILL".into(),
                (false, _, true) => "kill by freezer + SIGKILL".into(),
                (false, _, false) => "kill by SIGKILL of every member".into(),
            },
            memory: file(&self.memory, "memory.max", "memory.limit_in_bytes"),
            cpus: file(&self.cpu, "cpu.max", "cpu.cfs_quota_us"),
        }
    }
}

static LAYOUT: OnceLock<Result<Layout, String>> = OnceLock::new();

/// Finds the machine's cgroups (once per process; later calls answer the first result).
pub(crate) fn detect() -> &'static Result<Layout, String> {
    LAYOUT.get_or_init(|| {
        let found = detect_now();
        match &found {
            Ok(l) => tracing::debug!(containment = %l.containment(), "cgroups found"),
            Err(e) => {
                tracing::info!(reason = %e, "no cgroup for instances; tracking by process markers")
            }
        }
        found
    })
}

/// The layout, when a provider of this process has detected one (never probes).
pub(crate) fn layout() -> Option<&'static Layout> {
    LAYOUT.get()?.as_ref().ok()
}

/// What a provider with these settings uses.
pub(crate) fn containment(enabled: bool) -> Containment {
    if !enabled {
        return Containment::markers("disabled by configuration".into());
    }
    match detect() {
        Ok(l) => l.containment(),
        Err(e) => Containment::markers(e.clone()),
    }
}

fn detect_now() -> Result<Layout, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let hierarchies = mounts::parse(&mountinfo, &own);
    if hierarchies.is_empty() {
        return Err("no cgroup hierarchy is mounted".into());
    }
    let mut problems = Vec::new();
    let mut try_base = |h: &Hierarchy| match probe(h) {
        Ok(b) => Some(b),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let v2 = hierarchies.iter().find(|h| h.is_v2());
    let mut primary = v2.and_then(&mut try_base);
    if primary.is_none() {
        let ranked = ["freezer", "pids"]
            .iter()
            .filter_map(|c| hierarchies.iter().find(|h| h.has(c)))
            .chain(
                hierarchies
                    .iter()
                    .filter(|h| !h.is_v2() && !h.is_named_only()),
            );
        for h in ranked {
            primary = try_base(h);
            if primary.is_some() {
                break;
            }
        }
    }
    let Some(primary) = primary else {
        problems.dedup();
        return Err(problems.join("; "));
    };
    let kill_file = primary.v2 && probe_file(&primary.dir, "cgroup.kill");
    let limiter = |controller: &str| -> Result<Base, String> {
        if primary.v2 && v2_controller(&primary.dir, controller) {
            return Ok(primary.clone());
        }
        match hierarchies.iter().find(|h| h.has(controller)) {
            Some(h) => probe(h),
            None => Err(format!("no {controller} controller available")),
        }
    };
    let memory = limiter("memory");
    let cpu = limiter("cpu");
    Ok(Layout {
        primary,
        kill_file,
        memory,
        cpu,
    })
}

/// The `conan` directory this process can make cgroups in, in hierarchy `h`: under the
/// hierarchy's root when allowed, else under this process's own cgroup. Made and removed
/// again (when it was not there) to prove it.
fn probe(h: &Hierarchy) -> Result<Base, String> {
    let mut candidates = vec![h.mount_point.clone()];
    if let Some(own) = h.own_dir()
        && own != h.mount_point
    {
        candidates.push(own);
    }
    let mut last = String::new();
    for parent in candidates {
        let dir = parent.join(PARENT);
        let existed = dir.is_dir();
        if let Err(e) = fs::create_dir_all(&dir) {
            last = format!("cannot create {}: {e}", dir.display());
            continue;
        }
        // Moving a process needs write access to the common ancestor's `cgroup.procs`.
        let ancestor = h
            .own_dir()
            .map_or(parent.clone(), |own| common_ancestor(&own, &parent));
        let writable =
            |p: &Path| nix::unistd::access(&p.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK);
        let ok = writable(&dir).and_then(|()| writable(&ancestor));
        if !existed {
            let _ = fs::remove_dir(&dir);
        }
        match ok {
            Ok(()) => {
                return Ok(Base {
                    dir,
                    v2: h.is_v2(),
                    freezer: h.has("freezer"),
                });
            }
            Err(e) => last = format!("cannot move processes into {}: {e}", dir.display()),
        }
    }
    Err(last)
}

/// Whether `file` exists in a (freshly made) child of `base`.
fn probe_file(base: &Path, file: &str) -> bool {
    let existed = base.is_dir();
    let probe = base.join(format!(".probe-{}", std::process::id()));
    let found = fs::create_dir_all(&probe).is_ok() && probe.join(file).exists();
    let _ = fs::remove_dir(&probe);
    if !existed {
        let _ = fs::remove_dir(base);
    }
    found
}

/// Whether a v2 `controller` reaches the children of `base`: enabled (or enabled now)
/// in the parent's `cgroup.subtree_control`, so `base` could pass it on.
fn v2_controller(base: &Path, controller: &str) -> bool {
    let Some(parent) = base.parent() else {
        return false;
    };
    let has = |file: &str| {
        fs::read_to_string(parent.join(file))
            .is_ok_and(|t| t.split_whitespace().any(|c| c == controller))
    };
    if !has("cgroup.controllers") {
        return false;
    }
    has("cgroup.subtree_control")
        || fs::write(
            parent.join("cgroup.subtree_control"),
            format!("+{controller}"),
        )
        .is_ok()
}

fn common_ancestor(a: &Path, b: &Path) -> PathBuf {
    a.components()
        .zip(b.components())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &str, v2: bool) -> Base {
        Base {
            dir: dir.into(),
            v2,
            freezer: false,
        }
    }

    #[test]
    fn display_says_what_is_in_force() {
        let l = Layout {
            primary: base("/sys/fs/cgroup/unified/conan", true),
            kill_file: true,
            memory: Ok(base("/sys/fs/cgroup/memory/conan", false)),
            cpu: Err("no cpu controller available".into()),
        };
        let c = l.containment();
        assert_eq!(
            c.to_string(),
            "cgroup v2 (/sys/fs/cgroup/unified/conan, kill by cgroup.kill); memory limit: \
             v1 memory.limit_in_bytes in /sys/fs/cgroup/memory/conan; cpu limit: not enforced"
        );
        assert!(c.uses_cgroups() && c.enforces_memory() && !c.enforces_cpus());
        let r = conan_core::Resources {
            memory: Some(conan_core::ByteSize::mib(64)),
            cpus: Some(0.5),
        };
        assert_eq!(
            c.limits_notice(&r).unwrap(),
            "resource limits: resources.memory enforced (v1 memory.limit_in_bytes in \
             /sys/fs/cgroup/memory/conan), resources.cpus not enforced (no cpu controller available)"
        );
        assert_eq!(c.limits_notice(&conan_core::Resources::default()), None);
        let off = containment(false);
        assert_eq!(
            off.to_string(),
            "process markers (no cgroup: disabled by configuration)"
        );
        assert!(!off.uses_cgroups());
    }

    #[test]
    fn instance_names_must_be_plain() {
        let l = Layout {
            primary: base("/cg/conan", true),
            kill_file: true,
            memory: Err(String::new()),
            cpu: Err(String::new()),
        };
        assert!(l.instance("dep/r1-2-3").is_some());
        for bad in ["dep", "../x", "dep/..", "/r1", "a/b/c"] {
            assert!(l.instance(bad).is_none(), "{bad}");
        }
        assert_eq!(
            common_ancestor(Path::new("/a/b/c"), Path::new("/a/b/d/e")),
            PathBuf::from("/a/b")
        );
    }
}
