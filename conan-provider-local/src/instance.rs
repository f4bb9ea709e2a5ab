//! One running instance: its process (a child, or an adopted pid), its spool files and
//! capture, its port, and how to spawn it again after a crash.
//!
//! # Environment
//!
//! An app gets, in this order (later wins):
//! 1. from the manager's environment only [`DEFAULT_INHERITED_ENV`] (`PATH`, `HOME`,
//!    `USER`, `LOGNAME`, `SHELL`, `LANG`, `LANGUAGE`, `TZ`, `TMPDIR`, `TERM` and glibc's
//!    `LC_*` locale categories; no `NODE_*`), plus names added with [`inherit_env`](crate::LocalProviderBuilder::inherit_env)
//!    (or everything with [`inherit_all_env`](crate::LocalProviderBuilder::inherit_all_env));
//! 2. the config's `env`;
//! 3. `PORT` and `HOST` for the assigned port, `CONAN_DEPLOYMENT_ID`, and
//!    `CONAN_INSTANCE` (the marker that ties every descendant to the instance);
//! 4. `node_modules/.bin` (and the configured node's directory) first on `PATH` when the
//!    command runs through `sh -c`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conan_core::{DeploymentSpec, ExitStatus, Revision, Timestamp};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::command::Launch;
use crate::logs::Capture;
use crate::ports::PortAllocator;
use crate::procfs;
use crate::settings::{DEFAULT_INHERITED_ENV, LocalSettings};
use crate::state::{InstancePhase, InstanceRecord, PersistedInstance};
use crate::tree::TreeRef;

/// The first interval between liveness checks of an adopted process.
const ADOPTED_POLL_MIN: Duration = Duration::from_millis(50);
/// The longest interval between liveness checks of an adopted process.
const ADOPTED_POLL_MAX: Duration = Duration::from_secs(1);

/// A process of an instance.
#[derive(Debug)]
pub(crate) enum Proc {
    /// Started by this manager: waited on (and reaped) directly.
    Child(tokio::process::Child),
    /// Started by an earlier manager: watched through `/proc`.
    Adopted { pid: u32, start_time: u64 },
}

impl Proc {
    /// Waits for the process to end. Cancel safe.
    pub async fn wait(&mut self) -> ExitStatus {
        match self {
            Proc::Child(child) => match child.wait().await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (status.code(), status.signal()) {
                        (Some(c), _) => ExitStatus::Code(c),
                        (None, Some(s)) => ExitStatus::Signal(s),
                        _ => ExitStatus::Unknown,
                    }
                }
                Err(_) => ExitStatus::Unknown,
            },
            Proc::Adopted { pid, start_time } => {
                // Not our child: no SIGCHLD, so `/proc` is checked, often at first, then
                // backing off to once a second so idle adopted apps cost almost nothing.
                let mut delay = ADOPTED_POLL_MIN;
                while procfs::is_alive(*pid, Some(*start_time)) {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 3 / 2).min(ADOPTED_POLL_MAX);
                }
                ExitStatus::Unknown
            }
        }
    }
}

/// One instance of a deployment.
#[derive(Debug)]
pub(crate) struct Instance {
    pub key: String,
    pub revision: Revision,
    pub port: Option<u16>,
    pub dir: PathBuf,
    pub deployment: String,
    pub pid: AtomicU32,
    pub start_time: AtomicU64,
    /// Start time of the instance's first process (restarts keep it).
    pub first_start_time: AtomicU64,
    pub started_at: Mutex<(Timestamp, tokio::time::Instant)>,
    /// Set before a deliberate stop: the supervisor then never restarts.
    pub stopping: AtomicBool,
    pub capture: Arc<Capture>,
    pub supervisor: Mutex<Option<JoinHandle<()>>>,
    pub cancel: CancellationToken,
    /// The allocator that reserved `port` (released through it once, by
    /// [`release_port`](Self::release_port)).
    pub ports: Arc<PortAllocator>,
    pub port_held: AtomicBool,
    /// Set once it passed its readiness gate (recorded in its `instance.json`).
    pub ready: AtomicBool,
    /// Set while one replica of several is out of service (crashed, restarting, not ready
    /// again yet): the runtime leaves it out, so no traffic goes to it.
    pub down: AtomicBool,
}

/// What a new [`Instance`] is made of.
pub(crate) struct NewInstance {
    pub key: String,
    pub revision: Revision,
    pub port: Option<u16>,
    pub dir: PathBuf,
    pub deployment: String,
    pub capture: Arc<Capture>,
    pub ports: Arc<PortAllocator>,
}

