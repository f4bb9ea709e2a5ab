//! The check of [`Provider::replace`](crate::Provider::replace), which is optional: a
//! provider may answer `NotSupported` (the manager then stops and starts).

use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::provider::{KnownDeployment, RuntimeInfo};
use crate::traffic::Cutover;

use super::{ConformanceHarness, Scope, ctx, lock};

/// `replace` of a running deployment (skipped when it answers `NotSupported`) ends with
/// fresh instances of the same revision serving alone: every instance id is new, the
/// cutover ran exactly once, with the runtime the call returns, status is `Running`, and
/// (with a leftovers lister) one instance set is on the platform. A second replace (of
/// what the first returned) does the same.
pub async fn replace_switches_to_fresh_instances(h: &ConformanceHarness) {
    let s = Scope::new(h, "replace_switches_to_fresh_instances");
    s.run(async {
        let spec = s.spec();
        let mut known = s.deploy(&spec, None).await;
        let one_set = s.leftover_count(&spec.id).await;
        for attempt in ["replace", "a second replace"] {
            let seen: Arc<Mutex<Vec<RuntimeInfo>>> = Arc::default();
            let recorder = seen.clone();
            let cutover = Cutover::new(move |runtime| {
                lock(&recorder).push(runtime);
                Box::pin(async {})
            });
            let p = s.provider();
            let ctx = ctx().with_cutover(Some(cutover));
            let runtime = match s.within(attempt, p.replace(&ctx, &known)).await {
                Ok(runtime) => runtime,
                Err(Error::NotSupported { .. }) => return,
                Err(e) => panic!(
                    "{}: {attempt} of a running deployment must succeed or answer NotSupported, got: {e}",
                    s.check
                ),
            };
            let replaced = KnownDeployment::new(spec.clone(), runtime);
            s.track(&replaced);
            let before: Vec<&str> = known.runtime.instances.iter().map(|i| i.id.as_str()).collect();
            assert!(
                !replaced.runtime.instances.is_empty()
                    && replaced.runtime.instances.iter().all(|i| {
                        i.revision == spec.revision && !before.contains(&i.id.as_str())
                    }),
                "{}: after {attempt} every instance is fresh and runs revision {}, got {:?} (before: {before:?})",
                s.check,
                spec.revision,
                replaced.runtime.instances
            );
            let cutovers = lock(&seen).clone();
            assert!(
                cutovers.len() == 1 && cutovers[0].instances == replaced.runtime.instances,
                "{}: {attempt} must call cutover once, with the fresh instances it returns, got {cutovers:?}",
                s.check
            );
            s.assert_running(&replaced, attempt).await;
            s.assert_leftover_count(&spec.id, one_set, attempt).await;
            known = replaced;
        }
    })
    .await;
}
