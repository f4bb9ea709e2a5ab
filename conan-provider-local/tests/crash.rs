//! The managing process really dies (SIGKILL) in the middle of a deploy, an update's
//! readiness gate or a blue-green switch; a fresh provider over the same state directory
//! must then account for every process: exactly one instance per deployment (or none),
//! the pid it reports alive and right, and `stop` / `remove` leave nothing (issue 10,
//! finding 1). Damaged state files must not stop the recovery of the other deployments
//! (finding 4).
//!
//! The "manager" is this test binary re-executed with `CRASH_TEST_*` variables (see
//! [`child_manager`]); the test SIGKILLs it at the chosen point.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_provider_local::LocalProvider;

const PORTS: std::ops::RangeInclusive<u16> = 25200..=25399;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Live processes of deployment `id`, by instance key (from their `CONAN_INSTANCE`).
fn instances_of(id: &str) -> BTreeMap<String, Vec<u32>> {
    let prefix = format!("CONAN_INSTANCE={id}/");
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if let Some(key) = env
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        {
            out.entry(String::from_utf8_lossy(key).into_owned())
                .or_default()
                .push(pid);
        }
    }
    out
}

/// The config the child manager deploys: `app` with its env, an HTTP check and a
/// healthy deadline long enough for a slow start.
fn crash_config(name: &str, app_name: &str, slow_ms: u32) -> DeploymentConfig {
    let mut c = config(name, app_name);
    c.env.insert("SLOW_START_MS", slow_ms.to_string());
    c.health_check = Some(HealthCheck::http("/").interval(Duration::from_millis(200)));
    c.update.healthy_deadline = Duration::from_secs(30);
    c.update.strategy = UpdateStrategy::BlueGreen;
    c
}

/// The two revisions of a scenario.
fn scenario_specs(scenario: &str, id: &str, name: &str) -> (DeploymentSpec, DeploymentSpec) {
    let id = DeploymentId::new(id);
    let (first, second) = match scenario {
        // Revision 1 ignores SIGTERM and takes 30 s to stop: the switch stays in progress.
        "switch" => {
            let mut old = crash_config(name, "ignore-sigterm", 0);
            old.stop.timeout = Duration::from_secs(30);
            (old, crash_config(name, "slow-start", 10))
        }
        // Three replicas replaced one at a time; each new one warms up for 2 s.
        "rolling" => {
            let mut old = crash_config(name, "slow-start", 10);
            old.replicas = 3;
            old.update.strategy = UpdateStrategy::Rolling;
            let mut new = old.clone();
            new.env.insert("SLOW_START_MS", "2000");
            (old, new)
        }
        _ => (
            crash_config(name, "slow-start", 10),
            crash_config(name, "slow-start", 4000),
        ),
    };
    let mut second = second;
    second.env.insert("REVISION_SECRET", "two");
    (
        DeploymentSpec::new(id.clone(), Revision(1), first),
        DeploymentSpec::new(id, Revision(2), second),
    )
}

/// Not a test on its own: the body of the child "manager" process. Without the variables
/// it does nothing. Scenario `deploy` deploys a slow revision 1; `update` and `switch`
/// deploy revision 1, print its runtime, then update to revision 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_manager() {
    let (Ok(state), Ok(id), Ok(name), Ok(scenario)) = (
        std::env::var("CRASH_TEST_STATE"),
        std::env::var("CRASH_TEST_ID"),
        std::env::var("CRASH_TEST_NAME"),
        std::env::var("CRASH_TEST_SCENARIO"),
    ) else {
        return;
    };
    let p = LocalProvider::builder()
        .state_dir(state)
        .port_range(PORTS)
        .node_path("/usr/bin/node")
        .build()
        .unwrap();
    let ctx = OperationContext::detached();
    let (first, second) = scenario_specs(&scenario, &id, &name);
    if scenario == "deploy" {
        let mut slow = first.clone();
        Arc::make_mut(&mut slow.config)
            .env
            .insert("SLOW_START_MS", "4000");
        let _ = p.deploy(&ctx, &slow, None).await;
        println!("DEPLOYED (too late)");
        return;
    }
    let info = p.deploy(&ctx, &first, None).await.unwrap();
    println!("READY {}", serde_json::to_string(&info).unwrap());
    let known = KnownDeployment::new(first, info);
    let _ = p.update(&ctx, &known, &second).await;
    println!("UPDATED (too late)");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Starts the child manager for `scenario`; returns it and its stdout lines.
