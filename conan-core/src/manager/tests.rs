use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

use super::*;
use crate::event::Outcome;
use crate::log::LogQuery;
use crate::status::StatusKind;
use crate::store::MemoryStore;
use crate::store::{AuditAction, RevisionState};
use crate::testing::{Fault, MemoryProvider, ProviderOp, wait_until};

fn config(name: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name)
        .env("API_TOKEN", "hunter2-secret")
        .build()
        .unwrap()
}

fn failing(name: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name)
        .label(MemoryProvider::FAIL_LABEL, "yes")
        .build()
        .unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        ..RetryPolicy::default()
    }
}

async fn manager(provider: &MemoryProvider) -> DeploymentManager {
    DeploymentManager::builder()
        .provider(provider.clone())
        .retry(fast_retry())
        .build()
        .await
        .unwrap()
}

/// The events received so far (also used by `contract_tests`).
pub(super) fn drain(rx: &mut broadcast::Receiver<EventEnvelope>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e.event);
    }
    out
}

#[tokio::test]
async fn deploy_records_revision_audit_and_events() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    let mut rx = m.subscribe();
    let rec = m.deploy(config("hello")).await.unwrap();
    assert_eq!(rec.status, DeploymentStatus::Running);
    assert_eq!(rec.revision, Revision(1));
    assert!(rec.runtime.as_ref().unwrap().url.is_some());
    assert_eq!(m.get("hello").unwrap().id, rec.id);
    assert_eq!(m.get(rec.id.as_str()).unwrap().name.as_ref(), "hello");

    let history = m.history("hello").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].state, RevisionState::Succeeded);

    let events = drain(&mut rx);
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("queued"));
    assert_eq!(kinds.last().map(String::as_str), Some("finished"));
    let transitions: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::StatusChanged { from, to, .. } => Some((*from, to.kind())),
            _ => None,
        })
        .collect();
    assert_eq!(
        transitions,
        vec![
            (StatusKind::Pending, StatusKind::Deploying),
            (StatusKind::Deploying, StatusKind::Running)
        ]
    );

    let audit = m.audit(&AuditQuery::default()).await.unwrap();
    assert!(matches!(
        audit.last().unwrap().action,
        AuditAction::Operation {
            kind: OperationKind::Deploy,
            outcome: Outcome::Succeeded,
            attempts: 1,
            ..
        }
    ));
    let stats = m.queue_stats();
    assert_eq!(
        (stats.pending, stats.processing, stats.completed),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn bad_input_is_rejected_synchronously() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    m.deploy(config("taken")).await.unwrap();
    assert!(matches!(
        m.deploy(config("taken")).await,
        Err(Error::AlreadyExists { .. })
    ));
    let bad = DeploymentConfig::builder("Bad")
        .replicas(0)
        .build_unchecked();
    match m.deploy(bad).await {
        Err(Error::InvalidConfig { problems }) => assert_eq!(problems.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(m.stop("nope").await, Err(Error::NotFound { .. })));
    let renamed = config("other");
    assert!(matches!(
        m.update("taken", renamed).await,
        Err(Error::InvalidConfig { .. })
    ));
    let elsewhere = DeploymentConfig::builder("x")
        .provider("docker")
        .build()
        .unwrap();
    assert!(matches!(
        m.deploy(elsewhere).await,
        Err(Error::NoProvider { .. })
    ));
    assert_eq!(p.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff() {
    let p = MemoryProvider::new();
    let m = DeploymentManager::builder()
        .provider(p.clone())
        .retry(RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        })
        .build()
        .await
        .unwrap();
    let mut rx = m.subscribe();
    p.inject(ProviderOp::Deploy, Fault::Transient(2));
    let start = tokio::time::Instant::now();
    let rec = m.deploy(config("flaky")).await.unwrap();
    assert_eq!(rec.status, DeploymentStatus::Running);
    assert_eq!(p.calls(ProviderOp::Deploy), 3);
    // 1 s then 2 s of backoff, in virtual time.
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    let retries: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Retrying {
                attempt, delay_ms, ..
            } => Some((attempt, delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(retries, vec![(1, 1000), (2, 2000)]);
    let audit = m.audit(&AuditQuery::default()).await.unwrap();
    assert!(matches!(
        audit.last().unwrap().action,
        AuditAction::Operation { attempts: 3, .. }
    ));
}

#[tokio::test]
async fn permanent_failures_are_not_retried_and_mark_failed() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    p.inject(ProviderOp::Deploy, Fault::Permanent);
    let err = m.deploy(config("broken")).await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(p.calls(ProviderOp::Deploy), 1);
    let rec = m.get("broken").unwrap();
    assert_eq!(rec.status.kind(), StatusKind::Failed);
    assert!(rec.last_failure.is_some());
    // Retrying transient errors gives up after 3 retries.
    p.inject(ProviderOp::Deploy, Fault::Transient(100));
    assert!(
        m.deploy(config("exhausted"))
            .await
            .unwrap_err()
            .is_transient()
    );
    assert_eq!(p.calls(ProviderOp::Deploy), 1 + 4);
}

#[tokio::test]
async fn failed_deploy_bundle_reaches_record_and_event() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    let mut rx = m.subscribe();
    let err = m.deploy(failing("sick")).await.unwrap_err();
    assert!(matches!(err, Error::HealthCheckFailed { .. }));
    let rec = m.get("sick").unwrap();
    let failure = rec.last_failure.unwrap();
    assert_eq!(failure.exit, Some(crate::failure::ExitStatus::Code(1)));
    assert!(!failure.last_logs.is_empty());
    assert!(
        drain(&mut rx)
            .iter()
            .any(|e| matches!(e, Event::Failed { .. }))
    );
}

#[tokio::test]
async fn failed_update_keeps_old_revision_then_rollback_works() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    m.deploy(config("web")).await.unwrap();
    let mut v2 = config("web");
    v2.env.insert("VERSION", "2");
    let rec = m.update("web", v2).await.unwrap();
    assert_eq!(rec.revision, Revision(2));

    let mut rx = m.subscribe();
    let err = m.update("web", failing("web")).await.unwrap_err();
    assert!(matches!(err, Error::HealthCheckFailed { .. }));
    let rec = m.get("web").unwrap();
    assert_eq!(
        rec.status,
        DeploymentStatus::Running,
        "the old revision keeps serving"
    );
    assert_eq!(rec.revision, Revision(2));
    assert_eq!(rec.config.env.get("VERSION"), Some("2"));
    assert!(drain(&mut rx).iter().any(|e| matches!(
        e,
        Event::RolledBack {
            failed: Revision(3),
            serving: Revision(2),
            ..
        }
    )));

    // Rollback without a target goes to the last good revision before the serving one.
    let rec = m.rollback("web", None).await.unwrap();
    assert_eq!(rec.revision, Revision(4));
    assert_eq!(rec.config.env.get("VERSION"), None);
    let history = m.history("web").await.unwrap();
    let states: Vec<_> = history
        .iter()
        .map(|r| (r.revision.0, r.cause, r.state.clone()))
        .collect();
    assert_eq!(
        states[2].2,
        RevisionState::Failed {
            reason: err.to_string()
        }
    );
    assert_eq!(states[3].1, OperationKind::Rollback);
    assert_eq!(history[3].source_revision, Some(Revision(1)));
    let rec = m.rollback("web", Some(Revision(2))).await.unwrap();
    assert_eq!(rec.config.env.get("VERSION"), Some("2"));
    assert!(matches!(
        m.rollback("web", Some(Revision(99))).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn lifecycle_stop_start_restart_remove() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    m.deploy(config("life")).await.unwrap();
    assert_eq!(
        m.stop("life").await.unwrap().status,
        DeploymentStatus::Stopped
    );
    assert_eq!(
        m.stop("life").await.unwrap().status,
        DeploymentStatus::Stopped,
        "stop is idempotent"
    );
    assert_eq!(
        m.start("life").await.unwrap().status,
        DeploymentStatus::Running
    );
    assert_eq!(
        m.restart("life").await.unwrap().status,
        DeploymentStatus::Running
    );
    assert_eq!(p.calls(ProviderOp::Stop), 2);
    let logs: Vec<_> = m
        .logs("life", &LogQuery::all())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(logs.len() >= 2);
    assert!(m.metrics("life").await.unwrap().port.is_some());
    assert_eq!(
        m.health("life").await.unwrap().status,
        crate::provider::HealthStatus::Healthy
    );
    assert_eq!(
        m.remove("life").await.unwrap().status,
        DeploymentStatus::Removed
    );
    assert!(matches!(m.get("life"), Err(Error::NotFound { .. })));
    assert!(p.is_empty());
    // The name is free again.
    m.deploy(config("life")).await.unwrap();
}

#[tokio::test]
async fn operations_on_one_deployment_run_in_arrival_order() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    m.deploy(config("serial")).await.unwrap();
    p.set_delay(Some(Duration::from_millis(5)));
    let handles: Vec<_> = [
        Request::Stop {
            target: "serial".into(),
        },
        Request::Start {
            target: "serial".into(),
        },
        Request::Stop {
            target: "serial".into(),
        },
        Request::Restart {
            target: "serial".into(),
        },
        Request::Stop {
            target: "serial".into(),
        },
    ]
    .into_iter()
    .map(|r| m.submit(r, SubmitOptions::default()).unwrap())
    .collect();
    let ids: Vec<_> = handles.iter().map(OperationHandle::id).collect();
    for h in handles {
        h.wait().await.unwrap();
    }
    assert_eq!(m.get("serial").unwrap().status, DeploymentStatus::Stopped);
    let finished: Vec<_> = m
        .audit(&AuditQuery::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.action, AuditAction::Operation { .. }))
        .filter_map(|e| e.operation)
        .filter(|op| ids.contains(op))
        .collect();
    assert_eq!(finished, ids, "operations finish in submission order");
}

#[tokio::test]
async fn provider_concurrency_limit_and_priority() {
    let p = MemoryProvider::new();
    let m = DeploymentManager::builder()
        .provider_with_limit(Arc::new(p.clone()), 2)
        .build()
        .await
        .unwrap();
    p.set_delay(Some(Duration::from_millis(20)));
    let mut rx = m.subscribe();
    let mut handles = Vec::new();
    for i in 0..6 {
        let prio = if i == 5 {
            Priority::High
        } else {
            Priority::Low
        };
        handles.push(
            m.submit(
                Request::Deploy(config(&format!("c{i}"))),
                SubmitOptions::priority(prio),
            )
            .unwrap(),
        );
    }
    let high = handles[5].id();
    for h in handles {
        h.wait().await.unwrap();
    }
    let mut running = 0i32;
    let mut max = 0;
    let mut start_order = Vec::new();
    for e in drain(&mut rx) {
        match e {
            Event::Started { operation, .. } => {
                running += 1;
                max = max.max(running);
                start_order.push(operation);
            }
            Event::Finished { .. } => running -= 1,
            _ => {}
        }
    }
    assert_eq!(max, 2, "at most two deploys ran at once");
    assert_eq!(
        start_order[2], high,
        "the high-priority deploy took the first free slot"
    );
}

#[tokio::test]
async fn cancelling_queued_and_running_operations() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    m.deploy(config("cx")).await.unwrap();
    p.set_delay(Some(Duration::from_secs(30)));
    let running = m
        .submit(
            Request::Stop {
                target: "cx".into(),
            },
            SubmitOptions::default(),
        )
        .unwrap();
    let queued = m
        .submit(
            Request::Start {
                target: "cx".into(),
            },
            SubmitOptions::default(),
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            m.queue_stats().processing == 1
        })
        .await
    );
    queued.cancel();
    assert!(matches!(queued.wait().await, Err(Error::Cancelled { .. })));
    running.cancel();
    assert!(matches!(running.wait().await, Err(Error::Cancelled { .. })));
    let stats = m.queue_stats();
    assert_eq!(stats.cancelled, 1);
    assert_eq!((stats.pending, stats.processing), (0, 0));
    // A cancelled queued deploy never existed.
    p.set_delay(Some(Duration::from_millis(200)));
    let blocker = m
        .submit(Request::Deploy(config("first")), SubmitOptions::default())
        .unwrap();
    let m2 = DeploymentManager::builder()
        .provider_with_limit(Arc::new(p.clone()), 1)
        .build()
        .await
        .unwrap();
    let a = m2
        .submit(Request::Deploy(config("a")), SubmitOptions::default())
        .unwrap();
    let b = m2
        .submit(Request::Deploy(config("b")), SubmitOptions::default())
        .unwrap();
    b.cancel();
    assert!(matches!(b.wait().await, Err(Error::Cancelled { .. })));
    assert!(matches!(m2.get("b"), Err(Error::NotFound { .. })));
    a.wait().await.unwrap();
    blocker.wait().await.unwrap();
}

