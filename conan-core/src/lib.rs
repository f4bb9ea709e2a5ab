//! # conan-core
//!
//! The model every part of Conan stands on: the deployment config and its validation, the
//! status state machine, the [`Provider`] trait that deployment targets implement, the
//! [`DeploymentManager`] that queues, retries and serializes operations around providers,
//! typed [`Event`]s, and the [`StateStore`] that persists deployments, revisions and an audit
//! log.
//!
//! A third-party provider needs only this crate:
//!
//! ```no_run
//! use async_trait::async_trait;
//! use conan_core::prelude::*;
//!
//! struct MyCloud;
//!
//! #[async_trait]
//! impl Provider for MyCloud {
//!     fn name(&self) -> &str { "my-cloud" }
//!     fn capabilities(&self) -> Capabilities { Capabilities::none().with(Capability::HealthChecks) }
//!     async fn deploy(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
//!         ctx.events.progress(&spec.id, Phase::Starting, "uploading");
//!         Ok(RuntimeInfo::default())
//!     }
//!     // ... update, start, stop, remove, status, logs, metrics, health, recover
//! #   async fn update(&self, _: &OperationContext, _: &DeploymentSpec) -> Result<RuntimeInfo> { todo!() }
//! #   async fn start(&self, _: &OperationContext, _: &DeploymentSpec) -> Result<RuntimeInfo> { todo!() }
//! #   async fn stop(&self, _: &OperationContext, _: &DeploymentId) -> Result<()> { todo!() }
//! #   async fn remove(&self, _: &OperationContext, _: &DeploymentId) -> Result<()> { todo!() }
//! #   async fn status(&self, _: &DeploymentId) -> Result<DeploymentStatus> { todo!() }
//! #   async fn logs(&self, _: &DeploymentId, _: &LogQuery) -> Result<LogStream> { todo!() }
//! #   async fn metrics(&self, _: &DeploymentId) -> Result<Metrics> { todo!() }
//! #   async fn health(&self, _: &DeploymentId) -> Result<HealthReport> { todo!() }
//! #   async fn recover(&self, _: &OperationContext, _: &[DeploymentSpec]) -> Result<Vec<RecoveredDeployment>> { todo!() }
//! }
//! ```
//!
//! ## Features
//!
//! - `sqlite`: [`SqliteStore`](store::SqliteStore), a durable [`StateStore`] on SQLite (bundled, WAL).
//! - `testing`: `testing::MemoryProvider`, an in-memory reference provider with fault
//!   injection, and `testing::conformance`, the suite every provider runs against itself.
//!
//! This crate never depends on a provider's client libraries (bollard, reqwest, sysinfo).

pub mod capability;
pub mod config;
pub mod error;
pub mod event;
pub mod failure;
pub mod id;
pub mod log;
pub mod manager;
pub mod node;
pub mod provider;
pub mod restart;
pub mod secret;
pub mod status;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;

pub use capability::{Capabilities, Capability};
pub use config::{
    ByteSize, ConfigProblem, DeploymentConfig, DeploymentConfigBuilder, HealthCheck,
    HealthCheckKind, Resources, RestartMode, RestartPolicy, StopConfig, StopSignal, UpdatePolicy,
    UpdateStrategy,
};
pub use error::{BoxError, Error, Result};
pub use event::{
    Event, EventBus, EventEnvelope, EventSink, OperationKind, Outcome, Phase, StatusReport,
};
pub use failure::{ExitStatus, FailureReport};
pub use id::{DeploymentId, OperationId, Revision};
pub use log::{LogLevel, LogLine, LogQuery, LogStream, OutputStream};
pub use manager::{
    DeploymentManager, DeploymentManagerBuilder, OperationHandle, Priority, ProviderRegistry,
    QueueStats, Request, RetryPolicy, SubmitOptions,
};
pub use provider::{
    DeploymentSpec, DynProvider, HealthReport, HealthStatus, InstanceInfo, Metrics,
    OperationContext, Provider, ProviderExt, RecoveredDeployment, RuntimeInfo,
};
pub use restart::{RestartDecision, RestartTracker};
pub use secret::{Env, SecretString};
pub use status::{DeploymentStatus, StatusKind};
pub use store::{
    AuditAction, AuditEntry, AuditQuery, DeploymentRecord, MemoryStore, RevisionRecord,
    RevisionState, StateStore, StatusChange,
};
pub use time::Timestamp;

/// Re-exports for `use conan_core::prelude::*`.
pub mod prelude {
    pub use crate::capability::{Capabilities, Capability};
    pub use crate::config::{DeploymentConfig, HealthCheck, RestartPolicy, UpdateStrategy};
    pub use crate::error::{Error, Result};
    pub use crate::event::{Event, EventSink, Phase};
    pub use crate::id::{DeploymentId, Revision};
    pub use crate::log::{LogLevel, LogLine, LogQuery, LogStream, OutputStream};
    pub use crate::provider::{
        DeploymentSpec, HealthReport, HealthStatus, Metrics, OperationContext, Provider,
        ProviderExt, RecoveredDeployment, RuntimeInfo,
    };
    pub use crate::status::DeploymentStatus;
}
