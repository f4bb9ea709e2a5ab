//! Starting the daemon in the background, so that it outlives the command that started it.
//!
//! `conan <cmd>` runs `conan daemon --background` (stdio on `CONAN_HOME/daemon.log`) and
//! waits for it; that intermediate process calls `setsid` (a new session, no controlling
//! terminal, out of the shell's job control), starts the real `conan daemon` and exits at
//! once. The daemon is thus a grandchild of the command, reparented to init: the classic
//! double fork, done with two `exec`s because `unsafe` (and so `fork`) is forbidden here.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{CliError, CliResult};
use crate::home::Home;

fn exe() -> CliResult<std::path::PathBuf> {
    std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot find the conan executable: {e}")))
}

/// Starts a daemon for `home` in the background and returns once it is detached (not once
/// it answers). Blocking: it waits for the intermediate process.
///
/// # Errors
/// When the log cannot be opened or the process cannot be spawned.
pub fn spawn_daemon(home: &Home) -> CliResult {
    home.ensure()
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", home.root().display())))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(home.log())
        .map_err(|e| CliError::failed(format!("cannot open {}: {e}", home.log().display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| CliError::failed(format!("cannot open {}: {e}", home.log().display())))?;
    let status = Command::new(exe()?)
        .args(["daemon", "--background"])
        .env("CONAN_HOME", home.root())
        .current_dir(home.root())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| CliError::failed(format!("cannot start the Conan daemon: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(
            CliError::failed(format!("cannot start the Conan daemon ({status})"))
                .hint(format!("see {}", home.log().display())),
        )
    }
}

/// The intermediate step of [`spawn_daemon`]: a new session, then the daemon, then exit.
///
/// # Errors
/// When the daemon cannot be spawned.
pub fn detach() -> CliResult {
    // Fails only when we already lead a process group, which a spawned child never does.
    if let Err(e) = nix::unistd::setsid() {
        eprintln!("conan: setsid failed: {e}");
    }
    Command::new(exe()?)
        .arg("daemon")
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the Conan daemon: {e}")))?;
    Ok(())
}

/// The error when an auto-started daemon never answered: the last lines of its log.
pub async fn did_not_start(home: &Home, waited: Duration) -> CliError {
    let log = home.log();
    let tail = crate::blocking::infallible(Vec::new(), move || last_lines(&log, 10)).await;
    let tail = tail.iter().map(|l| format!("  {l}")).collect();
    CliError::failed(format!(
        "the Conan daemon did not start (waited {:.1}s)",
        waited.as_secs_f64()
    ))
    .details(tail)
    .hint(format!("see {}", home.log().display()))
}

/// The last `n` lines of a file (none when it cannot be read).
fn last_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut lines = std::collections::VecDeque::with_capacity(n + 1);
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    lines.into()
}
