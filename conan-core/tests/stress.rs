//! Stress: 1,000 concurrent operations on 100 deployments with random transient failures
//! and some permanent ones. Checks that each deployment ends in the state its last
//! operation implies, that the audit log holds no illegal transition, and that transient
//! failures were retried while permanent ones were not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use conan_core::status::is_allowed;
use conan_core::testing::{Fault, MemoryProvider, ProviderOp};
use conan_core::{
    AuditAction, AuditQuery, DeploymentConfig, DeploymentManager, Error, Event, MemoryStore,
    Outcome, Request, RetryPolicy, StatusKind, SubmitOptions,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Deploy,
    Start,
    Stop,
    Restart,
    Update { fails: bool },
    Remove,
}

/// The state a deployment must be in after `op` ended with `ok`, given the state before.
fn model(before: Option<StatusKind>, op: Op, ok: bool) -> Option<StatusKind> {
    use StatusKind::*;
    match (op, ok) {
        (Op::Remove, true) => None,
        (Op::Stop, true) => Some(Stopped),
        (Op::Deploy | Op::Start | Op::Restart | Op::Update { .. }, true) => Some(Running),
        (Op::Update { .. }, false) if before == Some(Running) => Some(Running),
        (_, false) => Some(Failed),
    }
}

fn config(name: &str, fails: bool) -> DeploymentConfig {
    let b = DeploymentConfig::builder(name).env("SECRET", "x");
    if fails {
        b.label(MemoryProvider::FAIL_LABEL, "1")
    } else {
        b
    }
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_operations_on_hundred_deployments() {
    let provider = MemoryProvider::new();
    provider.seed(7);
    for op in [
        ProviderOp::Deploy,
        ProviderOp::Start,
        ProviderOp::Stop,
        ProviderOp::Remove,
    ] {
        provider.inject(op, Fault::RandomTransient(0.3));
    }
    let store = Arc::new(MemoryStore::new());
    let manager = DeploymentManager::builder()
        .provider(provider.clone())
        .store_arc(store.clone())
        .concurrency(8)
        .event_capacity(1 << 17)
        .retry(RetryPolicy {
            initial_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        })
        .build()
        .await
        .unwrap();

    let mut events = manager.subscribe();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut plan: Vec<(String, Op)> = Vec::new();
    for d in 0..100 {
        plan.push((format!("app-{d}"), Op::Deploy));
    }
    let choices = [
        Op::Start,
        Op::Stop,
        Op::Restart,
        Op::Update { fails: false },
        Op::Update { fails: true },
    ];
    for _ in 0..890 {
        let d = rng.usize(0..100);
        plan.push((format!("app-{d}"), choices[rng.usize(0..choices.len())]));
    }
    for d in 0..10 {
        plan.push((format!("app-{}", d * 10), Op::Remove));
    }
    assert_eq!(plan.len(), 1000);

    // Submit everything at once; deploys first so every name exists.
    let mut handles = Vec::new();
    for (name, op) in &plan {
        let request = match *op {
            Op::Deploy => Request::Deploy(config(name, false)),
            Op::Start => Request::Start {
                target: name.clone(),
            },
            Op::Stop => Request::Stop {
                target: name.clone(),
            },
            Op::Restart => Request::Restart {
                target: name.clone(),
            },
            Op::Update { fails } => Request::Update {
                target: name.clone(),
                config: config(name, fails),
            },
            Op::Remove => Request::Remove {
                target: name.clone(),
            },
        };
        let handle = manager.submit(request, SubmitOptions::default()).unwrap();
        handles.push((name.clone(), *op, handle));
    }
    let mut expected: HashMap<String, Option<StatusKind>> = HashMap::new();
    let mut permanent_ops = Vec::new();
    for (name, op, handle) in handles {
        let id = handle.id();
        let result = handle.wait().await;
        if let Err(e) = &result {
            assert!(
                !matches!(e, Error::IllegalTransition { .. }),
                "{name} {op:?}: {e}"
            );
        }
        if op == (Op::Update { fails: true }) {
            permanent_ops.push(id);
        }
        let before = expected.get(&name).copied().flatten();
        expected.insert(name, model(before, op, result.is_ok()));
    }

    for (name, state) in &expected {
        match (state, manager.get(name)) {
            (None, Err(Error::NotFound { .. })) => {}
            (Some(kind), Ok(rec)) => assert_eq!(rec.status.kind(), *kind, "{name}"),
            (s, r) => panic!("{name}: expected {s:?}, got {r:?}"),
        }
    }

    let audit = manager.audit(&AuditQuery::default()).await.unwrap();
    let mut last: HashMap<_, StatusKind> = HashMap::new();
    let (mut retried, mut transitions) = (0, 0);
    for entry in &audit {
        match &entry.action {
            AuditAction::Transition { from, to } => {
                transitions += 1;
                assert!(
                    is_allowed(*from, *to),
                    "illegal {from} -> {to} in the audit log"
                );
                if let Some(prev) = last.get(&entry.deployment) {
                    assert_eq!(prev, from, "transitions of {} chain", entry.deployment);
                }
                last.insert(entry.deployment.clone(), *to);
            }
            AuditAction::Operation {
                attempts, outcome, ..
            } => {
                if *attempts > 1 {
                    retried += 1;
                }
                if entry
                    .operation
                    .is_some_and(|op| permanent_ops.contains(&op))
                {
                    // Fails: at the health gate, or (rarely) after exhausting retries of
                    // transient faults of `start` on a stopped deployment before reaching it.
                    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
                }
            }
            // MemoryProvider's crashes are not restarted.
            AuditAction::Restart { .. } => panic!("unexpected restart: {entry:?}"),
            AuditAction::Scale { .. } => panic!("unexpected scale: {entry:?}"),
        }
    }
    // Retries happen only after transient errors: never after the permanent health-gate failure.
    let mut retry_events = 0;
    while let Ok(envelope) = events.try_recv() {
        if let Event::Retrying { error, .. } = envelope.event {
            retry_events += 1;
            assert!(
                error.contains("transient"),
                "retried a permanent error: {error}"
            );
        }
    }
    assert!(retry_events > 50, "{retry_events} retries");
    assert!(transitions > 1500, "{transitions} transitions");
    assert!(
        retried > 50,
        "transient failures were retried ({retried} operations)"
    );
    assert!(!permanent_ops.is_empty());
    let stats = manager.queue_stats();
    assert_eq!(stats.completed + stats.failed, 1000);
    assert_eq!((stats.pending, stats.processing), (0, 0));
}
