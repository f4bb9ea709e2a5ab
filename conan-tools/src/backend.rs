//! What the tools run on: a [`ToolBackend`]. [`LocalBackend`] is an in-process
//! [`DeploymentManager`] (with a [`Monitor`] for the series of `monitor_deployment`); the
//! `conan` CLI implements the same trait over its daemon client, so `conan mcp` serves the
//! daemon's deployments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conan_core::{
    DeploymentConfig, DeploymentManager, HealthStatus, LogLine, LogQuery, Request, StatusKind,
    SubmitOptions, Timestamp, UpdateStrategy,
};
use conan_monitor::Monitor;
use conan_monitor::watch::WatchRequest;
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::convert;
use crate::error::ToolError;
use crate::types::{Deployment, HealthMetric, Metrics, Monitoring};

/// A progress callback: one line per step of a long operation.
pub type ProgressFn = Arc<dyn Fn(String) + Send + Sync>;

/// The context of one tool call: who asks, where progress goes, and a token that cancels it.
#[derive(Clone, Default)]
pub struct CallContext {
    /// Who asks (`mcp:claude-desktop 1.2`): recorded in the operation's audit entry.
    pub requested_by: Option<String>,
    /// Called with each step of a deploy, update, stop or remove.
    pub progress: Option<ProgressFn>,
    /// Cancelled when the caller gives up: an operation in flight is cancelled (the
    /// provider cleans up what it started) and the call answers `cancelled`.
    pub cancel: CancellationToken,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("requested_by", &self.requested_by)
            .field("progress", &self.progress.is_some())
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

impl CallContext {
    /// Reports one step.
    pub fn report(&self, step: String) {
        if let Some(progress) = &self.progress {
            progress(step);
        }
    }

    /// The error a cancelled call answers.
    #[must_use]
    pub fn cancelled() -> ToolError {
        ToolError::new(
            "cancelled",
            "the call was cancelled; the operation was cancelled too",
        )
    }
}

/// What an update changes (the daemon's update body).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct UpdateChange {
    /// A whole new config (a project's `conan.toml`); absent keeps the current one.
    pub config: Option<DeploymentConfig>,
    /// A new application directory.
    pub source: Option<PathBuf>,
    /// Env variables to set, merged over the current ones.
    pub env: BTreeMap<String, String>,
    /// The strategy of this rollout.
    pub strategy: Option<UpdateStrategy>,
}

impl UpdateChange {
    /// The config the update rolls out over `current`: the change's config (else the
    /// current one) with the current env under the new one, then source, env and strategy
    /// on top; validated.
    ///
    /// # Errors
    /// [`conan_core::Error::InvalidConfig`].
    pub fn apply(
        self,
        current: &conan_core::DeploymentRecord,
    ) -> conan_core::Result<DeploymentConfig> {
        let mut config = match self.config {
            Some(mut new) => {
                new.name = current.name.to_string();
                new.provider = new.provider.or_else(|| current.config.provider.clone());
                let mut env = current.config.env.clone();
                env.extend_from(&new.env);
                new.env = env;
                new
            }
            None => (*current.config).clone(),
        };
        if let Some(source) = self.source {
            config.source = source;
        }
        for (k, v) in self.env {
            config.env.insert(k, v);
        }
        if let Some(strategy) = self.strategy {
            config.update.strategy = strategy;
        }
        config.validate()?;
        Ok(config)
    }
}

