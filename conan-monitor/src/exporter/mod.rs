//! The Prometheus exposition: every deployment's status, health and resource use, the
//! monitor's own instruments (health probes, operations, restarts, log lines) and the
//! manager's queue, in the Prometheus text format (version 0.0.4), written by the official
//! Rust client (`prometheus-client`).
//!
//! # Metrics
//!
//! | name | type | labels | from |
//! | --- | --- | --- | --- |
//! | `conan_deployment_up` | gauge | deployment, provider | 1 when running and not failing its health check |
//! | `conan_deployment_status` | gauge (state set) | deployment, status | 1 for the current status, 0 for the other nine |
//! | `conan_deployment_restarts_total` | counter | deployment | supervisor restarts and restart operations seen by this monitor |
//! | `conan_deployment_memory_bytes` | gauge | deployment | the latest sample of the history |
//! | `conan_deployment_memory_limit_bytes` | gauge | deployment | the latest sample, when a limit is enforced |
//! | `conan_deployment_cpu_usage_ratio` | gauge | deployment | the latest sample, in cores (2 = two cores busy) |
//! | `conan_deployment_network_receive_bytes_total` / `_transmit_bytes_total` | counter | deployment | the latest sample, where the provider measures it |
//! | `conan_deployment_uptime_seconds` | gauge | deployment | the latest sample |
//! | `conan_health_check_duration_seconds` | histogram | deployment | [`Instruments::health_check`] |
//! | `conan_health_checks_total` | counter | deployment, result (`healthy`, `unhealthy`) | [`Instruments::health_check`] |
//! | `conan_log_lines_total` | counter | deployment, level | [`crate::logs`] |
//! | `conan_operations_total` | counter | operation, outcome (`succeeded`, `failed`, `cancelled`) | `Finished` events |
//! | `conan_operation_duration_seconds` | histogram | operation | `Started` to `Finished` |
//! | `conan_operations_pending` / `conan_operations_in_progress` | gauge | | the manager's queue |
//!
//! CPU is a gauge, not `..._cpu_seconds_total`: providers report a rate (percent of a
//! core), and integrating samples taken every 10 s would invent a counter. Counters start
//! at zero when the monitor starts (Prometheus handles the reset). A deployment that is
//! removed disappears from the output at the next scrape; resource metrics of a
//! deployment appear once the history holds a sample of it and the provider measures
//! them.
//!
//! Rendering reads the manager's records and the history's latest samples; it takes no
//! provider call, so a scrape costs the same whatever the providers are doing.

mod render;

