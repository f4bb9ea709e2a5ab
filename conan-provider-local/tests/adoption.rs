//! Deployments outlive the manager: a manager process killed with SIGKILL, a new provider
//! adopting the same pid (verified by start time) with no log line lost, and a recycled pid
//! never adopted.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_provider_local::LocalProvider;

const PORTS: std::ops::RangeInclusive<u16> = 23500..=23999;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn manager_spec(id: &str, name: &str) -> DeploymentSpec {
    DeploymentSpec::new(DeploymentId::new(id), Revision(1), config(name, "hello"))
}

/// Not a test on its own: the body of the child "manager" process that the adoption test
/// starts (it re-executes this test binary). Without the variables it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_manager() {
    let (Ok(state), Ok(id), Ok(name)) = (
        std::env::var("ADOPT_TEST_STATE"),
        std::env::var("ADOPT_TEST_ID"),
        std::env::var("ADOPT_TEST_NAME"),
    ) else {
        return;
    };
    let p = LocalProvider::builder()
        .state_dir(state)
        .port_range(PORTS)
        .build()
        .unwrap();
    let info = p
        .deploy(
            &OperationContext::detached(),
            &manager_spec(&id, &name),
            None,
        )
        .await
        .unwrap();
    println!("READY {} {}", info.instances[0].id, info.port().unwrap());
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_killed_with_sigkill_is_adopted_with_the_same_pid_and_no_lost_lines() {
    let state = tempfile::tempdir().unwrap();
    let id = format!("dep-adopt-{}", fastrand::u32(..));
    let name = unique("adopt");
    let _g = Guard(vec![id.clone()]);
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_manager",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ADOPT_TEST_STATE", state.path())
        .env("ADOPT_TEST_ID", &id)
        .env("ADOPT_TEST_NAME", &name)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let (pid, port) = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child manager ended early"
        );
        if let Some(at) = line.find("READY ") {
            let rest = line[at + 6..].trim();
            let mut it = rest.split(' ');
            break (
                it.next().unwrap().to_owned(),
                it.next().unwrap().parse::<u16>().unwrap(),
            );
        }
    };
    // SIGKILL the manager: the app keeps running and its output keeps being recorded.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(alive(pid.parse().unwrap()), "the app outlives its manager");
    for i in 0..5 {
        assert_eq!(get(port, &format!("/while-orphaned-{i}")).await, Some(200));
    }

    let p = std::sync::Arc::new(
        LocalProvider::builder()
            .state_dir(state.path())
            .port_range(PORTS)
            .build()
            .unwrap(),
    );
    let ctx = OperationContext::detached();
    let spec = known(&manager_spec(&id, &name));
    let found = p.recover(&ctx, std::slice::from_ref(&spec)).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].status, ObservedStatus::Running);
    assert_eq!(found[0].runtime.instances[0].id, pid, "same pid adopted");
    assert_eq!(found[0].runtime.port(), Some(port));

    assert_eq!(get(port, "/after-adoption").await, Some(200));
    let lines = logs(&p, &spec).await;
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.starts_with("hello listening"))
            .count(),
        1,
        "{messages:?}"
    );
    for i in 0..5 {
        let want = format!("GET /while-orphaned-{i}");
        assert_eq!(
            messages.iter().filter(|m| **m == want).count(),
            1,
            "{want}: {messages:?}"
        );
    }
    assert!(messages.contains(&"GET /after-adoption"));

    // The adopted instance is supervised as before: a crash is restarted (its exit status
    // is unknown: it was not our child) ...
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.parse().unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut restarted = false;
    for _ in 0..500 {
        if p.metrics(&spec).await.unwrap().restarts == 1 && get(port, "/health").await == Some(200)
        {
            restarted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(restarted, "the adopted app was restarted after a crash");
    let now = marked(&id);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].to_string(), pid);
    // ... and stopped as before.
    p.stop(&ctx, &spec).await.unwrap();
    assert!(marked(&id).is_empty());
    assert!(!alive(now[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycled_pid_is_never_adopted() {
    let state = tempfile::tempdir().unwrap();
    // A live process that is not ours, recorded with another start time.
    let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
    let id = format!("dep-recycled-{}", fastrand::u32(..));
    let dir = state.path().join("deployments").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let saved = serde_json::json!({
        "id": id, "revision": 1, "stopped": false,
        "instance": { "key": "r1-x", "pid": stranger.id(), "start_time": 1, "port": 23990,
                      "revision": 1, "started_at_micros": 0 }
    });
    std::fs::write(dir.join("state.json"), saved.to_string()).unwrap();
    let p = LocalProvider::builder()
        .state_dir(state.path())
        .port_range(PORTS)
        .build()
        .unwrap();
    let spec = known(&manager_spec(&id, "recycled"));
    let found = p
        .recover(&OperationContext::detached(), std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert!(
        matches!(found[0].status, ObservedStatus::Failed { .. }),
        "{found:?}"
    );
    assert!(found[0].failure.is_some());
    assert!(alive(stranger.id()), "a stranger's process is left alone");
    stranger.kill().unwrap();
    let _ = stranger.wait();
}

/// A fresh provider over the same state directory reports what it finds from the known
/// state alone: a stopped deployment stopped (and `start` resumes it), one whose process
/// died while no provider watched failed with a failure report, an unknown one failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_provider_reports_stopped_gone_and_unknown_deployments() {
    let (p, _dir) = provider(PORTS);
    let ctx = OperationContext::detached();
    let a = spec(config(&unique("rec-stopped"), "hello"));
    let b = spec(config(&unique("rec-gone"), "hello"));
    let ghost = spec(config(&unique("rec-ghost"), "hello"));
    let _g = Guard::new(&[&a.id, &b.id]);
    let ra = p.deploy(&ctx, &a, None).await.unwrap();
    let rb = p.deploy(&ctx, &b, None).await.unwrap();
    p.stop(&ctx, &KnownDeployment::new(a.clone(), ra.clone()))
        .await
        .unwrap();
    let fresh = fresh(&p);
    // The old provider stops watching; then B's app dies while nobody watches.
    drop(p);
    let pid_b: u32 = rb.instances[0].id.parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_b as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid_b)).await);

    let ka = KnownDeployment::new(a.clone(), ra.stopped());
    let kb = KnownDeployment::new(b.clone(), rb);
    let found = fresh
        .recover(&ctx, &[ka.clone(), kb.clone(), known(&ghost)])
        .await
        .unwrap();
    let of = |id: &DeploymentId| found.iter().find(|f| f.id == *id).unwrap();
    assert_eq!(of(&a.id).status, ObservedStatus::Stopped);
    assert!(matches!(of(&b.id).status, ObservedStatus::Failed { .. }));
    let failure = of(&b.id).failure.as_ref().expect("failure report");
    assert!(
        failure.reason.contains("exited while no manager"),
        "{failure}"
    );
    assert!(
        failure
            .last_logs
            .iter()
            .any(|l| l.message.contains("hello listening"))
    );
    assert!(matches!(
        of(&ghost.id).status,
        ObservedStatus::Failed { .. }
    ));
    assert!(marked(b.id.as_str()).is_empty());

    let resumed = fresh.start(&ctx, &ka).await.unwrap();
    assert_eq!(get(resumed.port().unwrap(), "/health").await, Some(200));
    assert!(matches!(
        fresh.start(&ctx, &known(&ghost)).await,
        Err(conan_core::Error::NotFound { .. })
    ));
    fresh.remove(&ctx, &ka).await.unwrap();
    fresh.remove(&ctx, &kb).await.unwrap();
    assert!(marked(a.id.as_str()).is_empty());
}
