//! Regression tests of the manager's side of provider contract v2, one per finding of the
//! contract review (issue 9). Providers here are scripted with `mockall` where the point is
//! a call sequence, and hand-written where the point is timing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mockall::predicate::always;

use super::tests::drain;
use super::*;
use crate::capability::Capabilities;
use crate::failure::{ExitStatus, FailureReport};
use crate::log::LogStream;
use crate::provider::{
    DeploymentSpec, KnownDeployment, ObservedStatus, OperationContext, RecoveredDeployment,
    RuntimeInfo,
};
use crate::status::StatusKind;
use crate::store::MemoryStore;

/// The calls of a provider, with owned arguments so `mockall` can state expectations on
/// them; [`Scripted`] turns a mock of it into a [`Provider`].
#[mockall::automock]
trait Script: Send + Sync {
    fn deploy(
        &self,
        spec: DeploymentSpec,
        previous: Option<KnownDeployment>,
    ) -> Result<RuntimeInfo>;
    fn update(&self, current: KnownDeployment, spec: DeploymentSpec) -> Result<RuntimeInfo>;
    fn start(&self, known: KnownDeployment) -> Result<RuntimeInfo>;
    fn stop(&self, known: KnownDeployment) -> Result<()>;
    fn remove(&self, known: KnownDeployment) -> Result<()>;
    fn status(&self, known: KnownDeployment) -> Result<ObservedStatus>;
    fn recover(&self, known: Vec<KnownDeployment>) -> Result<Vec<RecoveredDeployment>>;
}

struct Scripted {
    script: MockScript,
    /// The sink of the last deploy, to report observations as a supervisor would.
    sink: Mutex<Option<EventSink>>,
}

impl Scripted {
    fn new(script: MockScript) -> Self {
        Self {
            script,
            sink: Mutex::new(None),
        }
    }

    fn sink(&self) -> EventSink {
        self.sink
            .lock()
            .unwrap()
            .clone()
            .expect("a deploy ran and left its sink")
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        *self.sink.lock().unwrap() = Some(ctx.events.clone());
        self.script.deploy(spec.clone(), previous.cloned())
    }
    async fn update(
        &self,
        _: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        self.script.update(current.clone(), spec.clone())
    }
    async fn start(&self, _: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        self.script.start(known.clone())
    }
    async fn stop(&self, _: &OperationContext, known: &KnownDeployment) -> Result<()> {
        self.script.stop(known.clone())
    }
    async fn remove(&self, _: &OperationContext, known: &KnownDeployment) -> Result<()> {
        self.script.remove(known.clone())
    }
    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
        self.script.status(known.clone())
    }
    async fn logs(&self, known: &KnownDeployment, _: &LogQuery) -> Result<LogStream> {
        Err(Error::deployment_not_found(known.id().as_str()))
    }
    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
        Err(Error::deployment_not_found(known.id().as_str()))
    }
    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
        Err(Error::deployment_not_found(known.id().as_str()))
    }
    async fn recover(
        &self,
        _: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        self.script.recover(known.to_vec())
    }
}

fn config(name: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name).build().unwrap()
}

fn no_retry_delay() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        jitter: false,
        ..RetryPolicy::default()
    }
}

async fn manager_with(provider: impl Provider, store: Arc<dyn StateStore>) -> DeploymentManager {
    DeploymentManager::builder()
        .provider(provider)
        .store_arc(store)
        .retry(no_retry_delay())
        .build()
        .await
        .unwrap()
}

// ---- Finding 1: the manager bounds every provider call ----------------------------------

/// Never answers `deploy` or `stop`, and ignores cancellation; records whether its token
/// was cancelled. `remove` answers at once.
#[derive(Default)]
struct Hanging {
    saw_cancel: Arc<AtomicBool>,
}

impl Hanging {
    async fn hang(&self, ctx: &OperationContext) -> ! {
        let token = ctx.cancel.clone();
        let saw = self.saw_cancel.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            saw.store(true, Ordering::SeqCst);
        });
        futures::future::pending().await
    }
}

