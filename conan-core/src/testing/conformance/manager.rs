//! The check of concurrent operations driven through a [`DeploymentManager`] built on the
//! provider.

use crate::error::Error;
use crate::manager::{DeploymentManager, RetryPolicy};
use crate::provider::{DeploymentSpec, KnownDeployment, ObservedStatus};
use crate::status::DeploymentStatus;

use super::{ConformanceHarness, Scope, unique_name};

fn known_of(record: &crate::store::DeploymentRecord) -> KnownDeployment {
    KnownDeployment::new(
        DeploymentSpec::new(record.id.clone(), record.revision, record.config.clone()),
        record.runtime.as_deref().cloned().unwrap_or_default(),
    )
}

/// Four deployments driven at once through a [`DeploymentManager`] built on the provider
/// (deploy all; then update one, stop two and remove one at the same time; then start
/// one and remove two at the same time) all end in the expected states, as the manager
/// and the provider see them.
pub async fn concurrent_operations_through_manager(h: &ConformanceHarness) {
    let s = Scope::new(h, "concurrent_operations_through_manager");
    s.run(async {
        let provider = s.provider();
        let manager = DeploymentManager::builder()
            .provider_arc(provider.clone())
            .retry(RetryPolicy::none())
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}: building a manager failed: {e}", s.check));
        let names: Vec<String> = (0..4).map(|i| unique_name(&format!("many{i}"))).collect();
        // Phase 1: deploy all at once.
        let deployed = s
            .within(
                "concurrent deploys",
                futures::future::join_all(names.iter().map(|n| manager.deploy((h.config)(n)))),
            )
            .await;
        let mut known = Vec::new();
        for (name, result) in names.iter().zip(deployed) {
            let record = result.unwrap_or_else(|e| {
                panic!(
                    "{}: concurrent deploy of {name} must succeed, got: {e}",
                    s.check
                )
            });
            check_eq!(
                record.status,
                DeploymentStatus::Running,
                "{}: {name} must be Running after its deploy",
                s.check
            );
            let k = known_of(&record);
            s.track(&k);
            known.push(k);
        }

        // Phase 2: update #0, stop #1 and #2, remove #3, at once.
        let (updated, stopped1, stopped2, removed3) = s
            .within("concurrent update, stops and remove", async {
                futures::join!(
                    manager.update(&names[0], (h.config)(&names[0])),
                    manager.stop(&names[1]),
                    manager.stop(&names[2]),
                    manager.remove(&names[3]),
                )
            })
            .await;
        let updated = updated.unwrap_or_else(|e| panic!("{}: update must succeed: {e}", s.check));
        check_eq!(
            (updated.status.clone(), updated.revision),
            (DeploymentStatus::Running, known[0].revision().next()),
            "{}: the updated deployment runs its second revision",
            s.check
        );
        s.track(&known_of(&updated));
        for (i, result) in [(1, stopped1), (2, stopped2)] {
            let record = result.unwrap_or_else(|e| panic!("{}: stop must succeed: {e}", s.check));
            check_eq!(
                record.status,
                DeploymentStatus::Stopped,
                "{}: {} must be Stopped after its stop",
                s.check,
                names[i]
            );
            let status = s.status(&known_of(&record)).await;
            assert!(
                matches!(status, Ok(ObservedStatus::Stopped)),
                "{}: the provider must see {} Stopped, got {status:?}",
                s.check,
                names[i]
            );
            s.track(&known_of(&record));
        }
        removed3.unwrap_or_else(|e| panic!("{}: remove must succeed: {e}", s.check));
        assert_removed(&s, &manager, &names[3], &known[3]).await;

        // Phase 3: start #1, remove #0 and #2, at once.
        let (started1, removed0, removed2) = s
            .within("concurrent start and removes", async {
                futures::join!(
                    manager.start(&names[1]),
                    manager.remove(&names[0]),
                    manager.remove(&names[2]),
                )
            })
            .await;
        let started = started1.unwrap_or_else(|e| panic!("{}: start must succeed: {e}", s.check));
        check_eq!(
            (started.status.clone(), started.revision),
            (DeploymentStatus::Running, known[1].revision()),
            "{}: the started deployment runs at its revision",
            s.check
        );
        let started_known = known_of(&started);
        s.track(&started_known);
        s.assert_running(&started_known, "a start through the manager")
            .await;
        removed0.unwrap_or_else(|e| panic!("{}: remove must succeed: {e}", s.check));
        removed2.unwrap_or_else(|e| panic!("{}: remove must succeed: {e}", s.check));
        assert_removed(&s, &manager, &names[0], &known[0]).await;
        assert_removed(&s, &manager, &names[2], &known[2]).await;

        s.within("remove", manager.remove(&names[1]))
            .await
            .unwrap_or_else(|e| panic!("{}: remove must succeed: {e}", s.check));
        assert_removed(&s, &manager, &names[1], &known[1]).await;
        s.within("manager shutdown", manager.shutdown()).await;
    })
    .await;
}

async fn assert_removed(
    s: &Scope<'_>,
    manager: &DeploymentManager,
    name: &str,
    known: &KnownDeployment,
) {
    match manager.get(name) {
        Err(Error::NotFound { .. }) => {}
        Ok(record) if record.status == DeploymentStatus::Removed => {}
        other => panic!(
            "{}: the manager must have forgotten {name} after its remove, got {other:?}",
            s.check
        ),
    }
    let provider = s.provider();
    s.assert_not_found(&*provider, known, "a remove through the manager")
        .await;
    s.assert_nothing_left(known.id(), "a remove through the manager")
        .await;
}
