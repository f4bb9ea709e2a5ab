//! The operation queue as a pure data structure: per-deployment FIFO, per-provider
//! concurrency limit, priority order among deployments waiting for a provider slot.
//!
//! It performs no IO and knows nothing about what a job does: [`Scheduler::submit`] and
//! [`Scheduler::finish`] return the jobs that may start now, and the manager spawns them.
//!
//! Guarantees:
//! - at most one job per deployment is running or waiting for a provider slot; later jobs
//!   of the same deployment wait in arrival order;
//! - at most `limit` jobs per provider run at once;
//! - among jobs waiting for a provider slot, the highest priority goes first, then the
//!   earliest submitted.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, OperationId};

/// How urgently an operation should run when providers are saturated.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of everything else (stops, removals a user waits for).
    High,
}

/// Counters of the queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct QueueStats {
    /// Submitted, not yet running.
    pub pending: usize,
    /// Running now.
    pub processing: usize,
    /// Finished successfully.
    pub completed: u64,
    /// Finished with an error.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// A job with its scheduling keys.
#[derive(Debug)]
pub(crate) struct Queued<J> {
    pub op: OperationId,
    pub deployment: DeploymentId,
    pub provider: Arc<str>,
    pub priority: Priority,
    pub job: J,
    seq: u64,
}

impl<J> Queued<J> {
    pub(crate) fn new(
        op: OperationId,
        deployment: DeploymentId,
        provider: Arc<str>,
        priority: Priority,
        job: J,
    ) -> Self {
        Self {
            op,
            deployment,
            provider,
            priority,
            job,
            seq: 0,
        }
    }
}

struct Ready<J>(Queued<J>);

impl<J> PartialEq for Ready<J> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<J> Eq for Ready<J> {}
impl<J> PartialOrd for Ready<J> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<J> Ord for Ready<J> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then lower seq (earlier) first.
        self.0
            .priority
            .cmp(&other.0.priority)
            .then_with(|| other.0.seq.cmp(&self.0.seq))
    }
}

struct DeploymentQueue<J> {
    /// A job of this deployment is running or waiting for a provider slot.
    claimed: bool,
    waiting: VecDeque<Queued<J>>,
}

struct ProviderQueue<J> {
    running: usize,
    limit: usize,
    ready: BinaryHeap<Ready<J>>,
}

/// See the module docs.
pub(crate) struct Scheduler<J> {
    deployments: HashMap<DeploymentId, DeploymentQueue<J>>,
    providers: HashMap<Arc<str>, ProviderQueue<J>>,
    default_limit: usize,
    seq: u64,
    stats: QueueStats,
}

impl<J> Scheduler<J> {
    pub(crate) fn new(default_limit: usize) -> Self {
        Self {
            deployments: HashMap::new(),
            providers: HashMap::new(),
            default_limit: default_limit.max(1),
            seq: 0,
            stats: QueueStats::default(),
        }
    }

    pub(crate) fn set_limit(&mut self, provider: Arc<str>, limit: usize) {
        self.provider(&provider).limit = limit.max(1);
    }

    fn provider(&mut self, name: &Arc<str>) -> &mut ProviderQueue<J> {
        let limit = self.default_limit;
        self.providers
            .entry(name.clone())
            .or_insert_with(|| ProviderQueue {
                running: 0,
                limit,
                ready: BinaryHeap::new(),
            })
    }

    pub(crate) fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Adds a job; returns the jobs that may start now.
    pub(crate) fn submit(&mut self, mut job: Queued<J>) -> Vec<Queued<J>> {
        self.seq += 1;
        job.seq = self.seq;
        self.stats.pending += 1;
        let dq = self
            .deployments
            .entry(job.deployment.clone())
            .or_insert_with(|| DeploymentQueue {
                claimed: false,
                waiting: VecDeque::new(),
            });
        if dq.claimed {
            dq.waiting.push_back(job);
            return Vec::new();
        }
        dq.claimed = true;
        let provider = job.provider.clone();
        self.provider(&provider).ready.push(Ready(job));
        self.fill(&provider)
    }

