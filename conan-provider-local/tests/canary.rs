//! A canary update with real processes: the new revision's replicas start beside the old
//! ones, a gate (standing in for the manager's canary over a traffic layer: it sends real
//! requests at each step's share to the instances' own ports and counts them per revision)
//! judges them, and the provider promotes or rolls back. The manager-side gate over the
//! real proxy is tested in `conan-cli`.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use conan_core::prelude::*;
use conan_core::support::canary::{
    self, CanaryGate, CanaryOutcome, CanaryRequest, CanaryTraffic, RevisionCounters,
};
use conan_core::{CanaryPlan, CanaryStep};

const PORTS: std::ops::RangeInclusive<u16> = 26200..=26399;

/// Real requests to the instances' ports: `share` percent to the new ones.
struct Load {
    share: AtomicU8,
    counts: Mutex<(RevisionCounters, RevisionCounters)>,
}

#[async_trait]
impl CanaryTraffic for Load {
    async fn set_share(&self, percent: u8) -> conan_core::Result<()> {
        self.share.store(percent, Ordering::Release);
        Ok(())
    }
    fn counters(&self) -> (RevisionCounters, RevisionCounters) {
        *self.counts.lock().unwrap()
    }
}

/// One request with `Connection: close`: its status.
async fn status_of(port: u16) -> Option<u16> {
    get(port, "/").await
}

fn ports(rt: &RuntimeInfo) -> Vec<u16> {
    rt.instances.iter().filter_map(|i| i.port).collect()
}

/// A gate that runs the canary with real load (about 200 requests a second).
fn gate() -> (CanaryGate, Arc<Mutex<Vec<CanaryOutcome>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&seen);
    let g = CanaryGate::new(move |req: CanaryRequest| {
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let load = Arc::new(Load {
                share: AtomicU8::new(0),
                counts: Mutex::new(Default::default()),
            });
            let (old, new) = (ports(&req.old), ports(&req.new));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let driver = {
                let (load, stop) = (Arc::clone(&load), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Acquire) {
                        let to_new = (n % 100) < usize::from(load.share.load(Ordering::Acquire));
                        let pool = if to_new { &new } else { &old };
                        let port = pool[n % pool.len()];
                        let t = Instant::now();
                        let status = status_of(port).await.unwrap_or(599);
                        let took = t.elapsed();
                        {
                            let mut c = load.counts.lock().unwrap();
                            let side = if to_new { &mut c.1 } else { &mut c.0 };
                            *side = RevisionCounters::new(
                                side.requests + 1,
                                side.server_errors + u64::from(status >= 500),
                                side.latency_total + took,
                            );
                        }
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            };
            let outcome = canary::run(&req.plan, &*load, |_| {}).await;
            stop.store(true, Ordering::Release);
            let _ = driver.await;
            seen.lock().unwrap().push(outcome.clone());
            outcome
        })
    });
    (g, out)
}

fn plan() -> CanaryPlan {
    CanaryPlan {
        steps: vec![
            CanaryStep::new(20, Duration::from_secs(2)),
            CanaryStep::new(50, Duration::from_secs(2)),
        ],
        min_requests: 10,
        // Connection-per-request latency on a loaded machine is noisy.
        latency_slack: Duration::from_millis(200),
        ..CanaryPlan::default()
    }
}

fn revision(of: &DeploymentSpec, n: u64, fail_ratio: &str) -> DeploymentSpec {
    let mut s = of.clone();
    s.revision = Revision(n);
    let mut c = DeploymentConfig::clone(&of.config);
    c.env.insert("REVISION", n.to_string());
    c.env.insert("FAIL_RATIO", fail_ratio);
    s.config = c.into();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_promoted_when_healthy_and_rolled_back_for_5xx_with_the_numbers() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("canary"), "canary");
    c.replicas = 2;
    c.update.strategy = UpdateStrategy::Canary;
    c.update.canary = Some(plan());
    let s1 = spec(c);
    let _g = Guard::new(&[&s1.id]);
    let (gate, outcomes) = gate();
    let (ctx, _rx) = ctx();
    let ctx = ctx.with_canary(Some(gate));
    let info1 = p.deploy(&ctx, &s1, None).await.unwrap();

    // Revision 2 is as good as revision 1: promoted after both steps.
    let s2 = revision(&s1, 2, "0");
    let info2 = p
        .update(&ctx, &KnownDeployment::new(s1.clone(), info1.clone()), &s2)
        .await
        .unwrap();
    assert_eq!(info2.instances.len(), 2);
    assert!(info2.instances.iter().all(|i| i.revision == Revision(2)));
    {
        let o = outcomes.lock().unwrap();
        assert!(o[0].promoted, "{}", o[0].summary);
        assert_eq!(o[0].steps.len(), 2);
        assert!(o[0].steps[0].new.requests >= 10, "{}", o[0].summary);
    }
    for port in ports(&info1) {
        assert_eq!(status_of(port).await, None, "the old revision is stopped");
    }
    assert_eq!(marked(s1.id.as_str()).len(), 2);

    // Revision 3 answers 500 to every request: rolled back, revision 2 untouched.
    let s3 = revision(&s2, 3, "1");
    let before: std::collections::BTreeSet<u32> = marked(s1.id.as_str()).into_iter().collect();
    let err = p
        .update(&ctx, &KnownDeployment::new(s2.clone(), info2.clone()), &s3)
        .await
        .unwrap_err();
    let failure = err.failure().expect("a failure bundle");
    assert!(
        failure.reason.contains("canary rolled back") && failure.reason.contains("5xx ratio"),
        "{failure:?}"
    );
    assert!(
        failure.reason.contains("requests"),
        "the numbers are in it: {failure:?}"
    );
    let after: std::collections::BTreeSet<u32> = marked(s1.id.as_str()).into_iter().collect();
    assert_eq!(
        after, before,
        "the old revision's replicas serve on, the new ones are gone"
    );
    for port in ports(&info2) {
        assert_eq!(status_of(port).await, Some(200));
    }
    assert_eq!(
        p.status(&known(&s2)).await.unwrap(),
        ObservedStatus::Running
    );

    // Without a traffic layer a canary cannot split requests: refused, nothing left.
    let (plain, _rx) = common::ctx();
    let s4 = revision(&s2, 4, "0");
    let err = p
        .update(
            &plain,
            &KnownDeployment::new(s2.clone(), info2.clone()),
            &s4,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    let still: std::collections::BTreeSet<u32> = marked(s1.id.as_str()).into_iter().collect();
    assert_eq!(still, before);
    p.remove(&plain, &known(&s2)).await.unwrap();
    assert!(marked(s1.id.as_str()).is_empty());
}
