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
    /// The `.js` file named on the command line: the default start command is `node FILE`.
    pub entry: Option<PathBuf>,
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
        let (dir, file, entry) = if absolute.is_file() {
            let dir = absolute
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
            match absolute.extension().and_then(|e| e.to_str()) {
                Some("toml") => (dir, Some(absolute), None),
                // `conan deploy app.js` (as `pm2 start app.js`): the file is the entry point,
                // its directory the app, and that directory's conan.toml (if any) the config.
                Some("js" | "mjs" | "cjs") => {
                    let file = dir.join(FILE_NAME);
                    let file = file.is_file().then_some(file);
                    (dir, file, Some(absolute))
                }
                _ => {
                    return Err(CliError::usage(format!(
                        "{} is neither a directory, a conan.toml nor a .js entry point",
                        path.display()
                    ))
                    .hint("pass the directory of the app to deploy (it may hold a conan.toml)"));
                }
            }
        } else {
            let file = absolute.join(FILE_NAME);
            let file = file.is_file().then_some(file);
            (absolute, file, None)
        };
        Ok(Self { dir, file, entry })
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
                    .map_err(|e| self.problem("", &syntax_error(&text, &e)))?
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
        if let Some(entry) = &self.entry
            && !table.contains_key("start_command")
        {
            let relative = entry.strip_prefix(&self.dir).unwrap_or(entry);
            table.insert(
                "start_command".into(),
                format!("node {}", shell_quote(&relative.display().to_string())).into(),
            );
        }
        let fallback_name = default_name(&self.dir);
        let (mut config, mut problems) = decode(table, &fallback_name);
        apply(&mut config, overrides);
        if let Err(conan::Error::InvalidConfig { problems: more }) = config.validate() {
            // A field that failed to decode was dropped (so took its default): its own
            // decoding problem already says what is wrong there.
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(CliError::invalid_config(&self.context(), &problems))
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

/// A TOML syntax error as `line L, column C: what`.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

/// `s` quoted for `sh -c` when it needs it.
fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// At most this many decoding problems are collected (each costs one decode of the table).
const MAX_DECODE_PROBLEMS: usize = 64;

/// Decodes `table` leniently: every field that does not decode (a wrong type, a value out of
/// range, an unknown field at any depth) is reported with its path and dropped, and decoding
/// goes on with the rest, so one pass reports them all. The result is what decoded (dropped
/// fields take their defaults); it is meaningful only when no problem was found.
fn decode(mut table: toml::Table, fallback_name: &str) -> (DeploymentConfig, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    loop {
        let value = toml::Value::Table(table.clone());
        let error = match serde_path_to_error::deserialize::<_, DeploymentConfig>(value) {
            Ok(config) => return (config, problems),
            Err(e) => e,
        };
        let mut path: Vec<String> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = error.into_inner().message().trim().to_owned();
        // serde names an unknown field in its message; the path stops at its table.
        if let Some(field) = quoted_after(&message, "unknown field `")
            && path.last() != Some(&field)
        {
            path.push(field);
        }
        let dotted = path.join(".");
        let removed = remove(&mut table, &path);
        problems.push(ConfigProblem::new(dotted, friendly(&message)));
        if path == ["name"] {
            table.insert("name".into(), fallback_name.into());
        }
        if !removed || problems.len() >= MAX_DECODE_PROBLEMS {
            // Nothing left to drop (a required field is missing): report what was found.
            let config = DeploymentConfig::new(fallback_name);
            return (config, problems);
        }
    }
}

/// The text between `prefix` and the next backtick.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(rest[..rest.find('`')?].to_owned())
}

/// serde's wording made plainer where it is obscure.
fn friendly(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let expected = rest.split_once(", expected ").map(|(_, e)| e);
        return match expected {
            Some(e) => format!("unknown field; expected {e}"),
            None => "unknown field".to_owned(),
        };
    }
    match message {
        m if m.contains("expected u16") => "must be an integer between 1 and 65535".to_owned(),
        m if m.contains("expected u32") => "must be a whole number (0 to 4294967295)".to_owned(),
        m => m.to_owned(),
    }
}

/// Removes the value at `path`; whether there was one.
fn remove(table: &mut toml::Table, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(toml::Value::Table(inner)) => remove(inner, rest),
            Some(toml::Value::Array(items)) => match rest {
                [index] => index
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < items.len())
                    .map(|i| items.remove(i))
                    .is_some(),
                _ => table.remove(first).is_some(),
            },
            // A scalar where a table was expected: drop it whole.
            Some(_) => table.remove(first).is_some(),
            None => false,
        },
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
        // A fixed count on the command line overrides an autoscaling table.
        config.replicas = n;
        config.autoscale = None;
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

/// Whether the app in `dir` seems to serve `/health`: one of its entry files (package.json's
/// `main`, `server.js`, `index.js`, `app.js`) mentions that route.
#[must_use]
pub fn serves_health(dir: &Path) -> bool {
    let mut files = vec!["server.js".to_owned(), "index.js".into(), "app.js".into()];
    if let Ok(text) = std::fs::read_to_string(dir.join("package.json"))
        && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(main) = json["main"].as_str()
    {
        files.insert(0, main.to_owned());
    }
    files.iter().any(|f| {
        std::fs::read_to_string(dir.join(f)).is_ok_and(|t| {
            t.contains("'/health'") || t.contains("\"/health\"") || t.contains("`/health`")
        })
    })
}

