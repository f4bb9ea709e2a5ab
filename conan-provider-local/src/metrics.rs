//! Resource usage of an instance's process tree, read straight from `/proc`: one
//! `/proc/PID/stat` per process of the tree (CPU ticks, RSS), and the tree itself from its
//! cgroup's member list (or the kernel's children lists without one). A sample of an idle
//! one-process app costs a handful of small reads, never a scan of every process.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use conan_core::{Metrics, ObservedStatus};

use crate::deployment::Deployment;
use crate::procfs;

/// How long the first sample of an instance waits to measure CPU (a difference of two
/// readings), like `top`'s first screen.
const FIRST_CPU_WINDOW: Duration = Duration::from_millis(200);

/// Clock ticks per second and the page size, asked of the kernel once.
static UNITS: LazyLock<(f64, u64)> = LazyLock::new(|| {
    use nix::unistd::{SysconfVar, sysconf};
    let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    (ticks.max(1) as f64, page.max(1).unsigned_abs())
});

/// The previous reading of a deployment's tree: CPU ticks per process (by pid and start
/// time, so a recycled pid starts afresh) and when it was taken.
#[derive(Debug, Default)]
pub(crate) struct CpuBaseline {
    at: Option<Instant>,
    ticks: HashMap<(u32, u64), u64>,
}

/// One reading of a tree: CPU ticks per process and total RSS in bytes.
fn read(pids: &[u32]) -> (HashMap<(u32, u64), u64>, u64) {
    let page = UNITS.1;
    let mut ticks = HashMap::with_capacity(pids.len());
    let mut rss = 0u64;
    for &pid in pids {
        if let Some(u) = procfs::usage(pid) {
            ticks.insert((pid, u.start_time), u.cpu_ticks);
            rss = rss.saturating_add(u.rss_pages.saturating_mul(page));
        }
    }
    (ticks, rss)
}

/// Percent of one core used between `base` and `now` (`None` without a baseline): the
/// processes present in both readings, plus the whole time of those that appeared in
/// between (they started after the baseline).
fn cpu_percent(base: &CpuBaseline, now: &HashMap<(u32, u64), u64>, now_at: Instant) -> Option<f64> {
    let at = base.at?;
    let secs = now_at.checked_duration_since(at)?.as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    let used: u64 = now
        .iter()
        .map(|(k, &t)| t.saturating_sub(base.ticks.get(k).copied().unwrap_or(0)))
        .sum();
    Some(used as f64 / UNITS.0 / secs * 100.0)
}

/// Current metrics of `dep`: with several replicas, CPU, memory and processes are the
/// sums over the replicas in service, port and uptime those of the first.
pub(crate) async fn collect(dep: &Deployment) -> Metrics {
    let (insts, restarts, limited) = {
        let shared = dep.lock();
        // Waiting to restart: nothing runs, so nothing is measured (not "0 B").
        let waiting = matches!(shared.observed, ObservedStatus::Restarting { .. });
        let insts: Vec<_> = if waiting {
            Vec::new()
        } else {
            shared
                .serving
                .iter()
                .filter(|i| {
                    i.pid.load(Ordering::Acquire) != 0
                        && !i.stopping.load(Ordering::Acquire)
                        && !i.down.load(Ordering::Acquire)
                })
                .cloned()
                .collect()
        };
        (
            insts,
            shared.restarts,
            shared.spec.config.resources.memory.is_some(),
        )
    };
    let mut m = Metrics::new();
    m.restarts = restarts;
    let Some(inst) = insts.first() else { return m };
    m.port = inst.port;
    m.uptime = Some(inst.started_at().1.elapsed());
    // Each replica's cgroup is looked up once.
    let trees: Vec<_> = insts
        .iter()
        .map(|i| {
            let tree = i.tree();
            let cgroup = tree.cgroup();
            (tree, cgroup)
        })
        .collect();
    let pids: Vec<u32> = trees
        .iter()
        .flat_map(|(tree, cgroup)| tree.measured_members(cgroup.as_ref()))
        .collect();
    m.pids = Some(pids.len() as u64);
    let (mut ticks, mut rss) = read(&pids);
    let mut now = Instant::now();
    let fresh = {
        let base = dep
            .cpu
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        base.at.is_none()
    };
    if fresh {
        // CPU usage is a difference between two readings: take a baseline first.
        *dep.cpu
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = CpuBaseline {
            at: Some(now),
            ticks,
        };
        tokio::time::sleep(FIRST_CPU_WINDOW).await;
        (ticks, rss) = read(&pids);
        now = Instant::now();
    }
    let mut base = dep
        .cpu
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    m.cpu_percent = cpu_percent(&base, &ticks, now).or(Some(0.0));
    *base = CpuBaseline {
        at: Some(now),
        ticks,
    };
    drop(base);
    m.memory_bytes = Some(rss);
    // Reported only when the kernel enforces it: a monitor enforces `resources.memory`
    // itself where it does not. Without `resources.memory` no limit was written.
    if limited {
        m.memory_limit_bytes = trees
            .first()
            .and_then(|(_, cgroup)| cgroup.as_ref()?.memory_limit());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_the_tick_difference_over_the_wall_time() {
        let t0 = Instant::now();
        let base = CpuBaseline {
            at: Some(t0),
            ticks: HashMap::from([((10, 1), 100), ((11, 1), 50), ((12, 1), 7)]),
        };
        // pid 10 used 50 ticks, 11 none, 12 exited, 13 appeared (started after t0) with 25.
        let now = HashMap::from([((10, 1), 150), ((11, 1), 50), ((13, 9), 25)]);
        let ticks_per_sec = UNITS.0;
        let pct = cpu_percent(&base, &now, t0 + Duration::from_secs(1)).unwrap();
        assert!((pct - 75.0 / ticks_per_sec * 100.0).abs() < 1e-9, "{pct}");
        // A recycled pid (new start time) counts from zero, never a negative difference.
        let recycled = HashMap::from([((10, 2), 5)]);
        let pct = cpu_percent(&base, &recycled, t0 + Duration::from_secs(1)).unwrap();
        assert!((pct - 5.0 / ticks_per_sec * 100.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&CpuBaseline::default(), &now, t0), None);
    }
}