#[async_trait]
impl Provider for Hanging {
    fn name(&self) -> &str {
        "hanging"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn deploy(
        &self,
        ctx: &OperationContext,
        _: &DeploymentSpec,
        _: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        self.hang(ctx).await
    }
    async fn update(
        &self,
        ctx: &OperationContext,
        _: &KnownDeployment,
        _: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        self.hang(ctx).await
    }
    async fn start(&self, ctx: &OperationContext, _: &KnownDeployment) -> Result<RuntimeInfo> {
        self.hang(ctx).await
    }
    async fn stop(&self, ctx: &OperationContext, _: &KnownDeployment) -> Result<()> {
        self.hang(ctx).await
    }
    async fn remove(&self, _: &OperationContext, _: &KnownDeployment) -> Result<()> {
        Ok(())
    }
    async fn status(&self, _: &KnownDeployment) -> Result<ObservedStatus> {
        futures::future::pending().await
    }
    async fn logs(&self, _: &KnownDeployment, _: &LogQuery) -> Result<LogStream> {
        futures::future::pending().await
    }
    async fn metrics(&self, _: &KnownDeployment) -> Result<Metrics> {
        futures::future::pending().await
    }
    async fn health(&self, _: &KnownDeployment) -> Result<HealthReport> {
        futures::future::pending().await
    }
    async fn recover(
        &self,
        _: &OperationContext,
        _: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        futures::future::pending().await
    }
}

fn short_timeouts() -> CallTimeouts {
    CallTimeouts::new()
        .with_build_allowance(Duration::from_secs(1))
        .with_stop_margin(Duration::from_secs(1))
        .with_query(Duration::from_secs(1))
        .with_grace(Duration::from_secs(1))
}

async fn hanging_manager(hanging: Hanging) -> DeploymentManager {
    DeploymentManager::builder()
        .provider(hanging)
        .call_timeouts(short_timeouts())
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap()
}

fn quick(name: &str) -> DeploymentConfig {
    let mut c = config(name);
    c.update.healthy_deadline = Duration::from_secs(2);
    c.stop.timeout = Duration::from_secs(1);
    c
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_never_answers_times_out_and_the_deployment_stays_operable() {
    let hanging = Hanging::default();
    let saw_cancel = hanging.saw_cancel.clone();
    let m = hanging_manager(hanging).await;
    let start = tokio::time::Instant::now();
    let err = m.deploy(quick("hung")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // healthy deadline 2 s + build allowance 1 s, then 1 s of grace.
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert!(
        saw_cancel.load(Ordering::SeqCst),
        "the provider's token was cancelled first"
    );
    assert_eq!(m.get("hung").unwrap().status.kind(), StatusKind::Failed);
    let stats = m.queue_stats();
    assert_eq!(stats.processing, 0, "the slot was given back: {stats:?}");

    // A hung stop is bounded the same way, and remove still works afterwards.
    let err = m.stop("hung").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    m.remove("hung").await.unwrap();
    assert!(m.get("hung").is_err());

    // Read-only calls are bounded by the query deadline.
    m.deploy(quick("hung2")).await.unwrap_err();
    let err = m.health("hung2").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_call_signals_the_provider_then_abandons_it() {
    let hanging = Hanging::default();
    let saw_cancel = hanging.saw_cancel.clone();
    let m = hanging_manager(hanging).await;
    let mut c = quick("cancel-me");
    c.update.healthy_deadline = Duration::from_secs(3600);
    let handle = m
        .submit(Request::Deploy(c), SubmitOptions::default())
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = tokio::time::Instant::now();
    handle.cancel();
    let err = handle.wait().await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "abandoned after the grace period"
    );
    assert!(saw_cancel.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_within_its_bound_while_a_provider_hangs() {
    let m = hanging_manager(Hanging::default()).await;
    let mut c = quick("at-shutdown");
    c.update.healthy_deadline = Duration::from_secs(3600);
    let handle = m
        .submit(Request::Deploy(c), SubmitOptions::default())
        .unwrap();
    let queued_behind = m
        .submit(
            Request::Stop {
                target: "at-shutdown".into(),
            },
            SubmitOptions::default(),
        )
        .unwrap();
    tokio::task::yield_now().await;
    let start = tokio::time::Instant::now();
    m.shutdown().await;
    // Shutdown timeout 2 s, then the grace period of 1 s.
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(matches!(handle.wait().await, Err(Error::Cancelled { .. })));
    assert!(matches!(
        queued_behind.wait().await,
        Err(Error::Cancelled { .. })
    ));
}

// ---- Finding 2: one door per deployment -------------------------------------------------

/// Answers every call after a pause and counts, per deployment, how many calls that
/// change it ran at the same time.
#[derive(Clone, Default)]
struct Overlaps {
    in_flight: Arc<Mutex<HashMap<DeploymentId, usize>>>,
    max_seen: Arc<AtomicUsize>,
    recovers: Arc<AtomicUsize>,
}

impl Overlaps {
    async fn enter(&self, id: &DeploymentId) {
        {
            let mut map = self.in_flight.lock().unwrap();
            let n = map.entry(id.clone()).or_default();
            *n += 1;
            self.max_seen.fetch_max(*n, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        *self.in_flight.lock().unwrap().get_mut(id).unwrap() -= 1;
    }
}

#[async_trait]
impl Provider for Overlaps {
    fn name(&self) -> &str {
        "overlaps"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().with(crate::Capability::Recovery)
    }
    async fn deploy(
        &self,
        _: &OperationContext,
        spec: &DeploymentSpec,
        _: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        self.enter(&spec.id).await;
        Ok(RuntimeInfo::new())
    }
    async fn update(
        &self,
        _: &OperationContext,
        _: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        self.enter(&spec.id).await;
        Ok(RuntimeInfo::new())
    }
    async fn start(&self, _: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        self.enter(known.id()).await;
        Ok(RuntimeInfo::new())
    }
    async fn stop(&self, _: &OperationContext, known: &KnownDeployment) -> Result<()> {
        self.enter(known.id()).await;
        Ok(())
    }
    async fn remove(&self, _: &OperationContext, known: &KnownDeployment) -> Result<()> {
        self.enter(known.id()).await;
        Ok(())
    }
    async fn status(&self, _: &KnownDeployment) -> Result<ObservedStatus> {
        Ok(ObservedStatus::Running)
    }
    async fn logs(&self, known: &KnownDeployment, _: &LogQuery) -> Result<LogStream> {
        Err(Error::deployment_not_found(known.id().as_str()))
    }
    async fn metrics(&self, _: &KnownDeployment) -> Result<Metrics> {
        Ok(Metrics::new())
    }
    async fn health(&self, _: &KnownDeployment) -> Result<HealthReport> {
        Ok(HealthReport::new(crate::HealthStatus::Unknown))
    }
    async fn recover(
        &self,
        _: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        self.recovers.fetch_add(1, Ordering::SeqCst);
        for k in known {
            self.enter(k.id()).await;
        }
        Ok(known
            .iter()
            .map(|k| {
                RecoveredDeployment::running(k.id().clone(), k.revision(), (*k.runtime).clone())
            })
            .collect())
    }
}

#[tokio::test(start_paused = true)]
async fn a_recovery_and_a_user_stop_on_one_deployment_never_overlap() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let first = manager_with(Overlaps::default(), store.clone()).await;
    for i in 0..5 {
        first.deploy(config(&format!("app-{i}"))).await.unwrap();
    }
    drop(first);

    // A restarted manager recovers while the user already stops every deployment.
    let provider = Overlaps::default();
    let m = manager_with(provider.clone(), store.clone()).await;
    let stops: Vec<_> = (0..5)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move { m.stop(&format!("app-{i}")).await })
        })
        .collect();
    let recovered = m.recover().await.unwrap();
    assert_eq!(recovered.len(), 5);
    for stop in stops {
        stop.await.unwrap().unwrap();
    }
    assert_eq!(
        provider.recovers.load(Ordering::SeqCst),
        5,
        "one recovery job each"
    );
    assert_eq!(
        provider.max_seen.load(Ordering::SeqCst),
        1,
        "two calls overlapped on a deployment"
    );

    // The same through `add_provider`, with user operations queued meanwhile.
    let later = Overlaps::default();
    let m = DeploymentManager::builder()
        .provider(MemoryProviderStandIn)
        .store_arc(store)
        .build()
        .await
        .unwrap();
    let recovering = {
        let (m, later) = (m.clone(), later.clone());
        tokio::spawn(async move { m.add_provider(later).await })
    };
    tokio::task::yield_now().await;
    let starts: Vec<_> = (0..5)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move { m.start(&format!("app-{i}")).await })
        })
        .collect();
    recovering.await.unwrap().unwrap();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    assert_eq!(later.max_seen.load(Ordering::SeqCst), 1);
}

