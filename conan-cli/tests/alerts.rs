//! End-to-end test of alerts: a real daemon with a `daemon.toml` rule, a real Node app that
//! is killed, and a webhook receiver in the test that goes down while the daemon restarts.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Home, app, http_get, kill, unique, wait_until};
use serde_json::Value;

const HOOK_PATH: &str = "/hooks/path-t0k3n";
const HEADER_TOKEN: &str = "header-t0k3n-never-logged";
const SECRET: &str = "s3cr3t-env-value-never-sent";

/// What the receiver got: each request's head and JSON body.
type Got = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on `port`: answers 200 to each POST and records it, until stopped.
struct Receiver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(listener: TcpListener, got: Got) -> Self {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => serve(conn, &got),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting and closes the port (connections are then refused).
    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve(mut conn: TcpStream, got: &Got) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let len = head
            .lines()
            .find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        if body.len() < len {
            continue;
        }
        let json: Value = serde_json::from_str(&body[..len]).unwrap_or(Value::Null);
        got.lock().unwrap().push((head.to_owned(), json));
        let _ =
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    }
}

fn bodies(got: &Got) -> Vec<Value> {
    got.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
}

/// The (state, alert_id) of every notification received, in arrival order.
fn keys(got: &Got) -> Vec<(String, String)> {
    bodies(got)
        .iter()
        .map(|b| {
            (
                b["state"].as_str().unwrap_or("").to_owned(),
                b["alert_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn received(got: &Got, state: &str, nth: usize) -> bool {
    let mut ids: Vec<String> = keys(got)
        .into_iter()
        .filter(|(s, _)| s == state)
        .map(|(_, id)| id)
        .collect();
    ids.dedup();
    ids.len() >= nth
}

fn alerts(home: &Home) -> Value {
    home.conan(&["alerts", "--json"]).ok().json()
}

fn pid_of(home: &Home, name: &str) -> i32 {
    let view = home.listed(name).expect("listed");
    view["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no pid in {view}"))
}

fn status_of(home: &Home, name: &str) -> String {
    home.listed(name)
        .and_then(|v| v["status"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// An app directory: the hello app with restart policy `never`, so a killed process
/// leaves the deployment stopped on its own (down), and an env secret.
fn app_dir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(app("hello").join("app.js"), dir.path().join("app.js")).expect("copy");
    std::fs::write(
        dir.path().join("conan.toml"),
        format!(
            "name = \"{name}\"\nstart_command = \"node app.js\"\n\n[env]\nAPI_TOKEN = \"{SECRET}\"\n\n[restart]\npolicy = \"never\"\n"
        ),
    )
    .expect("conan.toml");
    dir
}

#[test]
fn alert_webhooks_survive_a_receiver_outage_and_a_daemon_restart_and_resolve() {
    let home = Home::new();
    let name = unique("alerted");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::fs::write(
        home.path().join("daemon.toml"),
        format!(
            r#"[monitor.alerts]
interval = "500ms"
retry_max = "1s"

[[monitor.alerts.webhooks]]
name = "test-hook"
url = "http://127.0.0.1:{port}{HOOK_PATH}"
headers = {{ Authorization = "Bearer {HEADER_TOKEN}" }}

[[monitor.alerts.rules]]
name = "app-down"
when = "down"
for = "1s"
resolve_for = "1s"
deployment = "{name}"
"#
        ),
    )
    .expect("daemon.toml");
    let got: Got = Arc::default();
    let receiver = Receiver::start(listener, got.clone());

    let dir = app_dir(&name);
    home.conan(&["deploy", dir.path().to_str().expect("utf-8"), "--json"])
        .ok();
    let url = home.listed(&name).expect("listed")["url"]
        .as_str()
        .expect("url")
        .to_owned();
    // The app logs each request: this line carries the env secret into its log.
    assert!(http_get(&url, &format!("/{SECRET}")).is_some());
    assert_eq!(alerts(&home)["firing"], Value::Array(vec![]));

    // 1. Killed: down for 1 s, the firing notification arrives.
    kill(pid_of(&home, &name), 9);
    wait_until("the app is seen stopped", Duration::from_secs(20), || {
        status_of(&home, &name) == "stopped"
    });
    wait_until("the firing notification", Duration::from_secs(20), || {
        received(&got, "firing", 1)
    });
    let (head, first) = got.lock().unwrap()[0].clone();
    assert!(
        head.starts_with(&format!("POST {HOOK_PATH} HTTP/1.1")),
        "{head}"
    );
    assert!(
        head.contains(&format!("authorization: Bearer {HEADER_TOKEN}")),
        "{head}"
    );
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(first["rule"], "app-down");
    assert_eq!(first["deployment"], name.as_str());
    assert_eq!(first["state"], "firing");
    assert!(first["value"].as_f64().expect("value") >= 0.9, "{first}");
    assert!(
        conan::Timestamp::parse_rfc3339(first["time"].as_str().expect("time")).is_ok(),
        "{first}"
    );
    let excerpt = first["excerpt"].as_str().expect("excerpt");
    assert!(excerpt.contains("hello listening on"), "{excerpt}");
    assert!(excerpt.contains("[redacted]"), "{excerpt}");
    assert!(!excerpt.contains(SECRET), "the env value leaked: {excerpt}");
    let view = alerts(&home);
    assert_eq!(view["firing"][0]["rule"], "app-down");
    assert_eq!(view["firing"][0]["deployment"], name.as_str());

    // 2. The receiver goes down; the app is started: the resolve waits in the outbox.
    receiver.stop();
    home.conan(&["start", &name]).ok();
    wait_until(
        "the resolve to wait in the outbox after a failed attempt",
        Duration::from_secs(20),
        || {
            let view = alerts(&home);
            view["firing"].as_array().is_some_and(Vec::is_empty)
                && view["pending"].as_array().is_some_and(|p| {
                    p.len() == 1
                        && p[0]["state"] == "resolved"
                        && p[0]["attempts"].as_u64() >= Some(1)
                })
        },
    );
    let view = alerts(&home);
    assert_eq!(view["pending"][0]["webhook"], "test-hook");
    assert!(
        view["pending"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{view}"
    );

    // 3. Killed again while the receiver is down: a second firing queues behind it.
    kill(pid_of(&home, &name), 9);
    wait_until(
        "the second firing in the outbox",
        Duration::from_secs(20),
        || {
            let view = alerts(&home);
            view["pending"].as_array().is_some_and(|p| {
                p.len() == 2 && p[0]["state"] == "resolved" && p[1]["state"] == "firing"
            })
        },
    );
    assert_eq!(
        alerts(&home)["pending"][1]["attempts"],
        0,
        "in order: it waits"
    );

    // 4. The daemon restarts (the next command starts a new one): nothing is lost, the
    // alert is still firing and not announced again.
    home.conan(&["daemon", "stop"]).ok();
    let view = alerts(&home);
    assert_eq!(view["firing"].as_array().map(Vec::len), Some(1), "{view}");
    assert_eq!(view["firing"][0]["deployment"], name.as_str());
    std::thread::sleep(Duration::from_secs(3)); // longer than `for`: a re-announcement would show
    let view = alerts(&home);
    assert_eq!(
        view["pending"].as_array().map(Vec::len),
        Some(2),
        "no notification lost or added by the restart: {view}"
    );

    // 5. The receiver comes back: both arrive, in order.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind the receiver's port");
    let receiver = Receiver::start(listener, got.clone());
    wait_until("the queued notifications", Duration::from_secs(20), || {
        received(&got, "resolved", 1) && received(&got, "firing", 2)
    });
    wait_until("an empty outbox", Duration::from_secs(10), || {
        alerts(&home)["pending"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });

    // 6. Started again: resolved.
    home.conan(&["start", &name]).ok();
    wait_until("the second resolve", Duration::from_secs(20), || {
        received(&got, "resolved", 2)
    });
    receiver.stop();

    // Every notification arrived, in order, each at most twice.
    let keys = keys(&got);
    let mut distinct: Vec<(String, String)> = Vec::new();
    for k in &keys {
        if !distinct.contains(k) {
            distinct.push(k.clone());
        }
        let copies = keys.iter().filter(|o| *o == k).count();
        assert!(copies <= 2, "{k:?} arrived {copies} times: {keys:?}");
    }
    let states: Vec<&str> = distinct.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        states,
        vec!["firing", "resolved", "firing", "resolved"],
        "{keys:?}"
    );
    assert_eq!(distinct[0].1, distinct[1].1, "a resolve names its firing");
    assert_eq!(distinct[2].1, distinct[3].1);
    assert_ne!(distinct[0].1, distinct[2].1);
    assert!(
        alerts(&home)["firing"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    // Nothing logs the webhook's secrets; the log says what failed and where.
    let log = home.daemon_log();
    assert!(
        !log.contains(HEADER_TOKEN) && !log.contains(HOOK_PATH),
        "{log}"
    );
    assert!(!log.contains(SECRET), "{log}");
    assert!(log.contains("webhook delivery failed"), "{log}");
}
