//! The manager's side of a canary update: a [`CanaryGate`] over its traffic layer.
//!
//! For an `update.strategy = "canary"` update of a deployment behind an endpoint, the
//! provider starts the new revision beside the old one and, once every new instance passed
//! its readiness gate, hands both instance sets to the gate. The gate routes each step's
//! share with [`Traffic::route`](crate::traffic::Traffic::route) weights (the old
//! revision's instances share `100 − share`, the new one's `share`), reads the traffic
//! layer's per-revision counters ([`Traffic::stats`](crate::traffic::Traffic::stats)),
//! judges each step ([`crate::support::canary`]), emits every step's numbers as a
//! [`Event::Progress`] (phase `switching`), and answers the outcome. A rolled-back canary
//! has its share set back to 0 before the gate returns: only the old revision gets new
//! requests from then on.

use std::sync::Arc;

use async_trait::async_trait;

use super::ops::Op;
use crate::config::{DeploymentConfig, EndpointConfig, UpdateStrategy};
use crate::error::Result;
use crate::event::{Event, EventBus, Phase};
use crate::id::{DeploymentId, Revision};
use crate::support::canary::{
    CanaryGate, CanaryOutcome, CanaryRequest, CanaryTraffic, RevisionCounters,
};
use crate::traffic::{Backend, DynTraffic, Routes, TrafficStats, backends_of};

/// Routes a share of requests to the new revision's backends through a traffic layer.
struct Weighted {
    traffic: Arc<DynTraffic>,
    id: DeploymentId,
    endpoint: EndpointConfig,
    old: Vec<Backend>,
    new: Vec<Backend>,
    old_revision: Revision,
    new_revision: Revision,
}

/// The weights that give the new backends `share` percent of the requests: a revision is
/// picked by the sum of its backends' weights.
pub(super) fn weighted(old: &[Backend], new: &[Backend], share: u8) -> Vec<Backend> {
    let share = u32::from(share.min(100));
    let (n_old, n_new) = (old.len().max(1) as u32, new.len().max(1) as u32);
    old.iter()
        .map(|b| b.clone().with_weight((100 - share) * n_new))
        .chain(new.iter().map(|b| b.clone().with_weight(share * n_old)))
        .collect()
}

fn counters_of(stats: Option<&TrafficStats>, revision: Revision) -> RevisionCounters {
    stats
        .and_then(|s| s.revision(revision))
        .map_or_else(RevisionCounters::default, |r| {
            RevisionCounters::new(
                r.requests,
                r.status_classes[4],
                std::time::Duration::from_secs_f64(r.latency.sum_seconds.max(0.0)),
            )
        })
}

#[async_trait]
impl CanaryTraffic for Weighted {
    async fn set_share(&self, percent: u8) -> Result<()> {
        let backends = weighted(&self.old, &self.new, percent);
        self.traffic
            .route(&self.id, Routes::new(backends, self.endpoint.drain_timeout))
            .await
    }

    fn counters(&self) -> (RevisionCounters, RevisionCounters) {
        let stats = self.traffic.stats(&self.id);
        (
            counters_of(stats.as_ref(), self.old_revision),
            counters_of(stats.as_ref(), self.new_revision),
        )
    }
}

/// Runs a canary of `request` for deployment `id` over `traffic`, reporting each step on
/// `bus`.
pub(super) async fn judge(
    traffic: Arc<DynTraffic>,
    bus: EventBus,
    id: DeploymentId,
    endpoint: EndpointConfig,
    request: CanaryRequest,
) -> CanaryOutcome {
    let revision_of = |rt: &crate::provider::RuntimeInfo| {
        rt.instances.first().map_or(Revision(0), |i| i.revision)
    };
    let weighted = Weighted {
        traffic,
        id: id.clone(),
        endpoint,
        old: backends_of(&request.old),
        new: backends_of(&request.new),
        old_revision: revision_of(&request.old),
        new_revision: revision_of(&request.new),
    };
    let outcome = crate::support::canary::run(&request.plan, &weighted, |step| {
        bus.emit_with(|| Event::Progress {
            deployment: id.clone(),
            phase: Phase::Switching,
            message: format!("canary step: {step}"),
        });
    })
    .await;
    bus.emit_with(|| Event::Progress {
        deployment: id.clone(),
        phase: Phase::Switching,
        message: outcome.summary.clone(),
    });
    outcome
}

impl Op<'_> {
    /// The canary gate handed to a `canary` update of a deployment behind an endpoint.
    pub(super) fn canary_for(&self, config: &DeploymentConfig) -> Option<CanaryGate> {
        if config.update.strategy != UpdateStrategy::Canary || !config.endpoint.enabled {
            return None;
        }
        let traffic = self.inner.traffic.clone()?;
        let bus = self.inner.bus.clone();
        let id = self.deployment.clone();
        let endpoint = config.endpoint.clone();
        Some(CanaryGate::new(move |request| {
            let (traffic, bus, id, endpoint) =
                (traffic.clone(), bus.clone(), id.clone(), endpoint.clone());
            Box::pin(judge(traffic, bus, id, endpoint, request))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_give_the_new_revision_its_share_whatever_the_instance_counts() {
        let b =
            |i: u16, r: u64| Backend::new(i.to_string(), Revision(r), ([127, 0, 0, 1], i).into());
        let old = vec![b(1, 1), b(2, 1), b(3, 1)];
        let new = vec![b(4, 2)];
        let w = weighted(&old, &new, 10);
        let sum = |r: u64| -> u32 {
            w.iter()
                .filter(|x| x.revision == Revision(r))
                .map(|x| x.weight)
                .sum()
        };
        assert_eq!(sum(1) * 10, sum(2) * 90, "{w:?}");
        let none = weighted(&old, &new, 0);
        assert!(
            none.iter()
                .filter(|x| x.revision == Revision(2))
                .all(|x| x.weight == 0)
        );
    }
}
