//! `conan daemon status` says how local instances are contained (issue 10, finding 7):
//! a cgroup per instance where the machine allows it, else process markers, and which
//! resource limits are enforced.

mod common;

use common::Home;

/// The value of the `containment` row of `conan daemon status`.
fn containment_row(home: &Home) -> String {
    let text = home.conan(&["daemon", "status"]).ok().stdout;
    text.lines()
        .find_map(|l| l.strip_prefix("containment  "))
        .unwrap_or_else(|| panic!("no containment line in:\n{text}"))
        .to_owned()
}

#[test]
fn daemon_status_shows_the_containment_in_force() {
    let home = Home::new();
    home.conan(&["ls"]).ok();
    let row = containment_row(&home);
    let json = home.conan(&["daemon", "status", "--json"]).ok().json();
    assert_eq!(json["containment"].as_str(), Some(row.as_str()));
    if row.starts_with("cgroup v") {
        assert!(
            row.contains("/conan") && row.contains("memory limit: ") && row.contains("cpu limit: "),
            "{row}"
        );
    } else {
        // Where no cgroup can be made, the reason is given.
        assert!(row.starts_with("process markers (no cgroup: "), "{row}");
    }
}

#[test]
fn cgroups_can_be_turned_off_and_status_says_so() {
    let home = Home::new().with_env("CONAN_LOCAL_CGROUPS", "off");
    home.conan(&["ls"]).ok();
    assert_eq!(
        containment_row(&home),
        "process markers (no cgroup: disabled by configuration)"
    );
}

/// An app that, once listening, starts a process no marker tracking can see: a scrubbed
/// environment (`env -i`), its own session (`setsid`), and a parent that exits at once.
/// The escapee writes its pid to `escapee.pid` in the app's directory.
const ESCAPING_APP: &str = r#"
const http = require('http');
const { spawn } = require('child_process');
const pidfile = require('path').join(process.cwd(), 'escapee.pid');
http.createServer((req, res) => { res.writeHead(200); res.end('ok'); })
  .listen(Number(process.env.PORT), process.env.HOST, () => {
    const script = `require('fs').writeFileSync(${JSON.stringify(pidfile)}, String(process.pid)); setInterval(() => {}, 1000)`;
    spawn('/usr/bin/env', ['-i', '/bin/sh', '-c',
      `/usr/bin/setsid ${process.execPath} -e "$0" & exit 0`, script], { stdio: 'ignore' });
  });
"#;

/// Kills the escapee whatever the test's outcome.
struct KillEscapee(std::path::PathBuf);

impl Drop for KillEscapee {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.0) {
            common::kill(pid, 9);
        }
    }
}

fn read_pid(file: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Regression (issue 10, finding 7): the escapee survived `rm`; with a cgroup it dies,
/// also when a new daemon (after `daemon stop`) removes the deployment.
#[test]
fn rm_by_a_new_daemon_kills_a_double_fork_that_scrubbed_its_environment() {
    let home = Home::new();
    home.conan(&["ls"]).ok();
    let row = containment_row(&home);
    if !row.starts_with("cgroup v") {
        eprintln!("skipping: {row} (the fallback tracks processes by markers)");
        return;
    }
    let app = tempfile::tempdir().expect("tempdir");
    std::fs::write(app.path().join("server.js"), ESCAPING_APP).expect("write app");
    let pidfile = app.path().join("escapee.pid");
    let _kill = KillEscapee(pidfile.clone());
    let name = common::unique("escape");
    home.conan(&[
        "deploy",
        app.path().to_str().expect("utf-8 path"),
        "--name",
        &name,
        "--start",
        "exec node server.js",
        "--health",
        "/",
    ])
    .ok();
    let mut pid = None;
    common::wait_until(
        "the escapee runs",
        std::time::Duration::from_secs(10),
        || {
            pid = read_pid(&pidfile);
            pid.is_some_and(common::alive)
        },
    );
    let pid = pid.expect("escapee pid");
    home.conan(&["daemon", "stop"]).ok();
    assert!(common::alive(pid), "apps outlive the daemon");
    // The next command starts a new daemon, which adopts the deployment and removes it.
    home.conan(&["rm", "--force", &name]).ok();
    assert!(!common::alive(pid), "the escapee (pid {pid}) survived rm");
}
