use std::sync::Arc;
use std::time::Duration;

use conan_core::store::{MemoryStore, StateStore};
use conan_core::testing::MemoryProvider;
use conan_core::{
    AlertState, DeploymentConfig, DeploymentId, DeploymentManager, Event, ExitStatus, Metrics,
    Resources, StatusKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::eval::{Evaluator, Observation, Phase, Signals, Step};
use super::*;
use crate::{Monitor, MonitorSettings};

const SEC: Duration = Duration::from_secs(1);

fn down_rule(for_s: u64, resolve_s: u64) -> AlertRule {
    AlertRule::new("down", AlertCondition::Down, 0.0)
        .hold(Duration::from_secs(for_s), Duration::from_secs(resolve_s))
}

fn obs(value: f64, breach: bool, clear: bool) -> Option<Observation> {
    Some(Observation {
        value,
        breach,
        clear,
    })
}

#[tokio::test(start_paused = true)]
async fn an_alert_fires_after_for_and_resolves_after_resolve_for() {
    let rule = down_rule(5, 3);
    let wall = Timestamp::now();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut phase = Phase::Idle;
    let breach = obs(1.0, true, false);
    let clear = obs(0.0, false, true);
    assert_eq!(phase.step(&rule, breach, at(0), wall), None);
    assert_eq!(phase.step(&rule, breach, at(4), wall), None, "not yet 5 s");
    // A break resets the `for` timer.
    assert_eq!(phase.step(&rule, clear, at(4), wall), None);
    assert_eq!(phase, Phase::Idle);
    assert_eq!(phase.step(&rule, breach, at(5), wall), None);
    assert_eq!(phase.step(&rule, breach, at(9), wall), None);
    assert_eq!(phase.step(&rule, breach, at(10), wall), Some(Step::Fire));
    // Firing: more breaches announce nothing.
    assert_eq!(phase.step(&rule, breach, at(11), wall), None);
    // Clear for 2 s, breached again: still firing, never re-announced.
    assert_eq!(phase.step(&rule, clear, at(12), wall), None);
    assert_eq!(phase.step(&rule, clear, at(14), wall), None);
    assert_eq!(phase.step(&rule, breach, at(14), wall), None);
    assert!(matches!(
        phase,
        Phase::Firing {
            clear_since: None,
            ..
        }
    ));
    // Unknown observations change nothing.
    assert_eq!(phase.step(&rule, None, at(30), wall), None);
    // Clear for 3 s: resolved.
    assert_eq!(phase.step(&rule, clear, at(15), wall), None);
    assert_eq!(phase.step(&rule, clear, at(17), wall), None);
    assert_eq!(phase.step(&rule, clear, at(18), wall), Some(Step::Resolve));
    assert_eq!(phase, Phase::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_value_between_resolve_below_and_the_threshold_keeps_the_state() {
    let rule = AlertRule::new("mem", AlertCondition::Memory, 0.9).resolve_below(0.8);
    let wall = Timestamp::now();
    let now = Instant::now();
    let o = |v: f64| {
        Some(Observation {
            value: v,
            breach: v >= rule.threshold,
            clear: v < rule.resolve_below,
        })
    };
    let mut phase = Phase::Idle;
    assert_eq!(phase.step(&rule, o(0.85), now, wall), None);
    assert_eq!(phase.step(&rule, o(0.95), now, wall), Some(Step::Fire));
    assert_eq!(phase.step(&rule, o(0.85), now, wall), None, "in the band");
    assert_eq!(phase.step(&rule, o(0.89), now, wall), None);
    assert_eq!(phase.step(&rule, o(0.7), now, wall), Some(Step::Resolve));
}

#[derive(Default)]
struct FakeSignals {
    errors: std::sync::Mutex<u64>,
    metrics: std::sync::Mutex<Option<Metrics>>,
}

impl Signals for FakeSignals {
    fn errors_per_minute(&self, _: &DeploymentId) -> u64 {
        *self.errors.lock().unwrap()
    }
    fn latest_metrics(&self, _: &DeploymentId) -> Option<Metrics> {
        self.metrics.lock().unwrap().clone()
    }
}

async fn manager_with(provider: MemoryProvider, store: Arc<MemoryStore>) -> DeploymentManager {
    DeploymentManager::builder()
        .provider(provider)
        .store_arc(store)
        .build()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn error_logs_memory_and_restarts_rules_read_their_signals() {
    let manager = manager_with(MemoryProvider::new(), Arc::new(MemoryStore::new())).await;
    let mut config = DeploymentConfig::builder("web")
        .label("tier", "web")
        .build()
        .unwrap();
    config.resources = Resources {
        memory: Some(conan_core::ByteSize(1000)),
        cpus: None,
    };
    let web = manager.deploy(config).await.unwrap();
    let other = manager
        .deploy(DeploymentConfig::builder("other").build().unwrap())
        .await
        .unwrap();
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("tier".to_owned(), "web".to_owned());
    let rules = vec![
        AlertRule::new("errors", AlertCondition::ErrorLogs, 10.0)
            .target(RuleTarget::Name("web".into())),
        AlertRule::new("mem", AlertCondition::Memory, 0.9),
        AlertRule::new(
            "flapping",
            AlertCondition::Restarts {
                window: Duration::from_secs(60),
            },
            3.0,
        )
        .target(RuleTarget::Labels(labels)),
    ];
    let mut eval = Evaluator::new(rules);
    let signals = FakeSignals::default();
    let all = manager.list();
    let since_of = |ts: &[super::eval::Transition], rule: &str| {
        ts.iter().find(|t| t.rule == rule).map(|t| t.since)
    };
    let fired = |ts: &[super::eval::Transition]| {
        ts.iter()
            .map(|t| (t.rule.clone(), t.name.to_string(), t.state, t.value))
            .collect::<Vec<_>>()
    };
    assert!(
        eval.evaluate(&all, None, &signals, Instant::now())
            .is_empty()
    );

    *signals.errors.lock().unwrap() = 12;
    // The memory limit comes from the config when the provider reports none.
    *signals.metrics.lock().unwrap() = Some({
        let mut m = Metrics::new();
        m.memory_bytes = Some(950);
        m
    });
    let firing = eval.evaluate(&all, None, &signals, Instant::now());
    let got = fired(&firing);
    assert_eq!(
        got,
        vec![
            ("errors".into(), "web".into(), AlertState::Firing, 12.0),
            ("mem".into(), "web".into(), AlertState::Firing, 0.95),
        ],
        "only web is named by `errors`; `other` has no memory limit"
    );
    // The provider's limit wins over the config's.
    *signals.metrics.lock().unwrap() = Some({
        let mut m = Metrics::new();
        m.memory_bytes = Some(950);
        m.memory_limit_bytes = Some(10_000);
        m
    });
    *signals.errors.lock().unwrap() = 3;
    let resolved = eval.evaluate(&all, None, &signals, Instant::now());
    assert_eq!(
        since_of(&resolved, "errors"),
        since_of(&firing, "errors"),
        "a resolve carries its firing's start"
    );
    let got = fired(&resolved);
    assert_eq!(
        got,
        vec![
            ("errors".into(), "web".into(), AlertState::Resolved, 3.0),
            ("mem".into(), "web".into(), AlertState::Resolved, 0.095),
        ]
    );

    // Restarts: 3 within the window fire for web (labels match), not for other.
    for id in [&web.id, &web.id, &other.id, &web.id] {
        let event = Event::Restarted {
            deployment: id.clone(),
            attempt: 1,
            exit: ExitStatus::Code(1),
            delay_ms: 0,
        };
        assert_eq!(eval.observe(&event, Instant::now()).as_ref(), Some(id));
    }
    let got = fired(&eval.evaluate(&all, None, &signals, Instant::now()));
    assert_eq!(
        got,
        vec![("flapping".into(), "web".into(), AlertState::Firing, 3.0)]
    );
    // They age out of the window: resolved.
    tokio::time::advance(Duration::from_secs(61)).await;
    let got = fired(&eval.evaluate(&all, None, &signals, Instant::now()));
    assert_eq!(
        got,
        vec![("flapping".into(), "web".into(), AlertState::Resolved, 0.0)]
    );
}

fn settings_with(rules: Vec<AlertRule>, webhooks: Vec<Webhook>) -> MonitorSettings {
    MonitorSettings {
        health: false,
        alerts: AlertSettings::default().with(webhooks, rules).unwrap(),
        ..MonitorSettings::default()
    }
}

/// The next alert event, within `within` of virtual time.
async fn next_alert(
    events: &mut broadcast::Receiver<conan_core::EventEnvelope>,
    within: Duration,
) -> Option<(String, AlertState, f64)> {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Event::Alert {
                        rule, state, value, ..
                    } = e.event
                    {
                        return (rule, state, value);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("bus closed"),
            }
        }
    })
    .await
    .ok()
}

async fn failed_event(events: &mut broadcast::Receiver<conan_core::EventEnvelope>) {
    loop {
        if let Event::StatusChanged { to, .. } = events.recv().await.unwrap().event
            && to.kind() == StatusKind::Failed
        {
            return;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashed_deployment_fires_down_after_for_and_resolves_once_started() {
    let provider = MemoryProvider::new();
    let store = Arc::new(MemoryStore::new());
    let manager = manager_with(provider.clone(), store.clone()).await;
    let monitor = Monitor::builder(manager.clone())
        .settings(settings_with(vec![down_rule(5, 2)], vec![]))
        .build();
    let mut events = manager.subscribe();
    provider.crash_after_deploy(Some(SEC));
    let web = manager
        .deploy(DeploymentConfig::builder("web").build().unwrap())
        .await
        .unwrap();
    failed_event(&mut events).await;
    let failed_at = Instant::now();
    let (rule, state, value) = next_alert(&mut events, 10 * SEC).await.expect("fires");
    let waited = failed_at.elapsed();
    assert_eq!((rule.as_str(), state), ("down", AlertState::Firing));
    assert!(
        waited >= 5 * SEC && waited <= 6 * SEC + Duration::from_millis(100),
        "fired {waited:?} after the failure (for = 5s, interval = 1s)"
    );
    assert!(value >= 0.0);
    let firing = monitor.alerts().firing().await.unwrap();
    assert_eq!(firing.len(), 1);
    assert_eq!(
        (firing[0].rule.as_str(), firing[0].deployment.as_str()),
        ("down", "web")
    );
    let stored = store.alerts().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].deployment, web.id);

    // Nothing more while it stays down.
    assert_eq!(next_alert(&mut events, 10 * SEC).await, None);

    provider.crash_after_deploy(None);
    manager.start("web").await.unwrap();
    let started = Instant::now();
    let (_, state, _) = next_alert(&mut events, 10 * SEC).await.expect("resolves");
    assert_eq!(state, AlertState::Resolved);
    assert!(started.elapsed() >= 2 * SEC, "resolve_for = 2s");
    assert!(monitor.alerts().firing().await.unwrap().is_empty());
    assert!(store.alerts().await.unwrap().is_empty());
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_monitor_neither_reannounces_a_firing_alert_nor_forgets_its_resolve() {
    let provider = MemoryProvider::new();
    let store = Arc::new(MemoryStore::new());
    let manager = manager_with(provider.clone(), store.clone()).await;
    // A webhook nobody listens on: notifications pile up in the outbox.
    let hook = Webhook::new("ops", "http://127.0.0.1:9/hook");
    let settings = settings_with(vec![down_rule(1, 1)], vec![hook]);
    let first = Monitor::builder(manager.clone())
        .settings(settings.clone())
        .build();
    let mut events = manager.subscribe();
    provider.crash_after_deploy(Some(SEC));
    manager
        .deploy(DeploymentConfig::builder("web").build().unwrap())
        .await
        .unwrap();
    let (_, state, _) = next_alert(&mut events, 10 * SEC).await.expect("fires");
    assert_eq!(state, AlertState::Firing);
    first.shutdown().await;

    let second = Monitor::builder(manager.clone()).settings(settings).build();
    // Still down: not announced again.
    assert_eq!(next_alert(&mut events, 5 * SEC).await, None);
    assert_eq!(
        second.alerts().firing().await.unwrap().len(),
        1,
        "taken back from the store"
    );
    provider.crash_after_deploy(None);
    manager.start("web").await.unwrap();
    let (_, state, _) = next_alert(&mut events, 10 * SEC).await.expect("resolves");
    assert_eq!(state, AlertState::Resolved);
    // Both notifications wait in the outbox, firing first.
    let pending = second.alerts().pending(10).await.unwrap();
    let states: Vec<AlertState> = pending.iter().map(|p| p.state).collect();
    assert_eq!(states, vec![AlertState::Firing, AlertState::Resolved]);
    assert!(
        pending
            .iter()
            .all(|p| p.webhook == "ops" && p.rule == "down")
    );
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_deployment_resolves_its_alert() {
    let provider = MemoryProvider::new();
    let manager = manager_with(provider.clone(), Arc::new(MemoryStore::new())).await;
    let monitor = Monitor::builder(manager.clone())
        .settings(settings_with(vec![down_rule(0, 30)], vec![]))
        .build();
    let mut events = manager.subscribe();
    provider.crash_after_deploy(Some(SEC));
    manager
        .deploy(DeploymentConfig::builder("web").build().unwrap())
        .await
        .unwrap();
    assert_eq!(
        next_alert(&mut events, 5 * SEC).await.map(|a| a.1),
        Some(AlertState::Firing)
    );
    manager.remove("web").await.unwrap();
    assert_eq!(
        next_alert(&mut events, 5 * SEC).await.map(|a| a.1),
        Some(AlertState::Resolved),
        "at once, not after resolve_for"
    );
    monitor.shutdown().await;
}

#[test]
fn excerpts_mask_env_values_and_cut_long_lines() {
    let lines = vec![
        "connecting with token hunter2-secret".to_owned(),
        "x".repeat(1000),
        "é".repeat(400),
    ];
    let got = mask_and_cut(&lines, &["hunter2-secret".to_owned()], 300);
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got[0], "connecting with token [redacted]");
    assert_eq!(got[1].len(), 300);
    assert!(got[2].len() <= 300 && got[2].chars().all(|c| c == 'é'));
}

/// A receiver that answers 200 to every POST and hands over each body.
async fn receiver(listener: TcpListener, bodies: tokio::sync::mpsc::UnboundedSender<String>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
                        assert!(head.contains("authorization: Bearer t0ken"), "{head}");
                        let _ = bodies.send(body[..len].to_owned());
                        let _ = conn
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliverer_retries_while_the_receiver_is_down_and_delivers_in_order() {
    // A free port, closed for now: the receiver is down.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut hook = Webhook::new("ops", format!("http://127.0.0.1:{port}/hook"));
    hook.headers
        .insert("authorization".into(), "Bearer t0ken".into());
    let mut settings = AlertSettings::default().with(vec![hook], vec![]).unwrap();
    // Short waits for the test (the settings refuse less than 1 s).
    settings.retry_max = Duration::from_millis(200);
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let outbox = Outbox::new(store);
    for n in 1..=3 {
        outbox
            .put(OutboxEntry::new("ops", format!(r#"{{"n":{n}}}"#)))
            .await
            .unwrap();
    }
    let wake = Arc::new(Notify::new());
    let task = {
        let (settings, outbox, wake) = (settings.clone(), outbox.clone(), wake.clone());
        tokio::spawn(async move { deliver::run(&settings, &outbox, &wake).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending = outbox.pending(10).await.unwrap();
        assert_eq!(
            pending.len(),
            3,
            "nothing is dropped while the receiver is down"
        );
        // In order: only the oldest is tried while it fails.
        if pending[0].attempts >= 2 {
            assert_eq!(pending[1].attempts, 0);
            assert!(
                pending[0]
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains("connect")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retries: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(receiver(listener, tx));
    let mut got = Vec::new();
    while got.len() < 3 {
        let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("delivered once the receiver is up")
            .unwrap();
        got.push(body);
    }
    assert_eq!(got, vec![r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    let acked = conan_core::testing::wait_until(Duration::from_secs(5), || async {
        outbox.pending(10).await.unwrap().is_empty()
    })
    .await;
    assert!(acked, "delivered entries are deleted");
    task.abort();
    server.abort();
}

#[tokio::test]
async fn a_receiver_answering_an_error_is_retried_with_its_answer_recorded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")
                .await;
        }
    });
    let hook = Webhook::new("ops", format!("http://127.0.0.1:{port}/hook"));
    let settings = AlertSettings::default().with(vec![hook], vec![]).unwrap();
    let outbox = Outbox::new(Arc::new(MemoryStore::new()));
    outbox.put(OutboxEntry::new("ops", "{}")).await.unwrap();
    let wait = deliver::pass(&settings, &outbox).await.unwrap();
    let entry = &outbox.pending(1).await.unwrap()[0];
    assert_eq!(entry.attempts, 1);
    assert_eq!(
        entry.last_error.as_deref(),
        Some("HTTP 503 Service Unavailable: busy")
    );
    assert!(
        wait >= Duration::from_millis(900) && wait <= Duration::from_millis(1300),
        "{wait:?}"
    );
    // Not due yet: the next pass does not try again.
    deliver::pass(&settings, &outbox).await.unwrap();
    assert_eq!(outbox.pending(1).await.unwrap()[0].attempts, 1);
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn an_app_that_exits_on_its_own_is_down_and_a_deliberate_stop_is_not() {
    let provider = MemoryProvider::new();
    let manager = manager_with(provider.clone(), Arc::new(MemoryStore::new())).await;
    let monitor = Monitor::builder(manager.clone())
        .settings(settings_with(vec![down_rule(1, 1)], vec![]))
        .build();
    let mut events = manager.subscribe();
    manager
        .deploy(DeploymentConfig::builder("calm").build().unwrap())
        .await
        .unwrap();
    manager.stop("calm").await.unwrap();
    assert_eq!(
        next_alert(&mut events, 5 * SEC).await,
        None,
        "stopped on purpose"
    );

    provider.exit_after_deploy(Some(SEC));
    manager
        .deploy(DeploymentConfig::builder("quits").build().unwrap())
        .await
        .unwrap();
    let (rule, state, _) = next_alert(&mut events, 10 * SEC).await.expect("fires");
    assert_eq!((rule.as_str(), state), ("down", AlertState::Firing));
    let firing = monitor.alerts().firing().await.unwrap();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].deployment, "quits");
    monitor.shutdown().await;

    // A monitor started later tells the two apart from the audit log.
    let rule = AlertRule::new("down-again", AlertCondition::Down, 0.0).hold(SEC, SEC);
    let later = Monitor::builder(manager.clone())
        .settings(settings_with(vec![rule], vec![]))
        .build();
    // The old rule is gone from the settings: its alert resolves.
    let (rule, state, _) = next_alert(&mut events, 10 * SEC).await.expect("resolves");
    assert_eq!((rule.as_str(), state), ("down", AlertState::Resolved));
    let (rule, state, _) = next_alert(&mut events, 10 * SEC).await.expect("fires");
    assert_eq!((rule.as_str(), state), ("down-again", AlertState::Firing));
    assert_eq!(next_alert(&mut events, 5 * SEC).await, None, "not for calm");
    let names: Vec<String> = later
        .alerts()
        .firing()
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.rule == "down-again")
        .map(|a| a.deployment)
        .collect();
    assert_eq!(names, vec!["quits".to_owned()]);
    later.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn deleting_every_rule_resolves_what_they_left_firing() {
    let provider = MemoryProvider::new();
    let store = Arc::new(MemoryStore::new());
    let manager = manager_with(provider.clone(), store.clone()).await;
    let first = Monitor::builder(manager.clone())
        .settings(settings_with(vec![down_rule(0, 0)], vec![]))
        .build();
    let mut events = manager.subscribe();
    provider.crash_after_deploy(Some(SEC));
    manager
        .deploy(DeploymentConfig::builder("web").build().unwrap())
        .await
        .unwrap();
    assert_eq!(
        next_alert(&mut events, 5 * SEC).await.map(|a| a.1),
        Some(AlertState::Firing)
    );
    first.shutdown().await;
    let second = Monitor::builder(manager.clone())
        .settings(MonitorSettings {
            health: false,
            ..MonitorSettings::default()
        })
        .build();
    assert_eq!(
        next_alert(&mut events, 5 * SEC).await.map(|a| a.1),
        Some(AlertState::Resolved)
    );
    assert!(second.alerts().firing().await.unwrap().is_empty());
    assert!(store.alerts().await.unwrap().is_empty());
    second.shutdown().await;
}
