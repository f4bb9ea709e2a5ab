//! The manager's retries, deadlines and panic containment over the REAL local provider,
//! with faults injected around it by `FaultyProvider`: retried and abandoned calls must
//! converge on one process, a hanging call must not wedge the deployment.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use conan_core::manager::CallTimeouts;
use conan_core::prelude::*;
use conan_core::testing::{Call, CallFault, FaultyProvider};
use conan_core::{DeploymentManager, RetryPolicy, StatusKind};
use conan_provider_local::LocalProvider;

const PORTS: std::ops::RangeInclusive<u16> = 22000..=22499;

type Faulty = Arc<FaultyProvider<Arc<LocalProvider>>>;

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        initial_delay: Duration::from_millis(10),
        factor: 1.0,
        max_delay: Duration::from_millis(10),
        jitter: false,
    }
}

async fn setup(timeouts: CallTimeouts) -> (Faulty, DeploymentManager, tempfile::TempDir) {
    let (p, dir) = provider(PORTS);
    let faulty = Arc::new(FaultyProvider::new(p));
    let m = DeploymentManager::builder()
        .provider_arc(faulty.clone())
        .retry(fast_retry())
        .call_timeouts(timeouts)
        .build()
        .await
        .unwrap();
    (faulty, m, dir)
}

