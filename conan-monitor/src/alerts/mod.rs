//! Alerts: rules that fire and resolve, announced as [`Event::Alert`](conan_core::Event::Alert) and delivered by
//! webhook through an outbox in the manager's state store.
//!
//! # Rules
//!
//! Rules live in [`AlertSettings`] (the daemon's `[monitor.alerts]` table; see there for
//! the format). Each watches one condition ([`AlertCondition`]) on every deployment, one
//! by name, or those with given labels. Rules are evaluated every `interval` (1 s) and as
//! soon as a status change, failure, restart or health event of a deployment arrives.
//!
//! # Hysteresis
//!
//! For each rule and deployment: the alert fires once the condition has been breached
//! without a break for `for`; it resolves once it has been clear without a break for
//! `resolve_for`; a threshold condition counts as clear only below `resolve_below`. A
//! transitional status (deploying, updating, stopping) neither breaches nor clears `down`.
//! A firing alert whose deployment is removed (or whose rule was deleted from the
//! settings) resolves at once.
//!
//! # Delivery
//!
//! Each firing and each resolve is written to the store's outbox, one entry per webhook,
//! before anything is sent, and then sent by the deliverer (see `deliver`): at least once,
//! in order per webhook, with backoff, surviving a restart of the daemon and a receiver
//! that is down (for up to `give_up_after`, 24 h by default). The body is a
//! [`Notification`].
//!
//! # Across restarts
//!
//! Which alerts fire is persisted in the store too ([`AlertRecord`]): a restarted monitor
//! takes them back as firing, so an alert that still holds is not announced again, and one
//! that cleared meanwhile is resolved (and that resolve delivered). `for` timers of alerts
//! not yet firing start afresh. Restart counts are re-read from the audit log.

mod deliver;
mod eval;
mod http;
mod rules;

use std::sync::Arc;
use std::time::Duration;

use conan_core::store::{AlertRecord, AuditAction, AuditQuery, Outbox, OutboxEntry};
use conan_core::{
    AlertState, DeploymentId, DeploymentManager, DeploymentStatus, LogQuery, Metrics, StatusKind,
    Timestamp,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

pub use rules::{AlertCondition, AlertRule, AlertSettings, RuleTarget, Webhook};

use self::eval::{Evaluator, Signals, Transition};
use crate::{MonitorSettings, Shared};

/// How long fetching the log excerpt of a notification may take.
const EXCERPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest excerpt line, in bytes (longer lines are cut).
const EXCERPT_LINE: usize = 300;

/// Audit entries read at startup to count recent restarts.
const AUDIT_SCAN: usize = 5_000;

/// The body POSTed to a webhook.
///
/// ```json
/// {"rule":"web-down","deployment":"web","deployment_id":"dep-…","state":"firing",
///  "value":3.02,"time":"2026-12-01T19:02:03.5Z","since":"2026-12-01T19:02:03.5Z",
///  "alert_id":"web-down/dep-…/1764615723500000","excerpt":"…last log lines…"}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Notification {
    /// The rule's name.
    pub rule: String,
    /// The deployment's name.
    pub deployment: String,
    /// The deployment's id.
    pub deployment_id: DeploymentId,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// The rule's value (seconds down, restarts in the window, error lines per minute, or
    /// the fraction of the memory limit): at firing the value that fired, at resolve the
    /// value now.
    pub value: f64,
    /// When it fired or resolved.
    pub time: Timestamp,
    /// When the alert started firing.
    pub since: Timestamp,
    /// The same for a firing and its resolve: with `state`, what a receiver dedupes on
    /// (delivery is at least once).
    pub alert_id: String,
    /// The deployment's last log lines (at most `excerpt_lines`, each cut at 300 bytes),
    /// with the values of its env variables masked.
    pub excerpt: String,
}

/// An alert that fires now, as `conan alerts` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FiringAlert {
    /// The rule.
    pub rule: String,
    /// The deployment's name.
    pub deployment: String,
    /// The deployment's id.
    pub deployment_id: DeploymentId,
    /// Since when.
    pub since: Timestamp,
    /// The value that fired it.
    pub value: f64,
}

