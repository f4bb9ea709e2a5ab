//! `replicas = N`: each replica a supervised process on its own port with its own instance
//! directory, restarted alone after a crash, adopted again by a fresh provider (as after a
//! manager restart), replaced step by step by a rolling update that rolls back when a new
//! replica fails.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_core::{Event, StatusReport};

const PORTS: std::ops::RangeInclusive<u16> = 26000..=26199;

fn replicas(name: &str, n: u32) -> DeploymentConfig {
    let mut c = config(name, "hello");
    c.replicas = n;
    c.restart.jitter = 0.0;
    c.restart.backoff_initial = Duration::from_millis(100);
    c
}

fn ports_of(info: &RuntimeInfo) -> BTreeSet<u16> {
    info.instances.iter().filter_map(|i| i.port).collect()
}

fn pids_of(info: &RuntimeInfo) -> BTreeSet<u32> {
    info.instances
        .iter()
        .map(|i| i.id.parse().unwrap())
        .collect()
}

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// A context whose status reports (what the manager would apply) can be read back.
fn reporting() -> (
    OperationContext,
    tokio::sync::mpsc::UnboundedReceiver<StatusReport>,
    tokio::sync::broadcast::Receiver<conan_core::EventEnvelope>,
) {
    let bus = conan_core::EventBus::new(4096);
    let rx = bus.subscribe();
    let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
    (
        OperationContext::new(EventSink::new(bus, Some(tx))),
        reports,
        rx,
    )
}

