//! Checks of the basic lifecycle: unknown ids, deploy, stop and start, remove.

use crate::error::Error;
use crate::log::LogQuery;
use crate::provider::{KnownDeployment, ObservedStatus, ProviderExt};

use super::{ConformanceHarness, Scope, ctx, next_revision};

/// `status`, `logs`, `metrics`, `health`, `start` and `update` of a deployment the
/// provider never saw answer `NotFound`; `stop` and `remove` of it succeed (there is
/// nothing to stop or remove).
pub async fn unknown_ids_are_not_found(h: &ConformanceHarness) {
    let s = Scope::new(h, "unknown_ids_are_not_found");
    let spec = ConformanceHarness::spec_with(&h.config, s.check);
    let known = KnownDeployment::from_spec(spec.clone());
    s.run(async {
        let p = s.provider();
        let nf = |r: crate::Result<()>, what: &str| {
            assert!(
                matches!(r, Err(Error::NotFound { .. })),
                "{}: {what} of an unknown deployment must answer NotFound, got {r:?}",
                s.check
            );
        };
        nf(
            s.within("status", p.status(&known)).await.map(drop),
            "status",
        );
        nf(
            s.within("logs", p.logs(&known, &LogQuery::all()))
                .await
                .map(drop),
            "logs",
        );
        nf(
            s.within("metrics", p.metrics(&known)).await.map(drop),
            "metrics",
        );
        nf(
            s.within("health", p.health(&known)).await.map(drop),
            "health",
        );
        nf(
            s.within("start", p.start(&ctx(), &known)).await.map(drop),
            "start",
        );
        let next = next_revision(&spec);
        nf(
            s.within("update", p.update(&ctx(), &known, &next))
                .await
                .map(drop),
            "update",
        );
        let stop = s.within("stop", p.stop(&ctx(), &known)).await;
        assert!(
            stop.is_ok(),
            "{}: stop of an unknown deployment must succeed (nothing to stop), got {stop:?}",
            s.check
        );
        let remove = s.within("remove", p.remove(&ctx(), &known)).await;
        assert!(
            remove.is_ok(),
            "{}: remove of an unknown deployment must succeed (nothing to remove), got {remove:?}",
            s.check
        );
    })
    .await;
}

/// `deploy` returns once the app is ready: its runtime names at least one instance, all
/// at the spec's revision, and `status` says `Running`. With a leftovers lister, the
/// deployment shows on the platform.
pub async fn deploy_reports_running(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_reports_running");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        assert!(
            !known.runtime.instances.is_empty(),
            "{}: a deployed app's runtime must name at least one instance",
            s.check
        );
        assert!(
            known
                .runtime
                .instances
                .iter()
                .all(|i| i.revision == spec.revision),
            "{}: every instance must run the deployed revision {}, got {:?}",
            s.check,
            spec.revision,
            known.runtime.instances
        );
        s.assert_running(&known, "deploy").await;
        let p = s.provider();
        assert!(
            s.within("status", p.is_running(&known)).await.unwrap_or(false),
            "{}: is_running must be true after deploy",
            s.check
        );
        if let Some(n) = s.leftover_count(&spec.id).await {
            assert!(
                n > 0,
                "{}: the leftovers lister must see a running deployment (it found nothing: is the lister right?)",
                s.check
            );
        }
    })
    .await;
}

/// `stop` stops (status `Stopped`) and is idempotent; `start(known)` resumes at the known
/// revision and, called again, returns the running runtime without starting a second set.
pub async fn stop_then_start(h: &ConformanceHarness) {
    let s = Scope::new(h, "stop_then_start");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let p = s.provider();
        s.within("stop", p.stop(&ctx(), &known))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: stop of a running deployment must succeed, got: {e}",
                    s.check
                )
            });
        let stopped = KnownDeployment::new(spec.clone(), known.runtime.stopped());
        s.track(&stopped);
        let status = s.status(&stopped).await;
        assert!(
            matches!(status, Ok(ObservedStatus::Stopped)),
            "{}: after stop, status must be Stopped (what start needs is kept), got {status:?}",
            s.check
        );
        let again = s.within("stop", p.stop(&ctx(), &stopped)).await;
        assert!(
            again.is_ok(),
            "{}: stop is idempotent: stopping a stopped deployment must succeed, got {again:?}",
            s.check
        );
        for attempt in ["start", "a repeated start"] {
            let runtime = s
                .within(attempt, p.start(&ctx(), &stopped))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {attempt} of a stopped deployment must succeed, got: {e}",
                        s.check
                    )
                });
            let started = KnownDeployment::new(spec.clone(), runtime);
            s.track(&started);
            assert!(
                !started.runtime.instances.is_empty()
                    && started
                        .runtime
                        .instances
                        .iter()
                        .all(|i| i.revision == spec.revision),
                "{}: {attempt} resumes at the known revision {}, got {:?}",
                s.check,
                spec.revision,
                started.runtime.instances
            );
            s.assert_running(&started, attempt).await;
            s.assert_leftover_count(&spec.id, one_set, attempt).await;
        }
    })
    .await;
}

/// `remove` deletes everything: `status` answers `NotFound` afterwards (also for a fresh
/// provider instance), nothing is left on the platform, and a second remove succeeds.
pub async fn remove_forgets(h: &ConformanceHarness) {
    let s = Scope::new(h, "remove_forgets");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let p = s.provider();
        s.within("remove", p.remove(&ctx(), &known))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: remove of a running deployment must succeed, got: {e}",
                    s.check
                )
            });
        s.assert_not_found(&*p, &known, "remove").await;
        let fresh = h.make_provider();
        s.assert_not_found(&*fresh, &known, "remove (asking a fresh instance)")
            .await;
        s.assert_nothing_left(&spec.id, "remove").await;
        let again = s.within("remove", p.remove(&ctx(), &known)).await;
        assert!(
            again.is_ok(),
            "{}: remove is idempotent: removing a removed deployment must succeed, got {again:?}",
            s.check
        );
    })
    .await;
}
