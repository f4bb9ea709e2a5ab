//! The daemon's proxy: a deployment's URL is its stable endpoint (instance ports shown
//! apart), kept across an update; `conan pause`/`resume` hold and release requests;
//! `conan maintenance` answers 503 with a body; a taken `endpoint.listen` fails the deploy
//! naming the holder and leaves nothing.

mod common;

use std::time::Duration;

use common::{Home, app, http_get, unique, wait_until};

fn deploy_ws(home: &Home, name: &str, rev: &str) -> serde_json::Value {
    let dir = app("ws-echo");
    home.conan(&[
        "deploy",
        dir.to_str().unwrap(),
        "--name",
        name,
        "--health",
        "/health",
        "--env",
        &format!("REV={rev}"),
        "--json",
    ])
    .ok()
    .json()
}

#[test]
fn the_url_is_a_stable_endpoint_with_pause_resume_and_maintenance() {
    let home = Home::new();
    let name = unique("proxy");
    let view = deploy_ws(&home, &name, "r1");
    let url = view["url"].as_str().expect("url").to_owned();
    assert_eq!(view["endpoint"].as_str(), Some(url.as_str()), "{view}");
    let instance = view["instance_url"]
        .as_str()
        .expect("instance url")
        .to_owned();
    assert_ne!(url, instance, "{view}");
    assert_eq!(view["ports"].as_array().map(Vec::len), Some(1), "{view}");
    assert!(http_get(&url, "/").is_some_and(|a| a.contains("hello from r1")));

    home.conan(&["update", &name, "--env", "REV=r2"]).ok();
    let after = home.listed(&name).expect("listed");
    assert_eq!(
        after["url"].as_str(),
        Some(url.as_str()),
        "the endpoint stays: {after}"
    );
    assert_ne!(
        after["instance_url"].as_str(),
        Some(instance.as_str()),
        "{after}"
    );
    assert!(http_get(&url, "/").is_some_and(|a| a.contains("hello from r2")));

    let status = home.conan(&["status", &name]).ok();
    assert!(status.stdout.contains("instances"), "{}", status.stdout);
    assert!(status.stdout.contains("traffic"), "{}", status.stdout);
    let json = home.conan(&["status", &name, "--json"]).ok().json();
    assert!(
        json["traffic"]["revisions"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{json}"
    );

    // Pause holds a request until resume.
    let paused = home
        .conan(&["pause", &name, "--timeout", "20s", "--json"])
        .ok()
        .json();
    assert_eq!(paused["paused"], true, "{paused}");
    let held = {
        let url = url.clone();
        std::thread::spawn(move || http_get(&url, "/"))
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!held.is_finished(), "held while paused");
    home.conan(&["resume", &name]).ok();
    let answer = held.join().unwrap().expect("released");
    assert!(
        answer.contains("200 OK") && answer.contains("hello from r2"),
        "{answer}"
    );

    // Maintenance answers 503 with the body.
    home.conan(&["maintenance", &name, "on", "--body", "back at noon"])
        .ok();
    let answer = http_get(&url, "/").expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("back at noon"), "{answer}");
    home.conan(&["maintenance", &name, "off"]).ok();
    wait_until("served again", Duration::from_secs(5), || {
        http_get(&url, "/").is_some_and(|a| a.contains("200 OK"))
    });

    home.conan(&["rm", &name, "--force"]).ok();
    assert!(
        http_get(&url, "/").is_none(),
        "the endpoint closed with the deployment"
    );
}

#[test]
fn a_taken_endpoint_address_fails_the_deploy_naming_the_holder() {
    let home = Home::new();
    let name = unique("taken");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in ["app.js", "package.json"] {
        std::fs::copy(app("ws-echo").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("conan.toml"),
        format!("name = \"{name}\"\n[endpoint]\nlisten = \"{taken}\"\n"),
    )
    .unwrap();
    let run = home.conan(&["deploy", dir.path().to_str().unwrap()]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("endpoint.listen"), "{out}");
    assert!(
        out.contains(&format!("{taken} is in use by pid {}", std::process::id())),
        "{out}"
    );
    assert!(home.listed(&name).is_none(), "nothing is left");
}
