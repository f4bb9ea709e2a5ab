//! The one error type of Conan.
//!
//! Providers keep their own private error enums and map them into [`Error`]. Which errors
//! are worth retrying is decided by [`Error::is_transient`], and only those are retried by the
//! [`DeploymentManager`](crate::DeploymentManager):
//!
//! | variant | transient |
//! |---|---|
//! | [`Error::ProviderUnavailable`], [`Error::Timeout`], [`Error::Store`] with `transient` | yes |
//! | [`Error::Provider`] with `transient: true` | yes |
//! | everything else | no |
//!
//! No variant ever holds an env value: configs are referred to by deployment name only.
//!
//! The variants that wrap an underlying error ([`Error::Provider`], [`Error::Store`],
//! [`Error::ProviderUnavailable`]) show its text in their own `Display` too (as
//! `object_store`'s errors do), after the message, unless the message already shows it:
//! `local: cannot start /usr/bin/node: Too many open files (os error 24)`. A `to_string()`
//! of an [`Error`] therefore never drops the OS cause, wherever it is stored or printed;
//! [`Error::source`](std::error::Error::source) still returns the underlying error for
//! code that inspects it. [`DisplayChain`] does the same for any error.

use std::fmt;
use std::time::Duration;

use crate::config::ConfigProblem;
use crate::failure::FailureReport;
use crate::status::StatusKind;

/// Separates a [`Error::BuildFailed`] message from the build output that follows it.
pub const BUILD_OUTPUT_MARKER: &str = "\n--- build output ---\n";

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Conan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No deployment (or revision, operation, ...) with that id or name.
    #[error("{what} '{id}' not found")]
    NotFound {
        /// What was looked for (`"deployment"`, `"revision"`).
        what: &'static str,
        /// The id or name asked for.
        id: String,
    },
    /// A live deployment with that name exists already.
    #[error("a deployment named '{name}' already exists")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// The config breaks one or more rules; every problem is listed.
    #[error("invalid config: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidConfig {
        /// Every problem, each with its field path.
        problems: Vec<ConfigProblem>,
    },
    /// The status state machine forbids this transition.
    #[error("illegal status transition from {from} to {to}")]
    IllegalTransition {
        /// Current status.
        from: StatusKind,
        /// Requested status.
        to: StatusKind,
    },
    /// The port is taken.
    #[error("port {port} is already in use{}", holder.map(|p| format!(" (by pid {p})")).unwrap_or_default())]
    PortInUse {
        /// The port.
        port: u16,
        /// The pid holding it, when it could be found.
        holder: Option<u32>,
    },
    /// The provider rejected our credentials.
    #[error("{provider}: not authenticated: {message}")]
    Unauthenticated {
        /// Provider name.
        provider: String,
        /// What the provider said, and how to log in.
        message: String,
    },
    /// The provider cannot be reached right now (daemon down, network error). Transient.
    #[error("{provider} is unavailable: {reason}{}", Causes::of(reason, source))]
    ProviderUnavailable {
        /// Provider name.
        provider: String,
        /// Why, and how to fix it.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A deploy or update did not become healthy; the report says why.
    #[error("deployment '{deployment}' failed its health gate: {failure}")]
    HealthCheckFailed {
        /// Deployment name.
        deployment: String,
        /// The failure bundle.
        failure: Box<FailureReport>,
    },
    /// Building the artifact (image) failed. `message` is the error, then (when there is
    /// any) [`BUILD_OUTPUT_MARKER`] and the last lines of the build's output.
    #[error("build of '{deployment}' failed at {step}: {message}")]
    BuildFailed {
        /// Deployment name.
        deployment: String,
        /// The failing step (`"RUN npm ci"`).
        step: String,
        /// The step's output or error.
        message: String,
    },
    /// An operation took longer than allowed. Transient.
    #[error("{operation} timed out after {}", crate::time::format_duration(*after))]
    Timeout {
        /// What timed out.
        operation: String,
        /// After how long.
        after: Duration,
    },
    /// The provider cannot do this.
    #[error("{provider} does not support {operation}")]
    NotSupported {
        /// The operation.
        operation: String,
        /// Provider name.
        provider: String,
    },
    /// A provider of that name is registered already.
    #[error("a provider named '{name}' is already registered")]
    ProviderExists {
        /// The name.
        name: String,
    },
    /// No registered provider fits the deployment.
    #[error("no provider fits: {reason}")]
    NoProvider {
        /// Why none fits (unknown name, missing capabilities).
        reason: String,
    },
    /// The operation was cancelled before it finished.
    #[error("{operation} was cancelled")]
    Cancelled {
        /// The operation.
        operation: String,
    },
    /// The manager is shutting down and accepts no more operations.
    #[error("the deployment manager is shut down")]
    ShutDown,
    /// The state store failed.
    #[error("state store: {message}{}", Causes::of(message, source))]
    Store {
        /// What failed.
        message: String,
        /// Whether retrying may help (a busy database).
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Any other provider failure.
    #[error("{provider}: {message}{}", Causes::of(message, source))]
    Provider {
        /// Provider name.
        provider: String,
        /// What failed.
        message: String,
        /// Whether retrying may help.
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

/// Displays an error followed by every cause of its
/// [`source`](std::error::Error::source) chain that the text so far does not already show,
/// each after `": "`: `cannot start log capture: Too many open files (os error 24)`.
///
/// ```
/// use conan_core::error::DisplayChain;
///
/// let io = std::io::Error::from_raw_os_error(24);
/// let e = conan_core::Error::provider_with_source("local", "cannot start node", false, io);
/// let text = DisplayChain(&e).to_string();
/// assert!(text.starts_with("local: cannot start node: "), "{text}");
/// assert!(text.contains("(os error 24)"), "{text}");
/// ```
#[derive(Clone, Copy)]
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = self.0.to_string();
        f.write_str(&head)?;
        write_causes(f, head, self.0.source())
    }
}

impl fmt::Debug for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The causes of a variant's `source`, for its `Display` (see the module docs).
struct Causes<'a> {
    shown: &'a str,
    source: Option<&'a (dyn std::error::Error + 'static)>,
}