/// A provider of another name, so the second manager starts without `overlaps`.
struct MemoryProviderStandIn;

#[async_trait]
impl Provider for MemoryProviderStandIn {
    fn name(&self) -> &str {
        "stand-in"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn deploy(
        &self,
        _: &OperationContext,
        _: &DeploymentSpec,
        _: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        Ok(RuntimeInfo::new())
    }
    async fn update(
        &self,
        _: &OperationContext,
        _: &KnownDeployment,
        _: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        Ok(RuntimeInfo::new())
    }
    async fn start(&self, _: &OperationContext, _: &KnownDeployment) -> Result<RuntimeInfo> {
        Ok(RuntimeInfo::new())
    }
    async fn stop(&self, _: &OperationContext, _: &KnownDeployment) -> Result<()> {
        Ok(())
    }
    async fn remove(&self, _: &OperationContext, _: &KnownDeployment) -> Result<()> {
        Ok(())
    }
    async fn status(&self, _: &KnownDeployment) -> Result<ObservedStatus> {
        Ok(ObservedStatus::Running)
    }
    async fn logs(&self, k: &KnownDeployment, _: &LogQuery) -> Result<LogStream> {
        Err(Error::deployment_not_found(k.id().as_str()))
    }
    async fn metrics(&self, _: &KnownDeployment) -> Result<Metrics> {
        Ok(Metrics::new())
    }
    async fn health(&self, _: &KnownDeployment) -> Result<HealthReport> {
        Ok(HealthReport::new(crate::HealthStatus::Unknown))
    }
    async fn recover(
        &self,
        _: &OperationContext,
        _: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        Ok(Vec::new())
    }
}

// ---- Finding 3: who says what ------------------------------------------------------------

#[tokio::test]
async fn one_failed_update_emits_exactly_one_rolled_back() {
    let mut script = MockScript::new();
    script
        .expect_deploy()
        .returning(|_, _| Ok(RuntimeInfo::new()));
    script.expect_update().returning(|_, spec| {
        Err(Error::HealthCheckFailed {
            deployment: spec.config.name.clone(),
            failure: Box::new(FailureReport::new("never ready")),
        })
    });
    script
        .expect_status()
        .returning(|_| Ok(ObservedStatus::Running));
    let m = manager_with(Scripted::new(script), Arc::new(MemoryStore::new())).await;
    m.deploy(config("rb")).await.unwrap();
    let mut rx = m.subscribe();
    m.update("rb", config("rb")).await.unwrap_err();
    let events = drain(&mut rx);
    let rolled_back = events
        .iter()
        .filter(|e| matches!(e, Event::RolledBack { .. }))
        .count();
    assert_eq!(rolled_back, 1, "{events:#?}");
    let failed = events
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .count();
    assert_eq!(failed, 1, "{events:#?}");
    let record = m.get("rb").unwrap();
    assert_eq!(record.status, DeploymentStatus::Running);
    assert_eq!(
        record.revision,
        Revision(1),
        "the old revision keeps serving"
    );
}

// ---- Finding 4: retries repeat the same call, which the provider makes idempotent -------

#[tokio::test]
async fn a_retried_deploy_repeats_the_same_spec() {
    let mut script = MockScript::new();
    let mut seq = mockall::Sequence::new();
    let first: Arc<Mutex<Option<DeploymentSpec>>> = Arc::default();
    let seen = first.clone();
    script
        .expect_deploy()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |spec, previous| {
            assert!(previous.is_none());
            *seen.lock().unwrap() = Some(spec);
            Err(Error::provider("scripted", "API unreachable", true))
        });
    let seen = first.clone();
    script
        .expect_deploy()
        .times(1)
        .in_sequence(&mut seq)
        .withf(move |spec, previous| {
            previous.is_none() && Some(spec) == seen.lock().unwrap().as_ref()
        })
        .returning(|_, _| Ok(RuntimeInfo::new()));
    script.expect_start().never();
    let m = manager_with(Scripted::new(script), Arc::new(MemoryStore::new())).await;
    let record = m.deploy(config("retry")).await.unwrap();
    assert_eq!(record.status, DeploymentStatus::Running);
}

