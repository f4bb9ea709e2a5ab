//! Second users for the tests that play another local user (an attacker, or the user an
//! app runs as): created with `useradd` when missing, the other user's steps run with
//! `runuser -u USER --`. Without root or the tools a test skips, except under `CI`, where a
//! missing tool fails the test.

use std::process::{Command, Stdio};

/// Whether this runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Skips (returns `None`, saying why) or, under `CI`, fails.
#[track_caller]
pub fn unavailable(why: &str) -> Option<String> {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set, so this test must not skip: {why}"
    );
    eprintln!("skipped: {why}");
    None
}

/// Whether `tool` is on `PATH` (or in `/usr/sbin`, `/sbin`).
pub fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("PATH=$PATH:/usr/sbin:/sbin command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The system user `name`, created (no home, no login shell) when missing; `None` when
/// that cannot be done here (see the module docs).
#[track_caller]
pub fn second_user(name: &str) -> Option<String> {
    if !is_root() {
        return unavailable("playing a second user needs root");
    }
    for tool in ["useradd", "runuser", "id"] {
        if !has_tool(tool) {
            return unavailable(&format!("{tool} is missing (Debian: passwd, util-linux)"));
        }
    }
    let exists = || {
        Command::new("id")
            .arg("-u")
            .arg(name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !exists() {
        // Two tests may race to create it: the loser's "already exists" is fine.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "PATH=$PATH:/usr/sbin:/sbin useradd --system --no-create-home --shell /usr/sbin/nologin {name}"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    assert!(exists(), "useradd {name} failed");
    Some(name.to_owned())
}

/// Runs `sh -c SCRIPT` as `user`; panics unless it succeeds.
#[track_caller]
pub fn run_as(user: &str, script: &str) -> String {
    let out = Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", script])
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "as {user}: {script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
