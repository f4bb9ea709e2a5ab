//! Unit tests of the memory provider.

use super::*;
use crate::config::DeploymentConfig;
use crate::id::Revision;
use crate::provider::ProviderExt;

fn spec(name: &str, revision: u64) -> DeploymentSpec {
    DeploymentSpec::new(
        DeploymentId::new(format!("dep-{name}")),
        Revision(revision),
        DeploymentConfig::builder(name).build_unchecked(),
    )
}

fn failing(name: &str, revision: u64) -> DeploymentSpec {
    DeploymentSpec::new(
        DeploymentId::new(format!("dep-{name}")),
        Revision(revision),
        DeploymentConfig::builder(name)
            .label(MemoryProvider::FAIL_LABEL, "yes")
            .build_unchecked(),
    )
}

fn ctx() -> OperationContext {
    OperationContext::detached()
}

#[tokio::test]
async fn deploy_is_idempotent_and_replaces_what_is_held() {
    let p = MemoryProvider::new();
    let s = spec("idem", 1);
    let a = p.deploy(&ctx(), &s, None).await.unwrap();
    let b = p.deploy(&ctx(), &s, None).await.unwrap();
    assert_eq!(a, b, "the same revision converges on one instance");
    assert_eq!(p.backend().instances_started(), 1);
    let known = KnownDeployment::new(s.clone(), a.clone());
    p.stop(&ctx(), &known).await.unwrap();
    let s2 = spec("idem", 2);
    let c = p.deploy(&ctx(), &s2, Some(&known)).await.unwrap();
    assert_ne!(c.instances[0].id, a.instances[0].id);
    assert_eq!(p.backend().revision(&s.id), Some(Revision(2)));
    assert_eq!(p.len(), 1);
    // A failed deploy leaves nothing, including what it replaced.
    let known = KnownDeployment::new(s2, c);
    p.stop(&ctx(), &known).await.unwrap();
    assert!(
        p.deploy(&ctx(), &failing("idem", 3), Some(&known))
            .await
            .is_err()
    );
    assert!(p.is_empty());
}

#[tokio::test]
async fn nothing_held_answers_not_found_or_succeeds() {
    let p = MemoryProvider::new();
    let known = KnownDeployment::from_spec(spec("ghost", 1));
    p.stop(&ctx(), &known).await.unwrap();
    p.remove(&ctx(), &known).await.unwrap();
    let nf = |r: Result<()>| assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    nf(p.status(&known).await.map(drop));
    nf(p.start(&ctx(), &known).await.map(drop));
    nf(p.update(&ctx(), &known, &spec("ghost", 2)).await.map(drop));
    nf(p.logs(&known, &LogQuery::all()).await.map(drop));
    nf(p.metrics(&known).await.map(drop));
    nf(p.health(&known).await.map(drop));
}