// ---- Finding 5: `start` only resumes what was stopped; `deploy` when nothing serves ------

#[tokio::test]
async fn nothing_serving_means_deploy_never_start() {
    let mut script = MockScript::new();
    let mut seq = mockall::Sequence::new();
    // The first deploy fails: the provider holds nothing.
    script
        .expect_deploy()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(Error::provider("scripted", "boom", false)));
    // `start` of the failed deployment deploys its revision again, with what is known.
    script
        .expect_deploy()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|spec, previous| {
            spec.revision == Revision(1)
                && previous
                    .as_ref()
                    .is_some_and(|p| p.revision() == Revision(1))
        })
        .returning(|_, _| Err(Error::provider("scripted", "boom again", false)));
    // `update` of the failed deployment deploys the new revision in its place.
    script
        .expect_deploy()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|spec, previous| spec.revision == Revision(2) && previous.is_some())
        .returning(|_, _| Ok(RuntimeInfo::new().with_detail("n", 1)));
    // Stopped on purpose: `start` resumes it at its revision.
    script
        .expect_stop()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    script
        .expect_start()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|known| known.revision() == Revision(2) && known.detail("n").is_some())
        .returning(|_| Ok(RuntimeInfo::new()));
    script.expect_update().never();
    let m = manager_with(Scripted::new(script), Arc::new(MemoryStore::new())).await;
    m.deploy(config("fx")).await.unwrap_err();
    m.start("fx").await.unwrap_err();
    let record = m.update("fx", config("fx")).await.unwrap();
    assert_eq!(record.status, DeploymentStatus::Running);
    assert_eq!(record.revision, Revision(2));
    m.stop("fx").await.unwrap();
    let record = m.start("fx").await.unwrap();
    assert_eq!(record.status, DeploymentStatus::Running);
}

