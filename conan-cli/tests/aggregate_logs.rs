//! `conan logs` over many deployments (several names, `--all`, `--label`): real Node apps'
//! lines, merged by time and prefixed with each deployment's name; `-f` follows them all.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Home, app, http_get, unique};

/// A copy of the hello app whose `conan.toml` names it and gives it `tier = TIER`.
fn project(dir: &Path, name: &str, tier: &str) -> String {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    for file in ["app.js", "package.json"] {
        std::fs::copy(app("hello").join(file), root.join(file)).unwrap();
    }
    std::fs::write(
        root.join("conan.toml"),
        format!(
            "name = \"{name}\"\n[health_check]\ntype = \"http\"\npath = \"/health\"\n[labels]\ntier = \"{tier}\"\n"
        ),
    )
    .unwrap();
    root.to_str().unwrap().to_owned()
}

#[test]
fn logs_of_many_deployments_are_merged_by_time_and_tagged_with_their_names() {
    let home = Home::new();
    let projects = tempfile::tempdir().unwrap();
    let front = unique("agg-front");
    let back = unique("agg-back");
    let mut urls = Vec::new();
    for (name, tier) in [(&front, "front"), (&back, "back")] {
        let dir = project(projects.path(), name, tier);
        let view = home
            .conan(&["deploy", &dir, "--env", &home.tag_env(), "--json"])
            .ok()
            .json();
        urls.push(view["url"].as_str().expect("url").to_owned());
    }
    for i in 0..3 {
        for url in &urls {
            assert!(http_get(url, &format!("/req-{i}")).is_some());
        }
    }

    // Several names: both, merged by time, each line with its deployment.
    let run = home
        .conan(&["logs", &front, &back, "-n", "100", "--json"])
        .ok();
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect();
    let of = |name: &str| {
        lines
            .iter()
            .filter(|l| {
                l["deployment"] == name
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("GET /req-"))
            })
            .count()
    };
    assert_eq!((of(&front), of(&back)), (3, 3), "{}", run.stdout);
    let times: Vec<conan::Timestamp> = lines
        .iter()
        .map(|l| serde_json::from_value(l["timestamp"].clone()).expect("a timestamp"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{}", run.stdout);

    // The text form prefixes each line with the name; -n keeps the last lines overall.
    let run = home.conan(&["logs", "--all", "-n", "4"]).ok();
    let text: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(text.len(), 4, "{}", run.stdout);
    assert!(
        text.iter()
            .all(|l| l.starts_with(&format!("{front} |")) || l.starts_with(&format!("{back} |"))),
        "{}",
        run.stdout
    );

    // By label: only the front one.
    let run = home
        .conan(&["logs", "--label", "tier=front", "--json"])
        .ok();
    assert!(!run.stdout.is_empty());
    for line in run.stdout.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["deployment"], front.as_str(), "{line}");
    }

    // One name keeps the single-deployment form (no prefix).
    let run = home.conan(&["logs", &front, "-n", "1"]).ok();
    assert!(!run.stdout.starts_with(&front), "{}", run.stdout);

    // Follow all: a new line of either arrives with its name.
    let follower = home.follow(&["logs", "--all", "-f", "-n", "0"]);
    let deadline = Duration::from_secs(20);
    let start = std::time::Instant::now();
    let line = loop {
        // The follower may not be connected yet: keep writing until a line arrives.
        assert!(http_get(&urls[1], "/followed").is_some());
        if let Ok(line) = follower.line_with("GET /followed", Duration::from_millis(500)) {
            break line;
        }
        assert!(start.elapsed() < deadline, "no followed line");
    };
    assert!(line.starts_with(&format!("{back} |")), "{line}");

    let bad = home.conan(&["logs", "--label", "tier"]).expect_code(2);
    assert!(bad.stderr.contains("KEY=VALUE"), "{}", bad.stderr);
    for name in [&front, &back] {
        home.conan(&["rm", "--force", name]).ok();
    }
}
