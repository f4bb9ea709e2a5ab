//! Checks of repeated and replacing calls: idempotent deploys and updates, updates of
//! stopped and failed deployments, and a failed update.

use crate::provider::{DeploymentSpec, KnownDeployment};

use super::{ConformanceHarness, Scope, ctx, next_revision};

/// The same spec deployed twice (a retry after a lost answer) converges: no
/// `AlreadyExists`, one running revision, the same number of instances, and (with a
/// leftovers lister) one instance set on the platform.
pub async fn deploy_is_idempotent(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_is_idempotent");
    s.run(async {
        let spec = s.spec();
        let first = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let p = s.provider();
        let again = s.within("deploy", p.deploy(&ctx(), &spec, None)).await;
        let runtime = match again {
            Ok(runtime) => runtime,
            Err(e) => panic!(
                "{}: deploy is idempotent: the same spec again must succeed (never AlreadyExists), got: {e}",
                s.check
            ),
        };
        let second = KnownDeployment::new(spec.clone(), runtime);
        s.track(&second);
        check_eq!(
            second.runtime.instances.len(),
            first.runtime.instances.len(),
            "{}: deploying the same spec again must converge on one instance set, got {:?} after {:?}",
            s.check,
            second.runtime.instances,
            first.runtime.instances
        );
        assert!(
            second.runtime.instances.iter().all(|i| i.revision == spec.revision),
            "{}: after a repeated deploy every instance runs revision {}, got {:?}",
            s.check,
            spec.revision,
            second.runtime.instances
        );
        s.assert_running(&second, "a repeated deploy").await;
        s.assert_leftover_count(&spec.id, one_set, "a repeated deploy").await;
    })
    .await;
}

/// `update` of a running deployment rolls the new revision out: every instance runs it,
/// status is `Running`, and (with a leftovers lister) the old instances are gone.
pub async fn update_rolls_out(h: &ConformanceHarness) {
    let s = Scope::new(h, "update_rolls_out");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let next = next_revision(&spec);
        let p = s.provider();
        let runtime = s
            .within("update", p.update(&ctx(), &known, &next))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: update of a running deployment must succeed, got: {e}",
                    s.check
                )
            });
        let updated = KnownDeployment::new(next.clone(), runtime);
        s.track(&updated);
        assert!(
            !updated.runtime.instances.is_empty()
                && updated
                    .runtime
                    .instances
                    .iter()
                    .all(|i| i.revision == next.revision),
            "{}: after update every instance runs the new revision {}, got {:?}",
            s.check,
            next.revision,
            updated.runtime.instances
        );
        s.assert_running(&updated, "update").await;
        s.assert_leftover_count(&spec.id, one_set, "update").await;
    })
    .await;
}

/// The same update twice (a retry with the same arguments) converges on the new revision
/// serving alone.
pub async fn update_is_idempotent(h: &ConformanceHarness) {
    let s = Scope::new(h, "update_is_idempotent");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let next = next_revision(&spec);
        let p = s.provider();
        for attempt in ["update", "a repeated update"] {
            let runtime = s
                .within(attempt, p.update(&ctx(), &known, &next))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: update is idempotent: {attempt} with the same arguments must succeed, got: {e}",
                        s.check
                    )
                });
            let updated = KnownDeployment::new(next.clone(), runtime);
            s.track(&updated);
            assert!(
                !updated.runtime.instances.is_empty()
                    && updated.runtime.instances.iter().all(|i| i.revision == next.revision),
                "{}: after {attempt} every instance runs revision {}, got {:?}",
                s.check,
                next.revision,
                updated.runtime.instances
            );
            s.assert_running(&updated, attempt).await;
            s.assert_leftover_count(&spec.id, one_set, attempt).await;
        }
    })
    .await;
}

/// An update (or rollback) of a **stopped** deployment is `deploy(rev2, Some(stopped))`:
/// it replaces whatever is kept of the stopped revision and runs rev2.
pub async fn deploy_replaces_stopped(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_replaces_stopped");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let p = s.provider();
        s.within("stop", p.stop(&ctx(), &known))
            .await
            .unwrap_or_else(|e| panic!("{}: stop must succeed, got: {e}", s.check));
        let stopped = KnownDeployment::new(spec.clone(), known.runtime.stopped());
        s.track(&stopped);
        let next = next_revision(&spec);
        let updated = s.deploy(&next, Some(&stopped)).await;
        assert!(
            !updated.runtime.instances.is_empty()
                && updated
                    .runtime
                    .instances
                    .iter()
                    .all(|i| i.revision == next.revision),
            "{}: deploy with a stopped previous must run the new revision {}, got {:?}",
            s.check,
            next.revision,
            updated.runtime.instances
        );
        s.assert_running(&updated, "deploy over a stopped deployment")
            .await;
        s.assert_leftover_count(&spec.id, one_set, "deploy over a stopped deployment")
            .await;
    })
    .await;
}

/// After a first deploy failed, `deploy(good rev2, Some(failed))` (the user's fix) runs
/// rev2. Needs a failing config.
pub async fn deploy_replaces_failed(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_replaces_failed");
    let Some(failing) = s.failing_spec() else {
        return;
    };
    s.run(async {
        let p = s.provider();
        let failed = s.within("deploy", p.deploy(&ctx(), &failing, None)).await;
        assert!(
            failed.is_err(),
            "{}: a deploy of the failing config must fail (is the harness's failing config right?)",
            s.check
        );
        let previous = KnownDeployment::from_spec(failing.clone());
        let mut good = (s.h.config)(failing.name());
        good.port = failing.config.port;
        let next = DeploymentSpec::new(failing.id.clone(), failing.revision.next(), good);
        let known = s.deploy(&next, Some(&previous)).await;
        assert!(
            !known.runtime.instances.is_empty()
                && known
                    .runtime
                    .instances
                    .iter()
                    .all(|i| i.revision == next.revision),
            "{}: deploy with a failed previous must run the new revision {}, got {:?}",
            s.check,
            next.revision,
            known.runtime.instances
        );
        s.assert_running(&known, "deploy over a failed deployment")
            .await;
    })
    .await;
}

/// An update to a revision that never becomes ready fails, and the previous revision
/// keeps serving (status `Running`, and with a leftovers lister, no more than its own
/// instance set). Needs a failing config.
pub async fn failed_update_keeps_old(h: &ConformanceHarness) {
    let s = Scope::new(h, "failed_update_keeps_old");
    let Some(failing) = h.failing_config.clone() else {
        return;
    };
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let mut bad = failing(spec.name());
        bad.port = spec.config.port;
        let next = DeploymentSpec::new(spec.id.clone(), spec.revision.next(), bad);
        let p = s.provider();
        let result = s.within("update", p.update(&ctx(), &known, &next)).await;
        assert!(
            result.is_err(),
            "{}: an update to a revision that never becomes ready must fail, got {result:?}",
            s.check
        );
        s.assert_running(
            &known,
            "a failed update (the previous revision keeps serving)",
        )
        .await;
        s.assert_leftover_count(&spec.id, one_set, "a failed update")
            .await;
    })
    .await;
}