#[tokio::test]
async fn a_stopped_deployment_the_provider_lost_is_deployed_again() {
    let mut script = MockScript::new();
    script
        .expect_deploy()
        .times(2)
        .returning(|_, _| Ok(RuntimeInfo::new()));
    script.expect_stop().returning(|_| Ok(()));
    script
        .expect_start()
        .times(1)
        .returning(|k| Err(Error::deployment_not_found(k.id().as_str())));
    let m = manager_with(Scripted::new(script), Arc::new(MemoryStore::new())).await;
    m.deploy(config("lost")).await.unwrap();
    m.stop("lost").await.unwrap();
    assert_eq!(
        m.start("lost").await.unwrap().status,
        DeploymentStatus::Running
    );
}

// ---- Finding 6: the provider gets back what the store knows ------------------------------

#[tokio::test]
async fn calls_after_deploy_and_after_a_restart_get_the_persisted_details() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let mut script = MockScript::new();
    script
        .expect_deploy()
        .returning(|_, _| Ok(RuntimeInfo::new().with_detail("remote_id", "svc-42")));
    script
        .expect_status()
        .with(always())
        .returning(|_| Ok(ObservedStatus::Running));
    let m = manager_with(Scripted::new(script), store.clone()).await;
    m.deploy(config("cloud")).await.unwrap();
    drop(m);

    // A fresh provider instance, a fresh manager: only the store remembers the remote id.
    let mut script = MockScript::new();
    script
        .expect_recover()
        .times(1)
        .withf(|known| known.len() == 1 && known[0].detail("remote_id") == Some(&"svc-42".into()))
        .returning(|known| {
            Ok(vec![RecoveredDeployment::running(
                known[0].id().clone(),
                known[0].revision(),
                (*known[0].runtime).clone(),
            )])
        });
    script
        .expect_stop()
        .times(1)
        .withf(|known| known.detail("remote_id") == Some(&"svc-42".into()))
        .returning(|_| Ok(()));
    script
        .expect_start()
        .times(1)
        .withf(|known| known.detail("remote_id") == Some(&"svc-42".into()))
        .returning(|known| Ok((*known.runtime).clone()));
    let m = manager_with(Scripted::new(script), store).await;
    m.recover().await.unwrap();
    m.stop("cloud").await.unwrap();
    assert_eq!(
        m.start("cloud").await.unwrap().status,
        DeploymentStatus::Running
    );
}

