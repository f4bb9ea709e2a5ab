//! [`DeploymentManagerBuilder`]: providers, limits, store, retry policy.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{Notify, mpsc};

use super::scheduler::{Priority, Scheduler};
use super::{
    CallTimeouts, DEFAULT_CONCURRENCY, DeploymentManager, Inner, ProviderRegistry, RetryPolicy,
    State, SubmitOptions, ops,
};
use crate::error::{Error, Result};
use crate::event::{EventBus, EventSink, StatusReport};
use crate::provider::{DynProvider, Provider};
use crate::store::{MemoryStore, StateStore};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Builds a [`DeploymentManager`].
#[must_use]
pub struct DeploymentManagerBuilder {
    registry: ProviderRegistry,
    limits: Vec<(String, usize)>,
    concurrency: usize,
    store: Option<Arc<dyn StateStore>>,
    retry: RetryPolicy,
    timeouts: CallTimeouts,
    provider_timeouts: Vec<(String, CallTimeouts)>,
    shutdown_timeout: Duration,
    event_capacity: usize,
    traffic: Option<Arc<crate::traffic::DynTraffic>>,
    /// The first registration error, reported by `build`.
    error: Option<Error>,
}

impl std::fmt::Debug for DeploymentManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentManagerBuilder")
            .field("registry", &self.registry)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl DeploymentManagerBuilder {
    pub(super) fn new() -> Self {
        Self {
            registry: ProviderRegistry::new(),
            limits: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            store: None,
            retry: RetryPolicy::default(),
            timeouts: CallTimeouts::default(),
            provider_timeouts: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
            event_capacity: EventBus::DEFAULT_CAPACITY,
            traffic: None,
            error: None,
        }
    }

    /// Registers a provider (the first registered is the default).
    pub fn provider(self, provider: impl Provider) -> Self {
        self.provider_arc(Arc::new(provider))
    }

    /// Registers a shared provider. Names are unique: a second provider of the same name
    /// makes [`build`](Self::build) fail with [`Error::ProviderExists`].
    pub fn provider_arc(mut self, provider: Arc<DynProvider>) -> Self {
        if let Err(e) = self.registry.register(provider) {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Registers a provider with its own concurrency limit.
    pub fn provider_with_limit(mut self, provider: Arc<DynProvider>, limit: usize) -> Self {
        self.limits.push((provider.name().to_owned(), limit));
        self.provider_arc(provider)
    }

    /// Deadlines of provider calls (see [`CallTimeouts`]).
    pub fn call_timeouts(mut self, timeouts: CallTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Deadlines of the calls to provider `name`, overriding [`call_timeouts`](Self::call_timeouts).
    pub fn provider_call_timeouts(
        mut self,
        name: impl Into<String>,
        timeouts: CallTimeouts,
    ) -> Self {
        self.provider_timeouts.push((name.into(), timeouts));
        self
    }

    /// How long [`DeploymentManager::shutdown`] lets operations finish before cancelling
    /// them (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The provider used when a config names none and requires nothing.
    pub fn default_provider(mut self, name: impl Into<String>) -> Self {
        self.registry.set_default(name);
        self
    }

    /// The concurrency limit of providers without their own (default 16).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit;
        self
    }

    /// The state store (default: a fresh [`MemoryStore`]).
    pub fn store(self, store: impl StateStore) -> Self {
        self.store_arc(Arc::new(store))
    }

    /// A shared state store.
    pub fn store_arc(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The retry policy for transient errors.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The traffic layer that gives deployments a stable endpoint (a reverse proxy such as
    /// `conan-proxy`); see [`crate::traffic`] for what the manager tells it and when. Default:
    /// none (deployments are reached on their instances' own ports).
    pub fn traffic(self, traffic: impl crate::traffic::Traffic) -> Self {
        self.traffic_arc(Arc::new(traffic))
    }

    /// A shared traffic layer (see [`traffic`](Self::traffic)).
    pub fn traffic_arc(mut self, traffic: Arc<crate::traffic::DynTraffic>) -> Self {
        self.traffic = Some(traffic);
        self
    }

    /// Events buffered per subscriber before it lags (default 4096).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Loads the store and starts the manager. Must run inside a Tokio runtime.
    ///
    /// Deployments found in the store are loaded as they were; call
    /// [`DeploymentManager::recover`] to reconcile them with what the providers run.
    ///
    /// # Errors
    /// [`Error::ProviderExists`] when two providers share a name; a store error while
    /// loading.
    pub async fn build(self) -> Result<DeploymentManager> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let bus = EventBus::new(self.event_capacity);
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let mut scheduler = Scheduler::new(self.concurrency);
        for (name, limit) in self.limits {
            scheduler.set_limit(name.into(), limit);
        }
        let mut state = State::default();
        for record in store.load_deployments().await? {
            // A history that cannot be read costs the revision counter, not the deployment.
            let latest = match store.revisions(&record.id).await {
                Ok(history) => history
                    .last()
                    .map_or(record.revision, |r| r.revision.max(record.revision)),
                Err(e) => {
                    tracing::warn!(deployment = %record.id, error = %e, "cannot read the revision history");
                    record.revision
                }
            };
            state.insert(record, latest);
        }
        let health = store.health();
        if let Some(restore) = &health.restore {
            tracing::error!("{}", restore.summary());
        }
        for damaged in &health.damaged {
            tracing::error!(
                kind = %damaged.kind,
                id = %damaged.id,
                name = damaged.name.as_deref().unwrap_or(""),
                error = %damaged.error,
                "a stored record cannot be read and is not managed; `conan daemon repair` rebuilds what it can"
            );
        }
        let persister = Arc::new(super::persist::Persister::default());
        let inner = Arc::new(Inner {
            registry: RwLock::new(Arc::new(self.registry)),
            store,
            persist: persister.clone(),
            sink: EventSink::new(bus.clone(), Some(reports_tx)),
            bus,
            traffic: self.traffic,
            retry: self.retry,
            timeouts: self.timeouts,
            provider_timeouts: self.provider_timeouts,
            shutdown_timeout: self.shutdown_timeout,
            shutdown: CancellationToken::new(),
            cancelled_all: AtomicBool::new(false),
            state: Mutex::new(state),
            scheduler: Mutex::new(scheduler),
            next_op: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            idle: Notify::new(),
        });
        tokio::spawn(forward_reports(Arc::downgrade(&inner), reports_rx));
        tokio::spawn(super::persist::rewrite_kept(
            Arc::downgrade(&inner),
            persister,
        ));
        Ok(DeploymentManager { inner })
    }
}

async fn forward_reports(
    inner: std::sync::Weak<Inner>,
    mut rx: mpsc::UnboundedReceiver<StatusReport>,
) {
    while let Some(report) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { break };
        let deployment = report.deployment.clone();
        if let Err(e) = inner.submit_job(
            ops::Target::Id(deployment.clone()),
            ops::JobKind::Observe(Box::new(report)),
            SubmitOptions::priority(Priority::High),
        ) {
            tracing::debug!(%deployment, error = %e, "provider status report dropped");
        }
    }
}
