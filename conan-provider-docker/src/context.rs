//! The build context: the source directory as a tar, filtered by `.dockerignore`.
//!
//! `.git` and `node_modules` (at any depth) are always left out: the image installs its own
//! dependencies, and neither belongs in an image. `.dockerignore` follows Docker's rules:
//! one pattern per line, `#` comments, `*` / `?` within a path component, `**` across
//! components, `!` re-includes, the last matching pattern wins, and a pattern matching a
//! directory excludes everything under it. The Dockerfile itself is always sent.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{DockerError, DockerResult};

/// Directory names never sent to the daemon.
const ALWAYS_EXCLUDED: &[&str] = &[".git", "node_modules"];

/// Parsed `.dockerignore` rules.
#[derive(Clone, Debug, Default)]
pub(crate) struct IgnoreRules {
    rules: Vec<(bool, Vec<String>)>,
}

impl IgnoreRules {
    /// Parses the text of a `.dockerignore` file.
    pub(crate) fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (negate, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let parts: Vec<String> = pattern
                    .split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(str::to_owned)
                    .collect();
                (!parts.is_empty()).then_some((negate, parts))
            })
            .collect();
        Self { rules }
    }

    /// Whether the `/`-separated relative path is excluded.
    pub(crate) fn is_excluded(&self, rel: &str) -> bool {
        let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let mut excluded = false;
        for (negate, pattern) in &self.rules {
            // A pattern matching any leading part of the path matches the path (a directory
            // pattern covers its contents).
            let hit = (1..=components.len()).any(|n| match_parts(pattern, &components[..n]));
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

fn match_parts(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((p, path_rest)) => {
                glob(first.as_bytes(), p.as_bytes()) && match_parts(rest, path_rest)
            }
            None => false,
        },
    }
}

/// `*` and `?` glob of one path component.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob(rest, text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some((b'?', rest)), Some((_, trest))) => glob(rest, trest),
        (Some((b'\\', rest)), Some((t, trest))) if rest.first() == Some(t) => {
            glob(&rest[1..], trest)
        }
        (Some((p, rest)), Some((t, trest))) if p == t => glob(rest, trest),
        _ => false,
    }
}

/// An extra file placed into the context (the generated Dockerfile).
#[derive(Clone, Debug)]
pub(crate) struct ExtraFile {
    /// Path inside the context.
    pub(crate) name: String,
    /// Contents.
    pub(crate) contents: Vec<u8>,
}

/// Tars `source` (filtered) plus `extra` into memory. `keep` names a relative path that is
/// sent even if ignored (the Dockerfile). Blocking: call from `spawn_blocking`.
pub(crate) fn build_context(
    source: &Path,
    keep: Option<&str>,
    extra: Option<&ExtraFile>,
) -> DockerResult<Vec<u8>> {
    let ignore = match std::fs::read_to_string(source.join(".dockerignore")) {
        Ok(text) => IgnoreRules::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => IgnoreRules::default(),
        Err(e) => return Err(ctx_err(source, e)),
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = source.join(&rel_dir);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| ctx_err(&dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| ctx_err(&dir, e))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            let Some(name_str) = name.to_str() else {
                tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            let rel = rel_dir.join(name_str);
            let rel_str = rel.to_string_lossy().replace('\\', "/");
            let file_type = entry.file_type().map_err(|e| ctx_err(&entry.path(), e))?;
            if file_type.is_dir() && ALWAYS_EXCLUDED.contains(&name_str) {
                continue;
            }
            let kept = keep == Some(rel_str.as_str());
            if file_type.is_dir() {
                // Descend even into ignored directories when a later `!` rule may re-include
                // something below them; otherwise skip the whole tree.
                if ignore.is_excluded(&rel_str) && !ignore.rules.iter().any(|(neg, _)| *neg) {
                    continue;
                }
                if !ignore.is_excluded(&rel_str) {
                    builder
                        .append_dir(&rel, entry.path())
                        .map_err(|e| ctx_err(&entry.path(), e))?;
                }
                stack.push(rel);
            } else if kept || !ignore.is_excluded(&rel_str) {
                builder
                    .append_path_with_name(entry.path(), &rel)
                    .map_err(|e| ctx_err(&entry.path(), e))?;
            }
        }
    }
    if let Some(extra) = extra {
        let mut header = tar::Header::new_gnu();
        header.set_size(extra.contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, &extra.name, extra.contents.as_slice())
            .map_err(|e| ctx_err(Path::new(&extra.name), e))?;
    }
    builder.into_inner().map_err(|e| ctx_err(source, e))
}

fn ctx_err(path: &Path, e: io::Error) -> DockerError {
    DockerError::Context(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns() {
        let rules = IgnoreRules::parse("# c\n*.log\nsecret/\n**/tmp\n!keep.log\n/build\n");
        assert!(rules.is_excluded("a.log"));
        assert!(!rules.is_excluded("keep.log"));
        assert!(rules.is_excluded("secret/key.pem"));
        assert!(rules.is_excluded("x/y/tmp/z"));
        assert!(rules.is_excluded("build"));
        assert!(!rules.is_excluded("src/a.log"));
        assert!(!rules.is_excluded("server.js"));
    }

    #[test]
    fn glob_components() {
        assert!(glob(b"*.js", b"server.js"));
        assert!(glob(b"a?c", b"abc"));
        assert!(!glob(b"*.js", b"server.ts"));
        assert!(glob(b"*", b""));
    }

    #[test]
    fn context_skips_git_node_modules_and_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "x").unwrap();
        std::fs::create_dir_all(root.join("node_modules/a")).unwrap();
        std::fs::write(root.join("node_modules/a/i.js"), "x").unwrap();
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::write(root.join("lib/util.js"), "x").unwrap();
        std::fs::write(root.join("server.js"), "x").unwrap();
        std::fs::write(root.join("debug.log"), "x").unwrap();
        std::fs::write(root.join("Dockerfile"), "FROM x").unwrap();
        std::fs::write(root.join(".dockerignore"), "*.log\nDockerfile\n").unwrap();
        let extra = ExtraFile {
            name: ".conan.Dockerfile".into(),
            contents: b"FROM y".to_vec(),
        };
        let tar_bytes = build_context(root, Some("Dockerfile"), Some(&extra)).unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ".conan.Dockerfile",
                ".dockerignore",
                "Dockerfile",
                "lib",
                "lib/util.js",
                "server.js"
            ]
        );
    }
}
