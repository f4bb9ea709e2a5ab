//! The front door as another local user, a hostile app or a script would try it (issue 14,
//! security items 1–4): the real binary, a real daemon, real apps.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Home, unique, users, wait_until};

/// A directory holding `app.js` with `code`, readable by every user (so an app running as
/// another user can start in it); removed on drop.
struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn new(code: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("conan-sec-app-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("app.js"), code).unwrap();
        Self { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 path")
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }
}

/// An HTTP app that prints `line` once it listens.
fn printing(line: &str) -> String {
    format!(
        "require('http').createServer((q, s) => s.end('ok')).listen(process.env.PORT, () => console.log({line}));\n"
    )
}

/// What an app writes to take over a terminal: the clipboard (OSC 52), a hidden link
/// (OSC 8), the window title, a screen clear and the alternate screen.
const HOSTILE: &str = "'pwn \\x1b]52;c;aGVsbG8=\\x07 \\x1b]8;;http://evil\\x1b\\\\link\\x1b]8;;\\x1b\\\\ \\x1b]0;title\\x07 \\x1b[2J\\x1b[?1049h end'";

/// Runs `conan ARGS` of `home` on a real pty (`script` from util-linux); what the pty
/// showed. `None` when `script` is missing outside CI.
fn on_pty(home: &Home, args: &[&str]) -> Option<String> {
    if !users::has_tool("script") {
        return users::unavailable("script (util-linux) is missing").map(|_| String::new());
    }
    let line = std::iter::once(env!("CARGO_BIN_EXE_conan"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .envs(home.run_env())
        .stdin(Stdio::null())
        .output()
        .expect("script");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn app_output_reaches_a_terminal_escaped_and_files_and_json_as_written() {
    let home = Home::new();
    let name = unique("esc");
    let app = App::new(&printing(HOSTILE));
    home.conan(&["deploy", app.path(), "--name", &name]).ok();
    wait_until("the hostile line", Duration::from_secs(20), || {
        home.conan(&["logs", &name]).stdout.contains("pwn")
    });
    let Some(shown) = on_pty(&home, &["logs", &name]) else {
        return;
    };
    assert!(shown.contains("pwn ^[]52;c;aGVsbG8=^G "), "{shown:?}");
    assert!(shown.contains("^[]8;;http://evil^[\\link"), "{shown:?}");
    assert!(shown.contains("^[[2J^[[?1049h end"), "{shown:?}");
    assert!(
        !shown.contains('\u{1b}'),
        "a raw ESC reached the pty: {shown:?}"
    );
    assert!(
        !shown.contains('\u{7}'),
        "a raw BEL reached the pty: {shown:?}"
    );
    // `--raw` on the pty, a pipe and `--json` get the bytes the app wrote.
    let raw = on_pty(&home, &["logs", &name, "--raw"]).unwrap_or_default();
    assert!(raw.contains("\u{1b}]52;c;aGVsbG8=\u{7}"), "{raw:?}");
    let piped = home.conan(&["logs", &name]).ok().stdout;
    assert!(piped.contains("\u{1b}]52;c;aGVsbG8=\u{7}"), "{piped:?}");
    let json = home.conan(&["logs", &name, "--json"]).ok().stdout;
    assert!(json.contains(r"\u001b]52;c;aGVsbG8=\u0007"), "{json}");

    // The failure bundle `conan deploy` prints quotes the app's last lines: escaped too.
    let crashing = App::new(&format!("console.log({HOSTILE}); process.exit(3);\n"));
    let bad = unique("esc-fail");
    let shown = on_pty(&home, &["deploy", crashing.path(), "--name", &bad]).unwrap_or_default();
    assert!(shown.contains("pwn ^[]52;c;aGVsbG8=^G"), "{shown:?}");
    for raw in [
        "\u{1b}]52",
        "\u{1b}]8;",
        "\u{1b}]0;",
        "\u{1b}[2J",
        "\u{1b}[?1049h",
    ] {
        assert!(!shown.contains(raw), "{raw:?} reached the pty: {shown:?}");
    }
}

/// Runs `conan ARGS` with its stdout a pipe whose reader is gone; (exit code, stderr).
fn with_closed_stdout(home: &Home, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conan"))
        .args(args)
        .envs(home.run_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn conan");
    drop(child.stdout.take());
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("conan {args:?} did not end after its reader left");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        reader.join().unwrap_or_default(),
    )
}

#[test]
fn a_closed_pipe_ends_commands_quietly_and_far_times_are_usage_errors() {
    let home = Home::new();
    let name = unique("pipe");
    let app = App::new(&printing("'hello'"));
    home.conan(&["deploy", app.path(), "--name", &name]).ok();
    home.conan(&["restart", &name]).ok();
    for args in [
        vec!["events"],
        vec!["status", &name],
        vec!["status", &name, "--json"],
        vec!["ls", "--json"],
        vec!["history", &name, "--json"],
        vec!["logs", &name],
        vec!["logs", &name, "--json"],
    ] {
        let (code, stderr) = with_closed_stdout(&home, &args);
        assert_eq!(code, 0, "conan {args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "conan {args:?}: {stderr}"
        );
    }
    // As a shell runs it.
    let script = format!(
        "'{}' events | head -1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_conan")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .envs(home.run_env())
        .output()
        .expect("bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    for args in [
        ["logs", name.as_str(), "--since", "99999999999h"],
        ["logs", name.as_str(), "--until", "99999999999h"],
        ["logs", name.as_str(), "--since", "9999999999999999999999h"],
    ] {
        let run = home.conan(&args).expect_code(2);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(run.stderr.contains("--"), "{}", run.stderr);
    }
}

/// Every regular file under `dir` (recursively), with its mode.
fn files_under(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path(), meta.permissions().mode() & 0o7777));
            }
        }
    }
    out
}

