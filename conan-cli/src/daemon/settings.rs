//! Daemon settings: `CONAN_HOME/daemon.toml`, read once when the daemon starts; the
//! environment overrides the file (see [`ENV_SETTINGS`]). `conan daemon status` shows the
//! effective value of each and where it came from, and a command whose environment sets
//! one differently from the running daemon warns (the daemon does not read it again).
//!
//! ```toml
//! metrics_addr = "127.0.0.1:9464"   # Prometheus /metrics (CONAN_METRICS_ADDR); off when unset
//!
//! [proxy]                          # see conan_proxy::ProxySettings
//! port_range = "18000-18999"        # assigned endpoints (CONAN_PROXY_PORT_RANGE)
//! hold_timeout = "30s"
//!
//! [local]
//! port_range = "21000-21999"        # ports handed to local apps (CONAN_PORT_RANGE)
//! cgroups = true                    # a cgroup per instance where possible (CONAN_LOCAL_CGROUPS)
//!
//! [docker]
//! base_image = "node:20-slim"       # FROM of generated Dockerfiles (CONAN_DOCKER_BASE_IMAGE)
//! retry = "10s"                     # how often an unavailable Docker is tried again
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
//! [autoscale]                       # the loop behind `replicas = { min, max, .. }`
//! interval = "1s"                   # time between samples of the proxy's counters
//! window = "10s"                    # what a decision averages
//!
//! [mcp]                             # `conan mcp`, the agent tools
//! allowed_roots = ["/srv/apps"]     # a projectPath must lie under one (any when empty)
//! ```
//!
//! Adding a setting: a field (with a serde default) in its section, and when the
//! environment may set it, a row of [`ENV_SETTINGS`] (its variable, its key, how to apply
//! it); [`DaemonSettings::effective`] then shows it and clients compare it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use conan::monitor::MonitorSettings;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// The settings of one daemon.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// Where `GET /metrics` is served (Prometheus text format); off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// The local provider's settings.
    pub local: LocalSettings,
    /// The Docker provider's settings.
    pub docker: DockerSettings,
    /// The monitor's settings.
    pub monitor: MonitorSettings,
    /// The reverse proxy's settings (the stable endpoints).
    pub proxy: conan::proxy::ProxySettings,
    /// The agent tools' settings (`conan mcp`).
    pub mcp: McpSettings,
    /// The autoscaler's settings.
    pub autoscale: AutoscaleSettings,
    /// Where each setting set by the file or the environment came from (key -> source).
    #[serde(skip)]
    pub sources: BTreeMap<&'static str, String>,
}

/// `[autoscale]`: how the daemon's autoscaler measures (see `conan::autoscale`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscaleSettings {
    /// Time between samples (default 1 s).
    #[serde(with = "conan::time::serde_duration")]
    pub interval: Duration,
    /// The samples a decision averages (default the last 10 s).
    #[serde(with = "conan::time::serde_duration")]
    pub window: Duration,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        let d = conan::autoscale::AutoscalerSettings::default();
        Self {
            interval: d.interval,
            window: d.window,
        }
    }
}

/// `[mcp]`: what `conan mcp` lets an agent do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSettings {
    /// When not empty, `projectPath` must lie under one of these directories.
    pub allowed_roots: Vec<std::path::PathBuf>,
}

/// `[local]`: the local provider.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSettings {
    /// The ports handed to apps without one (`"21000-21999"`); default the provider's.
    #[serde(deserialize_with = "de_port_range")]
    pub port_range: Option<RangeInclusive<u16>>,
    /// Whether each instance gets a cgroup where the system allows (default true).
    pub cgroups: bool,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            port_range: None,
            cgroups: true,
        }
    }
}

/// `[docker]`: the Docker provider.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSettings {
    /// The base image of Dockerfiles generated for Node projects; default the provider's
    /// (`node:20-slim`). `conan docker base-image` builds one from this machine's node.
    pub base_image: Option<String>,
    /// How often the daemon tries an unavailable Docker again (default 10 s).
    #[serde(with = "conan::time::serde_duration")]
    pub retry: Duration,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            base_image: None,
            retry: Duration::from_secs(10),
        }
    }
}

/// A daemon setting the environment may set: its variable, its key in `daemon.toml`, and
/// how a value is applied (an error is a usage error naming the variable).
pub struct EnvSetting {
    /// The environment variable (`CONAN_PORT_RANGE`).
    pub var: &'static str,
    /// The setting's dotted key (`local.port_range`).
    pub key: &'static str,
    apply: fn(&mut DaemonSettings, &str) -> Result<(), String>,
}

