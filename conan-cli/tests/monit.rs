//! `conan monit` for real: the binary in a tmux pane (a real terminal, as over SSH), a real
//! daemon and real Node apps. Keys go in with `send-keys`, the screen comes back with
//! `capture-pane`; the restart is checked in the daemon's state, and after each way out
//! (`q`, Ctrl-C, SIGTERM) the pane must be back on the normal screen in cooked mode.
//!
//! Needs tmux: CI installs it (`.ci/run`) and fails without it; elsewhere the test skips
//! and says why.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Home, app, unique};

const DEADLINE: Duration = Duration::from_secs(30);

/// A tmux server of this test alone (its own socket, in a temporary directory), killed on
/// drop even when the test fails.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    /// A server on a fresh socket, or why there cannot be one.
    fn start() -> Result<Self, String> {
        match Command::new("tmux").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("tmux -V failed: {}", out.status)),
            Err(e) => return Err(format!("tmux is not installed ({e})")),
        }
        let dir = tempfile::Builder::new()
            .prefix("conan-monit-tmux-")
            .tempdir()
            .map_err(|e| format!("cannot make a directory for the tmux socket: {e}"))?;
        Ok(Self { dir })
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            // Nobody's ~/.tmux.conf.
            .args(["-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A detached 120x40 session running `conan monit` for `home`, then (in the same
    /// shell) its exit code and the terminal's mode, then a long sleep that keeps the pane
    /// readable.
    fn monit(&self, session: &str, home: &Home) {
        let script = format!(
            "env -u XDG_STATE_HOME CONAN_HOME='{}' NO_COLOR=1 '{}' monit; \
             echo monit-exit=$?; stty -a | grep -o -- '-\\?icanon'; exec sleep 600",
            home.path().display(),
            env!("CARGO_BIN_EXE_conan"),
        );
        self.ok(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "40",
            &script,
        ]);
    }

    fn screen(&self, session: &str) -> String {
        self.ok(&["capture-pane", "-p", "-t", session])
    }

    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.ok(&args);
    }

    /// Polls the pane until `check` holds; panics with the last screen after the deadline.
    #[track_caller]
    fn wait_for(&self, session: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen(session);
            if check(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; the pane shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// After a way out: the shell's lines on the normal screen, in cooked mode.
    #[track_caller]
    fn expect_clean_exit(&self, session: &str) {
        let screen = self.wait_for(session, "monit to exit", |s| s.contains("monit-exit="));
        assert!(screen.contains("monit-exit=0"), "exit code:\n{screen}");
        let screen = self.wait_for(session, "the terminal mode", |s| s.contains("icanon"));
        assert!(
            screen.lines().any(|l| l.trim() == "icanon"),
            "the terminal is left in raw mode (-icanon):\n{screen}"
        );
        assert!(
            !screen.contains("conan monit") && !screen.contains("NAME"),
            "the view is still on screen:\n{screen}"
        );
        assert_eq!(
            self.ok(&["display-message", "-p", "-t", session, "#{alternate_on}"])
                .trim(),
            "0",
            "the alternate screen is still on"
        );
    }

    /// The pid of the pane's shell's child (the `conan monit` process).
    fn monit_pid(&self, session: &str) -> i32 {
        let shell = self.ok(&["display-message", "-p", "-t", session, "#{pane_pid}"]);
        let shell = shell.trim();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no child of the pane's shell {shell}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn pid_of(home: &Home, name: &str) -> Option<u64> {
    home.listed(name).and_then(|v| v["pid"].as_u64())
}

#[test]
fn monit_in_a_real_terminal_shows_follows_restarts_and_leaves_the_terminal_clean() {
    let tmux = match Tmux::start() {
        Ok(t) => t,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{why}: CI must install tmux (.ci/run does)")
        }
        Err(why) => {
            eprintln!("skipping the conan monit tmux test: {why}");
            return;
        }
    };
    let home = Home::new();
    // Samples every 200 ms, so that the sparklines have a history within the test.
    std::fs::write(
        home.path().join("daemon.toml"),
        "[monitor]\nsample_interval = \"200ms\"\n",
    )
    .expect("write daemon.toml");
    let hello = app("hello");
    let hello = hello.to_str().expect("utf-8 path");
    let first = unique("monit-a");
    let second = unique("monit-b");
    for name in [&first, &second] {
        home.conan(&[
            "deploy",
            hello,
            "--name",
            name,
            "--health",
            "/health",
            "--env",
            &home.tag_env(),
        ])
        .ok();
    }
    let first_pid = pid_of(&home, &first).expect("first pid");
    let second_pid = pid_of(&home, &second).expect("second pid");

    tmux.monit("main", &home);
    let screen = tmux.wait_for("main", "both deployments running and healthy", |s| {
        [&first, &second].iter().all(|name| {
            s.lines().any(|l| {
                l.contains(name.as_str()) && l.contains("running") && l.contains("healthy")
            })
        })
    });
    assert!(
        screen.contains("conan monit  2 deployments · 2 running"),
        "{screen}"
    );
    assert!(
        screen.contains(&format!("logs: {first}")),
        "the first one's logs are followed:\n{screen}"
    );

    // Select the second one, ask to restart it, confirm.
    tmux.keys("main", &["j"]);
    tmux.wait_for("main", "the log pane to follow the second", |s| {
        s.contains(&format!("logs: {second}"))
    });
    tmux.keys("main", &["r"]);
    tmux.wait_for("main", "the confirmation prompt", |s| {
        s.contains(&format!("restart {second}? press y to confirm"))
    });
    tmux.keys("main", &["y"]);
    tmux.wait_for("main", "the restart's outcome", |s| {
        s.contains(&format!("restart {second}: done, now running"))
    });
    let new_pid = pid_of(&home, &second).expect("pid after the restart");
    assert_ne!(new_pid, second_pid, "the second deployment was restarted");
    assert_eq!(
        pid_of(&home, &first),
        Some(first_pid),
        "the first one was left alone"
    );
    let id = home.listed(&second).expect("listed")["id"].clone();
    let audit = home.conan(&["events", "--json"]).ok().json();
    let restarted = audit.as_array().expect("audit entries").iter().any(|e| {
        e["deployment"] == id
            && e["action"] == "operation"
            && e["kind"] == "restart"
            && e["outcome"]["result"] == "succeeded"
    });
    assert!(restarted, "the audit log has the restart: {audit:#}");
    // The log pane goes on following across the restart: the new process says hello.
    tmux.wait_for("main", "the restarted app's startup line", |s| {
        s.contains(&format!("pid {new_pid}"))
    });

    // q leaves a clean terminal.
    tmux.keys("main", &["q"]);
    tmux.expect_clean_exit("main");

    // So does Ctrl-C (a key in raw mode).
    tmux.monit("ctrl-c", &home);
    tmux.wait_for("ctrl-c", "the view", |s| s.contains(first.as_str()));
    tmux.keys("ctrl-c", &["C-c"]);
    tmux.expect_clean_exit("ctrl-c");

    // And SIGTERM.
    tmux.monit("sigterm", &home);
    tmux.wait_for("sigterm", "the view", |s| s.contains(first.as_str()));
    let pid = tmux.monit_pid("sigterm");
    common::kill(pid, 15);
    tmux.expect_clean_exit("sigterm");

    // Without a terminal it says so instead of scribbling on a pipe.
    let piped = home.conan(&["monit"]).expect_code(2);
    assert!(
        piped.stderr.contains("conan monit needs a terminal"),
        "{}",
        piped.stderr
    );
}
