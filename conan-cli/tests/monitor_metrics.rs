//! End-to-end tests of the monitor's metrics history and `monitor_deployment`: the real
//! `conan` binary, a real daemon sampling every 200 ms, a real Node app.

mod common;

use std::time::Duration;

use common::{Home, unique, wait_until};
use serde_json::Value;

/// A home whose daemon samples every 200 ms.
fn sampling_home() -> Home {
    let home = Home::new();
    std::fs::write(
        home.path().join("daemon.toml"),
        "[monitor]\nsample_interval = \"200ms\"\n",
    )
    .expect("write daemon.toml");
    home
}

fn points_with_memory(series: &Value) -> usize {
    series["points"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter(|p| p["memory_bytes"]["max"].as_u64().unwrap_or(0) > 0)
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn metrics_history_of_a_running_node_app() {
    let home = sampling_home();
    let name = unique("metrics");
    home.deploy_hello(&name);

    // The sampler fills the history: points at full resolution (step below the interval).
    let mut series = Value::Null;
    wait_until("3 samples with memory", Duration::from_secs(20), || {
        series = home
            .conan(&[
                "metrics", &name, "--since", "10m", "--step", "100ms", "--json",
            ])
            .ok()
            .json();
        points_with_memory(&series) >= 3
    });
    assert_eq!(series["name"], name.as_str());
    assert_eq!(series["resolution"], "full");
    assert_eq!(series["step_ms"], 200, "{series}");
    let point = &series["points"][0];
    assert!(point["time"].is_string(), "{point}");
    assert!(point["cpu_percent"]["avg"].is_number(), "{point}");
    assert!(point["restarts"]["total"].is_u64(), "{point}");

    // By the minute: one point aggregating the samples, min <= avg <= max.
    let minute = home
        .conan(&["metrics", &name, "--since", "1h", "--step", "1m", "--json"])
        .ok()
        .json();
    assert_eq!(minute["step_ms"], 60_000);
    let last = minute["points"]
        .as_array()
        .and_then(|p| p.last())
        .expect("a point")
        .clone();
    assert!(last["samples"].as_u64().unwrap_or(0) >= 1, "{last}");
    let mem = &last["memory_bytes"];
    let (min, avg, max) = (
        mem["min"].as_f64().unwrap(),
        mem["avg"].as_f64().unwrap(),
        mem["max"].as_f64().unwrap(),
    );
    assert!(min > 0.0 && min <= avg && avg <= max, "{mem}");

    // The table.
    let table = home.conan(&["metrics", &name]).ok();
    assert!(table.stdout.starts_with("TIME"), "{}", table.stdout);
    assert!(table.stdout.contains("MiB"), "{}", table.stdout);

    // Out-of-range --since is a usage error.
    let bad = home
        .conan(&["metrics", &name, "--since", "3d"])
        .expect_code(2);
    assert!(bad.stderr.contains("24h"), "{}", bad.stderr);
    home.conan(&["metrics", "no-such-deployment"])
        .expect_code(1);

    home.conan(&["rm", "--force", &name]).ok();
}
