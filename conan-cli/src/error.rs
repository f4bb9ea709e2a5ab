//! The CLI's error: one line, optional evidence lines, an optional hint, and an exit code.

use std::fmt;
use std::process::ExitCode;

use crate::api::ApiError;

/// Exit code of a failed operation.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of bad usage or an invalid config (clap's usage errors use it too).
pub const EXIT_USAGE: u8 = 2;

/// What went wrong, ready to print.
#[derive(Debug, Clone)]
pub struct CliError {
    /// 1 or 2.
    pub exit: u8,
    /// One clear line.
    pub message: String,
    /// Evidence printed under the message (config problems, a failure bundle).
    pub details: Vec<String>,
    /// What to do about it.
    pub hint: Option<String>,
    /// The daemon's error, for `--json` output.
    pub api: Option<Box<ApiError>>,
}

/// `Result` with [`CliError`].
pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    /// An operation failure (exit 1).
    #[must_use]
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            exit: EXIT_FAILED,
            message: message.into(),
            details: Vec::new(),
            hint: None,
            api: None,
        }
    }

    /// Bad usage or an invalid config (exit 2).
    #[must_use]
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: EXIT_USAGE,
            ..Self::failed(message)
        }
    }

    /// The same error with a hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same error with evidence lines.
    #[must_use]
    pub fn details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// An invalid config: every problem with its field path (exit 2).
    #[must_use]
    pub fn invalid_config(context: &str, problems: &[conan::ConfigProblem]) -> Self {
        let mut api = ApiError::new("invalid_config", format!("invalid config{context}"));
        api.problems = problems.to_vec();
        Self::usage(format!(
            "invalid config{context}: {} problem{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ))
        .details(problems.iter().map(|p| format!("- {p}")).collect())
        .with_api(api)
    }

    /// The same error carrying the daemon's answer.
    #[must_use]
    pub fn with_api(mut self, api: ApiError) -> Self {
        self.api = Some(Box::new(api));
        self
    }

    /// The process exit code.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error followed by the causes of its source chain that its text does not show yet
/// (`hyper::Error` alone says "error reading a body from connection", not why).
#[must_use]
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    conan::error::DisplayChain(e).to_string()
}

impl From<conan::Error> for CliError {
    fn from(e: conan::Error) -> Self {
        match e {
            conan::Error::InvalidConfig { problems } => Self::invalid_config("", &problems),
            other => Self::failed(other.to_string()),
        }
    }
}

impl CliError {
    /// The CLI error for a daemon's answer: exit 2 for an invalid config, else 1; the
    /// problems or the failure bundle become the details.
    #[must_use]
    pub fn from_api(api: ApiError) -> Self {
        let mut error = if api.code == "invalid_config" {
            Self::invalid_config("", &api.problems)
        } else {
            Self::failed(api.message.clone())
        };
        if let Some(failure) = &api.failure {
            error.details = crate::output::failure_lines(failure);
            // "port 3000 is already in use" as the error and again as the reason: once.
            if api.message.contains(failure.reason.trim()) {
                error.details.retain(|l| !l.starts_with("  reason: "));
            }
        }
        error.hint.clone_from(&api.hint);
        error.with_api(api)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 8: "port … in use" was the error and again its reason.
    #[test]
    fn a_reason_the_message_already_says_is_not_repeated() {
        let mut api = ApiError::new("port_in_use", "port 3000 is already in use (by pid 7)");
        api.failure = Some(conan::FailureReport::new(
            "port 3000 is already in use (by pid 7)",
        ));
        let e = CliError::from_api(api.clone());
        assert!(
            e.details.iter().all(|l| !l.contains("reason")),
            "{:?}",
            e.details
        );
        api.message = "deployment 'x' did not become ready".into();
        let e = CliError::from_api(api);
        assert_eq!(
            e.details.iter().filter(|l| l.contains("reason:")).count(),
            1
        );
    }
}
