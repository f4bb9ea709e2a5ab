//! End-to-end tests of `conan` with the local provider: the real binary, a real daemon in a
//! private `CONAN_HOME`, real Node processes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Home, alive, app, http_get, unique, wait_until};

fn pid_of(view: &serde_json::Value) -> i32 {
    view["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no pid in {view}"))
}

#[test]
fn local_deploy_ls_logs_update_rollback_stop_rm() {
    let home = Home::new();
    let name = unique("life");
    let hello = app("hello");
    let hello = hello.to_str().unwrap();
    let secret = "s3cr3t-value-never-printed";

    // deploy: waits until running, shows phases as plain lines, prints the deployment.
    let run = home
        .conan(&[
            "deploy",
            hello,
            "--name",
            &name,
            "--health",
            "/health",
            "--env",
            &format!("API_TOKEN={secret}"),
        ])
        .ok();
    // Progress on stderr (issue 14, item 11): stdout holds only the result.
    assert!(run.stderr.contains("waiting for health"), "{}", run.stderr);
    assert!(!run.stdout.contains("waiting for health"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{name} is running")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("API_TOKEN"), "{}", run.stdout);

    // ls --json: stable fields, running, a pid that answers HTTP.
    let view = home.listed(&name).expect("listed");
    assert_eq!(view["status"], "running");
    assert_eq!(view["provider"], "local");
    assert_eq!(view["revision"], 1);
    let first_pid = pid_of(&view);
    assert!(alive(first_pid));
    let url = view["url"].as_str().expect("url").to_owned();
    let answer = http_get(&url, "/").expect("app answers");
    assert!(answer.contains("hello from"), "{answer}");

    // human ls is an aligned table.
    let ls = home.conan(&["ls"]).ok();
    assert!(ls.stdout.starts_with("NAME"), "{}", ls.stdout);
    assert!(ls.stdout.contains(&name), "{}", ls.stdout);

    // status with health and metrics.
    let status = home.conan(&["status", &name, "--json"]).ok().json();
    assert_eq!(status["health"]["status"], "healthy");
    assert!(
        status["metrics"]["memory_bytes"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );

    // logs: the startup line and the request we made, with filters.
    wait_until("the request in the logs", Duration::from_secs(10), || {
        let grep = home.conan(&["logs", &name, "--grep", "GET /"]).ok();
        grep.stdout.lines().any(|l| l.ends_with("GET /"))
    });
    let logs = home.conan(&["logs", &name, "-n", "50"]).ok();
    assert!(logs.stdout.contains("hello listening"), "{}", logs.stdout);
    let json_logs = home
        .conan(&["logs", &name, "--json", "--stdout", "--since", "10m"])
        .ok();
    for line in json_logs.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("NDJSON line");
        assert_eq!(v["stream"], "stdout");
    }
    assert!(
        home.conan(&["logs", &name, "--stderr"])
            .ok()
            .stdout
            .trim()
            .is_empty()
    );

    // update: a new revision with a new pid (blue-green), env names kept.
    let updated = home
        .conan(&["update", &name, "--env", "GREETING=hi", "--json"])
        .ok()
        .json();
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["status"], "running");
    assert_eq!(updated["env"], serde_json::json!(["API_TOKEN", "GREETING"]));
    let second_pid = pid_of(&updated);
    assert_ne!(second_pid, first_pid);
    wait_until("the old revision to exit", Duration::from_secs(10), || {
        !alive(first_pid)
    });

    // rollback: revision 3 reuses revision 1's config.
    let rolled = home.conan(&["rollback", &name, "--json"]).ok().json();
    assert_eq!(rolled["revision"], 3);
    assert_eq!(rolled["env"], serde_json::json!(["API_TOKEN"]));
    let history = home.conan(&["history", &name, "--json"]).ok().json();
    let revisions = history.as_array().expect("history is an array");
    assert_eq!(revisions.len(), 3);
    assert_eq!(revisions[2]["cause"], "rollback");
    assert_eq!(revisions[2]["source_revision"], 1);
    assert_eq!(revisions[2]["serving"], true);
    let third_pid = pid_of(&rolled);

    // stop: the process is gone, the deployment stays listed as stopped.
    home.conan(&["stop", &name]).ok();
    assert_eq!(home.listed(&name).expect("listed")["status"], "stopped");
    wait_until("the app to exit", Duration::from_secs(10), || {
        !alive(third_pid)
    });

    // events: the audit log mentions the operations.
    let events = home.conan(&["events"]).ok();
    assert!(
        events.stdout.contains("rollback revision 3 succeeded"),
        "{}",
        events.stdout
    );

    // rm: gone.
    home.conan(&["rm", &name]).ok();
    assert!(home.listed(&name).is_none());

    // Env values never appear in Conan's own output or log.
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
    assert!(!log.contains(secret), "daemon.log leaks an env value");
    assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    assert!(!status.to_string().contains(secret));
}

#[test]
fn daemon_stop_leaves_apps_running_and_the_next_daemon_adopts_them() {
    let home = Home::new();
    let name = unique("adopt");
    let view = home.deploy_hello(&name);
    let pid = pid_of(&view);
    let daemon = home.daemon_pid().expect("daemon pid");

    let stop = home.conan(&["daemon", "stop"]).ok();
    assert!(
        stop.stdout.contains("deployments keep running"),
        "{}",
        stop.stdout
    );
    assert!(!alive(daemon), "the daemon is still running");
    assert!(!home.path().join("conan.sock").exists());
    assert!(alive(pid), "the app died with the daemon");
    // Its log thread wrote everything before the daemon let go of its lock.
    let log = home.daemon_log();
    assert!(
        log.lines().any(|l| l.ends_with(" stopped")),
        "the daemon's last words are missing: {log}"
    );

    // The next command starts a new daemon, which adopts the app: same pid, running.
    let adopted = home.listed(&name).expect("listed after restart");
    assert_eq!(adopted["status"], "running", "{adopted}");
    assert_eq!(pid_of(&adopted), pid);
    assert_ne!(home.daemon_pid(), Some(daemon));
    wait_until(
        "the new daemon to log its recovery",
        Duration::from_secs(10),
        || {
            home.daemon_log()
                .lines()
                .any(|l| l.contains("recovered deployments") && l.contains("running=1"))
        },
    );
    let url = adopted["url"].as_str().expect("url");
    assert!(http_get(url, "/health").is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    // And it is still managed: stop works on the adopted process.
    home.conan(&["stop", &name]).ok();
    wait_until("the adopted app to stop", Duration::from_secs(10), || {
        !alive(pid)
    });
}

#[test]
fn one_daemon_per_home_and_a_private_socket() {
    let home = Home::new();
    home.conan(&["ls"]).ok();
    let socket = home.path().join("conan.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(home.path()).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "home mode {dir_mode:o}");

    let second = home.conan(&["daemon"]).expect_code(1);
    assert!(
        second.stderr.contains("already running"),
        "{}",
        second.stderr
    );
    let status = home.conan(&["daemon", "status", "--json"]).ok().json();
    assert_eq!(status["pid"], home.daemon_pid().expect("pid"));
}

#[test]
fn bad_usage_and_invalid_config_exit_2_with_clear_messages() {
    let home = Home::new();
    let run = home.conan(&["frobnicate"]).expect_code(2);
    assert!(
        run.stderr.contains("unrecognized subcommand"),
        "{}",
        run.stderr
    );
    let run = home.conan(&["deploy", "--port", "eighty"]).expect_code(2);
    assert!(run.stderr.contains("--port"), "{}", run.stderr);
    let run = home
        .conan(&["logs", "x", "--since", "yesterday"])
        .expect_code(2);
    assert!(run.stderr.contains("--since yesterday"), "{}", run.stderr);
    let run = home.conan(&["deploy", "/no/such/dir"]).expect_code(2);
    assert!(run.stderr.contains("/no/such/dir"), "{}", run.stderr);

    // Every problem of a config, each with its field path.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("conan.toml"),
        "name = \"Not A Label\"\nreplicas = 0\n[health_check]\npath = \"health\"\n",
    )
    .unwrap();
    let run = home
        .conan(&["deploy", dir.path().to_str().unwrap()])
        .expect_code(2);
    assert!(run.stderr.contains("invalid config"), "{}", run.stderr);
    assert!(run.stderr.contains("- name:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("- health_check.path:"),
        "{}",
        run.stderr
    );
    // None of this needed a daemon.
    assert!(!home.path().join("conan.sock").exists());
}

#[test]
fn a_deploy_that_fails_exits_1_and_shows_the_failure_bundle() {
    let home = Home::new();
    let name = unique("crash");
    let crash = app("crash");
    let run = home
        .conan(&[
            "deploy",
            crash.to_str().unwrap(),
            "--name",
            &name,
            "--health",
            "/health",
        ])
        .expect_code(1);
    assert!(
        run.stderr
            .contains(&format!("deployment '{name}' did not become ready")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("reason:"), "{}", run.stderr);
    assert!(run.stderr.contains("exit:   exit code 1"), "{}", run.stderr);
    assert!(run.stderr.contains("crash: fatal error"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("conan logs {name}")),
        "{}",
        run.stderr
    );
    assert_eq!(home.listed(&name).expect("listed")["status"], "failed");

    // --json: the error as JSON on stdout, with the bundle.
    let other = unique("crash");
    let run = home
        .conan(&[
            "deploy",
            crash.to_str().unwrap(),
            "--name",
            &other,
            "--health",
            "/health",
            "--json",
        ])
        .expect_code(1);
    let error = &run.json()["error"];
    assert_eq!(error["code"], "deploy_failed");
    assert_eq!(error["failure"]["exit"]["value"], 1);
    assert!(
        error["failure"]["last_logs"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    );
}

#[test]
fn init_writes_a_config_that_deploy_uses() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("My_Site");
    std::fs::create_dir(&project).unwrap();
    for file in ["app.js", "package.json"] {
        std::fs::copy(app("hello").join(file), project.join(file)).unwrap();
    }
    let run = home.conan(&["init", project.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("conan.toml"), "{}", run.stdout);
    home.conan(&["init", project.to_str().unwrap()])
        .expect_code(1);

    // `conan deploy` in the directory: the name comes from the directory, the health
    // check from the file.
    let view = home
        .conan_in(&["deploy", "--json"], Some(&project))
        .ok()
        .json();
    assert_eq!(view["name"], "my-site");
    assert_eq!(view["status"], "running");
    let status = home.conan(&["status", "my-site", "--json"]).ok().json();
    assert_eq!(status["health"]["status"], "healthy");

    // `conan update NAME PATH` re-reads the file; env set earlier by flag carries over.
    home.conan(&["update", "my-site", "--env", "FROM_FLAG=1"])
        .ok();
    let file = project.join("conan.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("# [env]", "[env]\nFROM_FILE = \"1\"\n# was [env]"),
    )
    .unwrap();
    let updated = home
        .conan(&["update", "my-site", project.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(updated["revision"], 3);
    assert_eq!(
        updated["env"],
        serde_json::json!(["FROM_FILE", "FROM_FLAG"])
    );
}

#[test]
fn docker_deploy_without_docker_says_what_is_wrong_and_which_setting_fixes_it() {
    let home = Home::new().with_env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let hello = app("hello");
    let run = home
        .conan(&["deploy", hello.to_str().unwrap(), "--provider", "docker"])
        .expect_code(1);
    assert!(
        run.stderr.contains("Docker is not available"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/nonexistent/docker.sock"),
        "names the address it tried: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint:") && run.stderr.contains("DOCKER_HOST"),
        "names the setting: {}",
        run.stderr
    );
    for internal in [".ci/", "docker-up", "storage-driver", "vfs"] {
        assert!(
            !run.stderr.contains(internal),
            "points users at repository internals ({internal}): {}",
            run.stderr
        );
    }
    let info = home.conan(&["daemon", "status", "--json"]).ok().json();
    assert_eq!(info["providers"], serde_json::json!(["local"]));
    assert!(info["docker_error"].is_string(), "{info}");
}

#[test]
fn logs_and_events_follow_live() {
    let home = Home::new();
    let name = unique("follow");
    let view = home.deploy_hello(&name);
    let url = view["url"].as_str().expect("url").to_owned();

    let logs = home.follow(&["logs", &name, "-f", "-n", "0"]);
    let events = home.follow(&["events", "-f", "--json"]);
    // Subscriptions are live once the first request reaches the app and shows up.
    common::wait_until("a followed request", Duration::from_secs(10), || {
        http_get(&url, "/followed").is_some()
            && logs
                .line_with("GET /followed", Duration::from_secs(1))
                .is_ok()
    });

    home.conan(&["stop", &name]).ok();
    let line = events.expect_line("\"to\":{\"state\":\"stopped\"}", Duration::from_secs(10));
    let event: serde_json::Value = serde_json::from_str(&line).expect("NDJSON event");
    assert_eq!(event["type"], "status_changed");
    assert_eq!(event["deployment"], view["id"]);
}

#[test]
fn a_daemon_that_cannot_start_fails_fast_with_its_log() {
    let home = Home::new().with_env("CONAN_PORT_RANGE", "not-a-range");
    let started = std::time::Instant::now();
    let run = home.conan(&["ls"]).expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("did not start"), "{}", run.stderr);
    assert!(
        run.stderr.contains("CONAN_PORT_RANGE=not-a-range"),
        "{}",
        run.stderr
    );
}

/// Two daemons (two CONAN_HOMEs) on the same port range, deploying at the same moment,
/// never hand out the same port: ports are reserved machine-wide, not only per process.
#[test]
fn two_daemons_on_one_port_range_get_different_ports() {
    // A range of its own (outside the per-home ranges the other tests use), two ports wide.
    let first = 27_900 + (std::process::id() % 40) * 2;
    let range = format!("{first}-{}", first + 1);
    let homes = [
        Home::new().with_env("CONAN_PORT_RANGE", &range),
        Home::new().with_env("CONAN_PORT_RANGE", &range),
    ];
    for home in &homes {
        home.conan(&["ls"]).ok();
    }
    let name = unique("twin");
    let urls: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> = homes
            .iter()
            .map(|home| {
                s.spawn(|| {
                    home.deploy_hello(&name)["url"]
                        .as_str()
                        .expect("url")
                        .to_owned()
                })
            })
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("deploy thread"))
            .collect()
    });
    assert_ne!(urls[0], urls[1], "both daemons handed out the same port");
    for url in &urls {
        assert!(http_get(url, "/health").is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    }
}