#[tokio::test]
async fn provider_reported_crash_marks_failed() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    let mut rx = m.subscribe();
    p.crash_after_deploy(Some(Duration::from_millis(10)));
    m.deploy(config("crashy")).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            m.get("crashy").unwrap().status.kind() == StatusKind::Failed
        })
        .await
    );
    let rec = m.get("crashy").unwrap();
    assert_eq!(
        rec.last_failure.unwrap().exit,
        Some(crate::failure::ExitStatus::Code(1))
    );
    assert!(
        drain(&mut rx)
            .iter()
            .any(|e| matches!(e, Event::Failed { .. }))
    );
    // A failed deployment can be started again.
    p.crash_after_deploy(None);
    assert_eq!(
        m.start("crashy").await.unwrap().status,
        DeploymentStatus::Running
    );
}

#[tokio::test]
async fn a_new_manager_on_the_same_store_recovers() {
    let p = MemoryProvider::new();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let m1 = DeploymentManager::builder()
        .provider(p.clone())
        .store_arc(store.clone())
        .build()
        .await
        .unwrap();
    let a = m1.deploy(config("keep")).await.unwrap();
    let b = m1.deploy(config("gone")).await.unwrap();
    m1.deploy(config("parked")).await.unwrap();
    m1.stop("parked").await.unwrap();
    m1.shutdown().await;
    drop(m1);
    p.vanish(&b.id);

    // The restarted process has a fresh provider instance over the same platform.
    let fresh = MemoryProvider::with_backend(p.backend());
    let m2 = DeploymentManager::builder()
        .provider(fresh.clone())
        .store_arc(store)
        .build()
        .await
        .unwrap();
    assert_eq!(m2.list().len(), 3);
    let changed = m2.recover().await.unwrap();
    assert!(changed.iter().any(|r| r.id == a.id));
    assert_eq!(m2.get("keep").unwrap().status, DeploymentStatus::Running);
    assert_eq!(m2.get("gone").unwrap().status.kind(), StatusKind::Failed);
    assert_eq!(m2.get("parked").unwrap().status, DeploymentStatus::Stopped);
    assert_eq!(fresh.calls(ProviderOp::Recover), 3, "one recovery each");
    assert_eq!(fresh.calls(ProviderOp::Deploy), 0);
    assert_eq!(
        p.backend().instances_started(),
        3,
        "recovery started nothing twice"
    );
    assert_eq!(
        m2.get("keep").unwrap().runtime.unwrap().instances,
        a.runtime.unwrap().instances,
        "the running instance was adopted"
    );
    // The recovered manager keeps operating on them.
    m2.stop("keep").await.unwrap();
    let next = m2.update("keep", config("keep")).await.unwrap();
    assert_eq!(next.revision, Revision(2));
}