#[tokio::test]
async fn failed_update_keeps_the_old_revision_unless_rollback_is_off() {
    let p = MemoryProvider::new();
    let known = p.deploy_detached(&spec("upd", 1)).await.unwrap();
    assert!(p.update(&ctx(), &known, &failing("upd", 2)).await.is_err());
    assert_eq!(p.status(&known).await.unwrap(), ObservedStatus::Running);
    assert_eq!(p.backend().revision(known.id()), Some(Revision(1)));
    let next = spec("upd", 2);
    let a = p.update(&ctx(), &known, &next).await.unwrap();
    let b = p.update(&ctx(), &known, &next).await.unwrap();
    assert_eq!(a, b, "a repeated update converges");
    let mut no_rollback = failing("upd", 3);
    Arc::make_mut(&mut no_rollback.config).update.auto_rollback = false;
    assert!(p.update(&ctx(), &known, &no_rollback).await.is_err());
    assert!(matches!(
        p.status(&known).await.unwrap(),
        ObservedStatus::Failed { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_deploy_leaves_nothing() {
    let p = MemoryProvider::new();
    p.set_delay(Some(Duration::from_secs(10)));
    let s = spec("cancel", 1);
    let ctx = ctx();
    let cancel = ctx.cancel.clone();
    let deploy = p.deploy(&ctx, &s, None);
    let canceller = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(p.backend().status(&s.id), Some(ObservedStatus::Starting));
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(deploy, canceller);
    assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
    assert!(p.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_label_delays_until_cancelled() {
    let p = MemoryProvider::new();
    let mut s = spec("slow", 1);
    Arc::make_mut(&mut s.config)
        .labels
        .insert(MemoryProvider::SLOW_LABEL.into(), "5000".into());
    let started = tokio::time::Instant::now();
    p.deploy(&ctx(), &s, None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    p.remove(&ctx(), &KnownDeployment::from_spec(s.clone()))
        .await
        .unwrap();
    let ctx = ctx();
    ctx.cancel.cancel();
    assert!(matches!(
        p.deploy(&ctx, &s, None).await,
        Err(Error::Cancelled { .. })
    ));
    assert!(p.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hanging_call_ignores_cancellation_and_counts_in_flight_until_dropped() {
    let p = MemoryProvider::new();
    let known = p.deploy_detached(&spec("hang", 1)).await.unwrap();
    assert_eq!(p.max_concurrent_calls(known.id()), 0, "not tracked yet");
    p.track_concurrency(true);
    p.inject(ProviderOp::Stop, Fault::Hang);
    let ctx = ctx();
    ctx.cancel.cancel();
    // Cancelled before it begins: answers at once.
    assert!(p.stop(&ctx, &known).await.is_err());
    let ctx = OperationContext::detached();
    let stop = p.stop(&ctx, &known);
    tokio::pin!(stop);
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            biased;
            _ = &mut stop => {}
            () = async { ctx.cancel.cancel(); std::future::pending::<()>().await } => {}
        }
    })
    .await;
    assert!(waited.is_err(), "a hang never answers");
    p.clear_faults();
    p.stop(&OperationContext::detached(), &known).await.unwrap();
    assert_eq!(
        p.max_concurrent_calls(known.id()),
        2,
        "the hung call overlapped"
    );
    assert_eq!(p.max_concurrent_calls_any(), 2);
}

#[tokio::test]
async fn a_fresh_instance_recovers_from_known_and_the_backend() {
    let p = MemoryProvider::new();
    let run = p.deploy_detached(&spec("r-run", 1)).await.unwrap();
    let stopped = p.deploy_detached(&spec("r-stop", 1)).await.unwrap();
    p.stop(&ctx(), &stopped).await.unwrap();
    let gone = p.deploy_detached(&spec("r-gone", 1)).await.unwrap();
    p.vanish(gone.id());
    let fresh = MemoryProvider::with_backend(p.backend());
    drop(p);
    let found = fresh
        .recover(&ctx(), &[run.clone(), stopped.clone(), gone.clone()])
        .await
        .unwrap();
    assert_eq!(found[0].status, ObservedStatus::Running);
    assert_eq!(found[0].runtime.instances, run.runtime.instances);
    assert_eq!(found[1].status, ObservedStatus::Stopped);
    assert!(matches!(found[2].status, ObservedStatus::Failed { .. }));
    assert_eq!(
        fresh.backend().instances_started(),
        3,
        "nothing started twice"
    );
    // The fresh instance operates on what it recovered.
    let stopped = KnownDeployment::new(stopped.spec, found[1].runtime.clone());
    fresh.start(&ctx(), &stopped).await.unwrap();
    assert_eq!(fresh.backend().running(), 2);
    assert_eq!(fresh.calls(ProviderOp::Recover), 1);
}

#[tokio::test(start_paused = true)]
async fn injected_crash_and_exit_are_reported_through_the_sink() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = OperationContext::new(EventSink::new(crate::event::EventBus::new(16), Some(tx)));
    let p = MemoryProvider::new();
    p.crash_after_deploy(Some(Duration::from_secs(1)));
    let s = spec("crash", 1);
    p.deploy(&ctx, &s, None).await.unwrap();
    let report = rx.recv().await.unwrap();
    assert!(matches!(report.status, ObservedStatus::Failed { .. }));
    assert_eq!(report.failure.unwrap().exit, Some(ExitStatus::Code(1)));
    p.exit_after_deploy(Some(Duration::from_secs(1)));
    p.deploy(&ctx, &spec("crash", 2), None).await.unwrap();
    let report = rx.recv().await.unwrap();
    assert_eq!(
        report.status,
        ObservedStatus::Exited {
            exit: ExitStatus::Code(0)
        }
    );
    // Supervision ends with the provider instance.
    p.deploy(&ctx, &spec("crash", 3), None).await.unwrap();
    let backend = p.backend();
    drop(p);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(backend.status(&s.id), Some(ObservedStatus::Running));
}