/// The starter `conan.toml` written by `conan init`. The `/health` check is active only when
/// the app serves that route (`health`); otherwise it is commented out, and readiness is
/// "accepts TCP on its PORT, or stays up `restart.min_uptime`".
#[must_use]
pub fn starter(name: &str, health: bool) -> String {
    let check = r#"[health_check]
type = "http"              # http, tcp, process or command
path = "/health"           # GET this; any 2xx is healthy
interval = "10s"
timeout = "2s"
failure_threshold = 3
"#;
    let check = if health {
        check.to_owned()
    } else {
        let commented: String = check.lines().map(|l| format!("# {l}\n")).collect();
        format!(
            "# Without a check, the app is ready once it accepts TCP on its PORT (or stays up\n# restart.min_uptime, 1s). Uncomment when the app answers GET /health:\n{commented}"
        )
    };
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

{check}
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
        std::fs::write(dir.path().join(FILE_NAME), starter("demo", true)).unwrap();
        let config = Project::locate(Some(dir.path()))
            .unwrap()
            .config(&Overrides::default())
            .unwrap();
        assert_eq!(config.name, "demo");
        assert_eq!(config.health_check.unwrap().http_path(), "/health");
        std::fs::write(dir.path().join(FILE_NAME), starter("demo", false)).unwrap();
        let config = Project::locate(Some(dir.path()))
            .unwrap()
            .config(&Overrides::default())
            .unwrap();
        assert_eq!(config.health_check, None);
    }

    /// Issue 14, item 10: `conan init` wrote an active `/health` check that an app without
    /// that route fails.
    #[test]
    fn init_checks_health_only_when_the_app_serves_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("server.js"),
            "require('http').createServer((q, s) => s.end('hi')).listen(process.env.PORT);\n",
        )
        .unwrap();
        assert!(!serves_health(dir.path()));
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"main": "src/main.js"}"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(
            dir.path().join("src/main.js"),
            "if (req.url === '/health') ok();\n",
        )
        .unwrap();
        assert!(serves_health(dir.path()));
        let hello = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/hello");
        assert!(serves_health(&hello));
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

    fn problems_of(text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let err = Project::locate(Some(dir.path()))
            .unwrap()
            .config(&Overrides::default())
            .unwrap_err();
        assert_eq!(err.exit, crate::error::EXIT_USAGE, "{err:?}");
        err.details
    }

    /// Issue 14, item 5: a port out of range hid every other problem, with no field path.
    #[test]
    fn the_four_mistakes_are_all_reported_with_their_paths() {
        let details = problems_of(
            "name = \"Bad Name\"\nport = 70000\n[env]\n\"1BAD\" = \"x\"\n[health_check]\npath = \"health\"\n",
        );
        let text = details.join("\n");
        assert_eq!(details.len(), 4, "{text}");
        for path in ["- port:", "- name:", "- env.1BAD:", "- health_check.path:"] {
            assert_eq!(text.matches(path).count(), 1, "{path} in {text}");
        }
        assert!(text.contains("between 1 and 65535"), "{text}");
    }

    #[test]
    fn every_unknown_field_is_reported_at_any_depth() {
        let details = problems_of(
            "colour = \"red\"\nsize = 3\n[restart]\npolicy = \"always\"\nretries = 5\n[health_check]\npath = \"/h\"\nevery = \"5s\"\n",
        );
        let text = details.join("\n");
        for path in [
            "- colour:",
            "- size:",
            "- restart.retries:",
            "- health_check.every:",
        ] {
            assert!(text.contains(path), "{path} in {text}");
        }
        assert_eq!(details.len(), 4, "{text}");
        assert!(text.contains("unknown field; expected"), "{text}");
    }

    #[test]
    fn wrong_types_and_bad_values_inside_tables_are_reported_together() {
        let details = problems_of(
            "replicas = \"two\"\n[restart]\npolicy = \"sometimes\"\nwindow = \"ten minutes\"\n",
        );
        let text = details.join("\n");
        for path in ["- replicas:", "- restart.policy:", "- restart.window:"] {
            assert!(text.contains(path), "{path} in {text}");
        }
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let details = problems_of("name = \"ok\"\nport = = 3\n");
        let text = details.join("\n");
        assert!(text.contains("line 2, column 8"), "{text}");
    }

    /// Issue 14, item 5: `conan deploy x.js` parsed JavaScript as TOML.
    #[test]
    fn a_js_file_is_the_entry_point_not_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("web");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("x.js"), "const a = { b: 1 };\n").unwrap();
        let project = Project::locate(Some(&app.join("x.js"))).unwrap();
        assert_eq!(project.file, None);
        let config = project.config(&Overrides::default()).unwrap();
        assert_eq!(config.start_command.as_deref(), Some("node x.js"));
        assert_eq!(config.name, "web");
        std::fs::write(app.join("notes.txt"), "hi").unwrap();
        let err = Project::locate(Some(&app.join("notes.txt"))).unwrap_err();
        assert_eq!(err.exit, crate::error::EXIT_USAGE);
        assert!(
            err.message.contains("neither a directory"),
            "{}",
            err.message
        );
    }
}