fn local_config(name: &str) -> DeploymentConfig {
    let mut c = config(name, "hello");
    c.provider = Some("local".into());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_deploy_failures_are_retried_and_end_running_with_one_process() {
    let (faulty, m, _dir) = setup(CallTimeouts::new()).await;
    faulty.inject(Call::Deploy, CallFault::Transient(2));
    let name = unique("flaky");
    let rec = m.deploy(local_config(&name)).await.unwrap();
    let _g = Guard::new(&[&rec.id]);
    assert_eq!(rec.status.kind(), StatusKind::Running);
    assert_eq!(faulty.calls(Call::Deploy), 3);
    assert_eq!(faulty.forwarded(Call::Deploy), 1);
    assert_eq!(marked(rec.id.as_str()).len(), 1);
    let port = rec.runtime.as_ref().unwrap().port().unwrap();
    assert_eq!(get(port, "/health").await, Some(200));
    m.remove(&name).await.unwrap();
    assert!(marked(rec.id.as_str()).is_empty());
}

/// The provider deployed, but its answer was lost (the call hung after the work): the
/// manager's deadline abandons it and fails the deployment; starting it again deploys the
/// same spec, which converges on the process already running (no second copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_answer_was_lost_converges_on_the_same_process() {
    let timeouts = CallTimeouts::new()
        .with_build_allowance(Duration::from_millis(300))
        .with_grace(Duration::from_millis(200));
    let (faulty, m, _dir) = setup(timeouts).await;
    faulty.inject(Call::Deploy, CallFault::HangAfter);
    let name = unique("lost");
    let mut c = local_config(&name);
    c.update.healthy_deadline = Duration::from_secs(3);
    let e = m.deploy(c).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    let rec = m.get(&name).unwrap();
    let _g = Guard::new(&[&rec.id]);
    assert_eq!(rec.status.kind(), StatusKind::Failed);
    let first = marked(rec.id.as_str());
    assert_eq!(first.len(), 1, "the lost deploy did run: {first:?}");

    faulty.clear(Call::Deploy);
    let rec = m.start(&name).await.unwrap();
    assert_eq!(rec.status.kind(), StatusKind::Running);
    assert_eq!(faulty.forwarded(Call::Deploy), 2);
    assert_eq!(
        marked(rec.id.as_str()),
        first,
        "the same process, not a second one"
    );
    assert_eq!(
        rec.runtime.as_ref().unwrap().instances[0].id,
        first[0].to_string()
    );
    m.remove(&name).await.unwrap();
    assert!(marked(rec.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_stop_is_bounded_and_the_deployment_stays_operable() {
    let timeouts = CallTimeouts::new()
        .with_stop_margin(Duration::from_millis(200))
        .with_grace(Duration::from_millis(200));
    let (faulty, m, _dir) = setup(timeouts).await;
    let name = unique("wedged");
    let mut c = local_config(&name);
    c.stop.timeout = Duration::from_millis(500);
    let rec = m.deploy(c).await.unwrap();
    let _g = Guard::new(&[&rec.id]);

    faulty.inject(Call::Stop, CallFault::Hang);
    let t = Instant::now();
    let e = m.stop(&name).await.unwrap_err();
    let took = t.elapsed();
    // stop.timeout + margin + grace = 0.9 s; allow for scheduling and retries' delays.
    assert!(took < Duration::from_secs(3), "{took:?}: {e}");
    assert!(matches!(e, Error::Timeout { .. }), "{e}");

    faulty.clear(Call::Stop);
    let stopped = m.stop(&name).await.unwrap();
    assert_eq!(stopped.status.kind(), StatusKind::Stopped);
    assert!(marked(rec.id.as_str()).is_empty());
    m.remove(&name).await.unwrap();
    assert!(marked(rec.id.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_call_fails_only_its_operation() {
    let (faulty, m, _dir) = setup(CallTimeouts::new()).await;
    let a = unique("panic-a");
    let rec_a = m.deploy(local_config(&a)).await.unwrap();
    let _ga = Guard::new(&[&rec_a.id]);

    faulty.inject(Call::Stop, CallFault::Panic);
    let e = m.stop(&a).await.unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");
    faulty.clear(Call::Stop);

    // The manager and the provider keep working: another deployment deploys, and the
    // first one can still be stopped and removed.
    let b = unique("panic-b");
    let rec_b = m.deploy(local_config(&b)).await.unwrap();
    let _gb = Guard::new(&[&rec_b.id]);
    assert_eq!(rec_b.status.kind(), StatusKind::Running);
    assert_eq!(marked(rec_b.id.as_str()).len(), 1);
    assert_eq!(m.stop(&a).await.unwrap().status.kind(), StatusKind::Stopped);
    assert!(marked(rec_a.id.as_str()).is_empty());
    m.remove(&a).await.unwrap();
    m.remove(&b).await.unwrap();
    assert!(marked(rec_a.id.as_str()).is_empty());
    assert!(marked(rec_b.id.as_str()).is_empty());
}

/// A deploy whose future is dropped midway (the manager abandoned it after its grace
/// period) kills what it started; the next deploy of the deployment works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_deploy_leaves_nothing_and_the_next_one_works() {
    let (p, _dir) = provider(PORTS);
    let mut c = config(&unique("dropped"), "slow-start");
    c.health_check = Some(HealthCheck::http("/"));
    c.env.insert("SLOW_START_MS", "60000");
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    {
        let deploy = p.deploy(&ctx, &s, None);
        tokio::pin!(deploy);
        let started = async {
            assert!(
                wait_until(Duration::from_secs(10), || !marked(s.id.as_str())
                    .is_empty())
                .await
            );
        };
        tokio::select! {
            r = &mut deploy => panic!("the slow deploy answered: {r:?}"),
            () = started => {}
        }
        // Dropped here, mid readiness gate.
    }
    assert!(
        wait_until(Duration::from_secs(10), || marked(s.id.as_str()).is_empty()).await,
        "the abandoned instance was killed"
    );
    let status = p.status(&known(&s)).await.unwrap();
    assert!(
        matches!(status, ObservedStatus::Failed { .. }),
        "{status:?}"
    );

    let mut good = s.config.as_ref().clone();
    good.env.insert("SLOW_START_MS", "10");
    let s2 = DeploymentSpec::new(s.id.clone(), Revision(2), good);
    let info = p.deploy(&ctx, &s2, Some(&known(&s))).await.unwrap();
    assert_eq!(get(info.port().unwrap(), "/").await, Some(200));
    assert_eq!(marked(s.id.as_str()).len(), 1);
    p.remove(&ctx, &known(&s2)).await.unwrap();
    assert!(marked(s.id.as_str()).is_empty());
}
