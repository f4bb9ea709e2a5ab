//! The generated Dockerfile for a Node.js project without one.
//!
//! The start command is the one [`conan_core::support::node::resolve_start`] finds, as for the local
//! provider: `start_command` from the config, else `package.json`'s `scripts.start`, else
//! `node <main>`, else `node server.js`, `index.js` or `app.js`, whichever exists. It is set
//! on the container (`sh -c`), not baked into the image, so a config change does not need a
//! rebuild; the image puts `node_modules/.bin` first on `PATH`, as npm does for scripts.
//! Dependencies are installed only when a lockfile exists (`npm ci`,
//! `yarn install --frozen-lockfile`, `pnpm install --frozen-lockfile`).

use std::path::Path;

use conan_core::DeploymentConfig;
use conan_core::support::node::{StartCommand, resolve_start};

pub(crate) use conan_core::support::node::is_node_project;

/// Name of the generated Dockerfile inside the build context.
pub(crate) const GENERATED_DOCKERFILE: &str = ".conan.Dockerfile";

/// The app directory inside the image.
pub(crate) const APP_DIR: &str = "/app";

/// The `sh -c` command that starts `config`'s Node app in `source`.
///
/// # Errors
/// [`conan_core::Error::InvalidConfig`] when nothing resolves (listing what was tried) or
/// `package.json` is not valid JSON.
pub(crate) fn start_command(
    config: &DeploymentConfig,
    source: &Path,
) -> conan_core::Result<String> {
    Ok(match resolve_start(config, source)?.command {
        StartCommand::Shell { command, .. } => command,
        StartCommand::Node { file } => format!("node {}", shell_quote(&file)),
    })
}

/// The generated Dockerfile. Kept to as few layers as possible: with the `vfs` storage
/// driver every layer is a full copy of the base image.
pub(crate) fn generated_dockerfile(source: &Path, base_image: &str) -> String {
    let install = if source.join("package-lock.json").is_file()
        || source.join("npm-shrinkwrap.json").is_file()
    {
        Some("npm ci --omit=dev")
    } else if source.join("yarn.lock").is_file() {
        Some("yarn install --frozen-lockfile --production")
    } else if source.join("pnpm-lock.yaml").is_file() {
        Some("pnpm install --frozen-lockfile --prod")
    } else {
        None
    };
    let mut out = format!(
        "FROM {base_image}\nWORKDIR {APP_DIR}\nENV PATH={APP_DIR}/node_modules/.bin:$PATH\n\
         COPY . {APP_DIR}\n"
    );
    if let Some(cmd) = install {
        out.push_str(&format!("RUN {cmd}\n"));
    }
    out
}

/// Single-quotes `s` for `sh -c`.
pub(crate) fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_commands_for_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let config = DeploymentConfig::builder("app").build_unchecked();
        assert!(start_command(&config, root).is_err());
        std::fs::write(root.join("server.js"), "").unwrap();
        assert_eq!(start_command(&config, root).unwrap(), "node server.js");
        std::fs::write(root.join("my app.js"), "").unwrap();
        std::fs::write(root.join("package.json"), r#"{"main":"my app.js"}"#).unwrap();
        assert_eq!(start_command(&config, root).unwrap(), "node 'my app.js'");
        std::fs::write(
            root.join("package.json"),
            r#"{"scripts":{"start":"node s.js --port 1"}}"#,
        )
        .unwrap();
        assert_eq!(start_command(&config, root).unwrap(), "node s.js --port 1");
    }

    #[test]
    fn install_step_only_with_lockfile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let plain = generated_dockerfile(root, "node:20-slim");
        assert!(plain.starts_with("FROM node:20-slim\n"));
        assert!(!plain.contains("RUN"));
        std::fs::write(root.join("package-lock.json"), "{}").unwrap();
        assert!(generated_dockerfile(root, "b").contains("RUN npm ci --omit=dev"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a/b.js"), "a/b.js");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
