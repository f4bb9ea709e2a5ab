//! Accounting for every instance directory of a deployment, so nothing runs that no
//! record explains.
//!
//! Each launch has a directory `instances/<key>/` with its record (`instance.json`: phase,
//! pid, start time; see [`crate::state`]) and its processes carry the marker
//! `CONAN_INSTANCE=<id>/<key>`. When a manager finds a deployment on disk (after the one
//! before it died, possibly in the middle of a deploy, an update or a blue-green switch),
//! every instance directory and every process carrying the deployment's marker is
//! reconciled. The rules, in order:
//!
//! 1. **The serving instance is adopted** when it is alive: the one `state.json` names
//!    (or, when that file is missing or damaged, the one the caller's
//!    [`KnownDeployment`](conan_core::KnownDeployment) names), with the pid and start time
//!    of its own record when that one is alive (a restart after the last `state.json`
//!    write), else those of `state.json`; the start time must match (`/proc/PID/stat`).
//! 2. **Else an interrupted launch that passed its gate is adopted**: an instance whose
//!    record says `ready`, whose process is alive, and whose revision is the revision
//!    the caller expects (the newest such one). This is a deploy or start killed after
//!    its readiness gate and before `state.json` named it. A `ready` instance of another
//!    revision (the new side of an interrupted update: the manager still expects the
//!    old one) is not adopted.
//! 3. **Everything else alive is killed**: launches that never passed their gate, the
//!    old side of an interrupted blue-green switch, the new side of an interrupted
//!    update, and any process carrying the deployment's marker that no record explains.
//!    The whole tree goes (the recorded leader's group and everything with the marker);
//!    its last output is captured into the deployment's log and its directory is
//!    deleted. The port lock it held died with the manager that took it.
//!
//! With several replicas, rules 1 and 2 adopt up to `replicas` instances of one revision
//! (the one `state.json` records: a rolling update interrupted half-way keeps the old
//! revision, and its new instances are killed by rule 3); replicas missing after that are
//! started again once the deployment is adopted.
//!
//! So afterwards at most `replicas` instances of one revision run (the adopted ones), or
//! none.
//! `stop` and `remove` [sweep](Inner::sweep) the same way, so no process of any instance
//! outlives them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::lifecycle::Inner;
use crate::logs::{Capture, LogStore};
use crate::procfs;
use crate::state::{self, InstancePhase, InstanceRecord, Loaded, PersistedInstance};
use crate::tree::TreeRef;

/// One instance of a deployment as found on disk and in `/proc`.
#[derive(Debug)]
pub(super) struct Scanned {
    pub key: String,
    pub dir: PathBuf,
    pub record: Loaded<InstanceRecord>,
    /// Live processes carrying the instance's marker.
    pub marked: Vec<u32>,
}

impl Scanned {
    fn readable(&self) -> Option<&InstanceRecord> {
        match &self.record {
            Loaded::Found(r) => Some(r),
            _ => None,
        }
    }

    /// The recorded process, when it is alive with the recorded start time.
    pub fn leader(&self) -> Option<(u32, u64)> {
        let r = self.readable()?;
        (r.pid != 0 && procfs::is_alive(r.pid, Some(r.start_time))).then_some((r.pid, r.start_time))
    }

    /// Whether anything of the instance runs (by its record, its marker, or its cgroup).
    pub fn alive(&self, deployment: &str) -> bool {
        !self.marked.is_empty()
            || self.leader().is_some()
            || self
                .tree(deployment)
                .cgroup()
                .is_some_and(|cg| !cg.procs().is_empty())
    }

    /// How to kill what runs of it (its cgroup too, found by the marker's name).
    fn tree(&self, deployment: &str) -> TreeRef {
        TreeRef {
            leader: self.leader().map(|(pid, _)| pid),
            marker: format!("CONAN_INSTANCE={deployment}/{}", self.key),
            since: self.readable().map_or(0, |r| r.first_start_time),
        }
    }

