//! `conan deploy --replicas N` with the local provider: every replica listed with its own
//! port by `status --json` and `ls`; a fixed port with several replicas refused with its
//! field path and nothing left behind.

mod common;

use common::{Home, app, http_get, unique};

#[test]
fn three_replicas_are_shown_with_their_ports_and_a_fixed_port_is_refused() {
    let home = Home::new();
    let name = unique("reps");
    let hello = app("hello");
    let hello = hello.to_str().unwrap();

    let refused = home
        .conan(&[
            "deploy",
            hello,
            "--name",
            &name,
            "--replicas",
            "3",
            "--port",
            "24999",
        ])
        .expect_code(2);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains("port: a fixed port (24999) allows only one replica"),
        "{said}"
    );
    assert!(
        home.listed(&name).is_none(),
        "nothing is left of a refused deploy"
    );

    home.conan(&[
        "deploy",
        hello,
        "--name",
        &name,
        "--replicas",
        "3",
        "--health",
        "/health",
    ])
    .ok();
    let status = home.conan(&["status", &name, "--json"]).ok().json();
    assert_eq!(status["replicas"], 3, "{status}");
    let instances = status["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 3, "{status}");
    let mut ports: Vec<u64> = instances
        .iter()
        .map(|i| i["port"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each replica on its own port: {status}");
    for p in &ports {
        let answer = http_get(&format!("http://127.0.0.1:{p}"), "/").expect("a replica answers");
        assert!(answer.contains("hello from"), "{answer}");
    }
    let text = home.conan(&["status", &name]).ok();
    assert!(text.stdout.contains("3 of 3 in service"), "{}", text.stdout);
    let ls = home.conan(&["ls"]).ok();
    assert!(ls.stdout.contains("(+2 replicas)"), "{}", ls.stdout);
    home.conan(&["rm", &name, "--force"]).ok();
}

/// `replicas = { min, max, target_in_flight }` in conan.toml, then `conan scale`: the
/// count and the range in `status --json`, a scale outside the range refused with its
/// path, the change in `conan events` (event and audit entry), and the count kept when the
/// daemon restarts (the new daemon adopts both replicas).
#[test]
fn an_autoscaled_deployment_is_scaled_by_hand_and_keeps_its_count_across_a_daemon_restart() {
    let home = Home::new();
    let name = unique("autos");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(app("hello")).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    // A fixed port cannot serve several replicas: refused, nothing stored.
    std::fs::write(
        dir.path().join("conan.toml"),
        format!(
            "name = \"{name}\"\nport = 24998\nreplicas = {{ min = 1, max = 3, target_in_flight = 50 }}\n"
        ),
    )
    .unwrap();
    let refused = home
        .conan(&["deploy", dir.path().to_str().unwrap()])
        .expect_code(2);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains("port: a fixed port (24998) allows only one replica"),
        "{said}"
    );
    assert!(home.listed(&name).is_none(), "nothing is left");
    // A target idle traffic never reaches: only `conan scale` changes the count.
    std::fs::write(
        dir.path().join("conan.toml"),
        format!(
            "name = \"{name}\"\nreplicas = {{ min = 1, max = 3, target_in_flight = 50 }}\n[health_check]\npath = \"/health\"\n"
        ),
    )
    .unwrap();
    home.conan(&["deploy", dir.path().to_str().unwrap()]).ok();
    let status = home.conan(&["status", &name, "--json"]).ok().json();
    assert_eq!(status["replicas"], 1, "{status}");
    assert_eq!(status["autoscale"]["min"], 1, "{status}");
    assert_eq!(status["autoscale"]["max"], 3, "{status}");

    let scaled = home.conan(&["scale", &name, "2", "--json"]).ok().json();
    assert_eq!(scaled["replicas"], 2, "{scaled}");
    assert_eq!(
        scaled["instances"].as_array().map(Vec::len),
        Some(2),
        "{scaled}"
    );
    assert_eq!(scaled["revision"], 1, "no new revision: {scaled}");
    let text = home.conan(&["status", &name]).ok();
    assert!(
        text.stdout
            .contains("2 of 2 in service (autoscaled 1..3, target 50 in flight)"),
        "{}",
        text.stdout
    );

    let refused = home.conan(&["scale", &name, "5"]);
    assert_ne!(refused.code, 0);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        said.contains("replicas: 5 is outside the autoscaling range"),
        "{said}"
    );

    let events = home.conan(&["events"]).ok();
    assert!(
        events.stdout.contains("scale 1 -> 2 replicas"),
        "{}",
        events.stdout
    );

    let daemon = home.daemon_pid().expect("daemon pid");
    home.conan(&["daemon", "stop"]).ok();
    common::wait_until(
        "the daemon stops",
        std::time::Duration::from_secs(10),
        || !common::alive(daemon),
    );
    let adopted = home.listed(&name).expect("listed after the restart");
    assert_eq!(adopted["status"], "running", "{adopted}");
    assert_eq!(
        adopted["replicas"], 2,
        "the scaled count is kept: {adopted}"
    );
    assert_eq!(
        adopted["instances"].as_array().map(Vec::len),
        Some(2),
        "{adopted}"
    );
    home.conan(&["rm", &name, "--force"]).ok();
}

/// The daemon's autoscaler (`[autoscale]` in daemon.toml) follows the proxy's in-flight
/// counters: four clients looping on 300 ms answers scale a `min = 1, max = 2,
/// target_in_flight = 1` deployment to 2, and it goes back to 1 once they stop; both
/// changes in `conan events`, asked for by the autoscaler, and no request failed.
#[test]
fn the_daemon_autoscales_on_its_proxys_counters() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    let home = Home::new();
    std::fs::write(
        home.path().join("daemon.toml"),
        "[autoscale]\ninterval = \"200ms\"\nwindow = \"1s\"\n",
    )
    .unwrap();
    let name = unique("autod");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(app("canary")).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("conan.toml"),
        format!(
            "name = \"{name}\"\nreplicas = {{ min = 1, max = 2, target_in_flight = 1, scale_out_cooldown = \"1s\", scale_in_cooldown = \"2s\" }}\n[env]\nDELAY_MS = \"300\"\n[health_check]\npath = \"/health\"\n"
        ),
    )
    .unwrap();
    home.conan(&["deploy", dir.path().to_str().unwrap()]).ok();
    let view = home.listed(&name).expect("listed");
    let url = view["url"].as_str().expect("the endpoint").to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match http_get(&url, "/") {
                        Some(text) if text.starts_with("HTTP/1.1 200") => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let replicas = |home: &Home| {
        home.listed(&name)
            .map_or(0, |v| v["replicas"].as_u64().unwrap_or(0))
    };
    common::wait_until("scaled out to 2", Duration::from_secs(30), || {
        replicas(&home) == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "ok: {}",
        ok.load(Ordering::Relaxed)
    );
    common::wait_until("scaled back in to 1", Duration::from_secs(30), || {
        replicas(&home) == 1
    });

    let events = home.conan(&["events"]).ok().stdout;
    assert!(
        events.contains("scale 1 -> 2 replicas (in-flight requests"),
        "{events}"
    );
    assert!(events.contains("scale 2 -> 1 replicas"), "{events}");
    assert!(
        events.contains("scale revision 1 succeeded (by autoscaler)"),
        "{events}"
    );
    home.conan(&["rm", &name, "--force"]).ok();
}