/// A notification waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingNotification {
    /// The outbox entry's id.
    pub id: u64,
    /// The webhook's name.
    pub webhook: String,
    /// The rule.
    pub rule: String,
    /// The deployment's name.
    pub deployment: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before.
    pub next_attempt_at: Timestamp,
    /// When it was made.
    pub created_at: Timestamp,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Alert rules, what fires, and the webhook outbox.
#[derive(Debug)]
pub struct Alerts {
    settings: AlertSettings,
    outbox: Outbox,
    /// Woken when the outbox got new entries.
    wake: Notify,
}

impl Alerts {
    pub(crate) fn new(settings: &MonitorSettings, outbox: Outbox) -> Self {
        Self {
            settings: settings.alerts.clone(),
            outbox,
            wake: Notify::new(),
        }
    }

    /// The alert settings in force.
    #[must_use]
    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// What fires now, oldest first, as the store has it (the store is the truth: right
    /// after a restart it already lists what fired before).
    ///
    /// # Errors
    /// A store error.
    pub async fn firing(&self) -> conan_core::Result<Vec<FiringAlert>> {
        Ok(self
            .outbox
            .alerts()
            .await?
            .into_iter()
            .map(|a| FiringAlert {
                rule: a.rule,
                deployment: a.name,
                deployment_id: a.deployment,
                since: a.since,
                value: a.value,
            })
            .collect())
    }

    /// Up to `limit` notifications waiting in the outbox, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn pending(&self, limit: usize) -> conan_core::Result<Vec<PendingNotification>> {
        let entries = self.outbox.pending(limit).await?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let body: Option<Notification> = serde_json::from_str(&e.payload).ok();
                PendingNotification {
                    id: e.id,
                    webhook: e.destination,
                    rule: body.as_ref().map(|b| b.rule.clone()).unwrap_or_default(),
                    deployment: body
                        .as_ref()
                        .map(|b| b.deployment.clone())
                        .unwrap_or_default(),
                    state: body.map_or(AlertState::Firing, |b| b.state),
                    attempts: e.attempts,
                    next_attempt_at: e.next_attempt_at,
                    created_at: e.created_at,
                    last_error: e.last_error,
                }
            })
            .collect())
    }
}

impl Signals for Shared {
    fn errors_per_minute(&self, deployment: &DeploymentId) -> u64 {
        self.log_counters.errors_per_minute(deployment)
    }

    fn latest_metrics(&self, deployment: &DeploymentId) -> Option<Metrics> {
        self.history.latest(deployment).map(|(_, m)| m)
    }
}

/// Evaluates the rules and delivers the outbox until the monitor shuts down. Without rules
/// it only resolves the alerts a previous configuration left firing; without rules and
/// webhooks it subscribes to nothing and never ticks.
pub(crate) async fn run(shared: Arc<Shared>) {
    let alerts = &shared.alerts;
    let settings = &alerts.settings;
    let deliver = async {
        if !settings.webhooks.is_empty() {
            deliver::run(settings, &alerts.outbox, &alerts.wake).await;
        }
    };
    tokio::join!(deliver, evaluate(&shared));
}

