//! What is persisted per deployment in the state directory, so a later manager can adopt
//! running instances: `deployments/<id>/state.json`, written atomically (temp + rename).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    /// The serving instance; `None` when stopped or failed.
    pub instance: Option<PersistedInstance>,
    /// Set when it was stopped on purpose.
    #[serde(default)]
    pub stopped: bool,
    /// Why it failed, when the provider last saw it fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Writes the state of the deployment in `dir`.
pub(crate) fn save(dir: &Path, state: &PersistedDeployment) -> io::Result<()> {
    let tmp = dir.join("state.json.tmp");
    let json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, path(dir))
}

/// Reads the state of the deployment in `dir`, if there is one.
pub(crate) fn load(dir: &Path) -> io::Result<Option<PersistedDeployment>> {
    match std::fs::read(path(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
