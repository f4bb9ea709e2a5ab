//! Provider reports of restarts (issue 10, finding 6): the `restarting` state, the new
//! runtime persisted, restarts audited, and stale reports dropped.

use std::time::Duration;

use super::tests::drain;
use super::*;
use crate::event::{ReportOrigin, StatusReport};
use crate::failure::{ExitStatus, FailureReport};
use crate::provider::{InstanceInfo, ObservedStatus, RuntimeInfo};
use crate::status::StatusKind;
use crate::store::{AuditAction, MemoryStore};
use crate::testing::{MemoryProvider, wait_until};

async fn manager_on(provider: &MemoryProvider, store: Arc<dyn StateStore>) -> DeploymentManager {
    DeploymentManager::builder()
        .provider(provider.clone())
        .store_arc(store)
        .build()
        .await
        .unwrap()
}

fn config(name: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name).build().unwrap()
}

/// The origin of the record's first instance.
fn origin(record: &DeploymentRecord) -> ReportOrigin {
    let runtime = record.runtime.as_deref().expect("a runtime");
    ReportOrigin::new(record.revision, runtime.instances[0].id.clone())
}

/// A runtime as a supervisor reports it after a restart.
fn restarted_runtime(record: &DeploymentRecord, id: &str) -> RuntimeInfo {
    RuntimeInfo::new()
        .with_instance(
            InstanceInfo::new(id, record.revision)
                .with_port(Some(4100))
                .with_started_at(Some(Timestamp::now())),
        )
        .with_url("memory://127.0.0.1:4100")
}

async fn wait_for(m: &DeploymentManager, name: &str, kind: StatusKind) -> DeploymentRecord {
    let reached = wait_until(Duration::from_secs(5), || async {
        m.get(name).unwrap().status.kind() == kind
    })
    .await;
    let record = m.get(name).unwrap();
    assert!(reached, "{name}: expected {kind}, is {}", record.status);
    record
}

/// Puts `name` into `restarting` through its provider's sink, as a supervisor would.
async fn crash(m: &DeploymentManager, name: &str, attempt: u32) -> DeploymentRecord {
    let record = m.get(name).unwrap();
    m.event_sink().restarting(
        &record.id,
        origin(&record),
        attempt,
        ExitStatus::Code(1),
        Duration::from_millis(400),
    );
    wait_for(m, name, StatusKind::Restarting).await
}

#[tokio::test]
async fn a_restart_shows_restarting_then_running_with_the_new_runtime_persisted_and_audited() {
    let p = MemoryProvider::new();
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let m = manager_on(&p, store.clone()).await;
    let mut rx = m.subscribe();
    let first = m.deploy(config("loop")).await.unwrap();

    let restarting = crash(&m, "loop", 1).await;
    match &restarting.status {
        DeploymentStatus::Restarting { attempt, exit, at } => {
            assert_eq!((*attempt, *exit), (1, ExitStatus::Code(1)));
            assert!(*at > first.updated_at);
        }
        other => panic!("{other}"),
    }
    // What crashed stays on record until the restart replaced it.
    assert_eq!(restarting.runtime, first.runtime);

    let new = restarted_runtime(&first, "pid-2");
    m.event_sink()
        .runtime_changed(&first.id, origin(&first), new.clone());
    let running = wait_for(&m, "loop", StatusKind::Running).await;
    assert_eq!(running.runtime.as_deref(), Some(&new));
    assert_eq!(running.revision, first.revision);

    // A second crash of the restarted instance chains on the new runtime.
    crash(&m, "loop", 2).await;
    let third = restarted_runtime(&first, "pid-3");
    m.event_sink().runtime_changed(
        &first.id,
        ReportOrigin::new(first.revision, "pid-2"),
        third.clone(),
    );
    let running = wait_for(&m, "loop", StatusKind::Running).await;
    assert_eq!(running.runtime.as_deref(), Some(&third));

    // Persisted: a manager started later on the same store sees the new pid.
    let stored = store.load_deployments().await.unwrap();
    assert_eq!(stored[0].runtime.as_deref(), Some(&third));
    let later = manager_on(&MemoryProvider::new(), store.clone()).await;
    assert_eq!(later.get("loop").unwrap().runtime.as_deref(), Some(&third));

    // Audited: each restart with attempt, exit status and delay, and the transitions.
    let audit = m.audit(&AuditQuery::default()).await.unwrap();
    let restarts: Vec<_> = audit
        .iter()
        .filter_map(|e| match &e.action {
            AuditAction::Restart {
                revision,
                attempt,
                exit,
                delay_ms,
            } => Some((*revision, *attempt, *exit, *delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        restarts,
        [
            (first.revision, 1, ExitStatus::Code(1), 400),
            (first.revision, 2, ExitStatus::Code(1), 400)
        ]
    );
    let transitions: Vec<_> = audit
        .iter()
        .filter_map(|e| match e.action {
            AuditAction::Transition { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert!(transitions.ends_with(&[
        (StatusKind::Running, StatusKind::Restarting),
        (StatusKind::Restarting, StatusKind::Running),
        (StatusKind::Running, StatusKind::Restarting),
        (StatusKind::Restarting, StatusKind::Running),
    ]));
    let events = drain(&mut rx);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Restarted { .. }))
            .count(),
        2
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::StatusChanged {
            to: DeploymentStatus::Restarting { attempt: 2, .. },
            ..
        }
    )));
}

#[tokio::test]
async fn reports_of_an_instance_or_revision_that_no_longer_serves_are_dropped() {
    let p = MemoryProvider::new();
    let m = manager_on(&p, Arc::new(MemoryStore::new())).await;
    let first = m.deploy(config("stale")).await.unwrap();
    let old = origin(&first);
    // A restart op replaced the instance; the old supervisor's reports come late.
    let restarted = m.restart("stale").await.unwrap();
    assert_ne!(origin(&restarted), old, "the restart made a new instance");
    let sink = m.event_sink();
    sink.runtime_changed(&first.id, old.clone(), restarted_runtime(&first, "pid-old"));
    sink.restarting(
        &first.id,
        old.clone(),
        1,
        ExitStatus::Signal(9),
        Duration::ZERO,
    );
    sink.report(
        StatusReport::new(first.id.clone(), ObservedStatus::failed("old crash loop"))
            .from_origin(old.clone())
            .with_failure(FailureReport::new("old crash loop")),
    );
    // Reports are applied in order: once this current one shows, the stale ones were seen.
    crash(&m, "stale", 1).await;
    let record = m.get("stale").unwrap();
    assert_eq!(
        record.runtime, restarted.runtime,
        "the stale runtime was dropped"
    );
    assert!(
        record.last_failure.is_none(),
        "the stale failure was dropped"
    );
    let audit = m.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| matches!(e.action, AuditAction::Restart { .. }))
            .count(),
        1,
        "only the current restart is audited"
    );

    // Back to running; an update makes revision 2: revision 1's reports are stale.
    let current = origin(&restarted);
    sink.runtime_changed(
        &first.id,
        current.clone(),
        restarted_runtime(&first, "pid-9"),
    );
    wait_for(&m, "stale", StatusKind::Running).await;
    let updated = m.update("stale", config("stale")).await.unwrap();
    assert_eq!(updated.revision, Revision(2));
    sink.runtime_changed(
        &first.id,
        ReportOrigin::new(Revision(1), "pid-9"),
        restarted_runtime(&first, "pid-10"),
    );
    crash(&m, "stale", 1).await;
    assert_eq!(m.get("stale").unwrap().runtime, updated.runtime);
}

