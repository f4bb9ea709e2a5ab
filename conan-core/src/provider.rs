//! The [`Provider`] trait: what a deployment target must do.
//!
//! A provider runs deployments somewhere (local processes, Docker, a cloud). It is given a
//! [`DeploymentSpec`] (id, revision, config) and an [`OperationContext`] (cancellation and
//! an [`EventSink`] for progress). It does **not** queue, retry, limit concurrency, keep
//! revision history or move the status state machine: the
//! [`DeploymentManager`](crate::DeploymentManager) does all of that around it.
//!
//! # The contract
//!
//! - `deploy` returns only once the deployment is ready (the health gate passed) or failed.
//!   On failure nothing of it is left running (no process, container, port or temp file),
//!   and the error carries a failure bundle where one exists
//!   ([`Error::HealthCheckFailed`]).
//! - `update` rolls out `spec.revision` with `spec.config.update.strategy`. When the new
//!   revision fails and `auto_rollback` is set, the old revision keeps serving untouched and
//!   the error is returned; `status` then still answers `Running`.
//! - `stop` is idempotent for a known deployment; `start` starts a stopped one again.
//! - `remove` stops and deletes everything, after which `status` answers
//!   [`Error::NotFound`].
//! - Unknown ids answer `NotFound` everywhere.
//! - `recover` adopts what an earlier process of the same provider started, given the
//!   deployments the store knows; it must not start anything twice.
//! - Errors that retrying may cure are marked transient ([`Error::is_transient`]).
//!
//! `conan_core::testing::conformance` (feature `testing`) checks this contract; every
//! provider crate runs it against itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::capability::{Capabilities, Capability};
use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::event::EventSink;
use crate::failure::FailureReport;
use crate::id::{DeploymentId, Revision};
use crate::log::{LogLine, LogQuery, LogStream};
use crate::status::DeploymentStatus;
use crate::time::Timestamp;

/// One revision of one deployment, as handed to a provider.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentSpec {
    /// The deployment.
    pub id: DeploymentId,
    /// The revision to run.
    pub revision: Revision,
    /// Its config (validated).
    pub config: Arc<DeploymentConfig>,
}

impl DeploymentSpec {
    /// A spec.
    #[must_use]
    pub fn new(
        id: DeploymentId,
        revision: Revision,
        config: impl Into<Arc<DeploymentConfig>>,
    ) -> Self {
        Self {
            id,
            revision,
            config: config.into(),
        }
    }

    /// The deployment's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// What a provider gets with each call: a cancellation token and an event sink.
#[derive(Clone, Debug)]
pub struct OperationContext {
    /// Cancelled when the caller gives up; a provider checks it between steps and cleans up.
    pub cancel: CancellationToken,
    /// Where progress, health and restart events go.
    pub events: EventSink,
}

impl OperationContext {
    /// A context with its own token and the given sink.
    #[must_use]
    pub fn new(events: EventSink) -> Self {
        Self {
            cancel: CancellationToken::new(),
            events,
        }
    }

    /// A context connected to nothing: for calling a provider directly, without a manager.
    #[must_use]
    pub fn detached() -> Self {
        Self::new(EventSink::detached())
    }

    /// Whether the operation was cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `Err(Error::Cancelled)` once cancelled; call it between steps.
    ///
    /// # Errors
    /// [`Error::Cancelled`] naming `operation`.
    pub fn check_cancelled(&self, operation: &str) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled {
                operation: operation.to_owned(),
            })
        } else {
            Ok(())
        }
    }
}

/// One running instance (a process, a container).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Provider-specific id: a pid, a container id.
    pub id: String,
    /// The port it serves on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The revision it runs.
    pub revision: Revision,
}

/// What a provider reports about a deployment it runs; persisted with the deployment so a
/// later manager (and `conan status`) can show it.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The running instances.
    #[serde(default)]
    pub instances: Vec<InstanceInfo>,
    /// Where the app answers (`http://127.0.0.1:41234`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Provider-specific details (image id, log file path, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl RuntimeInfo {
    /// The first instance's port.
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.instances.iter().find_map(|i| i.port)
    }
}

/// Resource usage of a deployment (all instances together).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// CPU use in percent of one core (200 = two cores busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Resident memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The memory limit, if one is enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Time since the current instance started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::serde_opt_duration"
    )]
    pub uptime: Option<Duration>,
    /// Restarts by the supervisor since the deploy.
    pub restarts: u32,
    /// The serving port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_rx_bytes: Option<u64>,
    /// Bytes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_tx_bytes: Option<u64>,
    /// Number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

/// Health of a deployment.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// The check passes.
    Healthy,
    /// The check fails.
    Unhealthy,
    /// Not yet decided (start period, first probe pending).
    Starting,
    /// No check configured or nothing running.
    Unknown,
}

/// The latest health observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// When the last probe ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Timestamp>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// What the last probe saw (`"GET /health -> 200"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl HealthReport {
    /// A report with only a verdict.
    #[must_use]
    pub fn new(status: HealthStatus) -> Self {
        Self {
            status,
            checked_at: None,
            consecutive_failures: 0,
            detail: None,
        }
    }
}

