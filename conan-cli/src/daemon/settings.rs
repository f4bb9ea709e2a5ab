//! Daemon settings: `CONAN_HOME/daemon.toml`, read once when the daemon starts; the
//! environment overrides the file.
//!
//! ```toml
//! metrics_addr = "127.0.0.1:9464"   # Prometheus /metrics (CONAN_METRICS_ADDR); off when unset
//!
//! [monitor]
//! sample_interval = "10s"
//! memory_samples = 3
//! ```

use std::net::SocketAddr;
use std::path::Path;

use conan::monitor::MonitorSettings;
use serde::Deserialize;

use crate::error::{CliError, CliResult};

/// The settings of one daemon.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// Where `GET /metrics` is served (Prometheus text format); off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// The monitor's settings.
    pub monitor: MonitorSettings,
}

impl DaemonSettings {
    /// Reads `path` (defaults when it does not exist), then applies the environment.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or an invalid environment value (usage error).
    pub fn load(path: &Path) -> CliResult<Self> {
        let mut settings = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<Self>(&text).map_err(|e| {
                CliError::usage(format!("{}: {}", path.display(), e.message().trim()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => {
                return Err(CliError::failed(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        if let Ok(addr) = std::env::var("CONAN_METRICS_ADDR") {
            let addr = addr.trim();
            settings.metrics_addr = if addr.is_empty() || addr == "off" {
                None
            } else {
                Some(addr.parse().map_err(|_| {
                    CliError::usage(format!(
                        "CONAN_METRICS_ADDR={addr}: expected HOST:PORT, like 127.0.0.1:9464"
                    ))
                })?)
            };
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_gives_the_defaults_and_a_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        assert_eq!(
            DaemonSettings::load(&path).unwrap().monitor,
            MonitorSettings::default()
        );
        std::fs::write(
            &path,
            "metrics_addr = \"127.0.0.1:9464\"\n[monitor]\nsample_interval = \"2s\"\n",
        )
        .unwrap();
        let s = DaemonSettings::load(&path).unwrap();
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(s.monitor.sample_interval, std::time::Duration::from_secs(2));
        std::fs::write(&path, "[monitor]\nbogus = 1\n").unwrap();
        assert!(DaemonSettings::load(&path).is_err());
    }
}
