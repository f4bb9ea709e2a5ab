//! # conan-core
//!
//! The model every part of Conan stands on: the deployment config and its validation, the
//! status state machine, the [`Provider`] trait that deployment targets implement, the
//! [`DeploymentManager`] that queues, retries and serializes operations around providers,
//! typed [`Event`]s, and the [`StateStore`] that persists deployments, revisions and an audit
//! log.
//!
//! A third-party provider needs only this crate, and `conan_core::prelude` has what it
//! implements [`Provider`] with (the crate `examples/provider-static` in the repository is a
//! whole one, run through the conformance suite):
//!
//! ```
//! use conan_core::prelude::*;
//!
//! /// Runs nothing, but keeps its whole state in `RuntimeInfo::details`, so a fresh
//! /// instance after a restart still knows every deployment (see `recover`).
//! struct Noop;
//!
//! #[async_trait]
//! impl Provider for Noop {
//!     fn name(&self) -> &str { "noop" }
//!     fn capabilities(&self) -> Capabilities { Capabilities::none().with(Capability::Recovery) }
//!     async fn deploy(&self, ctx: &OperationContext, spec: &DeploymentSpec, _: Option<&KnownDeployment>) -> Result<RuntimeInfo> {
//!         ctx.check_cancelled("deploy")?;
//!         ctx.events.progress(&spec.id, Phase::Starting, "nothing to start");
//!         Ok(RuntimeInfo::new().with_detail("running", true))
//!     }
//!     async fn update(&self, ctx: &OperationContext, _: &KnownDeployment, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
//!         self.deploy(ctx, spec, None).await
//!     }
//!     async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
//!         self.deploy(ctx, &known.spec, None).await
//!     }
//!     async fn stop(&self, _: &OperationContext, _: &KnownDeployment) -> Result<()> { Ok(()) }
//!     async fn remove(&self, _: &OperationContext, _: &KnownDeployment) -> Result<()> { Ok(()) }
//!     async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
//!         match known.detail("running") {
//!             Some(_) => Ok(ObservedStatus::Running),
//!             None => Err(Error::deployment_not_found(known.id().as_str())),
//!         }
//!     }
//!     async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
//!         self.status(known).await?;
//!         Ok(query.clone().into_stream(Vec::new(), None))
//!     }
//!     async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
//!         self.status(known).await.map(|_| Metrics::new())
//!     }
//!     async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
//!         self.status(known).await.map(|_| HealthReport::new(HealthStatus::Unknown))
//!     }
//!     async fn recover(&self, _: &OperationContext, known: &[KnownDeployment]) -> Result<Vec<RecoveredDeployment>> {
//!         Ok(known.iter().map(|k| RecoveredDeployment::running(k.id().clone(), k.revision(), k.runtime.clone())).collect())
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! ## Features
//!
//! - `sqlite`: [`SqliteStore`](store::SqliteStore), a durable [`StateStore`] on SQLite (bundled, WAL).
//! - `seal` (on with `sqlite`): `seal::EnvKey`, env values sealed at rest in their own
//!   key file (XChaCha20-Poly1305).
//! - `testing`: `testing::MemoryProvider`, an in-memory reference provider with fault
//!   injection, and `testing::conformance`, the suite every provider runs against itself.
//!
//! This crate never depends on a provider's client libraries (bollard, reqwest, sysinfo).

pub mod autoscale;
pub mod capability;
pub mod config;
pub mod error;
pub mod event;
pub mod failure;
pub mod id;
pub mod log;
pub mod manager;
pub mod probe;
pub mod provider;
#[cfg(feature = "seal")]
pub mod seal;
pub mod secret;
pub mod status;
pub mod store;
pub mod support;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod traffic;

pub use capability::{Capabilities, Capability};
pub use config::{
    Autoscale, ByteSize, CanaryPlan, CanaryStep, ConfigProblem, DeploymentConfig,
    DeploymentConfigBuilder, EndpointConfig, HealthCheck, HealthCheckKind, Resources, RestartMode,
    RestartPolicy, StopConfig, StopSignal, UpdatePolicy, UpdateStrategy,
};
pub use error::{BoxError, Error, Result};
pub use event::{
    AlertState, Event, EventBus, EventEnvelope, EventSink, OperationKind, Outcome, Phase,
    ReportOrigin, RestartCause, StatusReport,
};
pub use failure::{ExitStatus, FailureReport, ProbeRecord};
pub use id::{DeploymentId, OperationId, Revision};
pub use log::{LogLevel, LogLine, LogQuery, LogStream, OutputStream};
pub use manager::{
    DeploymentManager, DeploymentManagerBuilder, HealAction, OperationCanceller, OperationHandle,
    Priority, ProviderRegistry, QueueStats, Request, RetryPolicy, SubmitOptions,
};
pub use provider::{
    DeploymentSpec, DynProvider, HealthReport, HealthStatus, InstanceInfo, KnownDeployment,
    Metrics, ObservedStatus, OperationContext, Provider, ProviderExt, RecoveredDeployment,
    RuntimeInfo,
};
pub use secret::{Env, SecretString};
pub use status::{DeploymentStatus, StatusKind};
pub use store::{
    AlertRecord, AuditAction, AuditEntry, AuditQuery, DeploymentRecord, MemoryStore, Outbox,
    OutboxEntry, RevisionRecord, RevisionState, StateStore, StatusChange,
};
pub use time::Timestamp;

/// Everything a provider author implements [`Provider`] with: `use conan_core::prelude::*;`.
pub mod prelude {
    pub use async_trait::async_trait;

    pub use crate::capability::{Capabilities, Capability};
    pub use crate::config::{
        DeploymentConfig, HealthCheck, HealthCheckKind, RestartPolicy, UpdateStrategy,
    };
    pub use crate::error::{Error, Result};
    pub use crate::event::{Event, EventSink, Phase};
    pub use crate::failure::{ExitStatus, FailureReport};
    pub use crate::id::{DeploymentId, Revision};
    pub use crate::log::{LogLevel, LogLine, LogQuery, LogStream, OutputStream};
    pub use crate::provider::{
        DeploymentSpec, DynProvider, HealthReport, HealthStatus, InstanceInfo, KnownDeployment,
        Metrics, ObservedStatus, OperationContext, Provider, ProviderExt, RecoveredDeployment,
        RuntimeInfo,
    };
    pub use crate::status::DeploymentStatus;
    pub use crate::time::Timestamp;
}