impl Instance {
    /// An instance holding the reservation of its port, with no process yet.
    pub fn new(n: NewInstance) -> Self {
        Self {
            key: n.key,
            revision: n.revision,
            port_held: AtomicBool::new(n.port.is_some()),
            port: n.port,
            dir: n.dir,
            deployment: n.deployment,
            pid: 0.into(),
            start_time: 0.into(),
            first_start_time: 0.into(),
            started_at: Mutex::new((Timestamp::now(), tokio::time::Instant::now())),
            stopping: false.into(),
            capture: n.capture,
            supervisor: Mutex::new(None),
            cancel: CancellationToken::new(),
            ports: n.ports,
            ready: false.into(),
            down: false.into(),
        }
    }

    /// An instance of a process started by an earlier manager (its port already
    /// reserved again by the caller when it is alive).
    pub fn adopted(n: NewInstance, pid: u32, start_time: u64, started: Timestamp) -> Self {
        let inst = Self::new(n);
        inst.ready.store(true, Ordering::Release);
        inst.pid.store(pid, Ordering::Release);
        inst.start_time.store(start_time, Ordering::Release);
        inst.first_start_time.store(start_time, Ordering::Release);
        *inst
            .started_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (
            started,
            tokio::time::Instant::now()
                .checked_sub(started.elapsed())
                .unwrap_or_else(tokio::time::Instant::now),
        );
        inst
    }

    /// Gives the port back (once; later calls do nothing).
    pub fn release_port(&self) {
        if let Some(p) = self.port
            && self.port_held.swap(false, Ordering::AcqRel)
        {
            self.ports.release(p);
        }
    }

    /// `CONAN_INSTANCE=<deployment>/<key>`.
    pub fn marker(&self) -> String {
        format!("CONAN_INSTANCE={}/{}", self.deployment, self.key)
    }

    /// The process tree of the instance.
    pub fn tree(&self) -> TreeRef {
        let pid = self.pid.load(Ordering::Acquire);
        TreeRef {
            leader: (pid != 0).then_some(pid),
            marker: self.marker(),
            since: self.first_start_time.load(Ordering::Acquire),
        }
    }

    pub fn started_at(&self) -> (Timestamp, tokio::time::Instant) {
        *self
            .started_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn persisted(&self) -> PersistedInstance {
        PersistedInstance {
            key: self.key.clone(),
            pid: self.pid.load(Ordering::Acquire),
            start_time: self.start_time.load(Ordering::Acquire),
            port: self.port,
            revision: self.revision.0,
            started_at_micros: self.started_at().0.as_unix_micros(),
        }
    }

    /// The instance's own record (see [`crate::state`]).
    pub fn record(&self) -> InstanceRecord {
        InstanceRecord {
            key: self.key.clone(),
            revision: self.revision.0,
            port: self.port,
            phase: if self.ready.load(Ordering::Acquire) {
                InstancePhase::Ready
            } else {
                InstancePhase::Starting
            },
            pid: self.pid.load(Ordering::Acquire),
            start_time: self.start_time.load(Ordering::Acquire),
            first_start_time: self.first_start_time.load(Ordering::Acquire),
            started_at_micros: self.started_at().0.as_unix_micros(),
        }
    }

    /// Writes the instance's record in its directory. A failure is logged, not fatal:
    /// recovery still finds the processes by their marker.
    pub fn save_record(&self) {
        if let Err(e) = crate::state::save_instance(&self.dir, &self.record()) {
            tracing::warn!(instance = %self.key, error = %e, "cannot write the instance record");
        }
    }

    /// Records that the instance passed its readiness gate.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.save_record();
    }

