//! Kill points: which operation, how long after it started, from a seed.

use super::*;

/// An operation interrupted by a kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Deploy,
    Update,
    Stop,
    Rm,
    Restart,
}

pub(crate) const OPS: [Op; 5] = [Op::Deploy, Op::Update, Op::Stop, Op::Rm, Op::Restart];

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Deploy => "deploy",
            Op::Update => "update",
            Op::Stop => "stop",
            Op::Rm => "rm",
            Op::Restart => "restart",
        })
    }
}

/// splitmix64: a seed's delay, the same on every machine.
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One kill point: SIGKILL the daemon `delay` after `op` started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Point {
    pub(crate) seed: u64,
    pub(crate) op: Op,
    pub(crate) delay: Duration,
}

impl Point {
    pub(crate) fn new(seed: u64, op: Op) -> Self {
        let delay = Duration::from_millis(splitmix64(seed) % (MAX_KILL_DELAY_MS + 1));
        Self { seed, op, delay }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {:#x}: SIGKILL {} ms into `{}`",
            self.seed,
            self.delay.as_millis(),
            self.op
        )
    }
}

/// `seeds` (or `CONAN_FAULTS_SEEDS`) in rounds of five points, one per operation.
pub(crate) fn rounds(seeds: &[u64]) -> Vec<Vec<Point>> {
    let replay: Option<Vec<u64>> = std::env::var("CONAN_FAULTS_SEEDS").ok().map(|list| {
        list.split(',')
            .filter_map(|s| {
                let s = s.trim();
                s.strip_prefix("0x")
                    .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
            })
            .collect()
    });
    let seeds = replay.as_deref().unwrap_or(seeds);
    seeds
        .chunks(OPS.len())
        .map(|chunk| {
            chunk
                .iter()
                .zip(OPS)
                .map(|(&seed, op)| Point::new(seed, op))
                .collect()
        })
        .collect()
}
