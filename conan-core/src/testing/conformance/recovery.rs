//! The check of recovery across provider instances.

use crate::capability::Capability;
use crate::provider::{KnownDeployment, ObservedStatus, ProviderExt};

use super::{ConformanceHarness, Scope, ctx, ids};

/// With [`Capability::Recovery`]: deploy on instance A, drop A, build a **fresh** instance
/// B; `B.recover(&[known])` (the store's knowledge only) must answer the deployment
/// `Running` at its revision with the same instance ids, must not start anything twice
/// (with a leftovers lister: the count is unchanged), must not claim a never-deployed
/// deployment runs, and B must then be able to stop and remove it.
///
/// Without `Recovery`, a fresh instance must not claim the deployment runs (it answers it
/// failed or stopped, or leaves it out).
pub async fn recovery_across_instances(h: &ConformanceHarness) {
    let s = Scope::new(h, "recovery_across_instances");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        let ghost = KnownDeployment::from_spec(ConformanceHarness::spec_with(&h.config, s.check));
        let recovery = s.provider().supports(Capability::Recovery);
        if !recovery {
            let b = h.make_provider();
            let found = s
                .within("recover", b.recover(&ctx(), std::slice::from_ref(&known)))
                .await
                .unwrap_or_else(|e| panic!("{}: recover must answer, got: {e}", s.check));
            if let Some(mine) = found.iter().find(|f| f.id == spec.id) {
                assert!(
                    !mine.status.is_running(),
                    "{}: a provider without Recovery must answer every deployment failed or stopped, got {mine:?}",
                    s.check
                );
            }
            return;
        }
        // Drop instance A, then build B: from now on only B (and cleanup) talk to the
        // platform.
        let b = s.restart_provider();
        let found = s
            .within("recover", b.recover(&ctx(), &[known.clone(), ghost.clone()]))
            .await
            .unwrap_or_else(|e| {
                panic!("{}: recover on a fresh instance must answer, got: {e}", s.check)
            });
        let mine = found.iter().find(|f| f.id == spec.id).unwrap_or_else(|| {
            panic!(
                "{}: recover on a fresh instance must answer the running deployment it was given (it works from `known` and the platform, not from memory), got {found:?}",
                s.check
            )
        });
        check_eq!(
            mine.status,
            ObservedStatus::Running,
            "{}: recover on a fresh instance must find the deployment Running, got {mine:?}",
            s.check
        );
        check_eq!(
            mine.revision, spec.revision,
            "{}: recover must find the deployment at its revision",
            s.check
        );
        check_eq!(
            ids(&mine.runtime),
            ids(&known.runtime),
            "{}: recover must adopt the same instances (same ids), not start new ones",
            s.check
        );
        if let Some(g) = found.iter().find(|f| f.id == *ghost.id()) {
            assert!(
                !g.status.is_running(),
                "{}: recover must not claim a never-deployed deployment runs, got {g:?}",
                s.check
            );
        }
        if let (Some(before), Some(after)) = (one_set, s.leftover_count(&spec.id).await) {
            check_eq!(
                after, before,
                "{}: recover must not start anything twice: {before} things on the platform before, {after} after",
                s.check
            );
        }
        let adopted = KnownDeployment::new(spec.clone(), mine.runtime.clone());
        s.track(&adopted);
        s.assert_running(&adopted, "recover (asking the fresh instance)")
            .await;
        s.within("stop", b.stop(&ctx(), &adopted))
            .await
            .unwrap_or_else(|e| {
                panic!("{}: the fresh instance must be able to stop what it recovered, got: {e}", s.check)
            });
        let stopped = KnownDeployment::new(spec.clone(), adopted.runtime.stopped());
        s.track(&stopped);
        let status = s.status(&stopped).await;
        assert!(
            matches!(status, Ok(ObservedStatus::Stopped)),
            "{}: after the fresh instance stopped the recovered deployment, status must be Stopped, got {status:?}",
            s.check
        );
        s.within("remove", b.remove(&ctx(), &stopped))
            .await
            .unwrap_or_else(|e| {
                panic!("{}: the fresh instance must be able to remove what it recovered, got: {e}", s.check)
            });
        s.assert_not_found(&*b, &stopped, "the fresh instance removed it").await;
        s.assert_nothing_left(&spec.id, "the fresh instance removed it").await;
    })
    .await;
}
