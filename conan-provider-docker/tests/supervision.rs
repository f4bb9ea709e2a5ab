//! Docker restarts crashed containers; the provider reports it (and gives up) as events.

mod common;

use std::time::Duration;

use common::*;
use conan_core::{
    DeploymentStatus, Event, EventBus, EventSink, ExitStatus, OperationContext, Provider,
    RestartMode, RestartPolicy,
};
use tokio::sync::broadcast::Receiver;

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
    let ctx = OperationContext::new(EventSink::new(bus, None));

    let always = spec(scope.mounted_config(&scope.name("always")).build().unwrap());
    let runtime = provider.deploy(&ctx, &always).await.expect("deploy");
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
            provider.status(&always.id).await.ok() == Some(DeploymentStatus::Running)
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
    let runtime = provider.deploy(&ctx, &never).await.expect("deploy");
    let _ = get(runtime.url.as_deref().unwrap(), "/crash").await;
    let failed = next_matching(
        &mut rx,
        Duration::from_secs(15),
        |e| matches!(e, Event::Failed { deployment, .. } if *deployment == never.id),
    )
    .await
    .expect("a Failed event");
    if let Event::Failed { failure, .. } = failed {
        assert_eq!(failure.exit, Some(ExitStatus::Code(5)));
        assert!(
            failure
                .last_logs
                .iter()
                .any(|l| l.message.contains("crash requested")),
            "{failure:?}"
        );
    }
    assert!(matches!(
        provider.status(&never.id).await.unwrap(),
        DeploymentStatus::Failed { .. }
    ));

    // Stopping on purpose is not a crash.
    provider.stop(&ctx, &always.id).await.unwrap();
    let spurious = next_matching(&mut rx, Duration::from_millis(1500), |e| {
        matches!(e, Event::Failed { deployment, .. } | Event::Restarted { deployment, .. } if *deployment == always.id)
    })
    .await;
    assert!(
        spurious.is_none(),
        "a stop is not reported as a crash: {spurious:?}"
    );
    provider.remove(&ctx, &always.id).await.unwrap();
    provider.remove(&ctx, &never.id).await.unwrap();
    assert!(scope.containers().is_empty());
}