    /// A one-line description for the deployment's log.
    pub fn describe(&self) -> String {
        let pids: Vec<String> = self
            .leader()
            .map(|(p, _)| p)
            .into_iter()
            .chain(self.marked.iter().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        let what = match &self.record {
            Loaded::Found(r) => format!(
                "instance {} (revision {}, {})",
                self.key,
                r.revision,
                match r.phase {
                    InstancePhase::Starting => "never ready",
                    InstancePhase::Ready => "ready",
                }
            ),
            Loaded::Missing => format!("instance {} (no record)", self.key),
            Loaded::Damaged(why) => format!("instance {} (record damaged: {why})", self.key),
        };
        format!("{what}, pid {}", pids.join(" "))
    }
}

/// The processes carrying an instance marker, by deployment id: `(pid, key)`. Taken once
/// for a whole `recover` batch, so recovering many deployments reads `/proc` once
/// instead of once per deployment.
pub(crate) type Markers = HashMap<String, Vec<(u32, String)>>;

/// Every process carrying a `CONAN_INSTANCE` marker, by deployment.
pub(super) fn markers() -> Markers {
    let mut out: Markers = HashMap::new();
    for (pid, rest) in procfs::environ_with_prefix("CONAN_INSTANCE=") {
        if let Some((id, key)) = rest.split_once('/') {
            out.entry(id.to_owned())
                .or_default()
                .push((pid, key.to_owned()));
        }
    }
    out
}

/// Every instance of deployment `id` in its directory `dir`, and every instance whose
/// processes carry its marker (a directory may be gone). The processes come from
/// `snapshot` when given (still alive ones only), else from a scan of `/proc`.
pub(super) fn scan(dir: &Path, id: &str, snapshot: Option<&Markers>) -> Vec<Scanned> {
    let instances = dir.join("instances");
    let mut found: Vec<Scanned> = std::fs::read_dir(&instances)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let key = e.file_name().to_str()?.to_owned();
            let dir = e.path();
            Some(Scanned {
                record: state::load_instance(&dir),
                key,
                dir,
                marked: Vec::new(),
            })
        })
        .collect();
    let marked = match snapshot {
        Some(m) => m
            .get(id)
            .into_iter()
            .flatten()
            .filter(|(pid, _)| procfs::is_alive(*pid, None))
            .cloned()
            .collect(),
        None => procfs::environ_with_prefix(&format!("CONAN_INSTANCE={id}/")),
    };
    for (pid, key) in marked {
        match found.iter_mut().find(|f| f.key == key) {
            Some(f) => f.marked.push(pid),
            None => found.push(Scanned {
                dir: instances.join(&key),
                key,
                record: Loaded::Missing,
                marked: vec![pid],
            }),
        }
    }
    found
}

/// Which instances to adopt (rules 1 and 2 of the module docs), as serving instance
/// records; `candidates` counts the candidates of rule 2.
#[derive(Debug, Default)]
pub(super) struct Choice {
    pub adopt: Vec<PersistedInstance>,
    /// Some were adopted by rule 2 (a launch that passed its gate), not as serving ones.
    pub by_readiness: bool,
    pub candidates: usize,
}

