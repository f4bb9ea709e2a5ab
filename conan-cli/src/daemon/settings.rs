//! Daemon settings: `CONAN_HOME/daemon.toml`, read once when the daemon starts; the
//! environment overrides the file.
//!
//! ```toml
//! metrics_addr = "127.0.0.1:9464"   # Prometheus /metrics (CONAN_METRICS_ADDR); off when unset
//!
//! [proxy]                          # see conan_proxy::ProxySettings
//! port_range = "18000-18999"        # assigned endpoints (CONAN_PROXY_PORT_RANGE)
//! hold_timeout = "30s"
//!
//! [monitor]
//! sample_interval = "10s"
//! memory_samples = 3
//!
//! [monitor.alerts]                  # see conan_monitor::alerts::AlertSettings
//! [[monitor.alerts.webhooks]]
//! name = "ops"
//! url = "http://127.0.0.1:9000/hooks/conan"
//! [[monitor.alerts.rules]]
//! name = "down"
//! when = "down"
//! for = "30s"
//!
//! [mcp]                             # `conan mcp`, the agent tools
//! allowed_roots = ["/srv/apps"]     # a projectPath must lie under one (any when empty)
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
    /// The reverse proxy's settings (the stable endpoints).
    pub proxy: conan::proxy::ProxySettings,
    /// The agent tools' settings (`conan mcp`).
    pub mcp: McpSettings,
}

/// `[mcp]`: what `conan mcp` lets an agent do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSettings {
    /// When not empty, `projectPath` must lie under one of these directories.
    pub allowed_roots: Vec<std::path::PathBuf>,
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
        if let Ok(range) = std::env::var("CONAN_PROXY_PORT_RANGE") {
            settings.proxy.port_range = conan::proxy::parse_range(&range)
                .map_err(|e| CliError::usage(format!("CONAN_PROXY_PORT_RANGE={range}: {e}")))?;
        }
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

    #[test]
    fn alert_rules_are_read_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        std::fs::write(
            &path,
            "[monitor.alerts]\n[[monitor.alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9000/x\"\n\
             [[monitor.alerts.rules]]\nname = \"down\"\nwhen = \"down\"\nfor = \"1s\"\n",
        )
        .unwrap();
        let s = DaemonSettings::load(&path).unwrap();
        assert_eq!(s.monitor.alerts.rules[0].name, "down");
        assert_eq!(s.monitor.alerts.webhooks[0].name, "ops");
        std::fs::write(
            &path,
            "[[monitor.alerts.rules]]\nname = \"mem\"\nwhen = \"memory\"\n",
        )
        .unwrap();
        let err = DaemonSettings::load(&path).unwrap_err().to_string();
        assert!(err.contains("daemon.toml"), "{err}");
        assert!(
            err.contains("alert rule 'mem': when = \"memory\" needs a threshold"),
            "{err}"
        );
    }
}