/// Every daemon setting the environment may set.
pub const ENV_SETTINGS: &[EnvSetting] = &[
    EnvSetting {
        var: "CONAN_PROXY_PORT_RANGE",
        key: "proxy.port_range",
        apply: |s, v| {
            s.proxy.port_range = conan::proxy::parse_range(v).map_err(|e| e.to_string())?;
            Ok(())
        },
    },
    EnvSetting {
        var: "CONAN_METRICS_ADDR",
        key: "metrics_addr",
        apply: |s, v| {
            s.metrics_addr = if v.is_empty() || v == "off" {
                None
            } else {
                Some(
                    v.parse()
                        .map_err(|_| "expected HOST:PORT, like 127.0.0.1:9464".to_owned())?,
                )
            };
            Ok(())
        },
    },
    EnvSetting {
        var: "CONAN_PORT_RANGE",
        key: "local.port_range",
        apply: |s, v| {
            s.local.port_range = Some(parse_port_range(v)?);
            Ok(())
        },
    },
    EnvSetting {
        var: "CONAN_LOCAL_CGROUPS",
        key: "local.cgroups",
        apply: |s, v| {
            s.local.cgroups = !matches!(
                v.to_ascii_lowercase().as_str(),
                "off" | "0" | "false" | "no"
            );
            Ok(())
        },
    },
    EnvSetting {
        var: "CONAN_DOCKER_BASE_IMAGE",
        key: "docker.base_image",
        apply: |s, v| {
            s.docker.base_image = (!v.is_empty()).then(|| v.to_owned());
            Ok(())
        },
    },
    EnvSetting {
        var: "CONAN_DOCKER_RETRY_MS",
        key: "docker.retry",
        apply: |s, v| {
            let ms: u64 = v
                .parse()
                .map_err(|_| "expected a number of milliseconds".to_owned())?;
            s.docker.retry = Duration::from_millis(ms);
            Ok(())
        },
    },
];

/// One setting as `daemon status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingView {
    /// Dotted key in `daemon.toml` (`docker.base_image`).
    pub key: String,
    /// The effective value, as it would be written (`-` when unset).
    pub value: String,
    /// `default`, `daemon.toml`, or the environment variable that set it.
    pub source: String,
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    text.split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| a <= b)
        .map(|(a, b)| a..=b)
        .ok_or_else(|| "expected FIRST-LAST, like 21000-21999".to_owned())
}

