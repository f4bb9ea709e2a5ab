//! Metrics from the daemon's stats API.
//!
//! One non-streaming stats call returns two samples about a second apart (`cpu_stats` and
//! `precpu_stats`); CPU % is the container's share of the host's CPU time between them,
//! times the number of online CPUs (so 200 = two cores busy). Memory is the usage minus the
//! inactive page cache (`total_inactive_file` on cgroup v1, `inactive_file` on v2), as
//! `docker stats` shows it.

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptionsBuilder;
use futures::StreamExt;

use crate::error::{DockerError, DockerResult};

/// One container's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Sample {
    pub(crate) cpu_percent: Option<f64>,
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) memory_limit_bytes: Option<u64>,
    pub(crate) rx_bytes: Option<u64>,
    pub(crate) tx_bytes: Option<u64>,
    pub(crate) pids: Option<u64>,
}

/// Reads one stats response of a container.
pub(crate) async fn sample(docker: &Docker, id: &str) -> DockerResult<Sample> {
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(false)
        .build();
    let mut stats = docker.stats(id, Some(options));
    match stats.next().await {
        Some(Ok(s)) => Ok(compute(&s)),
        Some(Err(e)) => Err(DockerError::api(format!("stats of {id}"), e)),
        None => Err(DockerError::Missing {
            what: "stats of container",
            name: id.to_owned(),
        }),
    }
}

/// Turns a stats response into numbers.
pub(crate) fn compute(s: &ContainerStatsResponse) -> Sample {
    let cpu_percent = (|| {
        let cur = s.cpu_stats.as_ref()?;
        let pre = s.precpu_stats.as_ref()?;
        let total = cur.cpu_usage.as_ref()?.total_usage?;
        let pre_total = pre.cpu_usage.as_ref()?.total_usage.unwrap_or(0);
        let system = cur.system_cpu_usage?;
        let pre_system = pre.system_cpu_usage.unwrap_or(0);
        let cpu_delta = total.saturating_sub(pre_total) as f64;
        let system_delta = system.saturating_sub(pre_system) as f64;
        if system_delta <= 0.0 || pre.system_cpu_usage.is_none() {
            return None;
        }
        let cpus = cur
            .online_cpus
            .map(f64::from)
            .or_else(|| {
                cur.cpu_usage
                    .as_ref()?
                    .percpu_usage
                    .as_ref()
                    .map(|v| v.len() as f64)
            })
            .filter(|n| *n > 0.0)
            .unwrap_or(1.0);
        Some(cpu_delta / system_delta * cpus * 100.0)
    })();
    let memory = s.memory_stats.as_ref();
    let memory_bytes = memory.and_then(|m| {
        let usage = m.usage?;
        let inactive = m.stats.as_ref().and_then(|st| {
            st.get("total_inactive_file")
                .or_else(|| st.get("inactive_file"))
                .copied()
        });
        Some(usage.saturating_sub(inactive.unwrap_or(0)))
    });
    // The daemon reports the host's memory as the limit of an unlimited container.
    let memory_limit_bytes = memory
        .and_then(|m| m.limit)
        .filter(|l| *l > 0 && *l < (1 << 62));
    let (rx_bytes, tx_bytes) = match &s.networks {
        Some(nets) if !nets.is_empty() => (
            Some(nets.values().filter_map(|n| n.rx_bytes).sum()),
            Some(nets.values().filter_map(|n| n.tx_bytes).sum()),
        ),
        _ => (None, None),
    };
    Sample {
        cpu_percent,
        memory_bytes,
        memory_limit_bytes,
        rx_bytes,
        tx_bytes,
        pids: s.pids_stats.as_ref().and_then(|p| p.current),
    }
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, None) | (None, x) => x,
    }
}

/// Sums the samples of several containers.
pub(crate) fn sum(samples: &[Sample]) -> Sample {
    samples.iter().fold(Sample::default(), |acc, s| Sample {
        cpu_percent: match (acc.cpu_percent, s.cpu_percent) {
            (Some(x), Some(y)) => Some(x + y),
            (x, None) | (None, x) => x,
        },
        memory_bytes: add(acc.memory_bytes, s.memory_bytes),
        memory_limit_bytes: add(acc.memory_limit_bytes, s.memory_limit_bytes),
        rx_bytes: add(acc.rx_bytes, s.rx_bytes),
        tx_bytes: add(acc.tx_bytes, s.tx_bytes),
        pids: add(acc.pids, s.pids),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: &str) -> ContainerStatsResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn cgroup_v1_and_v2_memory_and_cpu() {
        let v1 = stats(
            r#"{"cpu_stats":{"cpu_usage":{"total_usage":3000},"system_cpu_usage":20000,"online_cpus":2},
                "precpu_stats":{"cpu_usage":{"total_usage":1000},"system_cpu_usage":10000},
                "memory_stats":{"usage":1000,"limit":4000,"stats":{"total_inactive_file":300}},
                "networks":{"eth0":{"rx_bytes":5,"tx_bytes":7}},"pids_stats":{"current":3}}"#,
        );
        let s = compute(&v1);
        assert_eq!(s.cpu_percent, Some(40.0));
        assert_eq!(s.memory_bytes, Some(700));
        assert_eq!(s.memory_limit_bytes, Some(4000));
        assert_eq!(
            (s.rx_bytes, s.tx_bytes, s.pids),
            (Some(5), Some(7), Some(3))
        );
        let v2 = stats(r#"{"memory_stats":{"usage":1000,"stats":{"inactive_file":100}}}"#);
        let s = compute(&v2);
        assert_eq!(s.memory_bytes, Some(900));
        assert_eq!(s.cpu_percent, None);
        let both = sum(&[compute(&v1), compute(&v2)]);
        assert_eq!(both.memory_bytes, Some(1600));
    }
}
