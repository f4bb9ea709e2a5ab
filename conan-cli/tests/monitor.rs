//! The daemon's monitor, end to end: a deployment that turns unhealthy is restarted by the
//! monitor, `conan status` shows what the probes saw, and the events say why.

mod common;

use std::time::Duration;

use common::*;

/// The sample hello app (its `/toggle-health` flips `/health` to 503) with a fast check.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(app("hello").join("app.js"), dir.path().join("app.js")).unwrap();
    std::fs::copy(
        app("hello").join("package.json"),
        dir.path().join("package.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conan.toml"),
        "[health_check]\npath = \"/health\"\ninterval = \"200ms\"\nfailure_threshold = 2\n\
         [restart]\nbackoff_initial = \"100ms\"\njitter = 0.0\n[stop]\ntimeout = \"1s\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn the_daemon_restarts_a_deployment_that_turns_unhealthy_and_status_shows_the_probe() {
    let home = Home::new();
    let name = unique("mon");
    let dir = project();
    let deployed = home
        .conan(&[
            "deploy",
            dir.path().to_str().unwrap(),
            "--name",
            &name,
            "--json",
        ])
        .ok()
        .json();
    let url = deployed["url"].as_str().expect("a url").to_owned();
    let pid = deployed["pid"].as_i64();
    let events = home.follow(&["events", "--follow"]);
    assert!(http_get(&url, "/toggle-health").is_some());
    events.expect_line("unhealthy", Duration::from_secs(10));
    let restart = events.expect_line("restarting", Duration::from_secs(10));
    assert!(restart.contains("health check failed 2 times"), "{restart}");
    wait_until(
        "a new instance serves, healthy",
        Duration::from_secs(20),
        || {
            let Some(d) = home.listed(&name) else {
                return false;
            };
            d["status"] == "running"
                && d["pid"].as_i64() != pid
                && http_get(d["url"].as_str().unwrap_or_default(), "/health")
                    .is_some_and(|b| b.contains("ok"))
        },
    );
    // The monitor's first probe of the new instance replaces the gate's report.
    wait_until(
        "status shows the monitor's probe of the new instance",
        Duration::from_secs(10),
        || {
            let status = home.conan(&["status", &name, "--json"]).ok().json();
            status["health"]["status"] == "healthy"
                && status["health"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("200"))
        },
    );
    home.conan(&["rm", "--force", &name]).ok();
}