    /// Records a new process of the instance (its first, or a restart), in memory and in
    /// its record.
    fn set_process(&self, pid: u32, start_time: u64) {
        self.pid.store(pid, Ordering::Release);
        self.start_time.store(start_time, Ordering::Release);
        let _ = self.first_start_time.compare_exchange(
            0,
            start_time,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        *self
            .started_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (Timestamp::now(), tokio::time::Instant::now());
        self.save_record();
    }

    /// Spawns the instance's process (first start or restart) and moves it into its
    /// cgroup. The move waits for the kernel (an RCU grace period: 10–25 ms here) on a
    /// blocking thread, so the runtime's thread (the proxy, probes, every other
    /// deployment) is not held meanwhile.
    pub async fn spawn(
        &self,
        settings: &LocalSettings,
        launch: &Launch,
        spec: &DeploymentSpec,
        source: &Path,
    ) -> std::io::Result<Proc> {
        let (stdout, stderr) = Capture::open_for_app(&self.dir)?;
        let path = child_path(settings, launch, spec);
        let mut cmd =
            tokio::process::Command::new(resolve_program(&launch.program, path.as_deref()));
        // The app sees the name it was started by (`node`), as from a shell.
        cmd.arg0(&launch.program)
            .args(&launch.args)
            .current_dir(source)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(false);
        for (k, v) in std::env::vars_os() {
            if inherited(settings, &k.to_string_lossy()) {
                cmd.env(&k, &v);
            }
        }
        if let Some(who) = &launch.run_as {
            cmd.uid(who.uid)
                .gid(who.gid)
                .env("HOME", &who.home)
                .env("USER", &who.name)
                .env("LOGNAME", &who.name)
                .env("SHELL", &who.shell);
        }
        for (k, v) in spec.config.env.iter() {
            cmd.env(k, v);
        }
        if let Some(port) = self.port {
            cmd.env("PORT", port.to_string());
        }
        cmd.env("HOST", &settings.host)
            .env("CONAN_DEPLOYMENT_ID", spec.id.as_str())
            .env(
                "CONAN_INSTANCE",
                format!("{}/{}", self.deployment, self.key),
            );
        if !launch.path_prepend.is_empty()
            && let Some(path) = &path
        {
            cmd.env("PATH", path);
        }
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        let start_time = procfs::stat(pid).map_or(0, |s| s.start_time);
        self.set_process(pid, start_time);
        if settings.cgroups {
            let tree = self.tree();
            let settings = settings.clone();
            let resources = spec.config.resources.clone();
            let moved =
                tokio::task::spawn_blocking(move || tree.contain(&settings, &resources)).await;
            if let Err(e) = moved {
                tracing::warn!(error = %e, "moving an instance into its cgroup did not finish");
            }
        }
        Ok(Proc::Child(child))
    }
}

/// Whether the daemon's variable `name` reaches an app under `settings`.
fn inherited(settings: &LocalSettings, name: &str) -> bool {
    (settings.inherit_all_env
        || DEFAULT_INHERITED_ENV.contains(&name)
        || settings.inherit_env.iter().any(|n| n == name))
        && !name.starts_with("CONAN_")
}

/// The `PATH` the app's process gets: the deployment's own, else the daemon's when it is
/// inherited, with the launch's directories in front.
fn child_path(
    settings: &LocalSettings,
    launch: &Launch,
    spec: &DeploymentSpec,
) -> Option<std::ffi::OsString> {
    let base = spec
        .config
        .env
        .get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| {
            inherited(settings, "PATH")
                .then(|| std::env::var_os("PATH"))
                .flatten()
        });
    if launch.path_prepend.is_empty() {
        return base;
    }
    let base = base.unwrap_or_default();
    let paths = launch
        .path_prepend
        .iter()
        .cloned()
        .chain(std::env::split_paths(&base));
    std::env::join_paths(paths).ok()
}

/// `program` as an absolute path when it is a bare name found on `path` (the search
/// `execvp` would make in the child), else unchanged.
///
/// Given a bare name and a `PATH` of its own, the standard library cannot use
/// `posix_spawn` (which searches the parent's `PATH`) and forks the daemon instead: a
/// copy of its page tables and a copy-on-write fault for every page either side writes
/// until the child execs, about a millisecond on the path of every start.
fn resolve_program(program: &Path, path: Option<&std::ffi::OsStr>) -> std::path::PathBuf {
    let bare = program.components().count() == 1 && !program.as_os_str().is_empty();
    if !bare || program.is_absolute() {
        return program.to_path_buf();
    }
    let Some(path) = path else {
        return program.to_path_buf();
    };
    for dir in std::env::split_paths(path) {
        if !dir.is_absolute() {
            // A relative entry is searched from the child's directory: leave it to execvp.
            break;
        }
        let candidate = dir.join(program);
        if candidate.is_file()
            && nix::unistd::access(candidate.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
        {
            return candidate;
        }
    }
    program.to_path_buf()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_bare_program_is_found_on_the_childs_path_like_execvp_would() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, bin) = (dir.path().join("plain"), dir.path().join("bin"));
        std::fs::create_dir(&plain).unwrap();
        std::fs::create_dir(&bin).unwrap();
        // Not executable: skipped, as execvp skips it.
        std::fs::write(plain.join("tool"), "").unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths(["/nonexistent".as_ref(), plain.as_path(), bin.as_path()])
            .unwrap();
        let tool = Path::new("tool");
        assert_eq!(resolve_program(tool, Some(&path)), bin.join("tool"));
        // Nothing found, no PATH, a relative entry first, or a path: left to the spawn.
        let none = std::env::join_paths(["/nonexistent".as_ref(), plain.as_path()]).unwrap();
        assert_eq!(resolve_program(tool, Some(&none)), tool);
        assert_eq!(resolve_program(tool, None), tool);
        let relative = std::env::join_paths(["rel".as_ref(), bin.as_path()]).unwrap();
        assert_eq!(resolve_program(tool, Some(&relative)), tool);
        let sub = Path::new("sub/tool");
        assert_eq!(resolve_program(sub, Some(&path)), sub);
        assert_eq!(
            resolve_program(Path::new("/bin/sh"), Some(&path)),
            Path::new("/bin/sh")
        );
    }
}
