//! A tool's failure: a code, one clear line, a hint, every input problem with its field
//! path, and for a failed deploy or update the failure bundle (exit status, the app's last
//! log lines, what the health probe saw).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::LogEntry;

/// One problem with an input, at its field path (`projectPath`, `env.1BAD`, `port`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The field path; empty for the input as a whole.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    #[must_use]
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// One health probe of a failure bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeEntry {
    /// When it ran (RFC 3339).
    pub at: String,
    /// Whether it passed.
    pub healthy: bool,
    /// What it saw.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// Why a deploy, update or instance failed, with the evidence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureBundle {
    /// One-line reason.
    pub reason: String,
    /// The exit code of the app's process, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// What the last health probe saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// The app's last log lines, oldest first.
    #[serde(default)]
    pub last_logs: Vec<LogEntry>,
    /// The last health probes, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_history: Vec<ProbeEntry>,
}

impl FailureBundle {
    /// The bundle of a core failure report.
    #[must_use]
    pub fn from_report(report: &conan_core::FailureReport) -> Self {
        let (exit_code, signal) = match report.exit {
            Some(conan_core::ExitStatus::Code(c)) => (Some(c), None),
            Some(conan_core::ExitStatus::Signal(s)) => (None, Some(s)),
            _ => (None, None),
        };
        Self {
            reason: report.reason.clone(),
            exit_code,
            signal,
            probe: report.probe.clone(),
            last_logs: report
                .last_logs
                .iter()
                .map(crate::convert::log_entry)
                .collect(),
            probe_history: report
                .probe_history
                .iter()
                .map(|p| ProbeEntry {
                    at: p.at.to_string(),
                    healthy: p.healthy,
                    detail: p.detail.clone(),
                    duration_ms: p.duration_ms,
                })
                .collect(),
        }
    }
}

/// A tool's error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolError {
    /// A machine-readable code: `invalid_input`, `invalid_config`, `not_found`,
    /// `already_exists`, `deploy_failed`, `provider_unavailable`, `running`,
    /// `cancelled`, `unavailable`, ...
    pub code: String,
    /// One clear line.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// For `invalid_input` and `invalid_config`: every problem, with its field path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    /// For a failed deploy or update: the failure bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Box<FailureBundle>>,
}

impl ToolError {
    /// An error with a code and a message.
    #[must_use]
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            hint: None,
            problems: Vec::new(),
            failure: None,
        }
    }

    /// `invalid_input` with every problem.
    #[must_use]
    pub fn invalid_input(problems: Vec<Problem>) -> Self {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                if p.path.is_empty() {
                    p.message.clone()
                } else {
                    format!("{}: {}", p.path, p.message)
                }
            })
            .collect();
        Self {
            problems,
            ..Self::new(
                "invalid_input",
                format!("invalid input: {}", lines.join("; ")),
            )
        }
    }

    /// The same error with a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same error with a failure bundle.
    #[must_use]
    pub fn with_failure(mut self, failure: FailureBundle) -> Self {
        self.failure = Some(Box::new(failure));
        self
    }

    /// The error of a core error: its code, its message, the config problems and the
    /// failure bundle it carries.
    #[must_use]
    pub fn from_core(e: &conan_core::Error) -> Self {
        let mut error = Self::new(
            match e {
                conan_core::Error::HealthCheckFailed { .. } => "deploy_failed",
                other => other.code(),
            },
            e.to_string(),
        );
        if let conan_core::Error::InvalidConfig { problems } = e {
            error.message = "invalid config".to_owned();
            error.problems = problems
                .iter()
                .map(|p| Problem::new(p.path.clone(), p.message.clone()))
                .collect();
            error.message = Self::invalid_input(error.problems.clone())
                .message
                .replacen("invalid input", "invalid config", 1);
        }
        if let Some(report) = e.failure() {
            error.failure = Some(Box::new(FailureBundle::from_report(report)));
        }
        error
    }

    /// What the MCP server (or any host) answers for this error.
    #[must_use]
    pub fn into_failure(self) -> ToolFailure {
        ToolFailure {
            success: false,
            message: self.message.clone(),
            error: self,
        }
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

/// The answer of a tool that failed: `{ success: false, message, error }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolFailure {
    /// Always `false`.
    pub success: bool,
    /// The error's message.
    pub message: String,
    /// The error.
    pub error: ToolError,
}
