//! The generated Dockerfile for a Node.js project without one.
//!
//! The start command is resolved like the local provider does: `start_command` from the
//! config, else `package.json`'s `scripts.start`, else `node <main>`, else `node server.js`,
//! `index.js` or `app.js`, whichever exists. It is set on the container (`sh -c`), not baked
//! into the image, so a config change does not need a rebuild. Dependencies are installed
//! only when a lockfile exists (`npm ci`, `yarn install --frozen-lockfile`,
//! `pnpm install --frozen-lockfile`).

use std::path::Path;

/// Name of the generated Dockerfile inside the build context.
pub(crate) const GENERATED_DOCKERFILE: &str = ".conan.Dockerfile";

/// The app directory inside the image.
pub(crate) const APP_DIR: &str = "/app";

/// Resolves the start command of a Node project in `source`; `None` when nothing fits.
pub(crate) fn resolve_start_command(source: &Path) -> Option<String> {
    let package = std::fs::read_to_string(source.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if let Some(pkg) = &package {
        if let Some(start) = pkg
            .pointer("/scripts/start")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.trim().is_empty())
        {
            return Some(start.to_owned());
        }
        if let Some(main) = pkg.get("main").and_then(serde_json::Value::as_str) {
            return Some(format!("node {}", shell_quote(main)));
        }
    }
    ["server.js", "index.js", "app.js"]
        .into_iter()
        .find(|f| source.join(f).is_file())
        .map(|f| format!("node {f}"))
}

/// Whether `source` looks like a Node project.
pub(crate) fn is_node_project(source: &Path) -> bool {
    source.join("package.json").is_file()
        || ["server.js", "index.js", "app.js"]
            .into_iter()
            .any(|f| source.join(f).is_file())
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
    let mut out = format!("FROM {base_image}\nWORKDIR {APP_DIR}\nCOPY . {APP_DIR}\n");
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
    fn start_command_resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(resolve_start_command(root), None);
        std::fs::write(root.join("app.js"), "").unwrap();
        assert_eq!(resolve_start_command(root).as_deref(), Some("node app.js"));
        std::fs::write(root.join("server.js"), "").unwrap();
        assert_eq!(
            resolve_start_command(root).as_deref(),
            Some("node server.js")
        );
        std::fs::write(root.join("package.json"), r#"{"main":"lib/main.js"}"#).unwrap();
        assert_eq!(
            resolve_start_command(root).as_deref(),
            Some("node lib/main.js")
        );
        std::fs::write(
            root.join("package.json"),
            r#"{"main":"x.js","scripts":{"start":"node s.js --port 1"}}"#,
        )
        .unwrap();
        assert_eq!(
            resolve_start_command(root).as_deref(),
            Some("node s.js --port 1")
        );
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
