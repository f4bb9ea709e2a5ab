//! The provider's private error type and its mapping into [`conan_core::Error`].

use conan_core::Error;

use crate::PROVIDER_NAME;

/// What can go wrong talking to Docker. Never holds env values.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    /// The daemon could not be reached or did not answer.
    #[error("cannot reach the Docker daemon at {host}: {reason}")]
    Unreachable {
        host: String,
        reason: String,
        #[source]
        source: Option<bollard::errors::Error>,
    },
    /// An API call failed.
    #[error("{operation}: {source}")]
    Api {
        operation: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// An object does not exist on the daemon.
    #[error("{what} '{name}' not found")]
    Missing { what: &'static str, name: String },
    /// The build context could not be assembled.
    #[error("build context: {0}")]
    Context(String),
}

/// What fixes an unreachable daemon, appended to every "unreachable" error.
pub(crate) const START_HINT: &str = "make sure the Docker daemon runs and this user may use its socket, \
     or set DOCKER_HOST to the address of a running daemon (unix:///var/run/docker.sock, tcp://host:2375)";

impl DockerError {
    /// Wraps a bollard error of `operation`, recognising "no such object" and connection failures.
    pub(crate) fn api(operation: impl Into<String>, source: bollard::errors::Error) -> Self {
        DockerError::Api {
            operation: operation.into(),
            source,
        }
    }

    /// The HTTP status the daemon answered, if it did.
    pub(crate) fn status_code(&self) -> Option<u16> {
        match self {
            DockerError::Api {
                source: bollard::errors::Error::DockerResponseServerError { status_code, .. },
                ..
            } => Some(*status_code),
            _ => None,
        }
    }

    /// Whether the daemon answered 404.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Missing { .. }) || self.status_code() == Some(404)
    }
}

/// Whether a bollard error means the daemon itself is unreachable (as opposed to an API error).
pub(crate) fn is_connection_error(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as B;
    matches!(
        e,
        B::HyperResponseError { .. }
            | B::HttpClientError { .. }
            | B::IOError { .. }
            | B::SocketNotFoundError(_)
            | B::RequestTimeoutError
    )
}

impl From<DockerError> for Error {
    fn from(e: DockerError) -> Self {
        match e {
            DockerError::Unreachable {
                host,
                reason,
                source,
            } => Error::ProviderUnavailable {
                provider: PROVIDER_NAME.to_owned(),
                reason: format!(
                    "cannot reach the Docker daemon at {host} ({reason}); {START_HINT}"
                ),
                source: source.map(Into::into),
            },
            DockerError::Missing { what, name } => Error::NotFound { what, id: name },
            DockerError::Api { operation, source } => {
                if is_connection_error(&source) {
                    return Error::ProviderUnavailable {
                        provider: PROVIDER_NAME.to_owned(),
                        reason: format!(
                            "{operation}: the Docker daemon stopped answering; {START_HINT}"
                        ),
                        source: Some(source.into()),
                    };
                }
                let transient = matches!(
                    &source,
                    bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code >= 500
                );
                let message = format!("{operation}: {source}");
                Error::provider_with_source(PROVIDER_NAME, message, transient, source)
            }
            DockerError::Context(message) => {
                Error::provider(PROVIDER_NAME, format!("build context: {message}"), false)
            }
        }
    }
}

/// `Result` with [`DockerError`].
pub(crate) type DockerResult<T> = std::result::Result<T, DockerError>;
