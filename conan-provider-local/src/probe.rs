//! Health probes of an instance: the shared [`conan_core::probe`] module (HTTP `GET`, TCP
//! connect, command), plus "the process is alive" for instances without a check (or with
//! a `process` check), which the supervisor answers itself.

use std::path::Path;
use std::time::Duration;

use conan_core::HealthCheck;
pub(crate) use conan_core::probe::{ProbeOutcome, readiness_delay};

/// How to probe one instance.
#[derive(Clone, Debug)]
pub(crate) enum Probe {
    /// A probe of the shared module.
    Check(conan_core::probe::Probe),
    /// The process being alive is all there is to check.
    Alive,
}

impl Probe {
    /// The probe for `check` against an instance on `port` of `host`, whose app lives in
    /// `dir`.
    pub fn for_check(
        check: Option<&HealthCheck>,
        host: &str,
        port: Option<u16>,
        dir: &Path,
    ) -> Self {
        check
            .zip(port)
            .and_then(|(c, p)| conan_core::probe::Probe::for_check(c, host, p, dir))
            .map_or(Probe::Alive, Probe::Check)
    }

    /// Runs the probe once, bounded by `limit`.
    pub async fn run(&self, limit: Duration) -> ProbeOutcome {
        match self {
            Probe::Check(p) => p.run(limit).await,
            Probe::Alive => ProbeOutcome::healthy("process alive"),
        }
    }
}
