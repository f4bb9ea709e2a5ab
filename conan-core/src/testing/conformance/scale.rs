//! The check of [`Provider::scale`](crate::Provider::scale), for providers that declare
//! [`Capability::Scale`](crate::Capability::Scale).

use std::sync::{Arc, Mutex};

use crate::capability::Capability;
use crate::provider::{KnownDeployment, RuntimeInfo};
use crate::traffic::Cutover;

use super::{ConformanceHarness, Scope, ctx, lock};

/// With `Scale`: `scale` of a running deployment to 2 and back to 1 succeeds, calls the
/// cutover exactly once each time with the runtime it returns, keeps the instances that
/// served (out: all of them still listed; in: only ones that were listed), lists `n`
/// instances (or, on a platform that shows one instance whatever the count, the same
/// one), and leaves the deployment `Running` at the same revision.
pub async fn scale_changes_the_count_with_one_cutover(h: &ConformanceHarness) {
    let s = Scope::new(h, "scale_changes_the_count_with_one_cutover");
    if !s.provider().capabilities().contains(Capability::Scale) {
        return;
    }
    s.run(async {
        let spec = s.spec();
        let mut known = s.deploy(&spec, None).await;
        for n in [2u32, 1] {
            let seen: Arc<Mutex<Vec<RuntimeInfo>>> = Arc::default();
            let recorder = seen.clone();
            let cutover = Cutover::new(move |runtime| {
                lock(&recorder).push(runtime);
                Box::pin(async {})
            });
            let p = s.provider();
            let ctx = ctx().with_cutover(Some(cutover));
            let what = format!("a scale to {n}");
            let runtime = match s.within(&what, p.scale(&ctx, &known, n)).await {
                Ok(runtime) => runtime,
                Err(e) => panic!(
                    "{}: {what} of a running deployment must succeed (the provider declares Scale), got: {e}",
                    s.check
                ),
            };
            let before: Vec<&str> = known.runtime.instances.iter().map(|i| i.id.as_str()).collect();
            let after: Vec<&str> = runtime.instances.iter().map(|i| i.id.as_str()).collect();
            let kept = if n >= 2 {
                before.iter().all(|b| after.contains(b))
            } else {
                !after.is_empty() && after.iter().all(|a| before.contains(a))
            };
            assert!(
                kept,
                "{}: {what} keeps the instances that served (before {before:?}, after {after:?})",
                s.check
            );
            assert!(
                after.len() == n as usize || after == before,
                "{}: after {what} the runtime lists {n} instances, got {after:?}",
                s.check
            );
            assert!(
                runtime.instances.iter().all(|i| i.revision == spec.revision),
                "{}: {what} runs the same revision, got {:?}",
                s.check,
                runtime.instances
            );
            let cutovers = lock(&seen).clone();
            assert!(
                cutovers.len() == 1 && cutovers[0].instances == runtime.instances,
                "{}: {what} must call cutover once, with the instances it returns, got {cutovers:?}",
                s.check
            );
            let mut spec_n = spec.clone();
            std::sync::Arc::make_mut(&mut spec_n.config).replicas = n;
            let scaled = KnownDeployment::new(spec_n, runtime);
            s.track(&scaled);
            s.assert_running(&scaled, &what).await;
            known = scaled;
        }
    })
    .await;
}