fn start_manager(
    state: &Path,
    id: &str,
    name: &str,
    scenario: &str,
) -> (
    KillOnDrop,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_manager",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CRASH_TEST_STATE", state)
        .env("CRASH_TEST_ID", id)
        .env("CRASH_TEST_NAME", name)
        .env("CRASH_TEST_SCENARIO", scenario)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (KillOnDrop(child), out)
}

/// Reads the child's output up to its `READY` line: the runtime of revision 1.
fn ready_runtime(
    lines: &mut std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) -> RuntimeInfo {
    for line in lines {
        let line = line.unwrap();
        if let Some(at) = line.find("READY ") {
            return serde_json::from_str(&line[at + 6..]).unwrap();
        }
    }
    panic!("the child manager ended before it was ready");
}

/// Waits (boundedly) for a child of the test to end, and reaps it. A leftover is killed.
async fn reaped(child: &mut std::process::Child) -> bool {
    let ended = wait_until(Duration::from_secs(5), || {
        child.try_wait().ok().flatten().is_some()
    })
    .await;
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
    ended
}

fn sigkill(child: &mut KillOnDrop) {
    child.0.kill().unwrap();
    child.0.wait().unwrap();
}

fn fresh_provider(state: &Path) -> LocalProvider {
    LocalProvider::builder()
        .state_dir(state)
        .port_range(PORTS)
        .node_path("/usr/bin/node")
        .build()
        .unwrap()
}

/// Polls until an instance of revision `rev` of `id` has a live process.
async fn wait_for_revision(id: &str, rev: u64) {
    let prefix = format!("r{rev}-");
    assert!(
        wait_until(Duration::from_secs(20), || instances_of(id)
            .keys()
            .any(|k| k.starts_with(&prefix)))
        .await,
        "revision {rev} never started"
    );
}

/// The invariant after a recovery: at most one instance runs; when the deployment was
/// found running, exactly one, and its leader is the pid reported.
fn assert_accounted(id: &str, found: &RecoveredDeployment) {
    let running = instances_of(id);
    if found.status.is_running() {
        assert_eq!(
            running.len(),
            1,
            "exactly one instance: {running:?} {found:?}"
        );
        let pid: u32 = found.runtime.instances[0].id.parse().unwrap();
        assert!(alive(pid), "the reported pid {pid} is alive");
        let (_, pids) = running.iter().next().unwrap();
        assert!(
            pids.contains(&pid),
            "the reported pid {pid} is the instance's: {running:?}"
        );
    } else {
        assert!(
            running.is_empty(),
            "nothing runs of a {found:?}: {running:?}"
        );
    }
}

