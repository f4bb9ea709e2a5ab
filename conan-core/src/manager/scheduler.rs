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

/// A job waiting for a provider slot, as the heap sees it: only the ordering keys and
/// where the job is parked. Keeping heap entries small makes push/pop cheap however large
/// the job is.
#[derive(PartialEq, Eq)]
struct Ready {
    priority: Priority,
    seq: u64,
    slot: usize,
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then lower seq (earlier) first.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Jobs waiting for a provider slot, parked by index so the heap moves only keys.
struct Parked<J> {
    slots: Vec<Option<Queued<J>>>,
    free: Vec<usize>,
}

impl<J> Parked<J> {
    fn put(&mut self, job: Queued<J>) -> usize {
        if let Some(i) = self.free.pop() {
            self.slots[i] = Some(job);
            i
        } else {
            self.slots.push(Some(job));
            self.slots.len() - 1
        }
    }

    fn take(&mut self, slot: usize) -> Option<Queued<J>> {
        let job = self.slots.get_mut(slot)?.take();
        if job.is_some() {
            self.free.push(slot);
        }
        job
    }

    fn get(&self, slot: usize) -> Option<&Queued<J>> {
        self.slots.get(slot)?.as_ref()
    }
}

struct DeploymentQueue<J> {
    /// A job of this deployment is running or waiting for a provider slot.
    claimed: bool,
    waiting: Waiting<J>,
}

/// A deployment's jobs behind its running one, in arrival order. The first is kept
/// inline: most deployments never have more than one waiting, and then queueing it
/// allocates nothing (and freeing nothing happens under the scheduler's lock).
struct Waiting<J> {
    first: Option<Queued<J>>,
    rest: VecDeque<Queued<J>>,
}

impl<J> Waiting<J> {
    fn new() -> Self {
        Self {
            first: None,
            rest: VecDeque::new(),
        }
    }

    fn push_back(&mut self, job: Queued<J>) {
        if self.first.is_none() {
            self.first = Some(job);
        } else {
            self.rest.push_back(job);
        }
    }

    fn pop_front(&mut self) -> Option<Queued<J>> {
        let job = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(job)
    }

    /// Removes the job of operation `op`.
    fn remove(&mut self, op: OperationId) -> Option<Queued<J>> {
        if self.first.as_ref().is_some_and(|j| j.op == op) {
            return self.pop_front();
        }
        let pos = self.rest.iter().position(|j| j.op == op)?;
        self.rest.remove(pos)
    }
}

struct ProviderQueue {
    running: usize,
    limit: usize,
    ready: BinaryHeap<Ready>,
}

/// See the module docs.
pub(crate) struct Scheduler<J> {
    deployments: HashMap<DeploymentId, DeploymentQueue<J>>,
    /// A handful of providers: a list searched by pointer, then by name, beats hashing.
    providers: Vec<(Arc<str>, ProviderQueue)>,
    parked: Parked<J>,
    default_limit: usize,
    seq: u64,
    stats: QueueStats,
}

impl<J> Scheduler<J> {
    pub(crate) fn new(default_limit: usize) -> Self {
        Self {
            deployments: HashMap::new(),
            providers: Vec::new(),
            parked: Parked {
                slots: Vec::new(),
                free: Vec::new(),
            },
            default_limit: default_limit.max(1),
            seq: 0,
            stats: QueueStats::default(),
        }
    }

    pub(crate) fn set_limit(&mut self, provider: Arc<str>, limit: usize) {
        Self::provider(&mut self.providers, self.default_limit, &provider).limit = limit.max(1);
    }