#[test]
fn env_values_are_sealed_at_rest_files_are_private_and_the_daemon_env_stays_home() {
    // The daemon (auto-started by the first command) carries credentials of its own.
    let home = Home::new()
        .with_env("NODE_AUTH_TOKEN", "npm-token-of-the-daemon")
        .with_env("NODE_OPTIONS", "--require /nonexistent/conan-preload.js")
        .with_env("LC_SMUGGLED", "from-ssh")
        .with_env("LC_ALL", "C.UTF-8");
    let name = unique("seal");
    let secret = format!("s3cr3t-{}-value", std::process::id());
    // The app proves it got its secret (its length) and lists the names it inherited.
    let app = App::new(&printing(
        "'len=' + (process.env.API_SECRET || '').length + ' names=' + Object.keys(process.env).sort().join(',')",
    ));
    home.conan(&[
        "deploy",
        app.path(),
        "--name",
        &name,
        "--env",
        &format!("API_SECRET={secret}"),
    ])
    .ok();
    home.conan(&["update", &name, "--env", &format!("OTHER={secret}-2")])
        .ok();
    let line = {
        let mut found = String::new();
        wait_until("the app's line", Duration::from_secs(20), || {
            let logs = home.conan(&["logs", &name]).stdout;
            found = logs
                .lines()
                .rfind(|l| l.contains("names="))
                .unwrap_or("")
                .to_owned();
            found.contains("OTHER")
        });
        found
    };
    assert!(line.contains(&format!("len={}", secret.len())), "{line}");
    for leaked in ["NODE_AUTH_TOKEN", "NODE_OPTIONS", "LC_SMUGGLED"] {
        assert!(!line.contains(leaked), "{leaked} reached the app: {line}");
    }
    assert!(line.contains("LC_ALL"), "the locale is inherited: {line}");

    // A backup taken, the WAL still there: no file of the home holds the secret.
    home.conan(&["daemon", "stop"]).ok();
    let files = files_under(home.path());
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.strip_prefix(home.path()).unwrap().display().to_string())
        .collect();
    for expected in ["conan.db", "conan.db.bak", "conan.key"] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected} in {names:?}"
        );
    }
    for (path, mode) in &files {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret in the clear",
            path.display()
        );
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
    }
    // A copy of the database without its key holds no readable config: the daemon of a
    // new home reports the rows as damaged instead of inventing values.
    let copy = Home::new();
    std::fs::create_dir_all(copy.path()).unwrap();
    for file in ["conan.db", "conan.db-wal", "conan.db.bak"] {
        if home.path().join(file).exists() {
            std::fs::copy(home.path().join(file), copy.path().join(file)).unwrap();
        }
    }
    let listed = copy.conan(&["ls", "--json"]).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    let status = copy.conan(&["daemon", "status", "--json"]);
    assert!(
        status.stdout.contains("cannot be opened") || status.stdout.contains("damaged"),
        "{}\n{}",
        status.stdout,
        status.stderr
    );
}

