//! Rule evaluation: what each condition observes, and the per-(rule, deployment) state
//! machine that adds the hysteresis. No IO: the runner feeds it records, events and the
//! clock, and acts on the transitions it returns.

use std::collections::VecDeque;
use std::sync::Arc;

use conan_core::store::AlertRecord;
use conan_core::{
    AlertState, DeploymentId, DeploymentRecord, DeploymentStatus, Event, Metrics, Timestamp,
};
use foldhash::{HashMap, HashMapExt};
use tokio::time::Instant;

use super::rules::{AlertCondition, AlertRule};

/// What the evaluator needs from the rest of the monitor (the log counters and the
/// metrics history), so tests can hand it values.
pub(crate) trait Signals {
    /// Error (and worse) log lines of the deployment in the last minute.
    fn errors_per_minute(&self, deployment: &DeploymentId) -> u64;
    /// The latest metrics sample of the deployment.
    fn latest_metrics(&self, deployment: &DeploymentId) -> Option<Metrics>;
}

/// One look at a condition: its value, and whether that breaches or clears it. A value
/// in the band between (neither) keeps the alert as it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Observation {
    pub(crate) value: f64,
    pub(crate) breach: bool,
    pub(crate) clear: bool,
}

impl Observation {
    fn breach(value: f64) -> Self {
        Self {
            value,
            breach: true,
            clear: false,
        }
    }
    fn clear(value: f64) -> Self {
        Self {
            value,
            breach: false,
            clear: true,
        }
    }
    fn against(rule: &AlertRule, value: f64) -> Self {
        Self {
            value,
            breach: value >= rule.threshold,
            clear: value < rule.resolve_below,
        }
    }
}

/// Where one rule stands for one deployment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Phase {
    /// Not firing, condition not breached.
    Idle,
    /// Breached since `since`; fires once that lasted `for`.
    Pending { since: Instant },
    /// Firing since `since` (wall clock, what is reported); clear since `clear_since`.
    Firing {
        since: Timestamp,
        clear_since: Option<Instant>,
    },
}

/// What a step decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Step {
    Fire,
    Resolve,
}

impl Phase {
    /// Advances with one observation (`None`: the condition cannot be observed now, so
    /// nothing changes).
    pub(crate) fn step(
        &mut self,
        rule: &AlertRule,
        observation: Option<Observation>,
        now: Instant,
        wall: Timestamp,
    ) -> Option<Step> {
        let obs = observation?;
        match self {
            Phase::Idle | Phase::Pending { .. } if !obs.breach => {
                *self = Phase::Idle;
                None
            }
            Phase::Idle | Phase::Pending { .. } => {
                let since = match self {
                    Phase::Pending { since } => *since,
                    _ => now,
                };
                if now.duration_since(since) >= rule.for_duration {
                    *self = Phase::Firing {
                        since: wall,
                        clear_since: None,
                    };
                    Some(Step::Fire)
                } else {
                    *self = Phase::Pending { since };
                    None
                }
            }
            Phase::Firing { clear_since, .. } => {
                if !obs.clear {
                    *clear_since = None;
                    return None;
                }
                let from = *clear_since.get_or_insert(now);
                if now.duration_since(from) >= rule.resolve_for {
                    *self = Phase::Idle;
                    Some(Step::Resolve)
                } else {
                    None
                }
            }
        }
    }
}

/// A rule that fired or resolved for a deployment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Transition {
    pub(crate) rule: String,
    pub(crate) deployment: DeploymentId,
    pub(crate) name: Arc<str>,
    pub(crate) state: AlertState,
    /// The value now (at firing: the value that made it fire).
    pub(crate) value: f64,
    /// When the alert started firing.
    pub(crate) since: Timestamp,
    /// When this transition happened.
    pub(crate) at: Timestamp,
}

/// The state of every rule for every deployment, plus what events told it.
#[derive(Debug)]
pub(crate) struct Evaluator {
    rules: Vec<AlertRule>,
    /// Keyed by (rule index, deployment).
    phases: HashMap<(usize, DeploymentId), (Arc<str>, Phase)>,
    /// Supervisor restarts seen per deployment (pruned to the longest restarts window).
    restarts: HashMap<DeploymentId, VecDeque<Instant>>,
    /// Deployments whose health check fails, since when (wall clock).
    unhealthy: HashMap<DeploymentId, Timestamp>,
    /// Stopped deployments that stopped on their own (their process exited and the
    /// restart policy let it be), not by an operation: those count as down.
    exited: foldhash::HashSet<DeploymentId>,
    /// Deployments with a user operation running (from `Started` until `Finished`): a
    /// status change meanwhile is that operation's doing.
    in_flight: foldhash::HashSet<DeploymentId>,
    /// Alerts restored from the store whose rule no longer exists: resolved on the first
    /// evaluation.
    orphans: Vec<AlertRecord>,
}

