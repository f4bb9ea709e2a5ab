//! What to execute for a deployment: the start command that
//! [`conan_core::support::node::resolve_start`] finds (the config's `start_command`, else
//! `package.json`'s `scripts.start`, else `node <main>`, else `node server.js`, `index.js` or
//! `app.js`), turned into a program, its arguments and `PATH` additions.

use std::path::{Path, PathBuf};

use conan_core::support::node::{StartCommand, resolve_start};
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

/// Resolves what to run for `config` in `source` with the node binary `node`.
pub(crate) fn resolve(config: &DeploymentConfig, source: &Path, node: &Path) -> Result<Launch> {
    if !source.is_dir() {
        return Err(Error::InvalidConfig {
            problems: vec![ConfigProblem::new(
                "source",
                format!("source directory {} does not exist", source.display()),
            )],
        });
    }
    let node_dir = node
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf);
    let resolved = resolve_start(config, source)?;
    Ok(match resolved.command {
        StartCommand::Shell { command, npm_bin } => Launch {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), command],
            path_prepend: npm_bin
                .then(|| source.join("node_modules").join(".bin"))
                .into_iter()
                .chain(node_dir)
                .collect(),
            description: resolved.description,
        },
        StartCommand::Node { file } => Launch {
            program: node.to_path_buf(),
            args: vec![file],
            path_prepend: Vec::new(),
            description: resolved.description,
        },
    })
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
