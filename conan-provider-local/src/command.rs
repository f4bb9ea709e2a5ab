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
    /// The user and group to run as (`provider_options.local.user`/`group`); `None`:
    /// the manager's own.
    pub run_as: Option<RunAs>,
}

/// `[provider_options.local]`: what only the local provider reads from a config.
///
/// ```toml
/// [provider_options.local]
/// user = "app"     # run the app as this user (the daemon must be root)
/// group = "app"    # and this group (default: the user's primary group)
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalOptions {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

/// The identity an app runs as (systemd's `User=`/`Group=`): its uid, its gid and no
/// supplementary group (std's `Command::uid` clears them when the manager is root), and
/// the user's `HOME`, `USER`, `LOGNAME` and `SHELL` in place of the manager's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

fn option_problem(field: &str, message: String) -> Error {
    Error::InvalidConfig {
        problems: vec![ConfigProblem::new(
            format!("provider_options.local.{field}"),
            message,
        )],
    }
}

/// The identity `config` asks for, checked against the machine: the manager must be
/// root (only root can switch users), the user and group must exist.
pub(crate) fn run_as(config: &DeploymentConfig, euid: u32) -> Result<Option<RunAs>> {
    let options: LocalOptions = config
        .provider_options_for(crate::provider::NAME)?
        .unwrap_or_default();
    let Some(name) = options.user else {
        if options.group.is_some() {
            return Err(option_problem(
                "group",
                "a group needs a user (set provider_options.local.user too)".into(),
            ));
        }
        return Ok(None);
    };
    if euid != 0 {
        return Err(option_problem(
            "user",
            format!(
                "running as user '{name}' needs a manager running as root (this one runs as uid {euid})"
            ),
        ));
    }
    let user = match nix::unistd::User::from_name(&name) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(option_problem(
                "user",
                format!("no user '{name}' on this machine"),
            ));
        }
        Err(e) => {
            return Err(option_problem(
                "user",
                format!("cannot look up user '{name}': {e}"),
            ));
        }
    };
    let gid = match &options.group {
        None => user.gid.as_raw(),
        Some(group) => match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => g.gid.as_raw(),
            Ok(None) => {
                return Err(option_problem(
                    "group",
                    format!("no group '{group}' on this machine"),
                ));
            }
            Err(e) => {
                return Err(option_problem(
                    "group",
                    format!("cannot look up group '{group}': {e}"),
                ));
            }
        },
    };
    Ok(Some(RunAs {
        uid: user.uid.as_raw(),
        gid,
        name: user.name,
        home: user.dir,
        shell: user.shell,
    }))
}

/// Resolves what to run for `config` in `source` with the node binary `node`.
pub(crate) fn resolve(config: &DeploymentConfig, source: &Path, node: &Path) -> Result<Launch> {
    let run_as = run_as(config, nix::unistd::geteuid().as_raw())?;
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
            run_as,
        },
        StartCommand::Node { file } => Launch {
            program: node.to_path_buf(),
            args: vec![file],
            path_prepend: Vec::new(),
            description: resolved.description,
            run_as,
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
    fn running_as_another_user_needs_root_and_a_known_user() {
        let with = |options: serde_json::Value| {
            let mut c = cfg();
            c.provider_options.insert("local".into(), options);
            c
        };
        assert_eq!(run_as(&cfg(), 1000).unwrap(), None);
        let e = run_as(&with(serde_json::json!({"user": "root"})), 1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("provider_options.local.user") && e.contains("root"),
            "{e}"
        );
        let e = run_as(&with(serde_json::json!({"user": "no-such-user-x"})), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no user 'no-such-user-x'"), "{e}");
        let e = run_as(
            &with(serde_json::json!({"user": "root", "group": "no-such-group-x"})),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("provider_options.local.group"), "{e}");
        let e = run_as(&with(serde_json::json!({"group": "root"})), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a user"), "{e}");
        let e = run_as(&with(serde_json::json!({"usr": "root"})), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("usr"), "{e}");
        let root = run_as(&with(serde_json::json!({"user": "root"})), 0)
            .unwrap()
            .unwrap();
        assert_eq!((root.uid, root.gid, root.name.as_str()), (0, 0, "root"));
    }

    #[test]
    fn missing_source_is_a_config_error() {
        let e = resolve(&cfg(), Path::new("/nonexistent/conan"), Path::new("node")).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    }
}
