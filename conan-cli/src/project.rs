//! The project directory and its `conan.toml`.
//!
//! `conan.toml` has the fields of [`DeploymentConfig`]; every field is optional. `name`
//! defaults to the directory's name made into a DNS label, `source` to the directory (a
//! relative `source` is relative to the file). Flags override the file. The config is
//! validated once, after the flags, and every problem is reported with its field path.

use std::path::{Path, PathBuf};

use conan::{ConfigProblem, DeploymentConfig, HealthCheck};

use crate::error::{CliError, CliResult};

/// The config file's name.
pub const FILE_NAME: &str = "conan.toml";

/// What the command line says about a deployment (all optional).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--name`.
    pub name: Option<String>,
    /// `--provider`.
    pub provider: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--env K=V`, in order.
    pub env: Vec<(String, String)>,
    /// `--start`.
    pub start_command: Option<String>,
    /// `--health PATH`.
    pub health_path: Option<String>,
    /// `--replicas N`.
    pub replicas: Option<u32>,
}

/// A project directory, made absolute.
#[derive(Clone, Debug)]
pub struct Project {
    /// The application directory.
    pub dir: PathBuf,
    /// Its `conan.toml`, when there is one.
    pub file: Option<PathBuf>,
}

impl Project {
    /// The project at `path` (default `.`); `path` may also name a `.toml` file.
    ///
    /// # Errors
    /// Exit 2 when the path does not exist.
    pub fn locate(path: Option<&Path>) -> CliResult<Self> {
        let path = path.unwrap_or(Path::new("."));
        let absolute = std::fs::canonicalize(path).map_err(|e| {
            CliError::usage(format!("cannot open {}: {e}", path.display()))
                .hint("pass the directory of the app to deploy")
        })?;
        let (dir, file) = if absolute.is_file() {
            let dir = absolute
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
            (dir, Some(absolute))
        } else {
            let file = absolute.join(FILE_NAME);
            let file = file.is_file().then_some(file);
            (absolute, file)
        };
        Ok(Self { dir, file })
    }

    /// The config: the file (if any), defaults for `name` and `source`, then `overrides`;
    /// validated.
    ///
    /// # Errors
    /// Exit 2 with every problem when the file or the result is invalid.
    pub fn config(&self, overrides: &Overrides) -> CliResult<DeploymentConfig> {
        let mut table = match &self.file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| self.problem("", e.message().trim()))?
            }
            None => toml::Table::new(),
        };
        if !table.contains_key("name") {
            table.insert("name".into(), default_name(&self.dir).into());
        }
        let source = match table.get("source").and_then(toml::Value::as_str) {
            Some(s) => self.dir.join(s),
            None => self.dir.clone(),
        };
        table.insert("source".into(), source.display().to_string().into());
        let mut config: DeploymentConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| self.problem("", e.message().trim()))?;
        apply(&mut config, overrides);
        match config.validate() {
            Ok(()) => Ok(config),
            Err(conan::Error::InvalidConfig { problems }) => {
                Err(CliError::invalid_config(&self.context(), &problems))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn context(&self) -> String {
        self.file
            .as_ref()
            .map(|f| format!(" in {}", f.display()))
            .unwrap_or_default()
    }

    fn problem(&self, path: &str, message: &str) -> CliError {
        CliError::invalid_config(&self.context(), &[ConfigProblem::new(path, message)])
    }
}

/// Applies command-line overrides to a config.
pub fn apply(config: &mut DeploymentConfig, overrides: &Overrides) {
    if let Some(name) = &overrides.name {
        config.name.clone_from(name);
    }
    if let Some(provider) = &overrides.provider {
        config.provider = Some(provider.clone());
    }
    if let Some(port) = overrides.port {
        config.port = Some(port);
    }
    if let Some(n) = overrides.replicas {
        config.replicas = n;
    }
    for (k, v) in &overrides.env {
        config.env.insert(k.clone(), v.clone());
    }
    if let Some(start) = &overrides.start_command {
        config.start_command = Some(start.clone());
    }
    if let Some(path) = &overrides.health_path {
        config.health_check = Some(match config.health_check.take() {
            Some(mut check) if check.kind == conan::HealthCheckKind::Http => {
                check.path = Some(path.clone());
                check
            }
            _ => HealthCheck::http(path.clone()),
        });
    }
}

/// Parses `K=V`; a bare `K` takes its value from this process's environment (like
/// `docker run -e K`).
///
/// # Errors
/// Exit 2 for an empty name or a bare name that is not set here.
pub fn parse_env(text: &str) -> CliResult<(String, String)> {
    let (key, value) = match text.split_once('=') {
        Some((k, v)) => (k.to_owned(), v.to_owned()),
        None => {
            let value = std::env::var(text).map_err(|_| {
                CliError::usage(format!(
                    "--env {text}: no value given and {text} is not set in this shell"
                ))
                .hint("write --env NAME=VALUE")
            })?;
            (text.to_owned(), value)
        }
    };
    if key.is_empty() {
        return Err(CliError::usage(format!("--env {text}: the name is empty")));
    }
    Ok((key, value))
}

/// The directory's name as a DNS label: lowercase, other characters become `-`, runs of
/// `-` collapse, at most 63 characters; `app` when nothing is left.
#[must_use]
pub fn default_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sanitize(&raw)
}

/// See [`default_name`].
#[must_use]
pub fn sanitize(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(63);
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "app".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The starter `conan.toml` written by `conan init`.
#[must_use]
pub fn starter(name: &str) -> String {
    format!(
        r#"# Conan deployment config. Every field is optional; flags of `conan deploy` override them.
# Reference: the DeploymentConfig docs of the `conan` crate.

name = "{name}"            # a DNS label; default: the directory's name
# source = "."             # the app's directory, relative to this file
# provider = "local"       # "local" (processes) or "docker" (containers)
# port = 3000              # default: a free port (local) or 3000 (docker); passed as PORT
# start_command = "node app.js"   # default: package.json scripts.start, then main, then server.js/index.js/app.js
# replicas = 1

# [env]                    # values are secrets: Conan never prints them
# NODE_ENV = "production"

[health_check]
type = "http"              # http, tcp, process or command
path = "/health"           # GET this; any 2xx is healthy
interval = "10s"
timeout = "2s"
failure_threshold = 3

[restart]
policy = "always"          # always, on-failure or never
max_restarts = 10          # within `window`, then the deployment is marked failed
window = "10m"

[update]
strategy = "blue-green"    # blue-green, rolling or recreate
healthy_deadline = "60s"   # a new revision must be healthy by then, else it is rolled back
auto_rollback = true

# [stop]
# signal = "SIGTERM"
# timeout = "5s"

# [resources]              # docker only
# memory = "512MiB"
# cpus = 1.0
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_become_dns_labels() {
        assert_eq!(sanitize("My_App.v2"), "my-app-v2");
        assert_eq!(sanitize("--x--"), "x");
        assert_eq!(sanitize("日本"), "app");
        assert_eq!(sanitize(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn the_starter_file_is_a_valid_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), starter("demo")).unwrap();
        let config = Project::locate(Some(dir.path()))
            .unwrap()
            .config(&Overrides::default())
            .unwrap();
        assert_eq!(config.name, "demo");
        assert_eq!(config.health_check.unwrap().http_path(), "/health");
    }

    #[test]
    fn flags_override_the_file_and_name_defaults_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("Web App");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join(FILE_NAME), "port = 4000\n[env]\nA = \"1\"\n").unwrap();
        let overrides = Overrides {
            port: Some(4001),
            env: vec![("B".into(), "2".into())],
            health_path: Some("/ready".into()),
            ..Overrides::default()
        };
        let config = Project::locate(Some(&app))
            .unwrap()
            .config(&overrides)
            .unwrap();
        assert_eq!(config.name, "web-app");
        assert_eq!(config.port, Some(4001));
        assert_eq!(config.env.keys().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(config.source, std::fs::canonicalize(&app).unwrap());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            "name = \"Bad Name\"\nreplicas = 0\n[health_check]\npath = \"health\"\n",
        )
        .unwrap();
        let err = Project::locate(Some(dir.path()))
            .unwrap()
            .config(&Overrides::default())
            .unwrap_err();
        assert_eq!(err.exit, crate::error::EXIT_USAGE);
        let details = err.details.join("\n");
        assert!(details.contains("name:"), "{details}");
        assert!(details.contains("health_check.path:"), "{details}");
        assert!(err.details.len() >= 2, "{details}");
    }
}