#[test]
fn a_deployment_runs_as_its_user_and_cannot_read_the_daemon_state() {
    let Some(user) = users::second_user("conan-test-app") else {
        return;
    };
    let home = Home::new();
    let name = unique("as-user");
    let db = home.path().join("conan.db");
    let app = App::new(&printing(&format!(
        "'uid=' + process.getuid() + ' gid=' + process.getgid() + ' home=' + process.env.HOME + ' db=' + (() => {{ try {{ require('fs').readFileSync('{}'); return 'read'; }} catch (e) {{ return e.code; }} }})()",
        db.display()
    )));
    app.write(
        "conan.toml",
        &format!("[provider_options.local]\nuser = \"{user}\"\n"),
    );
    home.conan(&["deploy", app.path(), "--name", &name]).ok();
    let uid = users::run_as(&user, "id -u").trim().to_owned();
    let mut line = String::new();
    wait_until("the app's line", Duration::from_secs(20), || {
        line = home.conan(&["logs", &name]).stdout;
        line.contains("uid=")
    });
    assert!(line.contains(&format!("uid={uid} ")), "{line}");
    assert!(
        line.contains("db=EACCES"),
        "the app read the daemon's database: {line}"
    );
    assert!(!line.contains("home=/root"), "{line}");
    // Its logs still work: the line above came through them; a restart works too.
    home.conan(&["restart", &name]).ok();

    // An unknown user is a config error naming the field.
    let other = App::new(&printing("'x'"));
    other.write(
        "conan.toml",
        "[provider_options.local]\nuser = \"no-such-user-conan\"\n",
    );
    let run = home
        .conan(&["deploy", other.path(), "--name", &unique("no-user")])
        .expect_code(2);
    assert!(
        run.stderr.contains("provider_options.local.user") && run.stderr.contains("no user"),
        "{}",
        run.stderr
    );
}

#[test]
fn another_user_cannot_redirect_or_block_port_locks_through_tmp() {
    let Some(attacker) = users::second_user("conan-test-attacker") else {
        return;
    };
    let home = Home::new();
    let range = home
        .run_env()
        .into_iter()
        .find(|(k, _)| k == "CONAN_PORT_RANGE")
        .map(|(_, v)| v)
        .expect("a port range");
    let (lo, hi) = range.split_once('-').expect("lo-hi");
    let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
    let tmp = std::env::temp_dir();
    let victim = tmp.join(format!("conan-sec-victim-{}", std::process::id()));
    // The old shared directory and the per-uid fallback, prepared by the attacker: world
    // writable, a link per port of the range to where root would create files, and a lock
    // held on a port file.
    let shared = tmp.join("conan-ports");
    let fallback = tmp.join("conan-ports-0");
    let mut script = String::new();
    for dir in [&shared, &fallback] {
        script.push_str(&format!(
            "mkdir -p {d} 2>/dev/null; chmod 777 {d} 2>/dev/null; ",
            d = dir.display()
        ));
        for port in lo..=hi {
            script.push_str(&format!(
                "ln -s {v}-{port} {d}/{port} 2>/dev/null; ",
                v = victim.display(),
                d = dir.display()
            ));
        }
    }
    script.push_str("true");
    users::run_as(&attacker, &script);
    let _cleanup = RemoveLinks {
        dirs: vec![shared.clone(), fallback.clone()],
        ports: lo..=hi,
    };
    let _holder = Command::new("runuser")
        .args(["-u", &attacker, "--", "flock", "-n"])
        .arg(fallback.join("held"))
        .args(["sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop);
    let shared_mode = std::fs::metadata(&shared).map(|m| m.permissions().mode());

    let name = unique("ports");
    let app = App::new(&printing("'up'"));
    home.conan(&["deploy", app.path(), "--name", &name]).ok();
    home.conan(&["deploy", app.path(), "--name", &unique("ports")])
        .ok();
    for port in lo..=hi {
        let target = PathBuf::from(format!("{}-{port}", victim.display()));
        assert!(
            target.symlink_metadata().is_err(),
            "{} was created through a planted link",
            target.display()
        );
    }
    assert_eq!(
        std::fs::metadata(&shared)
            .map(|m| m.permissions().mode())
            .ok(),
        shared_mode.ok(),
        "the daemon changed the mode of {}",
        shared.display()
    );
    // The locks the daemon took are in root's own directory, mode 0700.
    let own = Path::new("/run/conan/ports");
    let meta = std::fs::metadata(own).expect("/run/conan/ports");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    let held: Vec<u16> = std::fs::read_dir(own)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|p| (lo..=hi).contains(p))
        .collect();
    assert_eq!(
        held.len(),
        2,
        "one lock per deployment in {}: {held:?}",
        own.display()
    );
}

/// Removes the links the attacker planted (and its fallback directory) on drop.
struct RemoveLinks {
    dirs: Vec<PathBuf>,
    ports: std::ops::RangeInclusive<u16>,
}

impl Drop for RemoveLinks {
    fn drop(&mut self) {
        for dir in &self.dirs {
            for port in self.ports.clone() {
                let link = dir.join(port.to_string());
                if link
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
                {
                    let _ = std::fs::remove_file(link);
                }
            }
        }
        let _ = std::fs::remove_file(self.dirs[1].join("held"));
        let _ = std::fs::remove_dir(&self.dirs[1]);
    }
}

/// A child killed (and reaped) on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