#[tokio::test]
async fn a_report_cannot_start_a_stopped_deployment() {
    let p = MemoryProvider::new();
    let m = manager_on(&p, Arc::new(MemoryStore::new())).await;
    let first = m.deploy(config("parked")).await.unwrap();
    m.stop("parked").await.unwrap();
    let sink = m.event_sink();
    // No origin, so only the status rule stops it.
    sink.report(
        StatusReport::new(first.id.clone(), ObservedStatus::Running)
            .with_runtime(restarted_runtime(&first, "pid-2")),
    );
    sink.report(StatusReport::new(
        first.id.clone(),
        ObservedStatus::restarting(1, ExitStatus::Code(1), Duration::ZERO),
    ));
    // A barrier: reports are forwarded in order, so once another deployment's later report
    // was applied and the queue is idle, the two above were applied (or dropped) too.
    m.deploy(config("other")).await.unwrap();
    crash(&m, "other", 1).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let s = m.queue_stats();
            s.pending == 0 && s.processing == 0
        })
        .await
    );
    let record = m.get("parked").unwrap();
    assert_eq!(record.status, DeploymentStatus::Stopped);
    assert!(
        record
            .runtime
            .as_deref()
            .is_none_or(|r| r.instances.is_empty())
    );
}

#[tokio::test]
async fn stop_update_start_restart_and_remove_work_from_restarting() {
    let p = MemoryProvider::new();
    let m = manager_on(&p, Arc::new(MemoryStore::new())).await;
    m.deploy(config("busy")).await.unwrap();

    crash(&m, "busy", 1).await;
    let stopped = m.stop("busy").await.unwrap();
    assert_eq!(stopped.status, DeploymentStatus::Stopped);

    m.start("busy").await.unwrap();
    let waiting = crash(&m, "busy", 1).await;
    // `start` leaves a restart to the supervisor.
    assert_eq!(m.start("busy").await.unwrap().status, waiting.status);
    assert_eq!(
        m.restart("busy").await.unwrap().status,
        DeploymentStatus::Running
    );

    crash(&m, "busy", 1).await;
    let updated = m.update("busy", config("busy")).await.unwrap();
    assert_eq!(updated.status, DeploymentStatus::Running);
    assert_eq!(updated.revision, Revision(2));

    // A crash loop that gives up ends failed from restarting.
    let record = crash(&m, "busy", 1).await;
    m.event_sink().report(
        StatusReport::new(record.id.clone(), ObservedStatus::failed("crash loop"))
            .from_origin(origin(&record))
            .with_failure(FailureReport::new("crash loop")),
    );
    wait_for(&m, "busy", StatusKind::Failed).await;
    m.start("busy").await.unwrap();

    crash(&m, "busy", 1).await;
    m.remove("busy").await.unwrap();
    assert!(m.get("busy").is_err());
}
