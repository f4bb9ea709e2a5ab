//! Failure bundles: what a user needs to see when a deploy or an instance fails.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::log::LogLine;
use crate::time::Timestamp;

/// How a process or container ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
    /// The end was not observed (an adopted process that vanished).
    Unknown,
}

impl ExitStatus {
    /// Whether this is a clean exit (code 0).
    #[must_use]
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// Why a deploy, update or running instance failed, with the evidence: the exit status,
/// what the health probe saw, and the last log lines (at most [`FailureReport::MAX_LOG_LINES`]).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, Default)]
pub struct FailureReport {
    /// One-line reason (`"health check GET /health answered 500 three times"`).
    pub reason: String,
    /// How the process ended, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// What the last health probe saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// The application's last log lines, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_logs: Vec<LogLine>,
    /// The last health probes before the failure, oldest first (a monitor's give-up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_history: Vec<ProbeRecord>,
}

/// One health probe as a failure bundle keeps it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// When it ran.
    pub at: Timestamp,
    /// Whether it passed.
    pub healthy: bool,
    /// What it saw (`GET http://127.0.0.1:20000/health answered 500: …`).
    pub detail: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

impl FailureReport {
    /// How many log lines a failure report carries at most.
    pub const MAX_LOG_LINES: usize = 50;

    /// How many probes a failure report carries at most.
    pub const MAX_PROBE_RECORDS: usize = 20;

    /// A report with only a reason.
    #[must_use]
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            ..Self::default()
        }
    }

    /// The same report with an exit status.
    #[must_use]
    pub fn with_exit(mut self, exit: ExitStatus) -> Self {
        self.exit = Some(exit);
        self
    }

    /// The same report with the probe's last observation.
    #[must_use]
    pub fn with_probe(mut self, probe: impl Into<String>) -> Self {
        self.probe = Some(probe.into());
        self
    }

    /// The same report with the probe history (keeps the newest
    /// [`Self::MAX_PROBE_RECORDS`]).
    #[must_use]
    pub fn with_probe_history(mut self, mut probes: Vec<ProbeRecord>) -> Self {
        if probes.len() > Self::MAX_PROBE_RECORDS {
            probes.drain(..probes.len() - Self::MAX_PROBE_RECORDS);
        }
        self.probe_history = probes;
        self
    }

    /// The same report with the last log lines (keeps the newest [`Self::MAX_LOG_LINES`]).
    #[must_use]
    pub fn with_logs(mut self, mut lines: Vec<LogLine>) -> Self {
        if lines.len() > Self::MAX_LOG_LINES {
            lines.drain(..lines.len() - Self::MAX_LOG_LINES);
        }
        self.last_logs = lines;
        self
    }
}

impl fmt::Display for FailureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        // A reason that already names the exit status ("exited before it was ready (exit
        // code 1)") does not get it twice.
        if let Some(exit) = self.exit
            && !self.reason.contains(&exit.to_string())
        {
            write!(f, " ({exit})")?;
        }
        if let Some(probe) = &self.probe {
            write!(f, "; last probe: {probe}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 8: "… (exit code 1) (exit code 1)".
    #[test]
    fn the_exit_status_is_named_once() {
        let named = FailureReport::new("the process exited before it was ready (exit code 1)")
            .with_exit(ExitStatus::Code(1));
        assert_eq!(
            named.to_string(),
            "the process exited before it was ready (exit code 1)"
        );
        let unnamed = FailureReport::new("crashed").with_exit(ExitStatus::Code(1));
        assert_eq!(unnamed.to_string(), "crashed (exit code 1)");
    }
}