    /// Marks the running job of `deployment` on `provider` finished; returns the jobs that
    /// may start now.
    pub(crate) fn finish(
        &mut self,
        deployment: &DeploymentId,
        provider: &Arc<str>,
        success: bool,
    ) -> Vec<Queued<J>> {
        self.stats.processing = self.stats.processing.saturating_sub(1);
        if success {
            self.stats.completed += 1;
        } else {
            self.stats.failed += 1;
        }
        let pq = self.provider(provider);
        pq.running = pq.running.saturating_sub(1);
        let mut to_fill = vec![provider.clone()];
        if let Some(dq) = self.deployments.get_mut(deployment) {
            if let Some(next) = dq.waiting.pop_front() {
                let next_provider = next.provider.clone();
                self.provider(&next_provider).ready.push(Ready(next));
                if &next_provider != provider {
                    to_fill.push(next_provider);
                }
            } else {
                self.deployments.remove(deployment);
            }
        }
        let mut started = Vec::new();
        for p in to_fill {
            started.extend(self.fill(&p));
        }
        started
    }

    fn fill(&mut self, provider: &Arc<str>) -> Vec<Queued<J>> {
        let mut started = Vec::new();
        let pq = self.provider(provider);
        while pq.running < pq.limit {
            let Some(Ready(job)) = pq.ready.pop() else {
                break;
            };
            pq.running += 1;
            started.push(job);
        }
        self.stats.pending -= started.len();
        self.stats.processing += started.len();
        started
    }