/// Stop and remove leave no process and no state behind.
async fn assert_stop_and_remove_clean(p: &LocalProvider, known: &KnownDeployment, state: &Path) {
    let ctx = OperationContext::detached();
    p.stop(&ctx, known).await.unwrap();
    assert!(
        instances_of(known.id().as_str()).is_empty(),
        "stop left processes"
    );
    p.remove(&ctx, known).await.unwrap();
    assert!(
        instances_of(known.id().as_str()).is_empty(),
        "remove left processes"
    );
    assert!(!state.join("deployments").join(known.id().as_str()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_killed_during_the_first_deploys_gate_leaves_no_invisible_instance() {
    let state = tempfile::tempdir().unwrap();
    let id = format!("dep-crash-deploy-{}", fastrand::u32(..));
    let name = unique("crash-deploy");
    let _g = Guard(vec![id.clone()]);
    let (mut child, _out) = start_manager(state.path(), &id, &name, "deploy");
    // The app is spawned and warming up (it listens after 4 s): kill the manager.
    wait_for_revision(&id, 1).await;
    sigkill(&mut child);
    assert_eq!(instances_of(&id).len(), 1, "the app outlived its manager");

    let p = fresh_provider(state.path());
    let (first, _) = scenario_specs("deploy", &id, &name);
    let known = known(&first);
    let found = p
        .recover(&OperationContext::detached(), std::slice::from_ref(&known))
        .await
        .unwrap();
    assert!(
        matches!(&found[0].status, ObservedStatus::Failed { reason } if reason.contains("interrupted")),
        "{found:?}"
    );
    assert_accounted(&id, &found[0]);
    // Deploying again gives one instance, not two.
    let info = p
        .deploy(&OperationContext::detached(), &first, Some(&known))
        .await
        .unwrap();
    let running = instances_of(&id);
    assert_eq!(running.len(), 1, "{running:?}");
    assert_stop_and_remove_clean(&p, &KnownDeployment::new(first, info), state.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_killed_during_an_updates_gate_keeps_the_old_revision_and_kills_the_new() {
    let state = tempfile::tempdir().unwrap();
    let id = format!("dep-crash-update-{}", fastrand::u32(..));
    let name = unique("crash-update");
    let _g = Guard(vec![id.clone()]);
    let (mut child, mut out) = start_manager(state.path(), &id, &name, "update");
    let runtime = ready_runtime(&mut out);
    let old_pid: u32 = runtime.instances[0].id.parse().unwrap();
    // Revision 2 is spawned and warming up: kill the manager during its gate.
    wait_for_revision(&id, 2).await;
    sigkill(&mut child);
    assert_eq!(
        instances_of(&id).len(),
        2,
        "both revisions outlived the manager"
    );

    let p = fresh_provider(state.path());
    let (first, _) = scenario_specs("update", &id, &name);
    // What the manager's record says: revision 1 serves (the update never finished).
    let known = KnownDeployment::new(first, runtime);
    let found = p
        .recover(&OperationContext::detached(), std::slice::from_ref(&known))
        .await
        .unwrap();
    assert_eq!(found[0].status, ObservedStatus::Running, "{found:?}");
    assert_eq!(found[0].revision, Revision(1));
    assert_eq!(found[0].runtime.instances[0].id, old_pid.to_string());
    assert_accounted(&id, &found[0]);
    let known = KnownDeployment::new(known.spec.clone(), found[0].runtime.clone());
    assert_stop_and_remove_clean(&p, &known, state.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_killed_during_a_blue_green_switch_keeps_the_new_revision_only() {
    let state = tempfile::tempdir().unwrap();
    let id = format!("dep-crash-switch-{}", fastrand::u32(..));
    let name = unique("crash-switch");
    let _g = Guard(vec![id.clone()]);
    let (mut child, mut out) = start_manager(state.path(), &id, &name, "switch");
    let runtime = ready_runtime(&mut out);
    let old_pid: u32 = runtime.instances[0].id.parse().unwrap();
    // Revision 2 passed its gate and serves (state.json names it); revision 1 ignores
    // SIGTERM, so the switch is still stopping it: kill the manager now.
    let state_file = state
        .path()
        .join("deployments")
        .join(&id)
        .join("state.json");
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::read(&state_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["instance"]["revision"] == 2)
        })
        .await,
        "revision 2 never served"
    );
    assert!(alive(old_pid));
    sigkill(&mut child);
    assert_eq!(instances_of(&id).len(), 2);

    let p = fresh_provider(state.path());
    let (first, _) = scenario_specs("switch", &id, &name);
    let known = KnownDeployment::new(first, runtime);
    let found = p
        .recover(&OperationContext::detached(), std::slice::from_ref(&known))
        .await
        .unwrap();
    assert_eq!(found[0].status, ObservedStatus::Running, "{found:?}");
    assert_eq!(
        found[0].revision,
        Revision(2),
        "the serving revision is adopted"
    );
    assert_accounted(&id, &found[0]);
    assert!(!alive(old_pid), "the old side of the switch is gone");
    let port = found[0].runtime.port().unwrap();
    assert_eq!(get(port, "/").await, Some(200));
    let known = KnownDeployment::new(known.spec.clone(), found[0].runtime.clone());
    assert_stop_and_remove_clean(&p, &known, state.path()).await;
}

/// A manager killed after a first deploy's gate passed but before `state.json` named the
/// instance: the ready instance of the revision the caller expects is adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_instance_no_state_file_names_is_adopted_when_its_revision_is_expected() {
    let (p, dir) = provider(PORTS);
    let ctx = OperationContext::detached();
    let s = spec(config(&unique("crash-ready"), "hello"));
    let _g = Guard::new(&[&s.id]);
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let pid = info.instances[0].id.clone();
    drop(p);
    let dep_dir = dir.path().join("deployments").join(s.id.as_str());
    std::fs::remove_file(dep_dir.join("state.json")).unwrap();
    let fresh = fresh_provider(dir.path());
    // The manager's record has no runtime yet (the deploy never answered).
    let found = fresh.recover(&ctx, &[known(&s)]).await.unwrap();
    assert_eq!(found[0].status, ObservedStatus::Running, "{found:?}");
    assert_eq!(found[0].runtime.instances[0].id, pid);
    assert_accounted(s.id.as_str(), &found[0]);
    // A ready instance of a revision the caller does not expect is not adopted.
    drop(fresh);
    std::fs::remove_file(dep_dir.join("state.json")).unwrap();
    let other = fresh_provider(dir.path());
    let mut later = s.clone();
    later.revision = Revision(7);
    let found = other.recover(&ctx, &[known(&later)]).await.unwrap();
    assert!(
        matches!(found[0].status, ObservedStatus::Failed { .. }),
        "{found:?}"
    );
    assert_accounted(s.id.as_str(), &found[0]);
    other.remove(&ctx, &known(&later)).await.unwrap();
}

/// A process that carries a deployment's marker but that no tracked instance explains
/// (say, left by a launch whose record was lost) does not survive `stop` or `remove`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_remove_sweep_processes_no_tracked_instance_explains() {
    let (p, _dir) = provider(PORTS);
    let ctx = OperationContext::detached();
    let s = spec(config(&unique("crash-sweep"), "hello"));
    let _g = Guard::new(&[&s.id]);
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let stray = || {
        Command::new("sleep")
            .arg("60")
            .env("CONAN_INSTANCE", format!("{}/r1-stray", s.id))
            .env("CONAN_DEPLOYMENT_ID", s.id.as_str())
            .spawn()
            .unwrap()
    };
    let mut a = stray();
    let k = KnownDeployment::new(s.clone(), info);
    p.stop(&ctx, &k).await.unwrap();
    assert!(reaped(&mut a).await, "stop swept the stray");
    assert!(instances_of(s.id.as_str()).is_empty());
    let mut b = stray();
    p.remove(&ctx, &k).await.unwrap();
    assert!(reaped(&mut b).await, "remove swept the stray");
    assert!(instances_of(s.id.as_str()).is_empty());
}

/// A truncated `state.json` (and a truncated instance record) among three deployments:
/// the other two are recovered and supervised, the damaged one is flagged and its
/// process accounted for (adopted through the runtime the caller knows); recovery of
/// the batch never fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_file_flags_one_deployment_and_recovers_the_others() {
    let (p, dir) = provider(PORTS);
    let ctx = OperationContext::detached();
    let specs: Vec<DeploymentSpec> = (0..3)
        .map(|i| spec(config(&unique(&format!("crash-damaged-{i}")), "hello")))
        .collect();
    let _g = Guard::new(&specs.iter().map(|s| &s.id).collect::<Vec<_>>());
    let mut knowns = Vec::new();
    for s in &specs {
        let info = p.deploy(&ctx, s, None).await.unwrap();
        knowns.push(KnownDeployment::new(s.clone(), info));
    }
    drop(p);
    let dep_dir = |s: &DeploymentSpec| dir.path().join("deployments").join(s.id.as_str());
    // Deployment 0: its state file cut in the middle.
    let state0 = dep_dir(&specs[0]).join("state.json");
    let bytes = std::fs::read(&state0).unwrap();
    std::fs::write(&state0, &bytes[..bytes.len() / 2]).unwrap();
    // Deployment 1: its serving instance's record is garbage.
    for e in std::fs::read_dir(dep_dir(&specs[1]).join("instances")).unwrap() {
        std::fs::write(e.unwrap().path().join("instance.json"), b"\0\0{garbage").unwrap();
    }
    let fresh = fresh_provider(dir.path());
    let found = fresh.recover(&ctx, &knowns).await.unwrap();
    assert_eq!(found.len(), 3);
    for (f, k) in found.iter().zip(&knowns) {
        assert_eq!(f.id, *k.id());
        assert_eq!(f.status, ObservedStatus::Running, "{f:?}");
        assert_eq!(f.runtime.instances[0].id, k.runtime.instances[0].id);
        assert_accounted(k.id().as_str(), f);
    }
    let flag = found[0]
        .failure
        .as_ref()
        .expect("the damaged one is flagged");
    assert!(flag.reason.contains("state file damaged"), "{flag}");
    assert!(found[1].failure.is_none() && found[2].failure.is_none());
    // Supervised: a killed app of a healthy deployment is restarted.
    let pid2: u32 = found[2].runtime.instances[0].id.parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid2 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let id2 = specs[2].id.as_str().to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = instances_of(&id2);
            now.len() == 1 && now.values().next().is_some_and(|p| !p.contains(&pid2))
        })
        .await,
        "the app was restarted"
    );
    // The state file was rewritten: a later provider reads it again.
    assert!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&state0).unwrap()).is_ok());
    for k in &knowns {
        fresh.remove(&ctx, k).await.unwrap();
        assert!(instances_of(k.id().as_str()).is_empty());
    }
}

