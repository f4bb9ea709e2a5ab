//! A new user's first hour (issue 14, items 5 and 7–11): config files that report every
//! problem, `deploy app.js`, `update NAME` re-reading conan.toml, deploying again over a
//! failed deployment, hints that point to the right command, output for scripts, daemon
//! settings the environment sets differently, and the API's 404s and 405s. The real binary
//! against a real daemon.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Home, app, unique};

fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("app");
    std::fs::create_dir(&root).unwrap();
    std::fs::copy(app("hello").join("app.js"), root.join("app.js")).unwrap();
    for (name, text) in files {
        std::fs::write(root.join(name), text).unwrap();
    }
    (dir, root)
}

/// One request on the daemon's socket; the status code and the raw answer.
fn raw(home: &Home, request: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(home.path().join("conan.sock")).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The headers and the start of the body are enough (a stream would not end).
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() > 100 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// POSTs a deploy whose JSON body is `len` bytes; the status code and the answer. The daemon
/// may answer and close before the whole body is sent: write errors are expected.
fn oversized_post(home: &Home, len: usize) -> (u16, String) {
    let mut stream = UnixStream::connect(home.path().join("conan.sock")).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /v1/deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        if stream.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// The Done-means of item 5: the four mistakes, all named with their paths, exit 2.
#[test]
fn a_config_with_four_mistakes_exits_2_and_names_all_four() {
    let home = Home::new();
    let (_dir, root) = project(&[(
        "conan.toml",
        "name = \"Bad Name\"\nport = 70000\n[env]\n\"1BAD\" = \"x\"\n[health_check]\npath = \"health\"\n[restart]\nretries = 3\n",
    )]);
    let run = home
        .conan(&["deploy", root.to_str().unwrap()])
        .expect_code(2);
    for path in [
        "- port:",
        "- name:",
        "- env.1BAD:",
        "- health_check.path:",
        "- restart.retries:",
    ] {
        assert_eq!(
            run.stderr.matches(path).count(),
            1,
            "{path}: {}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("5 problems"), "{}", run.stderr);

    std::fs::write(root.join("conan.toml"), "name = \"ok\"\nport = [\n").unwrap();
    let run = home
        .conan(&["deploy", root.to_str().unwrap()])
        .expect_code(2);
    assert!(run.stderr.contains("line 2, column"), "{}", run.stderr);
}

/// Items 5, 9, 10, 11 on one daemon: `deploy app.js` with no health check (ready on TCP),
/// `update NAME` with nothing changed and then re-reading the edited file, progress on
/// stderr, "no lines matched", and `rollback --to 9` pointing to `history`.
#[test]
fn deploy_a_js_file_then_update_by_name_rereads_its_config() {
    let home = Home::new();
    let name = unique("front");
    let (_dir, root) = project(&[(
        "conan.toml",
        &format!("name = \"{name}\"\n[env]\nHOME_TAG = \"1\"\n"),
    )]);
    // `deploy app.js`: the file is the entry point, its directory the app.
    let entry = root.join("app.js");
    let js_name = unique("entry");
    let run = home
        .conan(&["deploy", entry.to_str().unwrap(), "--name", &js_name])
        .ok();
    assert!(
        run.stderr.contains("start_command: node app.js"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!("{js_name} is running")),
        "{}",
        run.stdout
    );
    home.conan(&["rm", "--force", &js_name]).ok();

    let run = home.conan(&["deploy", root.to_str().unwrap()]).ok();
    assert!(
        run.stdout.contains(&format!("{name} is running")),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("waiting for"),
        "progress on stdout: {}",
        run.stdout
    );
    assert!(run.stderr.contains("waiting for"), "{}", run.stderr);
    let view = home.listed(&name).expect("listed");
    assert_eq!(view["status"], "running");

    // Nothing changed: no new revision, and it says so.
    let same = home.conan(&["update", &name]).ok();
    assert!(same.stderr.contains("nothing changed"), "{}", same.stderr);
    let history = home.conan(&["history", &name, "--json"]).ok().json();
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");

    // An edited conan.toml is read again.
    std::fs::write(
        root.join("conan.toml"),
        format!("name = \"{name}\"\n[env]\nHOME_TAG = \"1\"\nADDED = \"yes\"\n"),
    )
    .unwrap();
    let updated = home.conan(&["update", &name, "--json"]).ok().json();
    assert_eq!(updated["revision"], 2, "{updated}");
    assert_eq!(updated["env"], serde_json::json!(["ADDED", "HOME_TAG"]));

    let none = home.conan(&["logs", &name, "--level", "fatal"]).ok();
    assert!(none.stdout.is_empty(), "{}", none.stdout);
    assert!(none.stderr.contains("no lines matched"), "{}", none.stderr);

    let rollback = home.conan(&["rollback", &name, "--to", "9"]).expect_code(1);
    assert!(
        rollback
            .stderr
            .contains(&format!("{name} has no revision 9")),
        "{}",
        rollback.stderr
    );
    assert!(
        rollback.stderr.contains(&format!("conan history {name}")),
        "{}",
        rollback.stderr
    );

    // --json durations are numbers with their unit in the name.
    let status = home.conan(&["status", &name, "--json"]).ok().json();
    assert!(status["metrics"]["uptime_ms"].is_u64(), "{status}");
    assert!(status["metrics"].get("uptime").is_none(), "{status}");
}

/// Items 8 and 9: a deploy rejected because its port is taken says so once, and deploying
/// the same name again (once the port is free) rolls out a new revision instead of
/// "already exists" with the old reason.
#[test]
fn a_failed_deploy_is_not_in_the_way_of_the_next_one() {
    let home = Home::new();
    let name = unique("again");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let hello = app("hello");
    let hello = hello.to_str().unwrap();
    let run = home
        .conan(&["deploy", hello, "--name", &name, "--port", &port])
        .expect_code(1);
    assert_eq!(
        run.stderr.matches("is already in use").count(),
        1,
        "{}",
        run.stderr
    );
    drop(listener);
    let view = home
        .conan(&["deploy", hello, "--name", &name, "--port", &port, "--json"])
        .ok()
        .json();
    assert_eq!(view["status"], "running", "{view}");
    assert_eq!(view["revision"], 2, "{view}");

    // A crash at start: the exit status is named once.
    let run = home
        .conan(&[
            "deploy",
            hello,
            "--name",
            &unique("crash"),
            "--start",
            "node -e 'process.exit(3)'",
        ])
        .expect_code(1);
    assert!(
        !run.stderr.contains("(exit code 3) (exit code 3)"),
        "{}",
        run.stderr
    );
    let crashed = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: deployment '"))
        .and_then(|l| l.split('\'').next())
        .expect("the deployment's name")
        .to_owned();
    let status = home.conan(&["status", &crashed]).ok();
    let reason = status
        .stdout
        .lines()
        .find(|l| l.starts_with("reason"))
        .expect("a reason line");
    assert_eq!(reason.matches("exit code 3").count(), 1, "{reason}");
}

/// Item 11: the API answers 405 (with `Allow`) for a wrong method and 404 for the events
/// of a deployment that does not exist. Item 7: a command whose environment sets a daemon
/// setting differently from the running daemon warns.
#[test]
fn the_api_answers_405_and_404_and_a_differing_setting_is_warned_about() {
    let home = Home::new();
    home.conan(&["ls"]).ok();
    let (code, text) = raw(
        &home,
        "DELETE /v1/daemon HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405, "{text}");
    assert!(text.to_ascii_lowercase().contains("allow: get"), "{text}");
    let (code, text) = raw(
        &home,
        "POST /v1/deployments/x/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 405, "{text}");
    let (code, text) = raw(
        &home,
        "GET /v1/events?deployment=nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 404, "{text}");
    let (code, text) = raw(
        &home,
        "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 404, "{text}");

    // Item 12: what axum + tower-http would give is here too: a body past the 4 MiB limit
    // is answered 413 (the slow-body 408 and head timeouts are in daemon_limits.rs).
    let (code, text) = oversized_post(&home, 5 * 1024 * 1024);
    assert_eq!(code, 413, "{text}");
    assert!(text.contains("length limit"), "{text}");

    let quiet = home.conan(&["ls"]).ok();
    assert!(!quiet.stderr.contains("warning"), "{}", quiet.stderr);
    let home = home.with_env("CONAN_DOCKER_BASE_IMAGE", "mine/node:20");
    let warned = home.conan(&["ls"]).ok();
    assert_eq!(
        warned
            .stderr
            .matches("warning: CONAN_DOCKER_BASE_IMAGE=mine/node:20")
            .count(),
        1,
        "{}",
        warned.stderr
    );
    assert!(warned.stderr.contains("daemon.toml"), "{}", warned.stderr);
    let status = home.conan(&["daemon", "status", "--json"]).ok().json();
    let settings = status["settings"].as_array().expect("settings").clone();
    assert!(
        settings
            .iter()
            .any(|s| s["key"] == "local.port_range" && s["source"] == "CONAN_PORT_RANGE"),
        "{status}"
    );
}