    /// Removes a job that has not started. Returns it, plus the jobs that may start now
    /// (the next job of the same deployment takes its place).
    pub(crate) fn cancel(&mut self, op: OperationId) -> Option<(Queued<J>, Vec<Queued<J>>)> {
        // Waiting behind another job of the same deployment: just remove it.
        for dq in self.deployments.values_mut() {
            if let Some(pos) = dq.waiting.iter().position(|j| j.op == op) {
                let job = dq.waiting.remove(pos)?;
                self.stats.pending -= 1;
                self.stats.cancelled += 1;
                return Some((job, Vec::new()));
            }
        }
        // Claimed, waiting for a provider slot: remove it and promote the next one.
        let provider = self
            .providers
            .iter()
            .find(|(_, pq)| pq.ready.iter().any(|r| r.0.op == op))
            .map(|(name, _)| name.clone())?;
        let pq = self.provider(&provider);
        let mut kept = BinaryHeap::with_capacity(pq.ready.len());
        let mut removed = None;
        for r in pq.ready.drain() {
            if r.0.op == op {
                removed = Some(r.0);
            } else {
                kept.push(r);
            }
        }
        pq.ready = kept;
        let job = removed?;
        self.stats.pending -= 1;
        self.stats.cancelled += 1;
        let mut started = Vec::new();
        if let Some(dq) = self.deployments.get_mut(&job.deployment) {
            if let Some(next) = dq.waiting.pop_front() {
                let next_provider = next.provider.clone();
                self.provider(&next_provider).ready.push(Ready(next));
                started = self.fill(&next_provider);
            } else {
                self.deployments.remove(&job.deployment);
            }
        }
        Some((job, started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(op: u64, dep: &str, provider: &str, priority: Priority) -> Queued<u64> {
        Queued::new(
            OperationId(op),
            DeploymentId::new(dep),
            provider.into(),
            priority,
            op,
        )
    }

    fn ops(v: Vec<Queued<u64>>) -> Vec<u64> {
        v.into_iter().map(|j| j.job).collect()
    }

    #[test]
    fn one_job_per_deployment_in_arrival_order() {
        let mut s = Scheduler::new(10);
        let p: Arc<str> = "p".into();
        assert_eq!(ops(s.submit(job(1, "a", "p", Priority::Normal))), vec![1]);
        assert!(s.submit(job(2, "a", "p", Priority::High)).is_empty());
        assert!(s.submit(job(3, "a", "p", Priority::Normal)).is_empty());
        assert_eq!(ops(s.submit(job(4, "b", "p", Priority::Normal))), vec![4]);
        assert_eq!(s.stats().pending, 2);
        assert_eq!(s.stats().processing, 2);
        assert_eq!(ops(s.finish(&DeploymentId::new("a"), &p, true)), vec![2]);
        assert_eq!(ops(s.finish(&DeploymentId::new("a"), &p, false)), vec![3]);
        assert!(s.finish(&DeploymentId::new("a"), &p, true).is_empty());
        assert!(s.finish(&DeploymentId::new("b"), &p, true).is_empty());
        let st = s.stats();
        assert_eq!(
            (st.pending, st.processing, st.completed, st.failed),
            (0, 0, 3, 1)
        );
        assert!(s.deployments.is_empty());
    }

    #[test]
    fn provider_limit_and_priority() {
        let mut s = Scheduler::new(1);
        let p: Arc<str> = "p".into();
        assert_eq!(ops(s.submit(job(1, "a", "p", Priority::Normal))), vec![1]);
        assert!(s.submit(job(2, "b", "p", Priority::Low)).is_empty());
        assert!(s.submit(job(3, "c", "p", Priority::Normal)).is_empty());
        assert!(s.submit(job(4, "d", "p", Priority::High)).is_empty());
        assert!(s.submit(job(5, "e", "p", Priority::Normal)).is_empty());
        assert_eq!(ops(s.finish(&DeploymentId::new("a"), &p, true)), vec![4]);
        assert_eq!(ops(s.finish(&DeploymentId::new("d"), &p, true)), vec![3]);
        assert_eq!(ops(s.finish(&DeploymentId::new("c"), &p, true)), vec![5]);
        assert_eq!(ops(s.finish(&DeploymentId::new("e"), &p, true)), vec![2]);
    }

    #[test]
    fn limits_are_per_provider() {
        let mut s = Scheduler::new(1);
        s.set_limit("wide".into(), 2);
        assert_eq!(
            ops(s.submit(job(1, "a", "narrow", Priority::Normal))),
            vec![1]
        );
        assert!(s.submit(job(2, "b", "narrow", Priority::Normal)).is_empty());
        assert_eq!(
            ops(s.submit(job(3, "c", "wide", Priority::Normal))),
            vec![3]
        );
        assert_eq!(
            ops(s.submit(job(4, "d", "wide", Priority::Normal))),
            vec![4]
        );
        assert!(s.submit(job(5, "e", "wide", Priority::Normal)).is_empty());
    }

    #[test]
    fn cancel_queued_jobs() {
        let mut s = Scheduler::new(1);
        s.submit(job(1, "a", "p", Priority::Normal));
        s.submit(job(2, "a", "p", Priority::Normal));
        s.submit(job(3, "b", "p", Priority::Normal));
        s.submit(job(4, "b", "p", Priority::Normal));
        // 2 waits behind 1 on deployment a.
        let (j, started) = s.cancel(OperationId(2)).unwrap();
        assert_eq!(j.job, 2);
        assert!(started.is_empty());
        // 3 holds b's claim while waiting for the provider; cancelling it promotes 4.
        let (j, started) = s.cancel(OperationId(3)).unwrap();
        assert_eq!(j.job, 3);
        assert!(started.is_empty(), "provider is still busy with 1");
        assert!(
            s.cancel(OperationId(1)).is_none(),
            "running jobs are not in the queue"
        );
        assert_eq!(
            ops(s.finish(&DeploymentId::new("a"), &"p".into(), true)),
            vec![4]
        );
        assert_eq!(s.stats().cancelled, 2);
        assert_eq!(s.stats().pending, 0);
    }
}
