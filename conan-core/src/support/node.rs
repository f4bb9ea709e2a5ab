//! How a Node.js app is started, the way `npm start` and PM2 find what to run. Providers
//! share this so an app starts the same way locally and in a container:
//!
//! 1. `start_command` from the config, run by `sh -c` in the source directory;
//! 2. else `package.json`'s `scripts.start`, run by `sh -c` with `node_modules/.bin` first on
//!    `PATH` (what npm does, without needing npm);
//! 3. else `node <main>` from `package.json`, when that file exists;
//! 4. else `node` with the first of [`ENTRY_FILES`] that exists.
//!
//! When nothing resolves, the error lists everything that was tried.

use std::path::Path;

use crate::config::{ConfigProblem, DeploymentConfig};
use crate::error::{Error, Result};

/// The conventional entry files, in the order they are tried.
pub const ENTRY_FILES: [&str; 3] = ["server.js", "index.js", "app.js"];

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartCommand {
    /// A shell command, for `sh -c` in the source directory.
    Shell {
        /// The command line.
        command: String,
        /// Put `node_modules/.bin` first on `PATH` (a `scripts.start`, as npm runs it).
        npm_bin: bool,
    },
    /// A JavaScript file, relative to the source directory, for `node`.
    Node {
        /// The file.
        file: String,
    },
}

/// A resolved start command and how it was found (for progress events:
/// `"package.json main: app.js"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedStart {
    /// What to run.
    pub command: StartCommand,
    /// How it was resolved.
    pub description: String,
}

/// Whether `source` looks like a Node.js project (a `package.json` or an entry file).
#[must_use]
pub fn is_node_project(source: &Path) -> bool {
    source.join("package.json").is_file() || ENTRY_FILES.iter().any(|f| source.join(f).is_file())
}

fn invalid(field: &str, message: String) -> Error {
    Error::InvalidConfig {
        problems: vec![ConfigProblem::new(field, message)],
    }
}

