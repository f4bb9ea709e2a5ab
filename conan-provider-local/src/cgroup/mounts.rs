//! Where the machine's cgroup hierarchies are mounted and where this process sits in
//! each: pure parsing of `/proc/self/mountinfo` and `/proc/self/cgroup`.

use std::path::{Path, PathBuf};

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// Where it is mounted (`/sys/fs/cgroup/unified`).
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point (`/` unless a namespace or a bind mount shows
    /// a subtree).
    pub mount_root: String,
    /// `None` for cgroup v2; the v1 controllers (or `name=...`) otherwise.
    pub controllers: Option<Vec<String>>,
    /// This process's cgroup in the hierarchy, as `/proc/self/cgroup` says.
    pub own: Option<String>,
}

impl Hierarchy {
    /// Whether this is the cgroup v2 (unified) hierarchy.
    pub fn is_v2(&self) -> bool {
        self.controllers.is_none()
    }

    /// Whether this v1 hierarchy carries `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers
            .as_ref()
            .is_some_and(|c| c.iter().any(|x| x == controller))
    }

    /// A v1 hierarchy without a controller (`name=systemd`): systemd's own bookkeeping,
    /// never written by Conan.
    pub fn is_named_only(&self) -> bool {
        self.controllers
            .as_ref()
            .is_some_and(|c| c.iter().all(|x| x.starts_with("name=")))
    }

    /// The directory of this process's own cgroup, when it is visible under the mount.
    pub fn own_dir(&self) -> Option<PathBuf> {
        let own = self.own.as_deref()?;
        let rel = if self.mount_root == "/" {
            own
        } else {
            own.strip_prefix(self.mount_root.as_str())?
        };
        Some(join_cgroup(&self.mount_point, rel))
    }
}

/// `base` + a cgroup path (`/a/b`), ignoring its leading slash.
pub(crate) fn join_cgroup(base: &Path, cgroup: &str) -> PathBuf {
    let rel = cgroup.trim_start_matches('/');
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

/// The cgroup hierarchies named in a `mountinfo` text, with this process's place in each
/// taken from a `/proc/self/cgroup` text. The first mount of a hierarchy wins.
pub(crate) fn parse(mountinfo: &str, proc_cgroup: &str) -> Vec<Hierarchy> {
    let own = parse_proc_cgroup(proc_cgroup);
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        // `id parent major:minor root mount-point options [optional...] - fstype source super-options`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        let (Some(fstype), Some(_source), Some(super_opts)) =
            (right.next(), right.next(), right.next())
        else {
            continue;
        };
        let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let controllers = match fstype {
            "cgroup2" => None,
            "cgroup" => Some(
                super_opts
                    .split(',')
                    .filter(|o| is_controller(o))
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
            _ => continue,
        };
        let mine = match &controllers {
            None => own.iter().find(|(c, _)| c.is_empty()),
            Some(cs) => own.iter().find(|(c, _)| {
                !c.is_empty() && {
                    let mut a: Vec<&str> = c.split(',').collect();
                    let mut b: Vec<&str> = cs.iter().map(String::as_str).collect();
                    a.sort_unstable();
                    b.sort_unstable();
                    a == b
                }
            }),
        };
        let h = Hierarchy {
            mount_point: PathBuf::from(unescape(point)),
            mount_root: unescape(root),
            controllers,
            own: mine.map(|(_, p)| p.clone()),
        };
        if !out.iter().any(|o| o.controllers == h.controllers) {
            out.push(h);
        }
    }
    out
}

/// Whether a v1 super option names a controller (or a named hierarchy) rather than a
/// mount option.
fn is_controller(option: &str) -> bool {
    !matches!(
        option,
        "rw" | "ro" | "xattr" | "noprefix" | "clone_children" | "cpuset_v2_mode" | "none"
    ) && !option.starts_with("release_agent=")
}

/// `(controllers, path)` per line of `/proc/self/cgroup` (`hierarchy-id:controllers:path`;
/// empty controllers for v2).
fn parse_proc_cgroup(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const HYBRID_SELF: &str = "\
9:name=systemd:/
6:freezer:/
4:memory:/process_api/78a8
1:cpu:/
0::/
";

    #[test]
    fn hybrid_layout() {
        let hs = parse(HYBRID, HYBRID_SELF);
        assert_eq!(hs.len(), 5);
        let v2 = hs.iter().find(|h| h.is_v2()).unwrap();
        assert_eq!(v2.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            v2.own_dir().unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        let mem = hs.iter().find(|h| h.has("memory")).unwrap();
        assert_eq!(
            mem.own_dir().unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/process_api/78a8")
        );
        let systemd = hs.iter().find(|h| h.is_named_only()).unwrap();
        assert_eq!(
            systemd.controllers.as_deref(),
            Some(&["name=systemd".to_owned()][..])
        );
        assert!(
            !hs.iter()
                .find(|h| h.has("freezer"))
                .unwrap()
                .is_named_only()
        );
    }

    #[test]
    fn pure_v2_delegated_to_a_user_service() {
        let mi = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let me = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/conan.service\n";
        let hs = parse(mi, me);
        assert_eq!(hs.len(), 1);
        assert_eq!(
            hs[0].own_dir().unwrap(),
            PathBuf::from(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/conan.service"
            )
        );
    }

    #[test]
    fn a_namespaced_mount_shows_a_subtree() {
        let mi = "50 40 0:30 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n";
        let me = "3:cpuacct,cpu:/docker/abc/inner\n";
        let hs = parse(mi, me);
        assert!(hs[0].has("cpu") && hs[0].has("cpuacct"));
        assert_eq!(
            hs[0].own_dir().unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/inner")
        );
        // Not under the mount's root: not reachable.
        let hs = parse(mi, "3:cpu,cpuacct:/elsewhere\n");
        assert_eq!(hs[0].own_dir(), None);
    }

    #[test]
    fn no_cgroups_mounted() {
        let mi = "22 1 8:1 / / rw,relatime - ext4 /dev/root rw\n";
        assert!(parse(mi, "").is_empty());
        assert_eq!(unescape("a\\040b"), "a b");
    }
}