impl<'a> Causes<'a> {
    fn of(shown: &'a str, source: &'a Option<BoxError>) -> Self {
        Self {
            shown,
            source: source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
        }
    }
}

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_causes(f, self.shown.to_owned(), self.source)
    }
}

/// Writes `": cause"` for each error from `next` down its chain whose text `shown` does not
/// contain yet (a message built with `format!("...: {e}")` is not repeated).
fn write_causes(
    f: &mut fmt::Formatter<'_>,
    mut shown: String,
    mut next: Option<&(dyn std::error::Error + 'static)>,
) -> fmt::Result {
    // A cycle or a pathological chain must not make Display loop or grow without bound.
    const DEPTH: usize = 16;
    for _ in 0..DEPTH {
        let Some(cause) = next else { break };
        let text = cause.to_string();
        if !text.is_empty() && !shown.contains(&text) {
            write!(f, ": {text}")?;
            shown.push_str(": ");
            shown.push_str(&text);
        }
        next = cause.source();
    }
    Ok(())
}

impl Error {
    /// The texts of the underlying errors, outermost first (empty for variants without a
    /// source): what an API answer lists as the causes of its message.
    #[must_use]
    pub fn causes(&self) -> Vec<String> {
        let mut causes = Vec::new();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            if causes.len() == 16 {
                break;
            }
            causes.push(cause.to_string());
            next = cause.source();
        }
        causes
    }

    /// Whether retrying the same operation may succeed. The manager retries only these.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Error::ProviderUnavailable { .. } | Error::Timeout { .. } => true,
            Error::Provider { transient, .. } | Error::Store { transient, .. } => *transient,
            _ => false,
        }
    }

    /// A deployment-not-found error.
    #[must_use]
    pub fn deployment_not_found(id: impl Into<String>) -> Self {
        Error::NotFound {
            what: "deployment",
            id: id.into(),
        }
    }

    /// A provider error without a source.
    #[must_use]
    pub fn provider(
        provider: impl Into<String>,
        message: impl Into<String>,
        transient: bool,
    ) -> Self {
        Error::Provider {
            provider: provider.into(),
            message: message.into(),
            transient,
            source: None,
        }
    }

    /// A provider error wrapping `source`.
    #[must_use]
    pub fn provider_with_source(
        provider: impl Into<String>,
        message: impl Into<String>,
        transient: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Provider {
            provider: provider.into(),
            message: message.into(),
            transient,
            source: Some(source.into()),
        }
    }

    /// A store error.
    #[must_use]
    pub fn store(message: impl Into<String>, transient: bool, source: Option<BoxError>) -> Self {
        Error::Store {
            message: message.into(),
            transient,
            source,
        }
    }

    /// The failure bundle carried by this error, if any.
    #[must_use]
    pub fn failure(&self) -> Option<&FailureReport> {
        match self {
            Error::HealthCheckFailed { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// The failure bundle to record for this error: the one it carries, else for a failed
    /// build its reason and the build output as log lines (so `logs` of a deployment whose
    /// build failed shows that output), else a report with the error's text.
    #[must_use]
    pub fn failure_report(&self) -> FailureReport {
        if let Some(failure) = self.failure() {
            return failure.clone();
        }
        if let Error::BuildFailed {
            deployment,
            step,
            message,
        } = self
        {
            let (head, output) = message
                .split_once(BUILD_OUTPUT_MARKER)
                .unwrap_or((message.as_str(), ""));
            let lines = output
                .lines()
                .map(|l| crate::LogLine::new(crate::OutputStream::System, l))
                .collect();
            return FailureReport::new(format!(
                "build of '{deployment}' failed at {step}: {}",
                head.trim()
            ))
            .with_logs(lines);
        }
        FailureReport::new(self.to_string())
    }

    /// A short machine-readable name of the variant (`"not_found"`), for JSON output.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::IllegalTransition { .. } => "illegal_transition",
            Error::PortInUse { .. } => "port_in_use",
            Error::Unauthenticated { .. } => "unauthenticated",
            Error::ProviderUnavailable { .. } => "provider_unavailable",
            Error::HealthCheckFailed { .. } => "health_check_failed",
            Error::BuildFailed { .. } => "build_failed",
            Error::Timeout { .. } => "timeout",
            Error::NotSupported { .. } => "not_supported",
            Error::ProviderExists { .. } => "provider_exists",
            Error::NoProvider { .. } => "no_provider",
            Error::Cancelled { .. } => "cancelled",
            Error::ShutDown => "shut_down",
            Error::Store { .. } => "store",
            Error::Provider { .. } => "provider",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        assert!(
            Error::Timeout {
                operation: "deploy".into(),
                after: Duration::from_secs(1)
            }
            .is_transient()
        );
        assert!(
            Error::ProviderUnavailable {
                provider: "docker".into(),
                reason: "down".into(),
                source: None
            }
            .is_transient()
        );
        assert!(Error::provider("x", "flaky", true).is_transient());
        assert!(!Error::provider("x", "broken", false).is_transient());
        assert!(!Error::deployment_not_found("a").is_transient());
        assert!(
            !Error::PortInUse {
                port: 80,
                holder: None
            }
            .is_transient()
        );
    }

    #[test]
    fn invalid_config_lists_every_problem() {
        let e = Error::InvalidConfig {
            problems: vec![
                ConfigProblem::new("name", "bad"),
                ConfigProblem::new("port", "worse"),
            ],
        };
        assert_eq!(e.to_string(), "invalid config: name: bad; port: worse");
    }

    /// Regression (issue 10, finding 5): a deploy at the fd limit said `local: cannot start
    /// node` and dropped the OS error its source carried.
    #[test]
    fn display_shows_the_os_cause_once() {
        let io = std::io::Error::from_raw_os_error(24);
        let cause = io.to_string();
        let e = Error::provider_with_source("local", "cannot start node", false, io);
        assert_eq!(e.to_string(), format!("local: cannot start node: {cause}"));
        assert_eq!(e.causes(), vec![cause.clone()]);
        assert_eq!(DisplayChain(&e).to_string(), e.to_string());

        // A message that already shows its source does not repeat it.
        let io = std::io::Error::from_raw_os_error(24);
        let e = Error::provider_with_source("docker", format!("inspect: {io}"), false, io);
        assert_eq!(e.to_string(), format!("docker: inspect: {cause}"));

        let e = Error::store(
            "sqlite: commit",
            true,
            Some(Box::new(std::io::Error::other("disk full"))),
        );
        assert_eq!(e.to_string(), "state store: sqlite: commit: disk full");
        let e = Error::ProviderUnavailable {
            provider: "docker".into(),
            reason: "cannot connect".into(),
            source: None,
        };
        assert_eq!(e.to_string(), "docker is unavailable: cannot connect");
        assert!(e.causes().is_empty());
    }

    #[test]
    fn display_chain_walks_nested_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error reading a body from connection")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(
            DisplayChain(&e).to_string(),
            "error reading a body from connection: connection reset"
        );
    }

    #[test]
    fn port_in_use_names_holder() {
        let e = Error::PortInUse {
            port: 3000,
            holder: Some(42),
        };
        assert_eq!(e.to_string(), "port 3000 is already in use (by pid 42)");
    }
}
