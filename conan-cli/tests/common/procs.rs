//! The processes of a home's app instances, found in `/proc` rather than through Conan: a
//! process belongs to an instance when its environment holds the local provider's marker
//! `CONAN_INSTANCE=<deployment id>/<instance key>`, and to a test's home when it also holds
//! that home's tag (see [`Home::tag_env`](super::Home::tag_env)). Both are inherited by
//! children, so a leftover child of a killed app is found as well.

use std::collections::BTreeSet;
use std::path::Path;

/// The name of the variable that ties an app's processes to a test's home.
pub const TAG: &str = "CONAN_TEST_HOME";

/// One live process of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceProcess {
    pub pid: i32,
    /// The deployment id of the marker.
    pub deployment: String,
    /// The instance key of the marker.
    pub key: String,
}

impl std::fmt::Display for InstanceProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({}/{})", self.pid, self.deployment, self.key)
    }
}

/// Every live (non-zombie) process that carries `home`'s tag and an instance marker.
pub fn of_home(home: &Path) -> Vec<InstanceProcess> {
    let tag = format!("{TAG}={}", home.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<InstanceProcess> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let mut tagged = false;
            let mut marker = None;
            for kv in env.split(|&b| b == 0) {
                if kv == tag.as_bytes() {
                    tagged = true;
                } else if let Some(m) = kv.strip_prefix(b"CONAN_INSTANCE=") {
                    marker = Some(String::from_utf8_lossy(m).into_owned());
                }
            }
            let (deployment, key) = marker?
                .split_once('/')
                .map(|(d, k)| (d.to_owned(), k.to_owned()))?;
            (tagged && super::alive(pid)).then_some(InstanceProcess {
                pid,
                deployment,
                key,
            })
        })
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

/// The processes of `deployment` among `all`.
pub fn of_deployment<'a>(all: &'a [InstanceProcess], deployment: &str) -> Vec<&'a InstanceProcess> {
    all.iter().filter(|p| p.deployment == deployment).collect()
}

/// The distinct instance keys among `procs`.
pub fn instances<'a>(procs: impl IntoIterator<Item = &'a InstanceProcess>) -> BTreeSet<&'a str> {
    procs.into_iter().map(|p| p.key.as_str()).collect()
}

/// `procs` on one line, for messages.
pub fn describe<'a>(procs: impl IntoIterator<Item = &'a InstanceProcess>) -> String {
    let all: Vec<String> = procs.into_iter().map(ToString::to_string).collect();
    if all.is_empty() {
        "none".to_owned()
    } else {
        all.join(", ")
    }
}

/// The number of open file descriptors of `pid` (0 when it cannot be read).
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
