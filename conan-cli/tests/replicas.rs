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
