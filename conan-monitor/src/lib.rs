//! # conan-monitor
//!
//! Keeps deployments healthy after go-live, for every provider:
//!
//! - [`health`]: one scheduler probes every running deployment's health check on its
//!   `interval` and, after `failure_threshold` failures in a row, asks the manager to
//!   restart it (a queued operation) under its restart policy; past the crash-loop cap the
//!   deployment is `Failed` with the probe history in its failure bundle. It also restarts
//!   local deployments whose memory stays above `resources.memory`.
//! - [`history`]: bounded per-deployment metrics series (full resolution for an hour,
//!   min/avg/max for a day), queried by range and step.
//! - [`logs`]: one query and one follow stream over many deployments, merged by time, and
//!   log-derived counters.
//! - [`exporter`]: the Prometheus text exposition of all of it.
//! - [`alerts`]: rules that fire and resolve, delivered by webhook through an outbox.
//! - [`watch`]: `monitor_deployment`: current values plus recent series in one call.
//!
//! An embedding host starts it with a few lines:
//!
//! ```no_run
//! # async fn run(manager: conan_core::DeploymentManager) {
//! let monitor = conan_monitor::Monitor::builder(manager).build();
//! // ... serve ...
//! monitor.shutdown().await;
//! # }
//! ```

pub mod alerts;
pub mod exporter;
pub mod health;
pub mod history;
pub mod logs;
mod settings;
pub mod watch;

use std::sync::Arc;

use conan_core::DeploymentManager;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use settings::MonitorSettings;

/// The monitor of one [`DeploymentManager`]. Cheap to clone; the background tasks run until
/// [`shutdown`](Monitor::shutdown) (or until the runtime ends).
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

/// What the monitor's parts share.
#[allow(dead_code, reason = "the parts are being built; each reads its field")]
pub(crate) struct Shared {
    pub(crate) manager: DeploymentManager,
    pub(crate) settings: MonitorSettings,
    pub(crate) health: health::HealthBoard,
    pub(crate) history: history::MetricsHistory,
    pub(crate) log_counters: logs::LogCounters,
    pub(crate) alerts: alerts::Alerts,
    pub(crate) instruments: exporter::Instruments,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: std::sync::Mutex<JoinSet<()>>,
}

/// Builds a [`Monitor`].
#[derive(Debug)]
pub struct MonitorBuilder {
    manager: DeploymentManager,
    settings: MonitorSettings,
}

impl MonitorBuilder {
    /// Replaces the settings (the defaults otherwise).
    #[must_use]
    pub fn settings(mut self, settings: MonitorSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Starts the monitor's tasks on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    #[must_use]
    pub fn build(self) -> Monitor {
        let shared = Arc::new(Shared {
            health: health::HealthBoard::default(),
            history: history::MetricsHistory::new(&self.settings),
            log_counters: logs::LogCounters::default(),
            alerts: alerts::Alerts::new(&self.settings, self.manager.outbox()),
            instruments: exporter::Instruments::default(),
            manager: self.manager,
            settings: self.settings,
            cancel: CancellationToken::new(),
            tasks: std::sync::Mutex::new(JoinSet::new()),
        });
        let monitor = Monitor { shared };
        monitor.spawn(health::run(monitor.shared.clone()));
        // Subscribed before `build` returns: operations submitted right after are counted.
        let events = monitor.shared.manager.subscribe();
        monitor.spawn(exporter::run(monitor.shared.clone(), events));
        monitor.spawn(history::run(monitor.shared.clone()));
        monitor.spawn(logs::run(monitor.shared.clone()));
        monitor.spawn(alerts::run(monitor.shared.clone()));
        monitor
    }
}

impl Monitor {
    /// A builder for the monitor of `manager`.
    #[must_use]
    pub fn builder(manager: DeploymentManager) -> MonitorBuilder {
        MonitorBuilder {
            manager,
            settings: MonitorSettings::default(),
        }
    }

    /// The settings it runs with.
    #[must_use]
    pub fn settings(&self) -> &MonitorSettings {
        &self.shared.settings
    }

    /// What the health monitor knows of each deployment.
    #[must_use]
    pub fn health(&self) -> &health::HealthBoard {
        &self.shared.health
    }

    /// Alert rules, what fires now and the notifications waiting for delivery.
    #[must_use]
    pub fn alerts(&self) -> &alerts::Alerts {
        &self.shared.alerts
    }

    /// The manager it watches.
    #[must_use]
    pub fn manager(&self) -> &DeploymentManager {
        &self.shared.manager
    }

    /// The Prometheus exposition of every deployment and of the monitor's instruments, in
    /// the text format [`exporter::CONTENT_TYPE`] names (see [`exporter`] for the metrics).
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        self.render_prometheus_into(&mut out);
        out
    }

    /// [`render_prometheus`](Self::render_prometheus) into a buffer (appended), so a
    /// server can reuse one.
    pub fn render_prometheus_into(&self, out: &mut String) {
        exporter::render(&self.shared, out);
    }

    /// The monitor's own instruments (the health monitor records each probe there).
    #[must_use]
    pub fn instruments(&self) -> &exporter::Instruments {
        &self.shared.instruments
    }

    /// Stops the background tasks and waits for them.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        let mut tasks = std::mem::take(
            &mut *self
                .shared
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        while tasks.join_next().await.is_some() {}
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let cancel = self.shared.cancel.clone();
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = task => {}
                }
            });
    }
}