async fn evaluate(shared: &Shared) {
    let alerts = &shared.alerts;
    let manager = &shared.manager;
    let rules = !alerts.settings.rules.is_empty();
    // Subscribe first, so nothing that happens while the state is loaded is missed.
    let mut events = rules.then(|| manager.subscribe());
    let mut eval = Evaluator::new(alerts.settings.rules.clone());
    let restored = loop {
        match alerts.outbox.alerts().await {
            Ok(restored) => break restored,
            Err(e) if rules => {
                tracing::warn!(error = %e, "alerts: cannot read the firing alerts; trying again");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            // No rules: nothing to do unless an earlier configuration left alerts firing.
            Err(e) => {
                tracing::debug!(error = %e, "alerts: cannot read the firing alerts");
                return;
            }
        }
    };
    let Some(events) = events.as_mut() else {
        // Rules were all deleted: what they left firing resolves, and that is all.
        eval.restore(restored);
        for t in eval.evaluate(&[], None, shared, Instant::now()) {
            if let Err(e) = announce(shared, &t).await {
                tracing::warn!(rule = %t.rule, deployment = %t.name, error = %e, "alerts: cannot resolve an alert of a deleted rule");
            }
        }
        return;
    };
    if !restored.is_empty() {
        tracing::info!(
            firing = restored.len(),
            "alerts: took back the alerts that were firing"
        );
    }
    eval.restore(restored);
    for record in manager.list() {
        if matches!(record.status, DeploymentStatus::Stopped) {
            let exited = stopped_on_its_own(manager, &record.id).await;
            eval.set_exited(&record.id, exited);
        }
    }
    if let Some(window) = eval.restart_window() {
        seed_restarts(manager, &mut eval, window).await;
    }

    // Transitions whose store write failed, retried first on every tick.
    let mut unsaved: Vec<Transition> = Vec::new();
    let mut tick = tokio::time::interval(alerts.settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let only = tokio::select! {
            _ = tick.tick() => None,
            event = events.recv() => match event {
                Ok(envelope) => match eval.observe(&envelope.event, Instant::now()) {
                    Some(id) => Some(id),
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "alerts: events lagged; evaluating everything");
                    None
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let deployments = match &only {
            None => manager.list(),
            Some(id) => manager
                .get(id.as_str())
                .map(|r| vec![r])
                .unwrap_or_default(),
        };
        let mut transitions = std::mem::take(&mut unsaved);
        transitions.extend(eval.evaluate(&deployments, only.as_ref(), shared, Instant::now()));
        for t in transitions {
            if let Err(e) = announce(shared, &t).await {
                tracing::warn!(
                    rule = %t.rule,
                    deployment = %t.name,
                    state = %t.state,
                    error = %e,
                    "alerts: cannot record an alert in the store; retrying"
                );
                unsaved.push(t);
            }
        }
    }
}

/// Whether the stopped `deployment` stopped on its own, from the audit log: its last
/// transition to stopped was made by no user operation (user operations log an
/// `operation` entry under their id; the jobs applying a provider's report of an exit do
/// not).
async fn stopped_on_its_own(manager: &DeploymentManager, deployment: &DeploymentId) -> bool {
    let query = AuditQuery {
        deployment: Some(deployment.clone()),
        limit: Some(50),
        newest: true,
        ..AuditQuery::default()
    };
    let entries = match manager.audit(&query).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!(error = %e, "alerts: cannot read the audit log");
            return false;
        }
    };
    let Some(stop) = entries.iter().rev().find(|e| {
        matches!(
            e.action,
            AuditAction::Transition {
                to: StatusKind::Stopped,
                ..
            }
        )
    }) else {
        return false;
    };
    !entries.iter().any(|e| {
        e.operation.is_some()
            && e.operation == stop.operation
            && matches!(e.action, AuditAction::Operation { .. })
    })
}

/// Counts the restarts of the last `window` from the audit log (what a previous process
/// saw).
async fn seed_restarts(manager: &DeploymentManager, eval: &mut Evaluator, window: Duration) {
    let query = AuditQuery {
        limit: Some(AUDIT_SCAN),
        newest: true,
        ..AuditQuery::default()
    };
    let entries = match manager.audit(&query).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "alerts: cannot read past restarts from the audit log");
            return;
        }
    };
    let now = Instant::now();
    for entry in entries {
        if matches!(entry.action, AuditAction::Restart { .. }) {
            let ago = entry.at.elapsed();
            if ago <= window
                && let Some(at) = now.checked_sub(ago)
            {
                eval.seed_restart(entry.deployment, at);
            }
        }
    }
}

