//! Restarts with growing delays, crash loop -> Failed, deliberate stop never restarts.

mod common;

use std::time::Duration;

use common::*;
use conan_core::prelude::*;
use conan_core::{Event, ExitStatus, RestartMode};

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
    let report = reports.recv().await.expect("a status report");
    assert_eq!(report.deployment, s.id);
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
