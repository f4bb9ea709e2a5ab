//! Restarts with growing delays, crash loop -> Failed, deliberate stop never restarts.

mod common;

use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_core::{Event, ExitStatus, RestartMode, StatusKind};

const PORTS: std::ops::RangeInclusive<u16> = 22500..=22999;

fn crash(name: &str, max_restarts: u32) -> DeploymentConfig {
    let mut c = DeploymentConfig::new(name);
    c.source = app("crash");
    c.env.insert("CRASH_AFTER_MS", "300");
    c.restart.max_restarts = max_restarts;
    c.restart.jitter = 0.0;
    c.restart.min_uptime = Duration::from_millis(100);
    c
}

/// Virtual time: the backoff sleeps (100, 200, 400, 800 ms) pass instantly, the processes
/// are real.
#[tokio::test(start_paused = true)]
async fn crash_restarts_with_growing_delays_then_crash_loop_fails() {
    let (p, _dir) = provider(PORTS);
    let s = spec(crash(&unique("loop"), 4));
    let _g = Guard::new(&[&s.id]);
    // The crash-loop failure is a status report (to the manager), restarts are events.
    let bus = conan_core::EventBus::new(4096);
    let mut rx = bus.subscribe();
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let ctx = OperationContext::new(EventSink::new(bus, Some(tx)));
    p.deploy(&ctx, &s, None).await.unwrap();
    // Paused time auto-advances whenever the runtime idles, so a tokio timeout would fire
    // while a real process runs; a real-time watchdog bounds the test instead.
    let id = s.id.as_str().to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        drop(Guard(vec![id]));
        eprintln!("crash loop test: no crash-loop failure within 90 s");
        std::process::abort();
    });
    let mut delays = Vec::new();
    // Each restart is reported twice (waiting, then the new runtime), then the crash loop
    // gives up.
    let mut restarts = Vec::new();
    let mut runtimes = 0;
    let report = loop {
        let report = reports.recv().await.expect("a status report");
        assert_eq!(report.deployment, s.id);
        match &report.status {
            ObservedStatus::Restarting { attempt, .. } => restarts.push(*attempt),
            ObservedStatus::Running => {
                assert!(report.runtime.is_some(), "{report:?}");
                runtimes += 1;
            }
            _ => break report,
        }
    };
    assert_eq!(restarts, vec![1, 2, 3, 4]);
    assert_eq!(runtimes, 4);
    assert!(
        matches!(report.status, ObservedStatus::Failed { .. }),
        "{report:?}"
    );
    let failure = report.failure.expect("a failure report");
    while let Ok(ev) = rx.try_recv() {
        if let Event::Restarted {
            attempt,
            exit,
            delay_ms,
            ..
        } = ev.event
        {
            assert_eq!(exit, ExitStatus::Code(1));
            assert_eq!(attempt as usize, delays.len() + 1);
            delays.push(delay_ms);
        }
    }
    assert_eq!(delays, vec![100, 200, 400, 800]);
    assert!(failure.reason.contains("crash loop"), "{failure}");
    assert_eq!(failure.exit, Some(ExitStatus::Code(1)));
    assert!(
        failure
            .last_logs
            .iter()
            .any(|l| l.message.contains("fatal error"))
    );
    assert!(matches!(
        p.status(&known(&s)).await.unwrap(),
        ObservedStatus::Failed { .. }
    ));
    assert_eq!(p.metrics(&known(&s)).await.unwrap().restarts, 4);
    assert!(marked(s.id.as_str()).is_empty());
    p.remove(&ctx, &known(&s)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_restart_kills_leftover_grandchildren_and_stop_never_restarts() {
    let (p, _dir) = provider(PORTS);
    let s = spec(config(&unique("gc-crash"), "grandchildren"));
    let _g = Guard::new(&[&s.id]);
    let (ctx, mut rx) = ctx();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let leader: u32 = info.instances[0].id.parse().unwrap();
    assert!(wait_until(Duration::from_secs(5), || marked(s.id.as_str()).len() >= 4).await);
    let before = marked(s.id.as_str());
    // Crash the app: its children must not survive into the restarted instance.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(ev) = rx.recv().await
                && let Event::Restarted { exit, .. } = ev.event
            {
                return exit;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(restarted, ExitStatus::Signal(9));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = marked(s.id.as_str());
            now.len() >= 4 && before.iter().all(|p| !now.contains(p))
        })
        .await,
        "old tree gone, new tree up"
    );
    p.stop(&ctx, &known(&s)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(marked(s.id.as_str()).is_empty());
    assert_eq!(p.status(&known(&s)).await.unwrap(), ObservedStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_exit_under_on_failure_stays_stopped() {
    let (p, _dir) = provider(PORTS);
    let mut c = crash(&unique("clean"), 4);
    c.env.insert("CRASH_CODE", "0");
    c.restart.policy = RestartMode::OnFailure;
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    p.deploy(&ctx, &s, None).await.unwrap();
    let k = known(&s);
    let mut stopped = false;
    for _ in 0..200 {
        if p.status(&k).await.unwrap()
            == (ObservedStatus::Exited {
                exit: ExitStatus::Code(0),
            })
        {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped);
    assert_eq!(p.metrics(&known(&s)).await.unwrap().restarts, 0);
}

// Issue 10, finding 6: after a supervised restart the manager's record shows the new pid and
// start time; while a crash loop waits out its backoff the deployment is `restarting`; and
// every restart is in the audit log.

/// A manager over a fresh local provider (and the store it writes to).
async fn managed() -> (
    std::sync::Arc<conan_provider_local::LocalProvider>,
    conan_core::DeploymentManager,
    std::sync::Arc<dyn conan_core::StateStore>,
    tempfile::TempDir,
) {
    let (p, dir) = provider(PORTS);
    let store: std::sync::Arc<dyn conan_core::StateStore> =
        std::sync::Arc::new(conan_core::store::MemoryStore::new());
    let m = conan_core::DeploymentManager::builder()
        .provider_arc(p.clone())
        .store_arc(store.clone())
        .build()
        .await
        .unwrap();
    (p, m, store, dir)
}

fn pid_of(record: &conan_core::store::DeploymentRecord) -> Option<u32> {
    record
        .runtime
        .as_deref()?
        .instances
        .first()?
        .id
        .parse()
        .ok()
}

fn restarts_in(audit: &[conan_core::store::AuditEntry]) -> Vec<(u32, ExitStatus, u64)> {
    audit
        .iter()
        .filter_map(|e| match &e.action {
            conan_core::AuditAction::Restart {
                attempt,
                exit,
                delay_ms,
                ..
            } => Some((*attempt, *exit, *delay_ms)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_managers_record_shows_the_new_live_pid_and_the_restart_is_audited() {
    let (_p, m, store, _dir) = managed().await;
    let mut c = config(&unique("repid"), "hello");
    c.provider = Some("local".into());
    c.restart.jitter = 0.0;
    let name = c.name.to_string();
    let first = m.deploy(c).await.unwrap();
    let _g = Guard::new(&[&first.id]);
    let old = pid_of(&first).expect("a pid");
    let old_start = first.runtime.as_deref().unwrap().instances[0].started_at;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = wait_until(Duration::from_secs(10), || {
        let r = m.get(&name).unwrap();
        r.status.kind() == StatusKind::Running && pid_of(&r).is_some_and(|p| p != old && alive(p))
    })
    .await;
    let record = m.get(&name).unwrap();
    assert!(restarted, "the record keeps {old}: {record:?}");
    let new = pid_of(&record).unwrap();
    assert_eq!(
        marked(first.id.as_str()),
        vec![new],
        "the record's pid is what runs"
    );
    assert!(record.runtime.as_deref().unwrap().instances[0].started_at > old_start);
    // Persisted: what a later manager loads from the store.
    let stored = store.load_deployments().await.unwrap();
    assert_eq!(pid_of(&stored[0]), Some(new));
    // Audited, with the transitions through `restarting`.
    let audit = m.audit(&conan_core::AuditQuery::default()).await.unwrap();
    assert_eq!(restarts_in(&audit), vec![(1, ExitStatus::Signal(9), 100)]);
    let through: Vec<_> = audit
        .iter()
        .filter_map(|e| match e.action {
            conan_core::AuditAction::Transition { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert!(
        through.ends_with(&[
            (StatusKind::Running, StatusKind::Restarting),
            (StatusKind::Restarting, StatusKind::Running)
        ]),
        "{through:?}"
    );
    m.remove(&name).await.unwrap();
    assert!(marked(first.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_backoff_of_a_crash_loop_the_deployment_is_restarting_not_running() {
    let (p, m, _store, _dir) = managed().await;
    let mut c = crash(&unique("waiting"), 10);
    c.provider = Some("local".into());
    c.restart.backoff_initial = Duration::from_secs(2);
    c.restart.backoff_max = Duration::from_secs(2);
    let name = c.name.to_string();
    let first = m.deploy(c).await.unwrap();
    let _g = Guard::new(&[&first.id]);
    let waiting = wait_until(Duration::from_secs(10), || {
        m.get(&name).unwrap().status.kind() == StatusKind::Restarting
    })
    .await;
    let record = m.get(&name).unwrap();
    assert!(waiting, "{}", record.status);
    match &record.status {
        DeploymentStatus::Restarting { attempt, exit, at } => {
            assert_eq!((*attempt, *exit), (1, ExitStatus::Code(1)));
            assert!(*at > record.created_at);
        }
        other => panic!("{other}"),
    }
    // The provider says the same, and measures nothing of the dead process.
    let k = conan_core::KnownDeployment::new(
        DeploymentSpec::new(record.id.clone(), record.revision, record.config.clone()),
        record.runtime.clone().unwrap_or_default(),
    );
    assert!(matches!(
        p.status(&k).await.unwrap(),
        ObservedStatus::Restarting { attempt: 1, .. }
    ));
    let metrics = p.metrics(&k).await.unwrap();
    assert_eq!((metrics.memory_bytes, metrics.restarts), (None, 1));
    // The restart comes (a new pid, running again), then the next crash waits again.
    let dead = pid_of(&record).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let r = m.get(&name).unwrap();
            r.status.kind() == StatusKind::Running && pid_of(&r).is_some_and(|p| p != dead)
        })
        .await,
        "{}",
        m.get(&name).unwrap().status
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            matches!(
                m.get(&name).unwrap().status,
                DeploymentStatus::Restarting { attempt: 2, .. }
            )
        })
        .await
    );
    let audit = m.audit(&conan_core::AuditQuery::default()).await.unwrap();
    assert_eq!(
        restarts_in(&audit),
        vec![
            (1, ExitStatus::Code(1), 2000),
            (2, ExitStatus::Code(1), 2000)
        ]
    );
    // A user can stop it while it waits.
    let stopped = m.stop(&name).await.unwrap();
    assert_eq!(stopped.status, DeploymentStatus::Stopped);
    assert!(marked(first.id.as_str()).is_empty());
    m.remove(&name).await.unwrap();
}

/// Issue 10, finding 2 (the supervisor's half): a health-check interval of u64::MAX seconds
/// panicked the supervisor (`Instant + Duration` overflow), so a killed app was never
/// restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_interval_of_u64_max_seconds_does_not_panic_and_a_killed_app_is_restarted() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("forever"), "hello");
    c.health_check = Some(HealthCheck::http("/health").interval(Duration::from_secs(u64::MAX)));
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let leader: u32 = info.instances[0].id.parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = marked(s.id.as_str());
            now.len() == 1 && now[0] != leader
        })
        .await,
        "the killed app was not restarted"
    );
    let mut running = false;
    for _ in 0..500 {
        if p.status(&known(&s)).await.unwrap() == ObservedStatus::Running {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running, "still supervised: running again");
    p.remove(&ctx, &known(&s)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}
