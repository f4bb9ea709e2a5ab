//! [`Autoscaler`]: one loop that moves the replica count of every autoscaled deployment
//! (`replicas = { min, max, target_in_flight | target_cpu }`) with its load.
//!
//! # What drives it
//!
//! Every `interval` (default 1 s) it samples each running autoscaled deployment:
//! `target_in_flight` reads the requests in flight at its endpoint (all revisions) from the
//! manager's traffic layer ([`Traffic::stats`](crate::traffic::Traffic::stats));
//! `target_cpu` reads the CPU of all its instances ([`DeploymentManager::metrics`]). The
//! load is the mean of the samples of the last `window` (default 10 s), taken only once the
//! window is full, so one burst decides nothing. With `n` replicas and target `t`:
//!
//! - **Scale out** when the load per replica is above the target: to
//!   `ceil(load / t)` replicas (at most `max`), once `scale_out_cooldown` (default 30 s)
//!   passed since the last change.
//! - **Scale in** only when the load would fit in fewer replicas *below 80 % of the
//!   target*: to `ceil(load / (0.8 t))` (at least `min`), once `scale_in_cooldown`
//!   (default 2 min) passed since the last change. The 20 % gap is the hysteresis: after a
//!   scale-in the load per replica is at most 80 % of the target, so the same load never
//!   scales out again (no flapping).
//!
//! Each change is a queued [`Request::Scale`] (so it never overlaps a user's update,
//! canary, restart or stop), asked for the revision that was measured (a revision rolled
//! out meanwhile makes it a no-op), `requested_by = "autoscaler"`, with the measurement as
//! its reason: it emits [`Event::Scaled`](crate::Event::Scaled) and writes the audit
//! entries. A deployment that is not `running` (updating, restarting, stopped) is not
//! sampled, and its window starts afresh once it runs again; so does a deployment whose
//! count changed (after a scale, the samples described the old count). At most one scale
//! per deployment is in flight. The cool-downs run from the last change this autoscaler
//! saw while the deployment ran (its own, or a user's `scale`); a deployment it has seen
//! no change of since it last saw it running (just deployed, updated, restarted, or after
//! a daemon restart) needs one full window only.
//!
//! # Running it
//!
//! The daemon runs one when its proxy is on; a host that embeds the manager with a
//! traffic layer runs its own: `Autoscaler::new(manager.clone()).spawn()`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Autoscale, ScaleTarget};
use crate::id::{DeploymentId, Revision};
use crate::manager::{DeploymentManager, Request, SubmitOptions};
use crate::status::StatusKind;
use crate::store::DeploymentRecord;

/// Who the autoscaler's operations are requested by (in the audit log).
pub const REQUESTED_BY: &str = "autoscaler";

/// The share of the target a scale-in must fit below (the hysteresis).
pub const SCALE_IN_HEADROOM: f64 = 0.8;

/// How often and over how long the autoscaler measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AutoscalerSettings {
    /// Time between samples (default 1 s).
    pub interval: Duration,
    /// The samples a decision averages (default the last 10 s).
    pub window: Duration,
}

impl Default for AutoscalerSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(10),
        }
    }
}

impl AutoscalerSettings {
    /// Settings with this interval and window (the window is at least one interval).
    #[must_use]
    pub fn new(interval: Duration, window: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(10));
        Self {
            interval,
            window: window.max(interval),
        }
    }
}

/// A decision of [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The new count.
    pub replicas: u32,
    /// Why, with the measured value.
    pub reason: String,
}

/// What the autoscaler does with `load` (the window's mean of the measured total: in-flight
/// requests, or CPU percent, over all replicas) for a deployment of `current` replicas with
/// `policy`; `since_change` is the time since its last scale change. Pure: see the module
/// docs for the rules.
#[must_use]
pub fn decide(
    policy: &Autoscale,
    current: u32,
    load: f64,
    since_change: Duration,
    window: Duration,
) -> Option<Decision> {
    let target = policy.target()?;
    let t = target.value();
    if !(t > 0.0 && load.is_finite()) {
        return None;
    }
    let current = current.max(1);
    let load = load.max(0.0);
    #[allow(clippy::cast_precision_loss)]
    let per = load / f64::from(current);
    let needed = |per_replica: f64| -> u32 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (load / per_replica).ceil().min(f64::from(u32::MAX)) as u32;
        policy.clamp(n)
    };
    let what = target.measure();
    let window = crate::time::format_duration(window);
    let out = needed(t);
    if out > current {
        return (since_change >= policy.scale_out_cooldown).then(|| Decision {
            replicas: out,
            reason: format!(
                "{what} {per:.1} per replica over {window}, above the target {t}: {out} replicas"
            ),
        });
    }
    let fit = needed(t * SCALE_IN_HEADROOM);
    if fit < current {
        return (since_change >= policy.scale_in_cooldown).then(|| Decision {
            replicas: fit,
            reason: format!(
                "{what} {per:.1} per replica over {window}, would be below {:.0} % of the target {t} with {fit} replicas",
                SCALE_IN_HEADROOM * 100.0
            ),
        });
    }
    None
}

/// What the autoscaler keeps per deployment.
struct Track {
    revision: Revision,
    replicas: u32,
    /// When the last change was seen (`None`: none since first seen running).
    since: Option<Instant>,
    samples: VecDeque<(Instant, f64)>,
    /// The scale it asked for, while in flight.
    pending: Option<JoinHandle<()>>,
}

