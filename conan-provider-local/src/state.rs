//! What is persisted in the state directory, so a later manager can adopt what runs and
//! account for everything it finds:
//!
//! - `deployments/<id>/state.json`: which instance serves the deployment (pid, start
//!   time), or that it is stopped or failed;
//! - `deployments/<id>/spec.json`: the spec of the revision it holds, its env values
//!   sealed (see `conan_core::seal`) with the key in `<state dir>/env.key` (created at
//!   first use, mode 0600), so a manager that lost its database can re-create the
//!   record ([`LocalProvider::discover`](crate::LocalProvider::discover)) and a copy of
//!   the file holds no secret;
//! - `deployments/<id>/instances/<key>/instance.json`: one record per launch, written
//!   before its process is spawned (phase `starting`, no pid), right after (pid and
//!   `/proc` start time, again after each supervised restart) and once it passed its
//!   readiness gate (phase `ready`). A manager killed at any point of a launch leaves
//!   a record that explains the process it started.
//!
//! Every file is written atomically (a temporary file renamed over the old one), with
//! mode 0600. A file that cannot be parsed is reported as
//! [`Damaged`](Loaded::Damaged), never as an error that stops the caller.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use conan_core::seal::EnvKey;
use conan_core::{DeploymentConfig, DeploymentId, DeploymentSpec, Revision};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The deployment's serving state, in its directory.
pub(crate) const STATE_FILE: &str = "state.json";
/// The deployment's spec, in its directory.
pub(crate) const SPEC_FILE: &str = "spec.json";
/// The key sealing env values, in the state directory.
pub(crate) const KEY_FILE: &str = "env.key";
/// An instance's record, in its instance directory.
pub(crate) const INSTANCE_FILE: &str = "instance.json";

/// A running instance as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PersistedInstance {
    pub key: String,
    pub pid: u32,
    /// `/proc/PID/stat` start time: adoption requires it to match.
    pub start_time: u64,
    pub port: Option<u16>,
    pub revision: u64,
    pub started_at_micros: i64,
}

/// A deployment as persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PersistedDeployment {
    pub id: String,
    pub revision: u64,
    /// The serving instance (the first replica); `None` when stopped or failed.
    pub instance: Option<PersistedInstance>,
    /// Every serving instance, when more than one replica serves (the first is
    /// `instance`). Absent in files written before replicas existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<PersistedInstance>,
    /// Set when it was stopped on purpose.
    #[serde(default)]
    pub stopped: bool,
    /// Why it failed, when the provider last saw it fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl PersistedDeployment {
    /// Every serving instance it names.
    pub fn serving(&self) -> Vec<PersistedInstance> {
        if self.replicas.is_empty() {
            self.instance.iter().cloned().collect()
        } else {
            self.replicas.clone()
        }
    }
}

/// Where a launch got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InstancePhase {
    /// Launched, not (yet) past its readiness gate.
    Starting,
    /// Past its readiness gate.
    Ready,
}

/// One instance's own record, in its instance directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceRecord {
    pub key: String,
    pub revision: u64,
    pub port: Option<u16>,
    pub phase: InstancePhase,
    /// The current process (0 before the first spawn).
    pub pid: u32,
    /// Its `/proc` start time.
    pub start_time: u64,
    /// The start time of the instance's first process: older processes are not its own.
    pub first_start_time: u64,
    pub started_at_micros: i64,
}

/// A deployment's spec as persisted (the config with its env values).
#[derive(Clone, Debug)]
pub(crate) struct PersistedSpec {
    pub id: DeploymentId,
    pub revision: u64,
    pub config: DeploymentConfig,
}

impl PersistedSpec {
    pub fn of(spec: &DeploymentSpec) -> Self {
        Self {
            id: spec.id.clone(),
            revision: spec.revision.0,
            config: DeploymentConfig::clone(&spec.config),
        }
    }

    pub fn into_spec(self) -> DeploymentSpec {
        DeploymentSpec::new(self.id, Revision(self.revision), self.config)
    }
}

/// What reading one state file found.
#[derive(Debug)]
pub(crate) enum Loaded<T> {
    /// No such file.
    Missing,
    /// Read and parsed.
    Found(T),
    /// Present but unreadable or unparsable (truncated, garbage): why, in one line.
    Damaged(String),
}

/// Writes `bytes` to `dir/name` atomically, mode 0600: a temporary file put in place of
/// the old one, so a reader (or a manager killed mid-write) sees the old or the new content,
/// never a mix.
///
/// No `fsync`: these files guard against the *manager's* death, which leaves the page
/// cache intact; a crash of the machine ends every app too, and a file it truncated is
/// reported as damaged and handled (see the module docs). Measured on this machine's
/// ext4 under load, an `fsync` of file and directory cost ~16 ms per write, and a
/// launch writes four, on the runtime's threads.
///
/// An existing file is swapped with the new one (`RENAME_EXCHANGE`) and the old content
/// then unlinked, rather than renamed over: ext4 (`auto_da_alloc`) starts writing a file
/// out when a rename replaces another, which made each write cost 0.15–0.6 ms instead of
/// about 0.04 ms, several times on the way to a deploy's answer. A file system without the
/// exchange gets the plain rename.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    let target = dir.join(name);
    if exchange(&tmp, &target) {
        // `tmp` now holds the old content; a manager killed here leaves it for the next
        // write to truncate.
        return match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    std::fs::rename(&tmp, target)
}