/// Writes a transition to the outbox (one entry per webhook) and the alert state, then
/// tells everyone: the event bus, the deliverer. The outbox goes first: a
/// crash between the two writes can only cause a duplicate, never a lost notification.
async fn announce(shared: &Shared, t: &Transition) -> conan_core::Result<()> {
    let alerts = &shared.alerts;
    let settings = &alerts.settings;
    let rule = settings.rules.iter().find(|r| r.name == t.rule);
    let hooks: Vec<&Webhook> = match rule {
        Some(rule) => settings.webhooks_of(rule).collect(),
        // A rule deleted from the settings: its resolve goes to every webhook.
        None => settings.webhooks.iter().collect(),
    };
    if !hooks.is_empty() {
        let body = Notification {
            rule: t.rule.clone(),
            deployment: t.name.to_string(),
            deployment_id: t.deployment.clone(),
            state: t.state,
            value: t.value,
            time: t.at,
            since: t.since,
            alert_id: format!("{}/{}/{}", t.rule, t.deployment, t.since.as_unix_micros()),
            excerpt: excerpt(&shared.manager, &t.name, settings.excerpt_lines).await,
        };
        let payload = serde_json::to_string(&body).map_err(|e| {
            conan_core::Error::store("encoding a notification", false, Some(Box::new(e)))
        })?;
        for hook in hooks {
            alerts
                .outbox
                .put(OutboxEntry::new(hook.name.clone(), payload.clone()))
                .await?;
        }
    }
    match t.state {
        AlertState::Firing => {
            alerts
                .outbox
                .save_alert(&AlertRecord::new(
                    t.rule.clone(),
                    t.deployment.clone(),
                    t.name.to_string(),
                    t.since,
                    t.value,
                ))
                .await?;
            tracing::warn!(rule = %t.rule, deployment = %t.name, value = t.value, "alert firing");
        }
        AlertState::Resolved => {
            alerts.outbox.delete_alert(&t.rule, &t.deployment).await?;
            tracing::info!(rule = %t.rule, deployment = %t.name, value = t.value, "alert resolved");
        }
    }
    shared
        .manager
        .emit_alert(&t.deployment, &t.rule, t.state, t.value);
    alerts.wake.notify_one();
    Ok(())
}

/// The last `lines` log lines of `name`, env values masked, or a note saying why there are
/// none.
async fn excerpt(manager: &DeploymentManager, name: &str, lines: usize) -> String {
    if lines == 0 {
        return String::new();
    }
    let secrets: Vec<String> = manager
        .get(name)
        .map(|r| {
            r.config
                .env
                .iter()
                .map(|(_, v)| v.to_owned())
                // Very short values ("1", "on") would mask half the text and hide nothing.
                .filter(|v| v.len() >= 4)
                .collect()
        })
        .unwrap_or_default();
    let query = LogQuery {
        tail: Some(lines),
        ..LogQuery::default()
    };
    let read = async {
        let mut stream = manager.logs(name, &query).await?;
        let mut out = Vec::new();
        while let Some(line) = stream.next().await {
            out.push(line?.message);
        }
        Ok::<_, conan_core::Error>(out)
    };
    let got = match tokio::time::timeout(EXCERPT_TIMEOUT, read).await {
        Ok(Ok(lines)) => lines,
        Ok(Err(e)) => return format!("(no log excerpt: {e})"),
        Err(_) => return "(no log excerpt: the logs did not answer in time)".to_owned(),
    };
    let start = got.len().saturating_sub(lines);
    mask_and_cut(&got[start..], &secrets, EXCERPT_LINE)
}

/// `lines` joined by newlines, each with every `secrets` value replaced by `[redacted]`
/// and then cut to `max` bytes (masking first, so a value across the cut cannot leak its
/// first part).
fn mask_and_cut(lines: &[String], secrets: &[String], max: usize) -> String {
    lines
        .iter()
        .map(|line| {
            let mut line = line.clone();
            for secret in secrets {
                if line.contains(secret.as_str()) {
                    line = line.replace(secret.as_str(), "[redacted]");
                }
            }
            cut(&line, max).to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