// ---- Finding 7: providers report a narrow observed status --------------------------------

#[tokio::test]
async fn observed_exit_and_failure_map_onto_the_state_machine() {
    let mut script = MockScript::new();
    script
        .expect_deploy()
        .returning(|_, _| Ok(RuntimeInfo::new()));
    let provider = Arc::new(Scripted::new(script));
    let m = DeploymentManager::builder()
        .provider_arc(provider.clone())
        .build()
        .await
        .unwrap();
    let mut rx = m.subscribe();

    let clean = m.deploy(config("clean-exit")).await.unwrap();
    provider.sink().exited(&clean.id, ExitStatus::Code(0));
    let crashed = m.deploy(config("crash-loop")).await.unwrap();
    provider
        .sink()
        .failed(&crashed.id, FailureReport::new("restarted 5 times in 60s"));

    assert!(
        crate::testing::wait_until(Duration::from_secs(5), || async {
            m.get("clean-exit").unwrap().status == DeploymentStatus::Stopped
                && m.get("crash-loop").unwrap().status.kind() == StatusKind::Failed
        })
        .await
    );
    let record = m.get("crash-loop").unwrap();
    assert_eq!(
        record.last_failure.as_deref().map(|f| f.reason.as_str()),
        Some("restarted 5 times in 60s")
    );
    let failed: Vec<_> = drain(&mut rx)
        .into_iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "the manager, and only it, emits Failed: {failed:#?}"
    );
}

// ---- Finding 10: one registration rule ---------------------------------------------------

#[tokio::test]
async fn provider_names_are_unique_in_the_builder_and_in_add_provider() {
    let err = DeploymentManager::builder()
        .provider(MemoryProviderStandIn)
        .provider(MemoryProviderStandIn)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProviderExists { .. }), "{err}");

    let m = DeploymentManager::builder()
        .provider(MemoryProviderStandIn)
        .build()
        .await
        .unwrap();
    let err = m.add_provider(MemoryProviderStandIn).await.unwrap_err();
    assert!(matches!(err, Error::ProviderExists { .. }), "{err}");
}

/// A provider without `Capability::Scale` (Docker today): an autoscaled config is refused
/// at `replicas` before anything is stored, and a manual scale of a running deployment
/// answers `NotSupported` and leaves the count as it was.
#[tokio::test]
async fn scaling_needs_a_provider_that_declares_it() {
    let mut script = MockScript::new();
    script
        .expect_deploy()
        .times(1)
        .returning(|_, _| Ok(RuntimeInfo::new()));
    let m = manager_with(Scripted::new(script), Arc::new(MemoryStore::new())).await;
    let auto = DeploymentConfig::builder("auto")
        .autoscale(crate::config::Autoscale::in_flight(1, 3, 8.0))
        .build()
        .unwrap();
    let err = m.deploy(auto).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("replicas: provider 'scripted' cannot scale a running deployment"),
        "{err}"
    );
    assert!(m.get("auto").is_err(), "nothing stored");
    m.deploy(config("web")).await.unwrap();
    let err = m.scale("web", 2).await.unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    assert_eq!(DeploymentManager::replicas_of(&m.get("web").unwrap()), 1);
}