    fn provider<'a>(
        providers: &'a mut Vec<(Arc<str>, ProviderQueue)>,
        default_limit: usize,
        name: &Arc<str>,
    ) -> &'a mut ProviderQueue {
        let i = match providers
            .iter()
            .position(|(n, _)| Arc::ptr_eq(n, name) || n == name)
        {
            Some(i) => i,
            None => {
                providers.push((
                    name.clone(),
                    ProviderQueue {
                        running: 0,
                        limit: default_limit,
                        ready: BinaryHeap::new(),
                    },
                ));
                providers.len() - 1
            }
        };
        &mut providers[i].1
    }

    /// Puts a claimed job in its provider's ready heap.
    fn make_ready(&mut self, job: Queued<J>) -> Arc<str> {
        let provider = job.provider.clone();
        let key = (job.priority, job.seq);
        let slot = self.parked.put(job);
        Self::provider(&mut self.providers, self.default_limit, &provider)
            .ready
            .push(Ready {
                priority: key.0,
                seq: key.1,
                slot,
            });
        provider
    }

    pub(crate) fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Adds a job; appends the jobs that may start now to `started`.
    pub(crate) fn submit(&mut self, mut job: Queued<J>, started: &mut Vec<Queued<J>>) {
        self.seq += 1;
        job.seq = self.seq;
        self.stats.pending += 1;
        let dq = self
            .deployments
            .entry(job.deployment.clone())
            .or_insert_with(|| DeploymentQueue {
                claimed: false,
                waiting: Waiting::new(),
            });
        if dq.claimed {
            dq.waiting.push_back(job);
            return;
        }
        dq.claimed = true;
        let provider = self.make_ready(job);
        self.fill(&provider, started);
    }

    /// Marks the running job of `deployment` on `provider` finished; appends the jobs that
    /// may start now to `started`.
    pub(crate) fn finish(
        &mut self,
        deployment: &DeploymentId,
        provider: &Arc<str>,
        success: bool,
        started: &mut Vec<Queued<J>>,
    ) {
        self.stats.processing = self.stats.processing.saturating_sub(1);
        if success {
            self.stats.completed += 1;
        } else {
            self.stats.failed += 1;
        }
        let pq = Self::provider(&mut self.providers, self.default_limit, provider);
        pq.running = pq.running.saturating_sub(1);
        let mut other = None;
        if let Some(dq) = self.deployments.get_mut(deployment) {
            if let Some(next) = dq.waiting.pop_front() {
                let next_provider = self.make_ready(next);
                if &next_provider != provider {
                    other = Some(next_provider);
                }
            } else {
                self.deployments.remove(deployment);
            }
        }
        self.fill(provider, started);
        if let Some(p) = other {
            self.fill(&p, started);
        }
    }

    fn fill(&mut self, provider: &Arc<str>, started: &mut Vec<Queued<J>>) {
        let pq = Self::provider(&mut self.providers, self.default_limit, provider);
        while pq.running < pq.limit {
            let Some(ready) = pq.ready.pop() else {
                break;
            };
            let Some(job) = self.parked.take(ready.slot) else {
                continue;
            };
            pq.running += 1;
            self.stats.pending -= 1;
            self.stats.processing += 1;
            started.push(job);
        }
    }

    /// Removes a job that has not started. Returns it; the jobs that may start now (the next
    /// job of the same deployment takes its place) are appended to `started`.
    pub(crate) fn cancel(
        &mut self,
        op: OperationId,
        started: &mut Vec<Queued<J>>,
    ) -> Option<Queued<J>> {
        // Waiting behind another job of the same deployment: just remove it.
        for dq in self.deployments.values_mut() {
            if let Some(job) = dq.waiting.remove(op) {
                self.stats.pending -= 1;
                self.stats.cancelled += 1;
                return Some(job);
            }
        }
        // Claimed, waiting for a provider slot: remove it and promote the next one.
        let parked = &self.parked;
        let (provider, slot) = self.providers.iter().find_map(|(name, pq)| {
            pq.ready
                .iter()
                .find(|r| parked.get(r.slot).is_some_and(|j| j.op == op))
                .map(|r| (name.clone(), r.slot))
        })?;
        let pq = Self::provider(&mut self.providers, self.default_limit, &provider);
        pq.ready.retain(|r| r.slot != slot);
        let job = self.parked.take(slot)?;
        self.stats.pending -= 1;
        self.stats.cancelled += 1;
        if let Some(dq) = self.deployments.get_mut(&job.deployment) {
            if let Some(next) = dq.waiting.pop_front() {
                let next_provider = self.make_ready(next);
                self.fill(&next_provider, started);
            } else {
                self.deployments.remove(&job.deployment);
            }
        }
        Some(job)
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

    fn submit(s: &mut Scheduler<u64>, j: Queued<u64>) -> Vec<Queued<u64>> {
        let mut started = Vec::new();
        s.submit(j, &mut started);
        started
    }

    fn finish(s: &mut Scheduler<u64>, dep: &str, p: &Arc<str>, ok: bool) -> Vec<Queued<u64>> {
        let mut started = Vec::new();
        s.finish(&DeploymentId::new(dep), p, ok, &mut started);
        started
    }

    fn cancel(s: &mut Scheduler<u64>, op: u64) -> Option<(Queued<u64>, Vec<Queued<u64>>)> {
        let mut started = Vec::new();
        s.cancel(OperationId(op), &mut started)
            .map(|j| (j, started))
    }

    #[test]
    fn one_job_per_deployment_in_arrival_order() {
        let mut s = Scheduler::new(10);
        let p: Arc<str> = "p".into();
        assert_eq!(
            ops(submit(&mut s, job(1, "a", "p", Priority::Normal))),
            vec![1]
        );
        assert!(submit(&mut s, job(2, "a", "p", Priority::High)).is_empty());
        assert!(submit(&mut s, job(3, "a", "p", Priority::Normal)).is_empty());
        assert_eq!(
            ops(submit(&mut s, job(4, "b", "p", Priority::Normal))),
            vec![4]
        );
        assert_eq!(s.stats().pending, 2);
        assert_eq!(s.stats().processing, 2);
        assert_eq!(ops(finish(&mut s, "a", &p, true)), vec![2]);
        assert_eq!(ops(finish(&mut s, "a", &p, false)), vec![3]);
        assert!(finish(&mut s, "a", &p, true).is_empty());
        assert!(finish(&mut s, "b", &p, true).is_empty());
        let st = s.stats();
        assert_eq!(
            (st.pending, st.processing, st.completed, st.failed),
            (0, 0, 3, 1)
        );
        assert!(s.deployments.is_empty());
    }

    #[test]
    fn many_waiting_jobs_keep_arrival_order_when_one_is_cancelled() {
        let mut s = Scheduler::new(10);
        let p: Arc<str> = "p".into();
        assert_eq!(
            ops(submit(&mut s, job(1, "a", "p", Priority::Normal))),
            vec![1]
        );
        for op in 2..=5 {
            assert!(submit(&mut s, job(op, "a", "p", Priority::Normal)).is_empty());
        }
        // 2 is the inline first waiter, 3..5 queue behind it; cancel one of each.
        assert_eq!(cancel(&mut s, 2).unwrap().0.job, 2);
        assert_eq!(cancel(&mut s, 4).unwrap().0.job, 4);
        assert_eq!(ops(finish(&mut s, "a", &p, true)), vec![3]);
        assert_eq!(ops(finish(&mut s, "a", &p, true)), vec![5]);
        assert!(finish(&mut s, "a", &p, true).is_empty());
        assert!(s.deployments.is_empty());
        assert_eq!(s.stats().pending, 0);
    }

    #[test]
    fn provider_limit_and_priority() {
        let mut s = Scheduler::new(1);
        let p: Arc<str> = "p".into();
        assert_eq!(
            ops(submit(&mut s, job(1, "a", "p", Priority::Normal))),
            vec![1]
        );
        assert!(submit(&mut s, job(2, "b", "p", Priority::Low)).is_empty());
        assert!(submit(&mut s, job(3, "c", "p", Priority::Normal)).is_empty());
        assert!(submit(&mut s, job(4, "d", "p", Priority::High)).is_empty());
        assert!(submit(&mut s, job(5, "e", "p", Priority::Normal)).is_empty());
        assert_eq!(ops(finish(&mut s, "a", &p, true)), vec![4]);
        assert_eq!(ops(finish(&mut s, "d", &p, true)), vec![3]);
        assert_eq!(ops(finish(&mut s, "c", &p, true)), vec![5]);
        assert_eq!(ops(finish(&mut s, "e", &p, true)), vec![2]);
    }

    #[test]
    fn limits_are_per_provider() {
        let mut s = Scheduler::new(1);
        s.set_limit("wide".into(), 2);
        assert_eq!(
            ops(submit(&mut s, job(1, "a", "narrow", Priority::Normal))),
            vec![1]
        );
        assert!(submit(&mut s, job(2, "b", "narrow", Priority::Normal)).is_empty());
        assert_eq!(
            ops(submit(&mut s, job(3, "c", "wide", Priority::Normal))),
            vec![3]
        );
        assert_eq!(
            ops(submit(&mut s, job(4, "d", "wide", Priority::Normal))),
            vec![4]
        );
        assert!(submit(&mut s, job(5, "e", "wide", Priority::Normal)).is_empty());
    }

    #[test]
    fn cancel_queued_jobs() {
        let mut s = Scheduler::new(1);
        submit(&mut s, job(1, "a", "p", Priority::Normal));
        submit(&mut s, job(2, "a", "p", Priority::Normal));
        submit(&mut s, job(3, "b", "p", Priority::Normal));
        submit(&mut s, job(4, "b", "p", Priority::Normal));
        // 2 waits behind 1 on deployment a.
        let (j, started) = cancel(&mut s, 2).unwrap();
        assert_eq!(j.job, 2);
        assert!(started.is_empty());
        // 3 holds b's claim while waiting for the provider; cancelling it promotes 4.
        let (j, started) = cancel(&mut s, 3).unwrap();
        assert_eq!(j.job, 3);
        assert!(started.is_empty(), "provider is still busy with 1");
        assert!(
            cancel(&mut s, 1).is_none(),
            "running jobs are not in the queue"
        );
        assert_eq!(ops(finish(&mut s, "a", &"p".into(), true)), vec![4]);
        assert_eq!(s.stats().cancelled, 2);
        assert_eq!(s.stats().pending, 0);
    }
}