pub(crate) use render::render;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use conan_core::{Event, EventEnvelope, OperationId, OperationKind, Outcome, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::Shared;

pub use render::CONTENT_TYPE;

/// Bucket bounds of `conan_health_check_duration_seconds`: probes answer in milliseconds
/// and time out after seconds. Eight bounds (1, 5 per decade): a histogram per deployment
/// is most of the exposition's lines, and twelve bounds cost 1,000 deployments 4,000 more.
const PROBE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
/// Bucket bounds of `conan_operation_duration_seconds`: a stop takes milliseconds, a
/// deploy with a build minutes.
const OPERATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Operations whose `Started` is remembered while waiting for their `Finished`; past it
/// (a subscriber that lagged lost some `Finished`) the oldest are forgotten.
const MAX_IN_FLIGHT: usize = 4096;

fn probe_histogram() -> Histogram {
    Histogram::new(PROBE_BUCKETS)
}

fn operation_histogram() -> Histogram {
    Histogram::new(OPERATION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    operation: &'static str,
}

/// What the monitor measures of one deployment itself.
#[derive(Debug)]
pub(crate) struct DeploymentInstruments {
    pub(crate) probe_duration: Histogram,
    pub(crate) checks_healthy: Counter,
    pub(crate) checks_unhealthy: Counter,
    pub(crate) restarts: Counter,
    probed: AtomicBool,
}

impl Default for DeploymentInstruments {
    fn default() -> Self {
        Self {
            probe_duration: probe_histogram(),
            checks_healthy: Counter::default(),
            checks_unhealthy: Counter::default(),
            restarts: Counter::default(),
            probed: AtomicBool::new(false),
        }
    }
}

impl DeploymentInstruments {
    /// Whether a probe was recorded (the up/down verdict is the health monitor's).
    pub(crate) fn probed(&self) -> bool {
        self.probed.load(Ordering::Relaxed)
    }
}

type ByName = HashMap<Arc<str>, Arc<DeploymentInstruments>, foldhash::fast::RandomState>;

/// The monitor's own instruments (health checks, operations, restarts), rendered with
/// the rest by [`Monitor::render_prometheus`](crate::Monitor::render_prometheus).
#[derive(Debug)]
pub struct Instruments {
    deployments: RwLock<ByName>,
    operations: Family<OperationLabels, Counter>,
    operation_duration: Family<KindLabel, Histogram, fn() -> Histogram>,
}

impl Default for Instruments {
    fn default() -> Self {
        Self {
            deployments: RwLock::default(),
            operations: Family::default(),
            operation_duration: Family::new_with_constructor(operation_histogram),
        }
    }
}

impl Instruments {
    /// Records one health probe of `deployment` (its name): healthy or not, how long it took.
    pub fn health_check(&self, deployment: &str, healthy: bool, duration: Duration) {
        let d = self.of(deployment);
        d.probe_duration.observe(duration.as_secs_f64());
        if healthy {
            d.checks_healthy.inc();
        } else {
            d.checks_unhealthy.inc();
        }
        d.probed.store(true, Ordering::Relaxed);
    }

    /// Counts one restart of `deployment` (its name).
    pub fn restarted(&self, deployment: &str) {
        self.of(deployment).restarts.inc();
    }

    /// Records an operation that ended after `duration`.
    pub fn operation_finished(&self, kind: OperationKind, outcome: &Outcome, duration: Duration) {
        let outcome = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled => "cancelled",
        };
        self.operations
            .get_or_create(&OperationLabels {
                operation: kind.as_str(),
                outcome,
            })
            .inc();
        self.operation_duration
            .get_or_create(&KindLabel {
                operation: kind.as_str(),
            })
            .observe(duration.as_secs_f64());
    }

    /// The instruments of one deployment, when it has any.
    pub(crate) fn get(&self, deployment: &str) -> Option<Arc<DeploymentInstruments>> {
        self.read().get(deployment).cloned()
    }

    /// Forgets the deployments `keep` says no to (removed ones).
    pub(crate) fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.deployments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|name, _| keep(name));
    }

    fn of(&self, deployment: &str) -> Arc<DeploymentInstruments> {
        if let Some(d) = self.get(deployment) {
            return d;
        }
        Arc::clone(
            self.deployments
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(Arc::from(deployment))
                .or_default(),
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ByName> {
        self.deployments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Feeds the instruments from the manager's events: operations (`Started` to `Finished`),
/// restarts, and forgetting removed deployments. `events` is subscribed when the monitor
/// is built, so nothing submitted after `build()` is missed.
pub(crate) async fn run(shared: Arc<Shared>, mut events: broadcast::Receiver<EventEnvelope>) {
    let mut started: HashMap<OperationId, Timestamp, foldhash::fast::RandomState> =
        HashMap::default();
    loop {
        let envelope = match events.recv().await {
            Ok(envelope) => envelope,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "the exporter lagged behind the events");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        match &envelope.event {
            Event::Started { operation, .. } => {
                if started.len() >= MAX_IN_FLIGHT {
                    started.clear();
                }
                started.insert(*operation, envelope.at);
            }
            Event::Finished {
                deployment,
                operation,
                kind,
                outcome,
            } => {
                let duration = started.remove(operation).map_or(Duration::ZERO, |at| {
                    envelope
                        .at
                        .as_system_time()
                        .duration_since(at.as_system_time())
                        .unwrap_or_default()
                });
                shared
                    .instruments
                    .operation_finished(*kind, outcome, duration);
                if *kind == OperationKind::Restart
                    && outcome.is_success()
                    && let Ok(record) = shared.manager.get(deployment.as_str())
                {
                    shared.instruments.restarted(&record.name);
                }
            }
            Event::Restarted { deployment, .. } => {
                if let Ok(record) = shared.manager.get(deployment.as_str()) {
                    shared.instruments.restarted(&record.name);
                }
            }
            Event::Removed { .. } => {
                let live: std::collections::HashSet<Arc<str>> =
                    shared.manager.list().into_iter().map(|r| r.name).collect();
                shared.instruments.retain(|name| live.contains(name));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