/// A deployment found by [`Provider::recover`].
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveredDeployment {
    /// The deployment.
    pub id: DeploymentId,
    /// The revision found running.
    pub revision: Revision,
    /// Its status as found (`Running`, or `Failed` with a reason when it vanished).
    pub status: DeploymentStatus,
    /// Its instances.
    pub runtime: RuntimeInfo,
    /// Why it is not running, when it is not.
    pub failure: Option<FailureReport>,
}

/// A deployment target. Object safe: use it as `Arc<dyn Provider>` ([`DynProvider`]).
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's name (`"local"`, `"docker"`), as written in `DeploymentConfig::provider`.
    fn name(&self) -> &str;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// Deploys revision `spec.revision` of a new deployment and returns once it is ready.
    async fn deploy(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo>;

    /// Replaces the running revision with `spec.revision` following `spec.config.update`.
    async fn update(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo>;

    /// Starts a stopped deployment again with `spec` (its current revision).
    async fn start(&self, ctx: &OperationContext, spec: &DeploymentSpec) -> Result<RuntimeInfo>;

    /// Stops every instance (signal, timeout, kill). Idempotent.
    async fn stop(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()>;

    /// Stops and deletes everything the deployment owns.
    async fn remove(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()>;

    /// The status as the provider observes it now.
    async fn status(&self, id: &DeploymentId) -> Result<DeploymentStatus>;

    /// Log lines matching `query`; with `query.follow` the stream stays open.
    async fn logs(&self, id: &DeploymentId, query: &LogQuery) -> Result<LogStream>;

    /// Current resource usage.
    async fn metrics(&self, id: &DeploymentId) -> Result<Metrics>;

    /// The latest health observation.
    async fn health(&self, id: &DeploymentId) -> Result<HealthReport>;

    /// Finds what an earlier process of this provider started, among `known` (from the
    /// store), and resumes supervising it without restarting it. Deployments of `known`
    /// that are gone are returned with a `Failed` status and a reason.
    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[DeploymentSpec],
    ) -> Result<Vec<RecoveredDeployment>>;
}

/// A provider as a trait object.
pub type DynProvider = dyn Provider;

macro_rules! forward_provider {
    ($ty:ty) => {
        #[async_trait]
        impl<T: Provider + ?Sized> Provider for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            async fn deploy(
                &self,
                ctx: &OperationContext,
                spec: &DeploymentSpec,
            ) -> Result<RuntimeInfo> {
                (**self).deploy(ctx, spec).await
            }
            async fn update(
                &self,
                ctx: &OperationContext,
                spec: &DeploymentSpec,
            ) -> Result<RuntimeInfo> {
                (**self).update(ctx, spec).await
            }
            async fn start(
                &self,
                ctx: &OperationContext,
                spec: &DeploymentSpec,
            ) -> Result<RuntimeInfo> {
                (**self).start(ctx, spec).await
            }
            async fn stop(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()> {
                (**self).stop(ctx, id).await
            }
            async fn remove(&self, ctx: &OperationContext, id: &DeploymentId) -> Result<()> {
                (**self).remove(ctx, id).await
            }
            async fn status(&self, id: &DeploymentId) -> Result<DeploymentStatus> {
                (**self).status(id).await
            }
            async fn logs(&self, id: &DeploymentId, query: &LogQuery) -> Result<LogStream> {
                (**self).logs(id, query).await
            }
            async fn metrics(&self, id: &DeploymentId) -> Result<Metrics> {
                (**self).metrics(id).await
            }
            async fn health(&self, id: &DeploymentId) -> Result<HealthReport> {
                (**self).health(id).await
            }
            async fn recover(
                &self,
                ctx: &OperationContext,
                known: &[DeploymentSpec],
            ) -> Result<Vec<RecoveredDeployment>> {
                (**self).recover(ctx, known).await
            }
        }
    };
}

forward_provider!(Arc<T>);
forward_provider!(Box<T>);

/// Conveniences on every [`Provider`], kept out of the trait so implementors have less to
/// get wrong.
#[async_trait]
pub trait ProviderExt: Provider {
    /// Whether the provider has `capability`.
    fn supports(&self, capability: Capability) -> bool {
        self.capabilities().contains(capability)
    }

    /// Collects the log lines of a non-following query.
    async fn logs_vec(&self, id: &DeploymentId, query: &LogQuery) -> Result<Vec<LogLine>> {
        let mut query = query.clone();
        query.follow = false;
        let stream = self.logs(id, &query).await?;
        stream.collect::<Vec<_>>().await.into_iter().collect()
    }

    /// Whether the provider observes the deployment as `Running`.
    async fn is_running(&self, id: &DeploymentId) -> Result<bool> {
        Ok(self.status(id).await?.is_running())
    }

    /// Deploys with a detached context (no events, no cancellation).
    async fn deploy_detached(&self, spec: &DeploymentSpec) -> Result<RuntimeInfo> {
        self.deploy(&OperationContext::detached(), spec).await
    }
}

impl<P: Provider + ?Sized> ProviderExt for P {}

// Compile-time proof that `Provider` is object safe and that trait objects are thread-safe.
const _: () = {
    fn _object_safe(_: &dyn Provider) {}
    fn _assert_send_sync<T: Send + Sync + 'static>() {}
    fn _dyn_is_send_sync() {
        _assert_send_sync::<Arc<DynProvider>>();
        _assert_send_sync::<Box<DynProvider>>();
    }
};