/// Swaps `a` and `b` in one step; `false` when `b` does not exist or the file system
/// cannot (the caller renames instead).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(a: &Path, b: &Path) -> bool {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).is_ok()
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

fn save_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(dir, name, &json)
}

fn load_json<T: DeserializeOwned>(path: PathBuf) -> Loaded<T> {
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => Loaded::Found(v),
            Err(e) => Loaded::Damaged(format!("{}: {e}", path.display())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::Missing,
        Err(e) => Loaded::Damaged(format!("{}: {e}", path.display())),
    }
}

/// Writes the serving state of the deployment in `dir`.
pub(crate) fn save(dir: &Path, state: &PersistedDeployment) -> io::Result<()> {
    save_json(dir, STATE_FILE, state)
}

/// Reads the serving state of the deployment in `dir`.
pub(crate) fn load(dir: &Path) -> Loaded<PersistedDeployment> {
    load_json(dir.join(STATE_FILE))
}

/// `spec.json` as written: the config's env values sealed.
#[derive(Serialize, Deserialize)]
struct SpecFile {
    id: DeploymentId,
    revision: u64,
    config: serde_json::Value,
}

/// The key that seals the env values of the deployment in `dir`
/// (`<state dir>/deployments/<id>`): `<state dir>/env.key`, read once per process.
fn key_for(dir: &Path) -> io::Result<EnvKey> {
    static KEYS: LazyLock<Mutex<HashMap<PathBuf, EnvKey>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let state_dir = dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| io::Error::other(format!("{}: not in a state directory", dir.display())))?;
    let path = state_dir.join(KEY_FILE);
    let mut keys = KEYS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(key) = keys.get(&path) {
        return Ok(key.clone());
    }
    let key = EnvKey::load_or_create(&path).map_err(io::Error::other)?;
    keys.insert(path, key.clone());
    Ok(key)
}

/// Writes the spec of the deployment in `dir`.
pub(crate) fn save_spec(dir: &Path, spec: &PersistedSpec) -> io::Result<()> {
    let file = SpecFile {
        id: spec.id.clone(),
        revision: spec.revision,
        config: key_for(dir)?
            .seal_config(&spec.config)
            .map_err(io::Error::other)?,
    };
    save_json(dir, SPEC_FILE, &file)
}

/// Reads the spec of the deployment in `dir`.
pub(crate) fn load_spec(dir: &Path) -> Loaded<PersistedSpec> {
    let file: SpecFile = match load_json(dir.join(SPEC_FILE)) {
        Loaded::Found(f) => f,
        Loaded::Missing => return Loaded::Missing,
        Loaded::Damaged(why) => return Loaded::Damaged(why),
    };
    let config = key_for(dir)
        .map_err(|e| e.to_string())
        .and_then(|key| key.open_config(file.config).map_err(|e| e.to_string()));
    match config {
        Ok(config) => Loaded::Found(PersistedSpec {
            id: file.id,
            revision: file.revision,
            config,
        }),
        Err(e) => Loaded::Damaged(format!("{}: {e}", dir.join(SPEC_FILE).display())),
    }
}

/// Writes an instance's record in its directory `dir`.
pub(crate) fn save_instance(dir: &Path, record: &InstanceRecord) -> io::Result<()> {
    save_json(dir, INSTANCE_FILE, record)
}

/// Reads the record of the instance whose directory is `dir`.
pub(crate) fn load_instance(dir: &Path) -> Loaded<InstanceRecord> {
    load_json(dir.join(INSTANCE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_and_damage_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let record = InstanceRecord {
            key: "r1-1-0".into(),
            revision: 1,
            port: Some(1234),
            phase: InstancePhase::Starting,
            pid: 0,
            start_time: 0,
            first_start_time: 0,
            started_at_micros: 0,
        };
        save_instance(dir.path(), &record).unwrap();
        let mode = std::fs::metadata(dir.path().join(INSTANCE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(load_instance(dir.path()), Loaded::Found(r) if r == record));
        assert!(matches!(load(dir.path()), Loaded::Missing));
        std::fs::write(dir.path().join(STATE_FILE), b"{\"id\": \"x\", \"revi").unwrap();
        match load(dir.path()) {
            Loaded::Damaged(why) => assert!(why.contains("state.json"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rewrite_swaps_the_content_in_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        write_atomic(dir.path(), "x.json", b"first").unwrap();
        assert_eq!(listing(), ["x.json"]);
        // A reader that has the old file open keeps reading the old content.
        let mut old = std::fs::File::open(dir.path().join("x.json")).unwrap();
        for n in 0..3 {
            let content = format!("rewrite {n}, longer than the first");
            write_atomic(dir.path(), "x.json", content.as_bytes()).unwrap();
            assert_eq!(
                std::fs::read_to_string(dir.path().join("x.json")).unwrap(),
                content
            );
            assert_eq!(listing(), ["x.json"], "no temporary file is left");
        }
        let mode = std::fs::metadata(dir.path().join("x.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut seen = String::new();
        std::io::Read::read_to_string(&mut old, &mut seen).unwrap();
        assert_eq!(seen, "first");
    }
}