impl Evaluator {
    pub(crate) fn new(rules: Vec<AlertRule>) -> Self {
        Self {
            rules,
            phases: HashMap::new(),
            restarts: HashMap::new(),
            unhealthy: HashMap::new(),
            exited: foldhash::HashSet::default(),
            in_flight: foldhash::HashSet::default(),
            orphans: Vec::new(),
        }
    }

    /// Whether any rule counts restarts (the runner then seeds them from the audit log).
    pub(crate) fn restart_window(&self) -> Option<std::time::Duration> {
        self.rules
            .iter()
            .filter_map(|r| match r.condition {
                AlertCondition::Restarts { window } => Some(window),
                _ => None,
            })
            .max()
    }

    /// Takes back the alerts a previous process left firing: they stay firing (not
    /// announced again) until their condition clears.
    pub(crate) fn restore(&mut self, alerts: Vec<AlertRecord>) {
        for alert in alerts {
            match self.rules.iter().position(|r| r.name == alert.rule) {
                Some(i) => {
                    self.phases.insert(
                        (i, alert.deployment.clone()),
                        (
                            alert.name.as_str().into(),
                            Phase::Firing {
                                since: alert.since,
                                clear_since: None,
                            },
                        ),
                    );
                }
                None => self.orphans.push(alert),
            }
        }
    }

    /// Says whether the stopped deployment `deployment` stopped on its own (at startup the
    /// runner reads it from the audit log; later, events tell).
    pub(crate) fn set_exited(&mut self, deployment: &DeploymentId, exited: bool) {
        if exited {
            self.exited.insert(deployment.clone());
        } else {
            self.exited.remove(deployment);
        }
    }

    /// A restart that happened at `at` (from the audit log at startup).
    pub(crate) fn seed_restart(&mut self, deployment: DeploymentId, at: Instant) {
        let times = self.restarts.entry(deployment).or_default();
        times.push_back(at);
        times.make_contiguous().sort();
    }

    /// Learns from an event; returns the deployment worth evaluating now, if any.
    pub(crate) fn observe(&mut self, event: &Event, now: Instant) -> Option<DeploymentId> {
        match event {
            Event::Restarted { deployment, .. } => {
                if self.restart_window().is_some() {
                    self.restarts
                        .entry(deployment.clone())
                        .or_default()
                        .push_back(now);
                }
                Some(deployment.clone())
            }
            Event::Unhealthy { deployment, .. } => {
                self.unhealthy
                    .entry(deployment.clone())
                    .or_insert_with(Timestamp::now);
                Some(deployment.clone())
            }
            Event::Healthy { deployment } => {
                self.unhealthy.remove(deployment);
                Some(deployment.clone())
            }
            Event::StatusChanged { deployment, to, .. } => {
                if !matches!(to, DeploymentStatus::Running) {
                    self.unhealthy.remove(deployment);
                }
                let on_its_own =
                    matches!(to, DeploymentStatus::Stopped) && !self.in_flight.contains(deployment);
                self.set_exited(deployment, on_its_own);
                Some(deployment.clone())
            }
            Event::Started { deployment, .. } => {
                self.in_flight.insert(deployment.clone());
                None
            }
            Event::Finished { deployment, .. } => {
                self.in_flight.remove(deployment);
                None
            }
            Event::Failed { deployment, .. } | Event::Removed { deployment } => {
                Some(deployment.clone())
            }
            _ => None,
        }
    }