fn de_port_range<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<RangeInclusive<u16>>, D::Error> {
    let text = String::deserialize(d)?;
    parse_port_range(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl DaemonSettings {
    /// Reads `path` (defaults when it does not exist), then applies the environment.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or an invalid environment value (usage error).
    pub fn load(path: &Path) -> CliResult<Self> {
        let mut settings = Self::from_file(path)?;
        settings.apply_env(|var| std::env::var(var).ok())?;
        Ok(settings)
    }

    fn from_file(path: &Path) -> CliResult<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(CliError::failed(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let mut settings = toml::from_str::<Self>(&text)
            .map_err(|e| CliError::usage(format!("{}: {}", path.display(), e.message().trim())))?;
        let table = text.parse::<toml::Table>().unwrap_or_default();
        for key in KEYS {
            let mut at = Some(&table);
            let mut found = false;
            let parts: Vec<&str> = key.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                match at.and_then(|t| t.get(*part)) {
                    Some(toml::Value::Table(t)) if i + 1 < parts.len() => at = Some(t),
                    Some(_) if i + 1 == parts.len() => found = true,
                    _ => break,
                }
            }
            if found {
                settings.sources.insert(key, "daemon.toml".to_owned());
            }
        }
        Ok(settings)
    }

    /// Applies the environment (`get` reads one variable).
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> CliResult {
        for setting in ENV_SETTINGS {
            if let Some(value) = get(setting.var) {
                let value = value.trim();
                (setting.apply)(self, value).map_err(|e| {
                    CliError::usage(format!("{}={value}: {e}", setting.var))
                        .hint(format!("or set {} in CONAN_HOME/daemon.toml", setting.key))
                })?;
                self.sources.insert(setting.key, setting.var.to_owned());
            }
        }
        Ok(())
    }

    /// The value of `key` as it would be written (`-` when unset).
    fn value_of(&self, key: &str) -> String {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        match key {
            "metrics_addr" => or_dash(self.metrics_addr.map(|a| a.to_string())),
            "local.port_range" => or_dash(
                self.local
                    .port_range
                    .as_ref()
                    .map(|r| format!("{}-{}", r.start(), r.end())),
            ),
            "local.cgroups" => self.local.cgroups.to_string(),
            "docker.base_image" => or_dash(self.docker.base_image.clone()),
            "docker.retry" => conan::time::format_duration(self.docker.retry),
            "autoscale.interval" => conan::time::format_duration(self.autoscale.interval),
            "autoscale.window" => conan::time::format_duration(self.autoscale.window),
            "mcp.allowed_roots" if self.mcp.allowed_roots.is_empty() => "-".to_owned(),
            "mcp.allowed_roots" => self
                .mcp
                .allowed_roots
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            _ => "-".to_owned(),
        }
    }

    /// Every setting with its effective value and where it came from.
    #[must_use]
    pub fn effective(&self) -> Vec<SettingView> {
        KEYS.iter()
            .map(|key| SettingView {
                key: (*key).to_owned(),
                value: self.value_of(key),
                source: self
                    .sources
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "default".to_owned()),
            })
            .collect()
    }

    /// The settings this process's environment sets that differ from `running` (the
    /// daemon's effective settings): `(variable, key, here, there)`.
    #[must_use]
    pub fn env_differences(running: &[SettingView]) -> Vec<(String, String, String, String)> {
        Self::differences_with(running, |var| std::env::var(var).ok())
    }

    fn differences_with(
        running: &[SettingView],
        get: impl Fn(&str) -> Option<String>,
    ) -> Vec<(String, String, String, String)> {
        let mut out = Vec::new();
        for setting in ENV_SETTINGS {
            let Some(value) = get(setting.var) else {
                continue;
            };
            let mut here = Self::default();
            if (setting.apply)(&mut here, value.trim()).is_err() {
                continue;
            }
            let here = here.value_of(setting.key);
            if let Some(there) = running.iter().find(|s| s.key == setting.key)
                && there.value != here
            {
                out.push((
                    setting.var.to_owned(),
                    setting.key.to_owned(),
                    here,
                    there.value.clone(),
                ));
            }
        }
        out
    }
}

/// The keys [`DaemonSettings::effective`] shows, in order.
const KEYS: &[&str] = &[
    "metrics_addr",
    "local.port_range",
    "local.cgroups",
    "docker.base_image",
    "docker.retry",
    "autoscale.interval",
    "autoscale.window",
    "mcp.allowed_roots",
];

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

    #[test]
    fn the_environment_overrides_the_file_and_each_source_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.toml");
        std::fs::write(
            &path,
            "[local]\nport_range = \"21000-21009\"\n[docker]\nbase_image = \"file/node:20\"\n",
        )
        .unwrap();
        let mut s = DaemonSettings::from_file(&path).unwrap();
        assert_eq!(s.local.port_range, Some(21000..=21009));
        s.apply_env(|v| (v == "CONAN_DOCKER_BASE_IMAGE").then(|| "env/node:20".to_owned()))
            .unwrap();
        assert_eq!(s.docker.base_image.as_deref(), Some("env/node:20"));
        let shown = s.effective();
        let get = |k: &str| shown.iter().find(|v| v.key == k).unwrap().clone();
        assert_eq!(get("docker.base_image").source, "CONAN_DOCKER_BASE_IMAGE");
        assert_eq!(get("local.port_range").source, "daemon.toml");
        assert_eq!(get("local.port_range").value, "21000-21009");
        assert_eq!(get("docker.retry").source, "default");

        let err = s
            .apply_env(|v| (v == "CONAN_PORT_RANGE").then(|| "9-1".to_owned()))
            .unwrap_err();
        assert!(
            err.message.contains("CONAN_PORT_RANGE=9-1"),
            "{}",
            err.message
        );
        std::fs::write(&path, "[local]\nport_range = \"x\"\n").unwrap();
        assert!(DaemonSettings::from_file(&path).is_err());
    }

    /// Issue 14, item 7: `CONAN_DOCKER_BASE_IMAGE=… conan deploy` was silently ignored by
    /// a running daemon.
    #[test]
    fn a_setting_the_environment_sets_differently_is_found() {
        let running = DaemonSettings::default().effective();
        let env = |v: &str| match v {
            "CONAN_DOCKER_BASE_IMAGE" => Some("mine/node:20".to_owned()),
            "CONAN_LOCAL_CGROUPS" => Some("on".to_owned()),
            _ => None,
        };
        let diff = DaemonSettings::differences_with(&running, env);
        assert_eq!(
            diff,
            vec![(
                "CONAN_DOCKER_BASE_IMAGE".to_owned(),
                "docker.base_image".to_owned(),
                "mine/node:20".to_owned(),
                "-".to_owned()
            )]
        );
    }
}
