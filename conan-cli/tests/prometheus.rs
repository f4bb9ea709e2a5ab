//! `GET /metrics` of a real daemon running real Node apps: the values follow the
//! deployments' states (running, stopped, removed, failed), and `promtool check metrics`
//! (Debian's `prometheus` package) finds nothing to report in any scrape.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Home, app, http_get, unique, wait_until};

/// `promtool`, or `None` (the test is skipped) when it is missing outside CI; in CI
/// (`CI` set) its absence fails the test.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI: .ci/run installs Debian's prometheus package"
        );
        eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
    }
    found
}

/// What `promtool check metrics` says (empty: nothing to report).
#[track_caller]
fn promtool_check(promtool: &PathBuf, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n--- exposition\n{text}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One scrape: the headers and the body.
fn scrape(addr: &str) -> (String, String) {
    let raw = http_get(&format!("http://{addr}"), "/metrics").expect("GET /metrics");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (head.to_owned(), body.to_owned())
}

/// The value of the series `series` (name and labels, as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `check` holds (then checks that scrape with promtool), or fails with the
/// last scrape after 30 s.
#[track_caller]
fn scrape_until(
    addr: &str,
    promtool: &PathBuf,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        last = scrape(addr).1;
        if check(&last) {
            promtool_check(promtool, &last);
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}; last scrape:\n{last}");
}

fn status(text: &str, deployment: &str, status: &str) -> Option<f64> {
    value(
        text,
        &format!("conan_deployment_status{{deployment=\"{deployment}\",status=\"{status}\"}}"),
    )
}

fn up(text: &str, deployment: &str) -> Option<f64> {
    value(
        text,
        &format!("conan_deployment_up{{deployment=\"{deployment}\",provider=\"local\"}}"),
    )
}

#[test]
fn metrics_follow_deployments_through_their_states_and_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let addr = format!("127.0.0.1:{}", free_port());
    let home = Home::new().with_env("CONAN_METRICS_ADDR", &addr);
    let web = unique("prom-web");
    let api = unique("prom-api");
    let bad = unique("prom-bad");
    // web is probed every second by the daemon's health monitor.
    let projects = tempfile::tempdir().unwrap();
    let root = projects.path().join(&web);
    std::fs::create_dir_all(&root).unwrap();
    for file in ["app.js", "package.json"] {
        std::fs::copy(app("hello").join(file), root.join(file)).unwrap();
    }
    std::fs::write(
        root.join("conan.toml"),
        format!(
            "name = \"{web}\"\n[health_check]\ntype = \"http\"\npath = \"/health\"\ninterval = \"1s\"\n"
        ),
    )
    .unwrap();
    let deployed = home
        .conan(&[
            "deploy",
            root.to_str().unwrap(),
            "--env",
            &home.tag_env(),
            "--json",
        ])
        .ok()
        .json();
    home.deploy_hello(&api);
    let crash = app("crash");
    home.conan(&[
        "deploy",
        crash.to_str().unwrap(),
        "--name",
        &bad,
        "--health",
        "/health",
    ])
    .expect_code(1);

    // The daemon says where it serves them.
    let info = home.conan(&["daemon", "status", "--json"]).ok().json();
    assert_eq!(info["metrics_addr"], addr.as_str(), "{info}");
    let text = home.conan(&["daemon", "status"]).ok().stdout;
    assert!(
        text.contains(&format!("metrics      http://{addr}/metrics")),
        "{text}"
    );

    let (head, _) = scrape(&addr);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let text = scrape_until(&addr, &promtool, "three deployments", |t| {
        value(
            t,
            r#"conan_operations_total{operation="deploy",outcome="succeeded"}"#,
        ) == Some(2.0)
            && value(
                t,
                r#"conan_operations_total{operation="deploy",outcome="failed"}"#,
            ) == Some(1.0)
    });
    for name in [&web, &api] {
        assert_eq!(up(&text, name), Some(1.0), "{name}\n{text}");
        assert_eq!(status(&text, name, "running"), Some(1.0), "{text}");
        assert_eq!(status(&text, name, "stopped"), Some(0.0), "{text}");
    }
    assert_eq!(up(&text, &bad), Some(0.0), "{text}");
    assert_eq!(status(&text, &bad, "failed"), Some(1.0), "{text}");
    assert_eq!(status(&text, &bad, "running"), Some(0.0), "{text}");
    assert_eq!(
        value(
            &text,
            r#"conan_operation_duration_seconds_count{operation="deploy"}"#
        ),
        Some(3.0),
        "{text}"
    );

    // The health monitor's probes of web are timed and counted.
    let healthy = format!("conan_health_checks_total{{deployment=\"{web}\",result=\"healthy\"}}");
    let timed = format!("conan_health_check_duration_seconds_count{{deployment=\"{web}\"}}");
    let text = scrape_until(&addr, &promtool, "web probed twice", |t| {
        value(t, &healthy).is_some_and(|n| n >= 2.0)
    });
    assert!(value(&text, &timed).is_some_and(|n| n >= 2.0), "{text}");

    // hello logs one line per request: the log follower counts them.
    let url = deployed["url"].as_str().expect("url").to_owned();
    for _ in 0..5 {
        assert!(http_get(&url, "/").is_some());
    }
    let info_lines = format!("conan_log_lines_total{{deployment=\"{web}\",level=\"info\"}}");
    scrape_until(&addr, &promtool, "five request lines counted", |t| {
        value(t, &info_lines).is_some_and(|n| n >= 5.0)
    });

    home.conan(&["restart", &web]).ok();
    let restarts = format!("conan_deployment_restarts_total{{deployment=\"{web}\"}}");
    scrape_until(&addr, &promtool, "a restart", |t| {
        value(t, &restarts) == Some(1.0)
    });

    home.conan(&["stop", &api]).ok();
    let text = scrape_until(&addr, &promtool, "api stopped", |t| {
        status(t, &api, "stopped") == Some(1.0)
    });
    assert_eq!(up(&text, &api), Some(0.0), "{text}");
    assert_eq!(status(&text, &api, "running"), Some(0.0), "{text}");

    home.conan(&["rm", &api]).ok();
    home.conan(&["rm", &bad]).ok();
    let text = scrape_until(&addr, &promtool, "api and bad removed", |t| {
        !t.contains(&format!("deployment=\"{api}\""))
            && !t.contains(&format!("deployment=\"{bad}\""))
    });
    assert_eq!(up(&text, &web), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "conan_operations_pending"),
        Some(0.0),
        "{text}"
    );
    home.conan(&["stop", &web]).ok();
    home.conan(&["rm", &web]).ok();
}

#[test]
fn a_metrics_address_in_use_is_a_clear_error_and_the_daemon_runs_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let home = Home::new().with_env("CONAN_METRICS_ADDR", &addr);
    home.conan(&["ls"]).ok();
    let text = home.conan(&["daemon", "status"]).ok().stdout;
    assert!(
        text.contains(&format!(
            "metrics      unavailable: cannot serve /metrics on {addr}"
        )),
        "{text}"
    );
    let info = home.conan(&["daemon", "status", "--json"]).ok().json();
    assert!(info["metrics_addr"].is_null(), "{info}");
    wait_until("the error in daemon.log", Duration::from_secs(10), || {
        home.daemon_log()
            .contains(&format!("cannot serve /metrics on {addr}"))
    });
    drop(taken);
}