    /// Evaluates every rule against `deployments` (all of them, or, with `only`, the
    /// deployments evaluated are those listed and nothing else is touched).
    pub(crate) fn evaluate(
        &mut self,
        deployments: &[DeploymentRecord],
        only: Option<&DeploymentId>,
        signals: &dyn Signals,
        now: Instant,
    ) -> Vec<Transition> {
        let wall = Timestamp::now();
        let mut out = Vec::new();
        for orphan in self.orphans.drain(..) {
            out.push(Transition {
                rule: orphan.rule,
                deployment: orphan.deployment,
                name: orphan.name.as_str().into(),
                state: AlertState::Resolved,
                value: 0.0,
                since: orphan.since,
                at: wall,
            });
        }
        if let Some(window) = self.restart_window() {
            for times in self.restarts.values_mut() {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > window)
                {
                    times.pop_front();
                }
            }
            self.restarts.retain(|_, t| !t.is_empty());
        }
        let mut seen = foldhash::HashSet::default();
        for i in 0..self.rules.len() {
            let rule = self.rules[i].clone();
            let rule = &rule;
            for record in deployments {
                if matches!(record.status, DeploymentStatus::Removed)
                    || !rule.target.matches(record)
                {
                    continue;
                }
                seen.insert((i, record.id.clone()));
                let observation = observe(rule, record, self, signals, now);
                let key = (i, record.id.clone());
                let (name, phase) = self
                    .phases
                    .entry(key.clone())
                    .or_insert_with(|| (record.name.clone(), Phase::Idle));
                *name = record.name.clone();
                // A resolve reports when its alert started: read it before the step.
                let fired_at = match phase {
                    Phase::Firing { since, .. } => Some(*since),
                    _ => None,
                };
                let step = phase.step(rule, observation, now, wall);
                let since = match phase {
                    Phase::Firing { since, .. } => *since,
                    _ => fired_at.unwrap_or(wall),
                };
                if let Some(step) = step {
                    out.push(Transition {
                        rule: rule.name.clone(),
                        deployment: record.id.clone(),
                        name: record.name.clone(),
                        state: match step {
                            Step::Fire => AlertState::Firing,
                            Step::Resolve => AlertState::Resolved,
                        },
                        value: observation.map_or(0.0, |o| o.value),
                        since,
                        at: wall,
                    });
                }
                if matches!(phase, Phase::Idle) {
                    self.phases.remove(&key);
                }
            }
        }
        // What is no longer there (removed, or no longer matching the target) resolves.
        let gone: Vec<(usize, DeploymentId)> = self
            .phases
            .keys()
            .filter(|k| !seen.contains(*k) && only.is_none_or(|id| id == &k.1))
            .cloned()
            .collect();
        for key in gone {
            if let Some((name, Phase::Firing { since, .. })) = self.phases.remove(&key) {
                out.push(Transition {
                    rule: self.rules[key.0].name.clone(),
                    deployment: key.1,
                    name,
                    state: AlertState::Resolved,
                    value: 0.0,
                    since,
                    at: wall,
                });
            }
        }
        if only.is_none() {
            let live: foldhash::HashSet<&DeploymentId> =
                deployments.iter().map(|d| &d.id).collect();
            self.unhealthy.retain(|id, _| live.contains(id));
            self.exited.retain(|id| live.contains(id));
        }
        out
    }
}

/// Seconds since `since` (wall clock), never negative.
fn seconds_since(since: Timestamp) -> f64 {
    since.elapsed().as_secs_f64()
}

fn observe(
    rule: &AlertRule,
    record: &DeploymentRecord,
    eval: &Evaluator,
    signals: &dyn Signals,
    now: Instant,
) -> Option<Observation> {
    use DeploymentStatus as S;
    match rule.condition {
        AlertCondition::Down => match &record.status {
            S::Failed { .. } | S::Restarting { .. } => {
                Some(Observation::breach(seconds_since(record.updated_at)))
            }
            S::Running => Some(match eval.unhealthy.get(&record.id) {
                Some(since) => Observation::breach(seconds_since(*since)),
                None => Observation::clear(0.0),
            }),
            S::Stopped if eval.exited.contains(&record.id) => {
                Some(Observation::breach(seconds_since(record.updated_at)))
            }
            S::Stopped => Some(Observation::clear(0.0)),
            // Transitional: wait for where it lands.
            _ => None,
        },
        AlertCondition::Failed => match &record.status {
            S::Failed { .. } => Some(Observation::breach(seconds_since(record.updated_at))),
            S::Running | S::Stopped | S::Restarting { .. } => Some(Observation::clear(0.0)),
            _ => None,
        },
        AlertCondition::Restarts { window } => {
            let count = eval.restarts.get(&record.id).map_or(0, |times| {
                times
                    .iter()
                    .filter(|t| now.duration_since(**t) <= window)
                    .count()
            });
            Some(Observation::against(rule, count as f64))
        }
        AlertCondition::ErrorLogs => Some(Observation::against(
            rule,
            signals.errors_per_minute(&record.id) as f64,
        )),
        AlertCondition::Memory => {
            if !matches!(record.status, S::Running) {
                return Some(Observation::clear(0.0));
            }
            let metrics = signals.latest_metrics(&record.id)?;
            let used = metrics.memory_bytes?;
            let limit = metrics
                .memory_limit_bytes
                .or_else(|| record.config.resources.memory.map(|m| m.0))
                .filter(|l| *l > 0)?;
            Some(Observation::against(rule, used as f64 / limit as f64))
        }
    }
}
