//! End-to-end tests of the monitor's metrics history and `monitor_deployment`: the real
//! `conan` binary, a real daemon sampling every 200 ms, a real Node app.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Home, unique, wait_until};
use serde_json::Value;

/// Sends `GET /v1{path}` to the daemon's socket; the status code and the raw body. A
/// streaming answer is read for `read_for` (then the connection is dropped).
fn api_get(home: &Home, path: &str, read_for: Duration) -> (u16, String) {
    let mut stream = UnixStream::connect(home.path().join("conan.sock")).expect("connect");
    write!(
        stream,
        "GET /v1{path} HTTP/1.1\r\nHost: conan\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0_u8; 8192];
    while start.elapsed() < read_for {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The JSON objects among the lines of a body (chunk-size lines skipped).
fn json_lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

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

    // monitor_deployment: current cpu, memory and health, with the recent series.
    let (status, body) = api_get(
        &home,
        &format!("/deployments/{name}/monitor?metrics=cpu,memory,health&interval=1s"),
        Duration::from_secs(10),
    );
    assert_eq!(status, 200, "{body}");
    let m = json_lines(&body)
        .pop()
        .unwrap_or_else(|| panic!("no JSON in {body}"));
    assert_eq!(m["name"], name.as_str());
    assert_eq!(m["status"], "running");
    assert_eq!(m["interval_ms"], 1000);
    assert!(m["metrics"]["cpu"]["usage"].is_number(), "{m}");
    assert!(
        m["metrics"]["memory"]["usage"].as_u64().unwrap_or(0) > 0,
        "{m}"
    );
    assert!(
        !m["metrics"]["memory"]["series"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{m}"
    );
    assert_eq!(m["metrics"]["health"]["status"], "healthy", "{m}");
    assert!(m["metrics"]["health"]["last_check"].is_string(), "{m}");
    assert!(m["metrics"].get("network").is_none(), "{m}");

    // follow=1: an update per interval, as NDJSON.
    let (status, body) = api_get(
        &home,
        &format!("/deployments/{name}/monitor?metrics=memory&interval=300ms&follow=1"),
        Duration::from_millis(1500),
    );
    assert_eq!(status, 200, "{body}");
    let updates = json_lines(&body);
    assert!(updates.len() >= 3, "{body}");
    assert!(
        updates
            .iter()
            .all(|u| u["metrics"]["memory"]["usage"].as_u64() > Some(0)),
        "{body}"
    );

    // An unknown metric is a clear error naming the known ones.
    let (status, body) = api_get(
        &home,
        &format!("/deployments/{name}/monitor?metrics=cpu,disk"),
        Duration::from_secs(10),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("unknown metric 'disk'; known metrics: cpu, memory, network, health"),
        "{body}"
    );

    home.conan(&["rm", "--force", &name]).ok();
}