/// With a damaged state file and no runtime to tell which instance served, a lone live
/// ready instance is still adopted; processes of a launch that never became ready are
/// killed; the deployment is flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_file_without_a_known_runtime_adopts_the_lone_ready_instance() {
    let (p, dir) = provider(PORTS);
    let ctx = OperationContext::detached();
    let s = spec(config(&unique("crash-damaged-lone"), "hello"));
    let _g = Guard::new(&[&s.id]);
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    drop(p);
    let dep = dir.path().join("deployments").join(s.id.as_str());
    std::fs::write(dep.join("state.json"), b"{\"id\":").unwrap();
    // A stray launch that never became ready (a record in phase "starting").
    let stray_dir = dep.join("instances").join("r1-stray");
    std::fs::create_dir_all(&stray_dir).unwrap();
    let mut stray = Command::new("sleep")
        .arg("60")
        .env("CONAN_INSTANCE", format!("{}/r1-stray", s.id))
        .spawn()
        .unwrap();
    let fresh = fresh_provider(dir.path());
    let found = fresh.recover(&ctx, &[known(&s)]).await.unwrap();
    assert!(reaped(&mut stray).await, "the stray was killed");
    assert_eq!(found[0].status, ObservedStatus::Running, "{found:?}");
    assert_eq!(found[0].runtime.instances[0].id, info.instances[0].id);
    assert!(
        found[0]
            .failure
            .as_ref()
            .is_some_and(|f| f.reason.contains("state file damaged"))
    );
    assert_accounted(s.id.as_str(), &found[0]);
    assert!(!stray_dir.exists(), "the stray's directory is reclaimed");
    fresh.remove(&ctx, &known(&s)).await.unwrap();
    assert!(instances_of(s.id.as_str()).is_empty());
}