#[tokio::test]
async fn secrets_never_appear_in_events_errors_or_records_debug() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    let mut rx = m.subscribe();
    m.deploy(config("sec")).await.unwrap();
    let err = m.update("sec", failing("sec").clone()).await.unwrap_err();
    let mut bad = config("sec");
    bad.replicas = 0;
    let err2 = m.update("sec", bad).await.unwrap_err();
    let events = serde_json::to_string(&drain(&mut rx)).unwrap();
    let rec = format!("{:?}", m.get("sec").unwrap());
    for text in [events, rec, format!("{err} {err:?} {err2} {err2:?}")] {
        assert!(!text.contains("hunter2-secret"), "secret leaked: {text}");
    }
}

#[tokio::test]
async fn registry_picks_by_name_then_requirements_then_default() {
    let plain = MemoryProvider::named("plain");
    let m = DeploymentManager::builder()
        .provider(plain.clone())
        .provider(MemoryProvider::named("fancy"))
        .default_provider("fancy")
        .build()
        .await
        .unwrap();
    let explicit = DeploymentConfig::builder("e")
        .provider("plain")
        .build()
        .unwrap();
    assert_eq!(m.deploy(explicit).await.unwrap().provider.as_ref(), "plain");
    assert_eq!(
        m.deploy(config("d")).await.unwrap().provider.as_ref(),
        "fancy"
    );
    let needs = DeploymentConfig::builder("r")
        .require(crate::capability::Capability::Metrics)
        .build()
        .unwrap();
    assert_eq!(
        m.deploy(needs).await.unwrap().provider.as_ref(),
        "plain",
        "first registered that qualifies"
    );
    let impossible = DeploymentConfig::builder("i")
        .require(crate::capability::Capability::CustomDomains)
        .build()
        .unwrap();
    match m.deploy(impossible).await {
        Err(Error::NoProvider { reason }) => assert!(reason.contains("custom-domains"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn shutdown_waits_for_running_operations_and_refuses_new_ones() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    p.set_delay(Some(Duration::from_millis(30)));
    let h = m
        .submit(Request::Deploy(config("late")), SubmitOptions::default())
        .unwrap();
    m.shutdown().await;
    assert_eq!(m.queue_stats().processing, 0);
    assert_eq!(h.wait().await.unwrap().status, DeploymentStatus::Running);
    assert!(matches!(
        m.deploy(config("after")).await,
        Err(Error::ShutDown)
    ));
}

#[tokio::test]
async fn a_panicking_provider_fails_the_operation_not_the_manager() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    p.inject(ProviderOp::Deploy, Fault::Panic);
    // The stop waits behind the deploy on the same deployment: it must still run.
    let deploy = m
        .submit(Request::Deploy(config("buggy")), SubmitOptions::default())
        .unwrap();
    let stop = m
        .submit(
            Request::Stop {
                target: "buggy".into(),
            },
            SubmitOptions::default(),
        )
        .unwrap();
    match deploy.wait().await {
        Err(Error::Provider {
            message, transient, ..
        }) => {
            assert!(message.contains("panicked: injected panic"), "{message}");
            assert!(!transient, "a panic is not retried");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.calls(ProviderOp::Deploy), 1);
    assert_eq!(stop.wait().await.unwrap().status, DeploymentStatus::Stopped);
    p.clear_faults();
    assert_eq!(
        m.deploy(config("healthy")).await.unwrap().status,
        DeploymentStatus::Running
    );
    let stats = m.queue_stats();
    assert_eq!((stats.pending, stats.processing), (0, 0));
}

#[tokio::test]
async fn a_provider_added_after_build_takes_over_its_deployments() {
    let local = MemoryProvider::named("local");
    let late = MemoryProvider::named("late");
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let m1 = DeploymentManager::builder()
        .provider(local.clone())
        .provider(late.clone())
        .default_provider("local")
        .store_arc(store.clone())
        .build()
        .await
        .unwrap();
    let mut on_late = config("on-late");
    on_late.provider = Some("late".into());
    m1.deploy(on_late.clone()).await.unwrap();
    m1.shutdown().await;
    drop(m1);

    // A new manager starts while "late" is unavailable.
    let m2 = DeploymentManager::builder()
        .provider(local.clone())
        .store_arc(store)
        .build()
        .await
        .unwrap();
    // Its deployments wait for the provider: recovery leaves them alone.
    assert!(m2.recover().await.unwrap().is_empty());
    assert!(matches!(
        m2.stop("on-late").await,
        Err(Error::NoProvider { .. })
    ));
    assert!(matches!(
        m2.deploy(config("another")).await.map(|r| r.provider),
        Ok(p) if &*p == "local"
    ));

    // It comes back as a fresh instance over the same platform.
    let late_again = MemoryProvider::named_with_backend("late", late.backend());
    let recovered = m2.add_provider(late_again.clone()).await.unwrap();
    assert_eq!(recovered.len(), 1, "only the added provider's deployments");
    assert_eq!(recovered[0].name.as_ref(), "on-late");
    assert_eq!(m2.get("on-late").unwrap().status, DeploymentStatus::Running);
    assert_eq!(late.calls(ProviderOp::Deploy), 1);
    assert_eq!(
        late_again.calls(ProviderOp::Deploy),
        0,
        "adopted, not redeployed"
    );
    assert_eq!(late.backend().instances_started(), 1);
    assert_eq!(
        m2.stop("on-late").await.unwrap().status,
        DeploymentStatus::Stopped
    );
    assert_eq!(m2.registry().names(), vec!["local", "late"]);
    assert!(matches!(
        m2.add_provider(MemoryProvider::named("late")).await,
        Err(Error::ProviderExists { name }) if name == "late"
    ));
}

#[tokio::test]
async fn logs_of_a_failed_deploy_come_from_its_failure_bundle() {
    let p = MemoryProvider::new();
    let m = manager(&p).await;
    assert!(m.deploy(failing("broken")).await.is_err());
    // The provider kept nothing of it; the bundle's lines answer instead.
    let lines: Vec<_> = m
        .logs("broken", &LogQuery::all())
        .await
        .unwrap()
        .collect()
        .await;
    let text: Vec<String> = lines.into_iter().map(|l| l.unwrap().message).collect();
    assert_eq!(
        text,
        vec!["Error: cannot start (injected failure)".to_owned()]
    );
    // The query's filters apply to them too.
    let filtered: Vec<_> = m
        .logs(
            "broken",
            &LogQuery {
                contains: Some("no such text".into()),
                ..LogQuery::all()
            },
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert!(filtered.is_empty());
    // A deployment the provider never knew and that has no bundle stays NotFound.
    m.deploy(config("fine")).await.unwrap();
    p.vanish(&m.get("fine").unwrap().id);
    assert!(matches!(
        m.logs("fine", &LogQuery::all()).await,
        Err(Error::NotFound { .. })
    ));
}