/// Waits for a report whose runtime satisfies `f`, answering that runtime.
async fn runtime_where(
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<StatusReport>,
    f: impl Fn(&RuntimeInfo) -> bool,
) -> RuntimeInfo {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let r = reports.recv().await.expect("a report");
            if let Some(rt) = r.runtime
                && f(&rt)
            {
                return rt;
            }
        }
    })
    .await
    .expect("the runtime in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_their_own_ports_and_a_killed_one_restarts_alone() {
    let (p, dir) = provider(PORTS);
    let s = spec(replicas(&unique("rep"), 3));
    let _g = Guard::new(&[&s.id]);
    let (ctx, mut reports, mut events) = reporting();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    assert_eq!(info.instances.len(), 3, "{info:?}");
    let ports = ports_of(&info);
    assert_eq!(ports.len(), 3, "each replica on its own port: {info:?}");
    for port in &ports {
        assert_eq!(get(*port, "/").await, Some(200), "port {port}");
    }
    let pids = pids_of(&info);
    assert_eq!(marked(s.id.as_str()).len(), 3);
    // Each replica has its own instance directory.
    let inst_dirs = std::fs::read_dir(
        dir.path()
            .join("deployments")
            .join(s.id.as_str())
            .join("instances"),
    )
    .unwrap()
    .count();
    assert_eq!(inst_dirs, 3);

    let victim = *pids.iter().next().unwrap();
    kill(victim);
    // Out of the serving set at once, then back with a new pid once ready again.
    let without = runtime_where(&mut reports, |rt| rt.instances.len() == 2).await;
    assert!(!pids_of(&without).contains(&victim));
    let back = runtime_where(&mut reports, |rt| rt.instances.len() == 3).await;
    let new_pids = pids_of(&back);
    assert!(!new_pids.contains(&victim));
    assert_eq!(
        new_pids.intersection(&pids).count(),
        2,
        "the other replicas were not touched"
    );
    assert_eq!(
        ports_of(&back),
        ports,
        "the replica restarts on its own port"
    );
    assert_eq!(p.status(&known(&s)).await.unwrap(), ObservedStatus::Running);
    for port in &ports {
        assert_eq!(get(*port, "/").await, Some(200), "port {port}");
    }
    let mut restarted = false;
    while let Ok(ev) = events.try_recv() {
        restarted |= matches!(ev.event, Event::Restarted { .. });
    }
    assert!(restarted, "the restart is an event");
    assert_eq!(p.metrics(&known(&s)).await.unwrap().restarts, 1);

    p.stop(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
    // Start brings all three back.
    let again = p.start(&ctx, &known(&s)).await.unwrap();
    assert_eq!(again.instances.len(), 3);
    p.remove(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_provider_adopts_every_replica_and_starts_the_ones_that_died_meanwhile() {
    let (p, _dir) = provider(PORTS);
    let s = spec(replicas(&unique("rep-adopt"), 3));
    let _g = Guard::new(&[&s.id]);
    let (ctx, _, _) = reporting();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let pids = pids_of(&info);
    let k = KnownDeployment::new(s.clone(), info.clone());
    // The manager goes away; its supervisors with it, the apps keep running.
    let q = fresh(&p);
    drop(p);
    let victim = *pids.iter().next().unwrap();
    kill(victim);
    assert!(wait_until(Duration::from_secs(5), || !alive(victim)).await);

    let (ctx, mut reports, _) = reporting();
    let found = q.recover(&ctx, std::slice::from_ref(&k)).await.unwrap();
    assert_eq!(found.len(), 1);
    let rt = found[0].runtime.clone();
    assert_eq!(
        pids_of(&rt),
        pids.iter().copied().filter(|p| *p != victim).collect(),
        "the two live replicas adopted with their pids: {rt:?}"
    );
    // The dead one is started again and joins.
    let full = runtime_where(&mut reports, |rt| rt.instances.len() == 3).await;
    assert_eq!(ports_of(&full).len(), 3);
    assert!(wait_until(Duration::from_secs(5), || marked(s.id.as_str()).len() == 3).await);
    for port in ports_of(&full) {
        assert_eq!(get(port, "/").await, Some(200), "port {port}");
    }
    q.remove(&ctx, &KnownDeployment::new(s.clone(), full))
        .await
        .unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_replaces_replicas_one_at_a_time_and_a_failing_one_rolls_back() {
    let (p, _dir) = provider(PORTS);
    let mut c = replicas(&unique("rep-roll"), 3);
    c.update.strategy = UpdateStrategy::Rolling;
    let s1 = spec(c.clone());
    let _g = Guard::new(&[&s1.id]);
    let (ctx, _, mut events) = reporting();
    let info1 = p.deploy(&ctx, &s1, None).await.unwrap();
    let old = pids_of(&info1);

    // Watch the live processes through the update: never fewer than 3 (surge 1,
    // unavailable 0), never more than 4.
    let id = s1.id.as_str().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut low, mut high) = (usize::MAX, 0);
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let n = marked(&id).len();
                low = low.min(n);
                high = high.max(n);
                std::thread::sleep(Duration::from_millis(5));
            }
            (low, high)
        })
    };
    let mut s2 = s1.clone();
    s2.revision = Revision(2);
    let mut c2 = c.clone();
    c2.env.insert("VERSION", "2");
    s2.config = c2.into();
    let info2 = p
        .update(&ctx, &KnownDeployment::new(s1.clone(), info1), &s2)
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (low, high) = watcher.join().unwrap();
    assert!(
        low >= 3 && high <= 4,
        "live processes during the update: {low}..={high}"
    );
    assert_eq!(info2.instances.len(), 3);
    assert!(info2.instances.iter().all(|i| i.revision == Revision(2)));
    assert!(pids_of(&info2).is_disjoint(&old));
    assert_eq!(marked(s1.id.as_str()).len(), 3);
    let mut steps = 0;
    while let Ok(ev) = events.try_recv() {
        if let Event::Progress { message, .. } = &ev.event
            && message.starts_with("rolling: starting 1 of revision 2")
        {
            steps += 1;
        }
    }
    assert_eq!(steps, 3, "one replica at a time");

    // Revision 3 never gets ready: the update fails and revision 2 serves with 3
    // replicas, its pids untouched where no step replaced them.
    let mut s3 = s2.clone();
    s3.revision = Revision(3);
    let mut c3 = DeploymentConfig::clone(&s2.config);
    c3.health_check = Some(HealthCheck::http("/health").interval(Duration::from_millis(200)));
    c3.source = app("crash");
    c3.env.insert("CRASH_AFTER_MS", "50");
    c3.update.healthy_deadline = Duration::from_secs(3);
    s3.config = c3.into();
    let before = pids_of(&info2);
    let err = p
        .update(&ctx, &KnownDeployment::new(s2.clone(), info2.clone()), &s3)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HealthCheckFailed { .. }), "{err}");
    assert!(
        err.failure().is_some(),
        "the failure bundle travels with the error"
    );
    let now = p.status(&known(&s2)).await.unwrap();
    assert_eq!(now, ObservedStatus::Running);
    assert_eq!(marked(s1.id.as_str()).len(), 3);
    let live: BTreeSet<u32> = marked(s1.id.as_str()).into_iter().collect();
    assert_eq!(
        live, before,
        "the first step failed: the old replicas were never touched"
    );
    p.remove(&ctx, &known(&s2)).await.unwrap();
    assert!(marked(s1.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_replica_leaves_the_serving_set_and_is_restarted_alone() {
    let (p, _dir) = provider(PORTS);
    let mut c = replicas(&unique("rep-sick"), 3);
    c.health_check = Some(
        HealthCheck::http("/health")
            .interval(Duration::from_millis(200))
            .failure_threshold(2),
    );
    let check = c.health_check.clone().unwrap();
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, mut reports, _) = reporting();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let pids = pids_of(&info);
    let sick = info.instances[0].clone();
    let sick_port = sick.port.unwrap();
    // The app answers 503 on /health from now on; its process stays up.
    assert_eq!(get(sick_port, "/toggle-health").await, Some(200));
    let without = runtime_where(&mut reports, |rt| rt.instances.len() == 2).await;
    assert!(!ports_of(&without).contains(&sick_port), "{without:?}");
    // The deployment as a whole stays healthy: the others pass.
    let k = KnownDeployment::new(s.clone(), info.clone());
    assert!(p.probe(&k, &check).await.unwrap().healthy);
    // Still failing: killed and restarted alone, then back once its new process passes.
    let back = runtime_where(&mut reports, |rt| rt.instances.len() == 3).await;
    let now = pids_of(&back);
    assert!(
        !now.contains(&sick.id.parse().unwrap()),
        "a new process: {back:?}"
    );
    assert_eq!(
        now.intersection(&pids).count(),
        2,
        "the healthy replicas untouched"
    );
    assert_eq!(get(sick_port, "/health").await, Some(200));
    assert_eq!(p.status(&known(&s)).await.unwrap(), ObservedStatus::Running);
    p.remove(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}

/// `Provider::scale`: out from 1 to 3 (each new replica on its own port, routed in by one
/// cutover once all are ready, the first one untouched), in to 1 (the cutover without the
/// removed replicas comes while they still run: drained first, stopped after), a scale-out
/// that cannot get its ports leaves the serving replica alone, and a stale revision is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_routes_before_it_stops_and_a_failed_scale_leaves_the_serving_replicas() {
    use std::sync::{Arc, Mutex};
    // Three ports only: a scale to 4 cannot get them.
    let (p, _dir) = provider(26400..=26402);
    let s = spec(replicas(&unique("scale"), 1));
    let _g = Guard::new(&[&s.id]);
    let (ctx, _reports, _events) = reporting();
    let first = p.deploy(&ctx, &s, None).await.unwrap();
    let first_pid = *pids_of(&first).iter().next().unwrap();

    // Each cutover: the ports it routes to, and how many deployment processes live then.
    type Cutovers = Arc<Mutex<Vec<(BTreeSet<u16>, usize)>>>;
    let seen: Cutovers = Arc::default();
    let record = seen.clone();
    let id = s.id.to_string();
    let cutover = conan_core::traffic::Cutover::new(move |rt: RuntimeInfo| {
        let (record, id) = (record.clone(), id.clone());
        Box::pin(async move {
            record
                .lock()
                .unwrap()
                .push((ports_of(&rt), marked(&id).len()));
        })
    });
    let routed = ctx.clone().with_cutover(Some(cutover));

    let out = p.scale(&routed, &known(&s), 3).await.unwrap();
    assert_eq!(out.instances.len(), 3, "{out:?}");
    assert_eq!(ports_of(&out).len(), 3, "each replica on its own port");
    assert!(
        pids_of(&out).contains(&first_pid),
        "the serving replica stays"
    );
    for port in ports_of(&out) {
        assert_eq!(get(port, "/").await, Some(200), "port {port}");
    }
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![(ports_of(&out), 3)],
        "one cutover, once all three were ready"
    );
    let mut scaled = known(&s);
    scaled.runtime = out.clone().into();
    std::sync::Arc::make_mut(&mut scaled.spec.config).replicas = 3;

    // Scaling in: routed without the removed two while they still run, then they stop.
    seen.lock().unwrap().clear();
    let back = p.scale(&routed, &scaled, 1).await.unwrap();
    assert_eq!(
        pids_of(&back),
        BTreeSet::from([first_pid]),
        "the oldest stays"
    );
    let cutovers = seen.lock().unwrap().clone();
    assert_eq!(cutovers.len(), 1, "{cutovers:?}");
    assert_eq!(cutovers[0].0, ports_of(&back));
    assert_eq!(cutovers[0].1, 3, "drained before they were stopped");
    assert!(wait_until(Duration::from_secs(10), || marked(s.id.as_str()).len() == 1).await);

    // Out of ports: the failed scale-out leaves nothing, the replica serves on.
    let mut one = known(&s);
    one.runtime = back.clone().into();
    let err = p.scale(&routed, &one, 4).await.unwrap_err();
    assert!(!err.to_string().is_empty());
    assert!(wait_until(Duration::from_secs(10), || marked(s.id.as_str()).len() == 1).await);
    assert_eq!(p.status(&one).await.unwrap(), ObservedStatus::Running);
    let port = *ports_of(&back).iter().next().unwrap();
    assert_eq!(get(port, "/").await, Some(200));

    // A scale asked for another revision than the one running is refused.
    let mut stale = one.clone();
    stale.spec.revision = Revision(9);
    assert!(matches!(
        p.scale(&routed, &stale, 2).await,
        Err(conan_core::Error::NotSupported { .. })
    ));
    p.remove(&ctx, &one).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}