/// Measurement, not a check (run with `--ignored --nocapture`): how long a fresh provider
/// takes to recover `CRASH_BENCH_N` (default 100) running deployments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_recovery_of_many_deployments() {
    let n: usize = std::env::var("CRASH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (p, dir) = provider(25400..=25999);
    let ctx = OperationContext::detached();
    let specs: Vec<DeploymentSpec> = (0..n)
        .map(|i| spec(config(&unique(&format!("bench-{i}")), "hello")))
        .collect();
    let _g = Guard::new(&specs.iter().map(|s| &s.id).collect::<Vec<_>>());
    let mut knowns = Vec::new();
    for chunk in specs.chunks(10) {
        let infos = futures::future::join_all(chunk.iter().map(|s| p.deploy(&ctx, s, None))).await;
        for (s, info) in chunk.iter().zip(infos) {
            knowns.push(KnownDeployment::new(s.clone(), info.unwrap()));
        }
    }
    drop(p);
    let fresh = fresh_provider(dir.path());
    let t = std::time::Instant::now();
    let found = fresh.recover(&ctx, &knowns).await.unwrap();
    let took = t.elapsed();
    assert!(found.iter().all(|f| f.status.is_running()));
    println!("recovered {n} running deployments in {took:?}");
    for k in &knowns {
        fresh.remove(&ctx, k).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_killed_half_way_through_a_rolling_update_keeps_three_replicas_of_the_old_revision()
{
    let state = tempfile::tempdir().unwrap();
    let id = format!("dep-crash-rolling-{}", fastrand::u32(..));
    let name = unique("crash-rolling");
    let _g = Guard(vec![id.clone()]);
    let (mut child, mut out) = start_manager(state.path(), &id, &name, "rolling");
    let runtime = ready_runtime(&mut out);
    assert_eq!(runtime.instances.len(), 3);
    // The first new replica is ready (an old one stopped for it) and the second warms up.
    let two_new = wait_until(Duration::from_secs(20), || {
        instances_of(&id)
            .keys()
            .filter(|k| k.starts_with("r2-"))
            .count()
            == 2
    })
    .await;
    assert!(two_new, "{:?}", instances_of(&id));
    sigkill(&mut child);

    let p = fresh_provider(state.path());
    let (first, _) = scenario_specs("rolling", &id, &name);
    let known = KnownDeployment::new(first, runtime);
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let ctx = OperationContext::new(EventSink::new(conan_core::EventBus::new(64), Some(tx)));
    let found = p.recover(&ctx, std::slice::from_ref(&known)).await.unwrap();
    assert_eq!(found[0].status, ObservedStatus::Running, "{found:?}");
    assert_eq!(found[0].revision, Revision(1));
    assert_eq!(
        found[0].runtime.instances.len(),
        2,
        "the two old replicas left: {found:?}"
    );
    // The third replica of revision 1 is started again; nothing of revision 2 is left.
    let full = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let r = reports.recv().await.unwrap();
            if let Some(rt) = r.runtime
                && rt.instances.len() == 3
            {
                return rt;
            }
        }
    })
    .await
    .expect("three replicas again");
    assert!(full.instances.iter().all(|i| i.revision == Revision(1)));
    let running = instances_of(&id);
    assert_eq!(running.len(), 3, "{running:?}");
    assert!(running.keys().all(|k| k.starts_with("r1-")), "{running:?}");
    let known = KnownDeployment::new(known.spec.clone(), full);
    assert_stop_and_remove_clean(&p, &known, state.path()).await;
}