/// The autoscaling loop over one manager's deployments (see the module docs).
pub struct Autoscaler {
    manager: DeploymentManager,
    settings: AutoscalerSettings,
    tracks: HashMap<DeploymentId, Track>,
}

impl std::fmt::Debug for Autoscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscaler")
            .field("settings", &self.settings)
            .field("tracked", &self.tracks.len())
            .finish_non_exhaustive()
    }
}

/// A running [`Autoscaler`] ([`Autoscaler::spawn`]); dropping it does not stop the loop.
#[derive(Debug)]
pub struct AutoscalerHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl AutoscalerHandle {
    /// Stops the loop (a scale it asked for still runs to its end in the manager's queue).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

impl Autoscaler {
    /// An autoscaler over `manager`'s deployments, with the default settings.
    #[must_use]
    pub fn new(manager: DeploymentManager) -> Self {
        Self {
            manager,
            settings: AutoscalerSettings::default(),
            tracks: HashMap::new(),
        }
    }

    /// The same with other settings.
    #[must_use]
    pub fn settings(mut self, settings: AutoscalerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Runs the loop on a task of its own.
    #[must_use]
    pub fn spawn(self) -> AutoscalerHandle {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(self.run(cancel.clone()));
        AutoscalerHandle { cancel, task }
    }

    /// Runs the loop until `cancel` is cancelled.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut every = tokio::time::interval(self.settings.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            self.tick().await;
        }
    }

    /// One round: sample every autoscaled deployment, and ask for the scales the rules
    /// call for.
    async fn tick(&mut self) {
        let records = self.manager.list();
        let now = Instant::now();
        let mut seen = std::collections::HashSet::with_capacity(records.len());
        for record in records {
            let Some(policy) = record.config.autoscale.clone() else {
                continue;
            };
            if record.status.kind() != StatusKind::Running {
                continue;
            }
            seen.insert(record.id.clone());
            self.sample(&record, &policy, now).await;
        }
        self.tracks.retain(|id, _| seen.contains(id));
    }

    async fn sample(&mut self, record: &DeploymentRecord, policy: &Autoscale, now: Instant) {
        let replicas = DeploymentManager::replicas_of(record);
        let track = self
            .tracks
            .entry(record.id.clone())
            .or_insert_with(|| Track {
                revision: record.revision,
                replicas,
                since: None,
                samples: VecDeque::new(),
                pending: None,
            });
        if track.pending.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        track.pending = None;
        if track.revision != record.revision || track.replicas != replicas {
            // A change (ours, a user's scale, an update): measure the new state afresh.
            track.revision = record.revision;
            track.replicas = replicas;
            track.since = Some(now);
            track.samples.clear();
        }
        let Some(target) = policy.target() else {
            return;
        };
        let value = match target {
            ScaleTarget::InFlight(_) => self
                .manager
                .traffic_stats(record.id.as_str())
                .ok()
                .flatten()
                .map(|s| {
                    #[allow(clippy::cast_precision_loss)]
                    let total = s.revisions.iter().map(|r| r.in_flight).sum::<u64>() as f64;
                    total
                }),
            ScaleTarget::Cpu(_) => self
                .manager
                .metrics(record.id.as_str())
                .await
                .ok()
                .and_then(|m| m.cpu_percent),
        };
        let Some(value) = value else { return };
        // Re-borrow: `metrics` awaited without holding the entry.
        let Some(track) = self.tracks.get_mut(&record.id) else {
            return;
        };
        track.samples.push_back((now, value));
        let window = self.settings.window;
        while track
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= window)
        {
            track.samples.pop_front();
        }
        // A full window: samples from (almost) its whole length, the oldest one interval
        // in.
        let span = track
            .samples
            .front()
            .map_or(Duration::ZERO, |(at, _)| now.duration_since(*at));
        if span + self.settings.interval < window {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let load = track.samples.iter().map(|(_, v)| v).sum::<f64>() / track.samples.len() as f64;
        let since_change = track
            .since
            .map_or(Duration::MAX, |at| now.duration_since(at));
        let Some(decision) = decide(policy, replicas, load, since_change, window) else {
            return;
        };
        let request = Request::Scale {
            target: record.id.as_str().to_owned(),
            replicas: decision.replicas,
            reason: Some(decision.reason.clone()),
            revision: Some(record.revision),
        };
        match self
            .manager
            .submit(request, SubmitOptions::default().requested_by(REQUESTED_BY))
        {
            Ok(handle) => {
                tracing::info!(deployment = %record.id, from = replicas, to = decision.replicas, reason = %decision.reason, "autoscaling");
                let id = record.id.clone();
                track.pending = Some(tokio::spawn(async move {
                    if let Err(e) = handle.wait().await {
                        tracing::warn!(deployment = %id, error = %e, "the autoscaler's scale failed");
                    }
                }));
                // A failed scale waits out the cool-down too, instead of retrying each tick.
                track.since = Some(now);
                track.samples.clear();
            }
            Err(e) => {
                tracing::warn!(deployment = %record.id, error = %e, "cannot queue the autoscaler's scale");
            }
        }
    }
}

#[cfg(test)]
mod tests;
