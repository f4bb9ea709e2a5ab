//! Docker restarts crashed containers; the provider reports restarts as events and a
//! deployment Docker leaves down as a status report (the manager's to apply), never as a
//! manager event.

mod common;

use std::time::Duration;

use common::*;
use conan_core::{
    Event, EventBus, EventSink, ExitStatus, ObservedStatus, OperationContext, Provider,
    RestartMode, RestartPolicy, StatusReport,
};
use tokio::sync::broadcast::Receiver;
use tokio::sync::mpsc::UnboundedReceiver;

async fn next_report(
    rx: &mut UnboundedReceiver<StatusReport>,
    within: Duration,
    mut pred: impl FnMut(&StatusReport) -> bool,
) -> Option<StatusReport> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) if pred(&r) => return Some(r),
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

async fn next_matching(
    rx: &mut Receiver<conan_core::EventEnvelope>,
    within: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(env)) if pred(&env.event) => return Some(env.event),
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_are_restarted_by_docker_and_reported() {
    let provider = provider().await;
    let mut scope = Scope::new("supervise");
    let bus = EventBus::new(1024);
    let mut rx = bus.subscribe();
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let ctx = OperationContext::new(EventSink::new(bus, Some(tx)));

    let always = spec(scope.mounted_config(&scope.name("always")).build().unwrap());
    let runtime = provider.deploy(&ctx, &always, None).await.expect("deploy");
    let always_known = known(&always, &runtime);
    let _ = get(runtime.url.as_deref().unwrap(), "/crash").await;
    let restarted = next_matching(
        &mut rx,
        Duration::from_secs(15),
        |e| matches!(e, Event::Restarted { deployment, .. } if *deployment == always.id),
    )
    .await
    .expect("a Restarted event");
    if let Event::Restarted { exit, attempt, .. } = restarted {
        assert_eq!(exit, ExitStatus::Code(5));
        assert!(attempt >= 1);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            provider.status(&always_known).await.ok() == Some(ObservedStatus::Running)
        })
        .await
    );

    let never = spec(
        scope
            .mounted_config(&scope.name("never"))
            .restart(RestartPolicy {
                policy: RestartMode::Never,
                ..RestartPolicy::default()
            })
            .build()
            .unwrap(),
    );
    let runtime = provider.deploy(&ctx, &never, None).await.expect("deploy");
    let never_known = known(&never, &runtime);
    let _ = get(runtime.url.as_deref().unwrap(), "/crash").await;
    let failed = next_report(&mut reports, Duration::from_secs(15), |r| {
        r.deployment == never.id
    })
    .await
    .expect("a Failed status report");
    assert!(
        matches!(failed.status, ObservedStatus::Failed { .. }),
        "{failed:?}"
    );
    let failure = failed.failure.expect("the failure bundle");
    assert_eq!(failure.exit, Some(ExitStatus::Code(5)));
    assert!(
        failure
            .last_logs
            .iter()
            .any(|l| l.message.contains("crash requested")),
        "{failure:?}"
    );
    assert!(matches!(
        provider.status(&never_known).await.unwrap(),
        ObservedStatus::Failed { .. }
    ));
    // The provider observes; the manager decides: no manager events on the sink.
    while let Ok(env) = rx.try_recv() {
        assert!(
            !matches!(
                env.event,
                Event::Failed { .. } | Event::StatusChanged { .. } | Event::RolledBack { .. }
            ),
            "a provider never emits manager events: {:?}",
            env.event
        );
    }

    // Stopping on purpose is not a crash.
    provider.stop(&ctx, &always_known).await.unwrap();
    let spurious = next_matching(
        &mut rx,
        Duration::from_millis(1500),
        |e| matches!(e, Event::Restarted { deployment, .. } if *deployment == always.id),
    )
    .await;
    assert!(
        spurious.is_none(),
        "a stop is not reported as a crash: {spurious:?}"
    );
    let report = next_report(&mut reports, Duration::from_millis(200), |r| {
        r.deployment == always.id
    })
    .await;
    assert!(report.is_none(), "a stop is not reported: {report:?}");
    provider.remove(&ctx, &always_known).await.unwrap();
    provider.remove(&ctx, &never_known).await.unwrap();
    assert!(scope.containers().is_empty());
}
