//! End-to-end test of `conan` with the Docker provider (behind the daemon's proxy: a
//! stable URL, container ports apart, a restart without a gap): needs a Docker daemon (start one
//! with `.ci/docker-up.sh`) and builds the `conan-test/node:20` base image from the host's
//! node when it is missing (`conan docker base-image`, which runs
//! conan-cli/assets/make-node-image.sh).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Home, app, http_get, unique, wait_until};

const BASE_IMAGE: &str = "conan-test/node:20";

fn docker_ready() {
    let answers = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        answers,
        "this test needs a Docker daemon and none answered: start one with `.ci/docker-up.sh` \
         (from the workspace root) and run the tests again"
    );
    // Once per test binary: the tests run in parallel, and on a fresh machine each would
    // race the others to install busybox-static.
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/make-node-image.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg(BASE_IMAGE)
            .status()
            .expect("run make-node-image.sh");
        assert!(status.success(), "building {BASE_IMAGE} failed");
    });
}

fn containers(name: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=conan.name={name}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn docker_deploy_ls_rm() {
    docker_ready();
    let home = Home::new().with_env("CONAN_DOCKER_BASE_IMAGE", BASE_IMAGE);
    let name = unique("dock");
    home.track_docker(&name);
    let hello = app("hello");
    // Inside a container the app must listen on every interface, not the default 127.0.0.1.
    let view = home
        .conan(&[
            "deploy",
            hello.to_str().unwrap(),
            "--provider",
            "docker",
            "--name",
            &name,
            "--health",
            "/health",
            "--env",
            "HOST=0.0.0.0",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(view["status"], "running", "{view}");
    assert_eq!(view["provider"], "docker");
    let container = view["container"].as_str().expect("container id").to_owned();
    assert!(
        containers(&name)
            .iter()
            .any(|c| container.starts_with(c.as_str())),
        "container {container} not among {:?}",
        containers(&name)
    );
    let url = view["url"].as_str().expect("url");
    assert!(http_get(url, "/health").is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    // The daemon's proxy fronts the container: the URL is the stable endpoint, the
    // container's published port is shown apart.
    assert_eq!(view["endpoint"].as_str(), Some(url), "{view}");
    let instance_url = view["instance_url"].as_str().expect("instance url");
    assert_ne!(instance_url, url, "{view}");
    assert!(http_get(instance_url, "/health").is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    assert_eq!(view["ports"].as_array().map(Vec::len), Some(1), "{view}");

    let listed = home.listed(&name).expect("listed");
    assert_eq!(listed["status"], "running");
    assert_eq!(listed["container"], container.as_str());
    let ls = home.conan(&["ls"]).ok();
    assert!(ls.stdout.contains("docker"), "{}", ls.stdout);

    // A restart behind the endpoint: a fresh container on a fresh port, the same URL.
    home.conan(&["restart", &name]).ok();
    let after = home.listed(&name).expect("listed");
    assert_eq!(after["url"].as_str(), Some(url), "{after}");
    assert_ne!(after["container"], container.as_str(), "{after}");
    assert_ne!(
        after["instance_url"].as_str(),
        Some(instance_url),
        "{after}"
    );
    assert!(http_get(url, "/health").is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    assert_eq!(containers(&name).len(), 1, "the old container is gone");

    home.conan(&["rm", "--force", &name]).ok();
    assert!(home.listed(&name).is_none());
    assert!(containers(&name).is_empty(), "containers left behind");
}

/// A Docker daemon that starts answering after the Conan daemon started is picked up
/// without restarting the Conan daemon. "Starts answering" is a symlink to the real socket
/// appearing where `DOCKER_HOST` points.
#[test]
fn docker_that_answers_later_is_added() {
    docker_ready();
    let real = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("docker.sock");
    let home = Home::new()
        .with_env("DOCKER_HOST", &format!("unix://{}", link.display()))
        .with_env("CONAN_DOCKER_RETRY_MS", "100");
    let status = || home.conan(&["daemon", "status", "--json"]).json();

    home.conan(&["ls"]).ok();
    let before = status();
    assert_eq!(before["providers"], serde_json::json!(["local"]));
    assert!(before["docker_error"].is_string(), "{before}");

    std::os::unix::fs::symlink(&real, &link).expect("symlink to the Docker socket");
    wait_until("the daemon to add Docker", Duration::from_secs(20), || {
        let now = status();
        now["providers"] == serde_json::json!(["local", "docker"]) && now["docker_error"].is_null()
    });
}

/// Issue 14, item 6: with no registry, `--provider docker` failed at `FROM node:20-slim`
/// and nothing said what to do; the error now names the setting and the command that helps,
/// `conan logs` shows the build output, and `conan docker base-image` (built from the host's
/// node) sets `docker.base_image` so the next deploy of the same name works. Item 8: the
/// error and its build output are printed once.
#[test]
fn a_failed_base_image_pull_names_the_way_out_and_the_command_takes_it() {
    docker_ready();
    let home = Home::new();
    let name = unique("nobase");
    home.track_docker(&name);
    let hello = app("hello");
    let hello = hello.to_str().unwrap();
    let deploy = [
        "deploy",
        hello,
        "--provider",
        "docker",
        "--name",
        &name,
        "--env",
        "HOST=0.0.0.0",
    ];
    // The image the generated Dockerfile starts FROM must not be on the daemon for this test.
    let pulled = Command::new("docker")
        .args(["image", "inspect", "node:20-slim"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !pulled {
        let run = home.conan(&deploy).expect_code(1);
        assert!(run.stderr.contains("FROM node:20-slim"), "{}", run.stderr);
        assert!(run.stderr.contains("base_image"), "{}", run.stderr);
        assert!(
            run.stderr.contains("conan docker base-image"),
            "{}",
            run.stderr
        );
        assert_eq!(
            run.stderr.matches("is not on the Docker daemon").count(),
            1,
            "said once: {}",
            run.stderr
        );
        assert!(
            run.stdout.is_empty(),
            "progress goes to stderr: {}",
            run.stdout
        );
        let logs = home.conan(&["logs", &name]).ok();
        assert!(logs.stdout.contains("FROM node:20-slim"), "{}", logs.stdout);
    }

    let made = home
        .conan(&["docker", "base-image", "--tag", BASE_IMAGE])
        .ok();
    assert!(made.stdout.contains("docker.base_image"), "{}", made.stdout);
    let settings = std::fs::read_to_string(home.path().join("daemon.toml")).unwrap();
    assert!(
        settings.contains(&format!("base_image = \"{BASE_IMAGE}\"")),
        "{settings}"
    );
    home.conan(&["daemon", "stop"]).ok();
    let status = home.conan(&["daemon", "status"]);
    assert_eq!(status.code, 1, "stopped");
    let view = home.conan(&[&deploy[..], &["--json"]].concat()).ok().json();
    assert_eq!(view["status"], "running", "{view}");
    let shown = home.conan(&["daemon", "status"]).ok();
    assert!(
        shown.stdout.lines().any(|l| l.contains("docker.base_image")
            && l.contains(BASE_IMAGE)
            && l.ends_with("(daemon.toml)")),
        "{}",
        shown.stdout
    );
    home.conan(&["rm", "--force", &name]).ok();
}