/// `serving` is what `state.json` names (of revision `saved_revision`), `wanted` the
/// number of replicas. With several replicas, only serving instances of the deployment's
/// recorded revision are adopted (a rolling update interrupted half-way keeps the old
/// revision; its new instances go), and ready instances of that revision fill up to
/// `wanted`.
pub(super) fn choose(
    serving: &[PersistedInstance],
    saved_revision: Option<u64>,
    found: &[Scanned],
    expected_revision: u64,
    wanted: usize,
) -> Choice {
    let mut adopt: Vec<PersistedInstance> = Vec::new();
    for s in serving {
        if serving.len() > 1 && saved_revision.is_some_and(|r| r != s.revision) {
            continue;
        }
        let own = found
            .iter()
            .find(|f| f.key == s.key)
            .and_then(Scanned::leader);
        let process = own.or_else(|| {
            procfs::is_alive(s.pid, Some(s.start_time)).then_some((s.pid, s.start_time))
        });
        if let Some((pid, start_time)) = process {
            let mut a = s.clone();
            if (pid, start_time) != (s.pid, s.start_time) {
                a.pid = pid;
                a.start_time = start_time;
                a.started_at_micros = found
                    .iter()
                    .find(|f| f.key == s.key)
                    .and_then(Scanned::readable)
                    .map_or(s.started_at_micros, |r| r.started_at_micros);
            }
            adopt.push(a);
        }
    }
    if adopt.len() >= wanted.max(1) {
        adopt.truncate(wanted.max(1));
        return Choice {
            candidates: adopt.len(),
            adopt,
            by_readiness: false,
        };
    }
    let revision = adopt.first().map_or(expected_revision, |a| a.revision);
    let mut ready: Vec<(&InstanceRecord, (u32, u64))> = found
        .iter()
        .filter_map(|f| {
            let r = f.readable()?;
            let leader = f.leader()?;
            (r.phase == InstancePhase::Ready
                && r.revision == revision
                && r.key == f.key
                && !adopt.iter().any(|a| a.key == r.key))
            .then_some((r, leader))
        })
        .collect();
    let candidates = ready.len();
    ready.sort_by_key(|(r, _)| std::cmp::Reverse(r.started_at_micros));
    let room = wanted.max(1) - adopt.len();
    let by_readiness = room > 0 && !ready.is_empty();
    adopt.extend(
        ready
            .into_iter()
            .take(room)
            .map(|(r, (pid, start_time))| PersistedInstance {
                key: r.key.clone(),
                pid,
                start_time,
                port: r.port,
                revision: r.revision,
                started_at_micros: r.started_at_micros,
            }),
    );
    Choice {
        adopt,
        by_readiness,
        candidates,
    }
}

impl Inner {
    /// Kills everything alive of `found` except the instances `keep`, and reclaims the
    /// directories of the instances that are neither kept nor `serving` (their last output
    /// captured into `logs` first). Returns what was killed, described for the log.
    pub(super) async fn settle_instances(
        &self,
        id: &str,
        found: &[Scanned],
        keep: &[&str],
        serving: &[&str],
        logs: Option<&Arc<LogStore>>,
    ) -> Vec<String> {
        let mut killed = Vec::new();
        for f in found {
            if keep.contains(&f.key.as_str()) {
                continue;
            }
            if f.alive(id) {
                let what = f.describe();
                tracing::warn!(deployment = id, instance = %f.key, "stopping {what}: no record explains it as serving");
                f.tree(id).kill_all().await;
                killed.push(what);
            } else if f.tree(id).cgroup().is_some() {
                // Nothing runs in it: this only removes the empty cgroup.
                f.tree(id).kill_all().await;
            }
            if !serving.contains(&f.key.as_str()) {
                reclaim_instance_dir(&f.dir, logs);
            }
        }
        killed
    }

    /// Kills every process of every instance of deployment `id` (in `dir` or carrying its
    /// marker): what `stop` and `remove` run after stopping what they track. Returns what
    /// was killed, described for the log.
    pub(super) async fn sweep(&self, id: &str, dir: &Path) -> Vec<String> {
        let found = scan(dir, id, None);
        let mut killed = Vec::new();
        for f in found.iter().filter(|f| f.alive(id)) {
            killed.push(f.describe());
            f.tree(id).kill_all().await;
        }
        if !killed.is_empty() {
            tracing::warn!(
                deployment = id,
                ?killed,
                "stopped processes no tracked instance accounted for"
            );
        }
        killed
    }
}

/// Deletes the directory of an instance that is dead and does not serve, once its last
/// output is in the deployment's log. The one place instance directories are deleted
/// during recovery (a deployment's whole directory goes with `remove`).
pub(super) fn reclaim_instance_dir(dir: &Path, logs: Option<&Arc<LogStore>>) {
    if !dir.exists() {
        return;
    }
    if let Some(logs) = logs {
        match Capture::start(dir, Arc::clone(logs)) {
            Ok(capture) => capture.finish(),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the last output of an instance");
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot delete an instance directory");
    }
}
