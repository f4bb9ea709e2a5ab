//! Start-command resolution, the way `npm start` and PM2 find what to run:
//!
//! 1. `start_command` from the config, run by `sh -c` in the source directory;
//! 2. else `package.json`'s `scripts.start`, run by `sh -c` with `node_modules/.bin` first
//!    on `PATH` (what npm does, without needing npm);
//! 3. else `node <main>` from `package.json`;
//! 4. else `node` with the first of `server.js`, `index.js`, `app.js`.
//!
//! When nothing resolves, the error lists everything that was tried.

use std::path::{Path, PathBuf};

use conan_core::{ConfigProblem, DeploymentConfig, Error, Result};

/// What to execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Launch {
    /// The program (`sh` or the node binary).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Directories to put first on `PATH`.
    pub path_prepend: Vec<PathBuf>,
    /// How it was resolved, for progress events (`"package.json main: app.js"`).
    pub description: String,
}

fn invalid(field: &str, message: String) -> Error {
    Error::InvalidConfig {
        problems: vec![ConfigProblem::new(field, message)],
    }
}

/// Resolves what to run for `config` in `source` with the node binary `node`.
pub(crate) fn resolve(config: &DeploymentConfig, source: &Path, node: &Path) -> Result<Launch> {
    if !source.is_dir() {
        return Err(invalid(
            "source",
            format!("source directory {} does not exist", source.display()),
        ));
    }
    let node_dir: Vec<PathBuf> = node
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    let shell = |cmd: &str, description: String, extra: Vec<PathBuf>| Launch {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), cmd.to_owned()],
        path_prepend: extra.into_iter().chain(node_dir.clone()).collect(),
        description,
    };
    if let Some(cmd) = &config.start_command {
        return Ok(shell(cmd, format!("start_command: {cmd}"), Vec::new()));
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
            if let Some(start) = json.pointer("/scripts/start").and_then(|v| v.as_str()) {
                return Ok(shell(
                    start,
                    format!("package.json scripts.start: {start}"),
                    vec![source.join("node_modules").join(".bin")],
                ));
            }
            tried.push("package.json scripts.start (absent)".into());
            if let Some(main) = json.get("main").and_then(|v| v.as_str()) {
                if source.join(main).is_file() {
                    return Ok(node_launch(
                        node,
                        main,
                        format!("package.json main: {main}"),
                    ));
                }
                tried.push(format!("package.json main: {main} (file not found)"));
            } else {
                tried.push("package.json main (absent)".into());
            }
        }
        Err(_) => tried.push("package.json (not found)".into()),
    }
    for file in ["server.js", "index.js", "app.js"] {
        if source.join(file).is_file() {
            return Ok(node_launch(node, file, file.to_owned()));
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

fn node_launch(node: &Path, file: &str, description: String) -> Launch {
    Launch {
        program: node.to_path_buf(),
        args: vec![file.to_owned()],
        path_prepend: Vec::new(),
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DeploymentConfig {
        DeploymentConfig::new("t")
    }

    #[test]
    fn resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let node = Path::new("node");
        let err = resolve(&cfg(), dir.path(), node).unwrap_err().to_string();
        assert!(
            err.contains("tried start_command (not set), package.json (not found)"),
            "{err}"
        );
        assert!(err.contains("app.js (not found)"), "{err}");

        std::fs::write(dir.path().join("index.js"), "").unwrap();
        std::fs::write(dir.path().join("app.js"), "").unwrap();
        assert_eq!(
            resolve(&cfg(), dir.path(), node).unwrap().args,
            vec!["index.js"]
        );

        std::fs::write(dir.path().join("package.json"), r#"{"main":"app.js"}"#).unwrap();
        assert_eq!(
            resolve(&cfg(), dir.path(), node).unwrap().args,
            vec!["app.js"]
        );

        std::fs::write(
            dir.path().join("package.json"),
            r#"{"main":"app.js","scripts":{"start":"node app.js --x"}}"#,
        )
        .unwrap();
        let l = resolve(&cfg(), dir.path(), node).unwrap();
        assert_eq!(l.args, vec!["-c", "node app.js --x"]);
        assert_eq!(l.path_prepend, vec![dir.path().join("node_modules/.bin")]);

        let mut c = cfg();
        c.start_command = Some("exec node index.js".into());
        assert_eq!(
            resolve(&c, dir.path(), node).unwrap().args[1],
            "exec node index.js"
        );
    }

    #[test]
    fn missing_source_is_a_config_error() {
        let e = resolve(&cfg(), Path::new("/nonexistent/conan"), Path::new("node")).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    }
}
