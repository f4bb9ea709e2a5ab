//! Resource usage of an instance's whole process tree through sysinfo, refreshing only the
//! tree's own pids (never every process on the machine).

use std::sync::atomic::Ordering;

use conan_core::{Metrics, ObservedStatus};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::deployment::Deployment;

/// Current metrics of `dep`.
pub(crate) async fn collect(dep: &Deployment) -> Metrics {
    let (inst, restarts) = {
        let shared = dep.lock();
        // Waiting to restart: nothing runs, so nothing is measured (not "0 B").
        let waiting = matches!(shared.observed, ObservedStatus::Restarting { .. });
        (shared.current.clone().filter(|_| !waiting), shared.restarts)
    };
    let mut m = Metrics::new();
    m.restarts = restarts;
    let Some(inst) = inst else { return m };
    if inst.pid.load(Ordering::Acquire) == 0 || inst.stopping.load(Ordering::Acquire) {
        return m;
    }
    m.port = inst.port;
    m.uptime = Some(inst.started_at().1.elapsed());
    let pids: Vec<Pid> = inst
        .tree()
        .members()
        .into_iter()
        .map(Pid::from_u32)
        .collect();
    m.pids = Some(pids.len() as u64);
    let kind = ProcessRefreshKind::nothing()
        .with_cpu()
        .with_memory()
        .without_tasks();
    let first = {
        let mut guard = dep
            .sys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = guard.is_none();
        if first {
            match System::new() {
                Ok(sys) => *guard = Some(sys),
                Err(e) => {
                    tracing::debug!(error = %e, "sysinfo is not available");
                    return m;
                }
            }
        }
        if let Some(sys) = guard.as_mut() {
            sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
        }
        first
    };
    if first {
        // CPU usage is a difference between two samples.
        tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
    }
    let mut guard = dep
        .sys
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(sys) = guard.as_mut() else { return m };
    if first {
        sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
    }
    let (mut cpu, mut mem) = (0f64, 0u64);
    for pid in &pids {
        if let Some(p) = sys.process(*pid) {
            cpu += f64::from(p.cpu_usage());
            mem += p.memory();
        }
    }
    m.cpu_percent = Some(cpu);
    m.memory_bytes = Some(mem);
    drop(guard);
    // Reported only when the kernel enforces it: a monitor enforces `resources.memory`
    // itself where it does not.
    m.memory_limit_bytes = inst.tree().cgroup().and_then(|cg| cg.memory_limit());
    m
}
