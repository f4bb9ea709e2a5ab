//! `conan docker base-image`: a Node.js base image for generated Dockerfiles, made from
//! this machine's node, for a Docker daemon that cannot pull `node:20-slim` (no registry
//! reachable). The steps are `assets/make-node-image.sh`, embedded in the binary.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{CliError, CliResult};
use crate::home::Home;

const SCRIPT: &str = include_str!("../../assets/make-node-image.sh");

/// Builds `tag` from `node` (nothing when the daemon has it) and makes it the daemon's
/// `docker.base_image` unless `daemon.toml` names one already.
///
/// # Errors
/// Exit 1 when bash or the docker command is missing or the build fails.
pub fn base_image(home: &Home, tag: &str, node: &Path) -> CliResult {
    let mut child = Command::new("bash")
        .args(["-s", "--", tag])
        .env("NODE_BIN", node)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot run bash: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(SCRIPT.as_bytes())
            .map_err(|e| CliError::failed(format!("cannot run the build script: {e}")))?;
    }
    let status = child
        .wait()
        .map_err(|e| CliError::failed(format!("cannot run the build script: {e}")))?;
    if !status.success() {
        return Err(
            CliError::failed(format!("building {tag} failed (see above)"))
                .hint("it needs the docker command, a running Docker daemon and a static busybox"),
        );
    }
    println!("{tag} is on the Docker daemon");
    let path = home.settings();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(CliError::failed(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| CliError::usage(format!("{}: {}", path.display(), e.message().trim())))?;
    let docker = table.get("docker").and_then(toml::Value::as_table);
    match docker
        .and_then(|d| d.get("base_image"))
        .and_then(toml::Value::as_str)
    {
        Some(current) if current == tag => println!("docker.base_image is {tag} already"),
        Some(current) => println!(
            "{} sets docker.base_image = \"{current}\": change it to \"{tag}\" to use this image",
            path.display()
        ),
        None if docker.is_some() => println!(
            "add base_image = \"{tag}\" under [docker] in {} to use this image",
            path.display()
        ),
        None => {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
            let sep = if text.is_empty() || text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            write!(
                file,
                "{sep}\n# Written by `conan docker base-image`.\n[docker]\nbase_image = \"{tag}\"\n"
            )
            .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
            println!("set docker.base_image = \"{tag}\" in {}", path.display());
        }
    }
    if crate::daemon::lock::DaemonLock::is_held(&home.lock()) {
        println!(
            "a daemon is running: `conan daemon stop` so that the next command starts one with this setting"
        );
    }
    Ok(())
}