/// The operations the tools need. Errors are [`ToolError`]s (the code, message, hint and
/// failure bundle of the underlying error). `target` is a deployment id or name.
#[async_trait]
pub trait ToolBackend: Send + Sync + 'static {
    /// Deploys a new deployment; reports progress and honours cancellation.
    async fn deploy(
        &self,
        config: DeploymentConfig,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError>;

    /// Rolls out a new revision.
    async fn update(
        &self,
        target: &str,
        change: UpdateChange,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError>;

    /// Stops it.
    async fn stop(&self, target: &str, ctx: &CallContext) -> Result<Deployment, ToolError>;

    /// Stops and deletes it; without `force`, a running deployment is refused (`running`).
    async fn remove(
        &self,
        target: &str,
        force: bool,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError>;

    /// Every deployment.
    async fn list(&self) -> Result<Vec<Deployment>, ToolError>;

    /// One deployment.
    async fn get(&self, target: &str) -> Result<Deployment, ToolError>;

    /// Log lines (never a follow query).
    async fn logs(&self, target: &str, query: &LogQuery) -> Result<Vec<LogLine>, ToolError>;

    /// Metrics and health now, with recent series where a monitor keeps them.
    async fn monitor(&self, request: &WatchRequest) -> Result<Monitoring, ToolError>;
}

/// An in-process backend: a [`DeploymentManager`], and optionally the [`Monitor`] that
/// watches it (for `monitor_deployment`'s series and the monitor's own health view;
/// without one, the current values come straight from the manager).
#[derive(Clone)]
pub struct LocalBackend {
    manager: DeploymentManager,
    monitor: Option<Monitor>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("monitor", &self.monitor.is_some())
            .finish_non_exhaustive()
    }
}

impl LocalBackend {
    /// Tools over `manager`.
    #[must_use]
    pub fn new(manager: DeploymentManager) -> Self {
        Self {
            manager,
            monitor: None,
        }
    }

    /// Tools over the manager a monitor watches.
    #[must_use]
    pub fn with_monitor(monitor: Monitor) -> Self {
        Self {
            manager: monitor.manager().clone(),
            monitor: Some(monitor),
        }
    }

    /// Submits `request`, forwards its events as progress, and waits (or cancels).
    async fn run(&self, request: Request, ctx: &CallContext) -> Result<Deployment, ToolError> {
        let mut events = self.manager.subscribe();
        let mut options = SubmitOptions::default();
        options.requested_by.clone_from(&ctx.requested_by);
        let target = request.target().map(str::to_owned);
        let handle = self
            .manager
            .submit(request, options)
            .map_err(|e| self.error(&e, target.as_deref()))?;
        let id = handle.deployment().clone();
        let canceller = handle.canceller();
        let wait = handle.wait();
        tokio::pin!(wait);
        let mut listening = true;
        let outcome = loop {
            tokio::select! {
                outcome = &mut wait => break outcome,
                () = ctx.cancel.cancelled() => {
                    canceller.cancel();
                    // The operation answers `Cancelled` once the provider cleaned up.
                    let _ = wait.await;
                    return Err(CallContext::cancelled());
                }
                event = events.recv(), if listening => match event {
                    Ok(env) if env.event.deployment() == &id => {
                        if let Some(step) = convert::describe(&env.event) {
                            ctx.report(step);
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => listening = false,
                },
            }
        };
        match outcome {
            Ok(record) => Ok(convert::deployment(&record)),
            Err(e) => Err(self.error(&e, Some(id.as_str()))),
        }
    }

    /// A core error as a tool error, with the deployment's last failure bundle when the
    /// error carries none.
    fn error(&self, e: &conan_core::Error, target: Option<&str>) -> ToolError {
        let mut error = ToolError::from_core(e);
        if error.failure.is_none()
            && matches!(
                e,
                conan_core::Error::Timeout { .. } | conan_core::Error::Provider { .. }
            )
            && let Some(report) = target
                .and_then(|t| self.manager.get(t).ok())
                .and_then(|r| r.last_failure)
        {
            error.failure = Some(Box::new(crate::error::FailureBundle::from_report(&report)));
        }
        error
    }
}

#[async_trait]
impl ToolBackend for LocalBackend {
    async fn deploy(
        &self,
        config: DeploymentConfig,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError> {
        self.run(Request::Deploy(config), ctx).await
    }

    async fn update(
        &self,
        target: &str,
        change: UpdateChange,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError> {
        let current = self.manager.get(target).map_err(|e| self.error(&e, None))?;
        let config = change.apply(&current).map_err(|e| self.error(&e, None))?;
        let request = Request::Update {
            target: target.to_owned(),
            config,
        };
        self.run(request, ctx).await
    }

    async fn stop(&self, target: &str, ctx: &CallContext) -> Result<Deployment, ToolError> {
        let request = Request::Stop {
            target: target.to_owned(),
        };
        self.run(request, ctx).await
    }

    async fn remove(
        &self,
        target: &str,
        force: bool,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError> {
        let record = self.manager.get(target).map_err(|e| self.error(&e, None))?;
        let active = matches!(
            record.status.kind(),
            StatusKind::Running | StatusKind::Deploying | StatusKind::Updating
        );
        if active && !force {
            return Err(ToolError::new(
                "running",
                format!("deployment '{}' is {}", record.name, record.status.kind()),
            )
            .with_hint("stop it first with stop_deployment, or pass force: true"));
        }
        let request = Request::Remove {
            target: target.to_owned(),
        };
        self.run(request, ctx).await
    }

    async fn list(&self) -> Result<Vec<Deployment>, ToolError> {
        Ok(self
            .manager
            .list()
            .iter()
            .map(convert::deployment)
            .collect())
    }

    async fn get(&self, target: &str) -> Result<Deployment, ToolError> {
        self.manager
            .get(target)
            .map(|r| convert::deployment(&r))
            .map_err(|e| self.error(&e, None))
    }

    async fn logs(&self, target: &str, query: &LogQuery) -> Result<Vec<LogLine>, ToolError> {
        let mut query = query.clone();
        query.follow = false;
        let mut stream = self
            .manager
            .logs(target, &query)
            .await
            .map_err(|e| self.error(&e, None))?;
        let mut lines = Vec::new();
        while let Some(line) = stream.next().await {
            lines.push(line.map_err(|e| self.error(&e, None))?);
        }
        Ok(lines)
    }

    async fn monitor(&self, request: &WatchRequest) -> Result<Monitoring, ToolError> {
        if let Some(monitor) = &self.monitor {
            return match monitor.watch(request).await {
                Ok(m) => Ok(convert::monitoring(&m)),
                Err(conan_monitor::watch::WatchError::Manager(e)) => Err(self.error(&e, None)),
                Err(other) => Err(ToolError::invalid_input(vec![crate::error::Problem::new(
                    "",
                    other.to_string(),
                )])),
            };
        }
        request.validate().map_err(|e| {
            ToolError::invalid_input(vec![crate::error::Problem::new("", e.to_string())])
        })?;
        self.monitor_direct(request).await
    }
}

impl LocalBackend {
    /// `monitor_deployment` without a monitor: the manager's metrics and health now, no
    /// series.
    async fn monitor_direct(&self, request: &WatchRequest) -> Result<Monitoring, ToolError> {
        use crate::types::{CpuMetric, MemoryMetric, NetworkMetric, RestartsMetric};
        use conan_monitor::watch::MetricName as M;
        let record = self
            .manager
            .get(&request.target)
            .map_err(|e| self.error(&e, None))?;
        let wants = |m: M| request.metrics.is_empty() || request.metrics.contains(&m);
        let id = record.id.as_str();
        let running = record.status.is_running();
        let timeout = Duration::from_secs(5);
        let metrics = if running {
            tokio::time::timeout(timeout, self.manager.metrics(id))
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        let health = if running && wants(M::Health) {
            tokio::time::timeout(timeout, self.manager.health(id))
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        let mut out = Metrics::default();
        if let Some(m) = &metrics {
            if wants(M::Cpu) {
                out.cpu = Some(CpuMetric {
                    usage: m.cpu_percent,
                    series: Vec::new(),
                });
            }
            if wants(M::Memory) {
                out.memory = Some(MemoryMetric {
                    usage: m.memory_bytes,
                    limit: m.memory_limit_bytes,
                    series: Vec::new(),
                });
            }
            if wants(M::Network) {
                out.network = Some(NetworkMetric {
                    rx_bytes: m.network_rx_bytes,
                    tx_bytes: m.network_tx_bytes,
                    rx_bytes_per_second: None,
                    tx_bytes_per_second: None,
                });
            }
            if wants(M::Restarts) {
                out.restarts = Some(RestartsMetric {
                    total: m.restarts,
                    in_window: 0,
                });
            }
        }
        if wants(M::Health) {
            out.health = Some(match &health {
                Some(h) => HealthMetric {
                    status: convert::health_name(h.status).to_owned(),
                    last_check: h.checked_at.map(|t| t.to_string()),
                    consecutive_failures: h.consecutive_failures,
                    detail: h.detail.clone(),
                },
                None => HealthMetric {
                    status: convert::health_name(HealthStatus::Unknown).to_owned(),
                    last_check: None,
                    consecutive_failures: 0,
                    detail: None,
                },
            });
        }
        Ok(Monitoring {
            deployment_id: record.id.to_string(),
            name: record.name.to_string(),
            status: record.status.kind().as_str().to_owned(),
            sampled_at: metrics.is_some().then(|| Timestamp::now().to_string()),
            metrics: out,
            interval: u64::try_from(request.interval.as_millis()).unwrap_or(u64::MAX),
        })
    }
}