/// Resolves what to run for `config`, whose source is (a copy of) `source`.
///
/// # Errors
/// [`Error::InvalidConfig`]: at `source` when `package.json` is not valid JSON; at
/// `start_command` when nothing resolves, listing everything that was tried.
pub fn resolve_start(config: &DeploymentConfig, source: &Path) -> Result<ResolvedStart> {
    if let Some(command) = &config.start_command {
        return Ok(ResolvedStart {
            description: format!("start_command: {command}"),
            command: StartCommand::Shell {
                command: command.clone(),
                npm_bin: false,
            },
        });
    }
    // An unreadable directory (mode 000, another user's) is not "app.js (not found)".
    if let Err(e) = std::fs::read_dir(source) {
        return Err(invalid(
            "source",
            format!("cannot read {}: {e}", source.display()),
        ));
    }
    let mut tried = vec!["start_command (not set)".to_owned()];
    let package = source.join("package.json");
    match std::fs::read_to_string(&package) {
        Ok(text) => {
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                invalid(
                    "source",
                    format!("{} is not valid JSON: {e}", package.display()),
                )
            })?;
            match json.pointer("/scripts/start").and_then(|v| v.as_str()) {
                Some(start) if !start.trim().is_empty() => {
                    return Ok(ResolvedStart {
                        description: format!("package.json scripts.start: {start}"),
                        command: StartCommand::Shell {
                            command: start.to_owned(),
                            npm_bin: true,
                        },
                    });
                }
                Some(_) => tried.push("package.json scripts.start (empty)".into()),
                None => tried.push("package.json scripts.start (absent)".into()),
            }
            match json.get("main").and_then(|v| v.as_str()) {
                Some(main) if source.join(main).is_file() => {
                    return Ok(ResolvedStart {
                        description: format!("package.json main: {main}"),
                        command: StartCommand::Node {
                            file: main.to_owned(),
                        },
                    });
                }
                Some(main) => tried.push(format!("package.json main: {main} (file not found)")),
                None => tried.push("package.json main (absent)".into()),
            }
        }
        Err(_) => tried.push("package.json (not found)".into()),
    }
    for file in ENTRY_FILES {
        if source.join(file).is_file() {
            return Ok(ResolvedStart {
                description: file.to_owned(),
                command: StartCommand::Node {
                    file: file.to_owned(),
                },
            });
        }
        tried.push(format!("{file} (not found)"));
    }
    Err(invalid(
        "start_command",
        format!(
            "nothing to start in {}: tried {}",
            source.display(),
            tried.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DeploymentConfig {
        DeploymentConfig::builder("app").build_unchecked()
    }

    fn command(source: &Path) -> StartCommand {
        resolve_start(&cfg(), source).unwrap().command
    }

    fn node(file: &str) -> StartCommand {
        StartCommand::Node { file: file.into() }
    }

    /// Issue 14, item 9: a mode-000 source folder was reported as "app.js (not found)".
    #[test]
    fn an_unreadable_source_says_why_not_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let err = resolve_start(&cfg(), &file).unwrap_err().to_string();
        assert!(err.contains("source: cannot read"), "{err}");
        assert!(!err.contains("not found"), "{err}");
        // As a user the mode applies to (root reads any directory).
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("app.js"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read_dir(&locked).is_err() {
            let err = resolve_start(&cfg(), &locked).unwrap_err().to_string();
            assert!(err.contains("Permission denied"), "{err}");
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let err = resolve_start(&cfg(), root).unwrap_err().to_string();
        assert!(
            err.contains(
                "start_command: nothing to start in",
            ) && err.contains(
                "tried start_command (not set), package.json (not found), server.js (not found), \
                 index.js (not found), app.js (not found)"
            ),
            "{err}"
        );
        assert!(!is_node_project(root));
        std::fs::write(root.join("app.js"), "").unwrap();
        assert!(is_node_project(root));
        assert_eq!(command(root), node("app.js"));
        std::fs::write(root.join("server.js"), "").unwrap();
        assert_eq!(command(root), node("server.js"));
        std::fs::write(root.join("package.json"), r#"{"main":"lib/main.js"}"#).unwrap();
        assert_eq!(
            command(root),
            node("server.js"),
            "a missing main is skipped"
        );
        std::fs::create_dir(root.join("lib")).unwrap();
        std::fs::write(root.join("lib/main.js"), "").unwrap();
        let resolved = resolve_start(&cfg(), root).unwrap();
        assert_eq!(resolved.command, node("lib/main.js"));
        assert_eq!(resolved.description, "package.json main: lib/main.js");
        std::fs::write(
            root.join("package.json"),
            r#"{"main":"lib/main.js","scripts":{"start":"  "}}"#,
        )
        .unwrap();
        assert_eq!(
            command(root),
            node("lib/main.js"),
            "an empty script is skipped"
        );
        std::fs::write(
            root.join("package.json"),
            r#"{"main":"lib/main.js","scripts":{"start":"node s.js --port 1"}}"#,
        )
        .unwrap();
        assert_eq!(
            command(root),
            StartCommand::Shell {
                command: "node s.js --port 1".into(),
                npm_bin: true
            }
        );
        let mut config = cfg();
        config.start_command = Some("exec node index.js".into());
        assert_eq!(
            resolve_start(&config, root).unwrap().command,
            StartCommand::Shell {
                command: "exec node index.js".into(),
                npm_bin: false
            }
        );
    }

    #[test]
    fn invalid_package_json_is_reported_at_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), "{ not json").unwrap();
        std::fs::write(dir.path().join("index.js"), "").unwrap();
        match resolve_start(&cfg(), dir.path()) {
            Err(Error::InvalidConfig { problems }) => {
                assert_eq!(problems[0].path, "source");
                assert!(problems[0].message.contains("is not valid JSON"));
            }
            other => panic!("{other:?}"),
        }
    }
}
