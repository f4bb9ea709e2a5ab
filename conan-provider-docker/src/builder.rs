//! [`DockerProviderBuilder`]: settings and the connection to the daemon.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;

use crate::error::DockerError;
use crate::{DEFAULT_BASE_IMAGE, DockerProvider};

/// Provider-wide settings, fixed at build time.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) host: String,
    pub(crate) base_image: String,
    pub(crate) bind_address: String,
    pub(crate) keep_images: usize,
    pub(crate) probe_interval: Duration,
    pub(crate) local: bool,
}

/// Builds a [`DockerProvider`].
#[derive(Clone, Debug)]
pub struct DockerProviderBuilder {
    host: Option<String>,
    base_image: String,
    bind_address: String,
    keep_images: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    probe_interval: Duration,
}

impl Default for DockerProviderBuilder {
    fn default() -> Self {
        Self {
            host: None,
            base_image: DEFAULT_BASE_IMAGE.to_owned(),
            bind_address: "127.0.0.1".to_owned(),
            keep_images: 3,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(600),
            probe_interval: Duration::from_millis(50),
        }
    }
}

impl DockerProviderBuilder {
    /// Defaults overridden by the environment: `DOCKER_HOST` (read by [`build`](Self::build)
    /// anyway) and `CONAN_DOCKER_BASE_IMAGE`.
    #[must_use]
    pub fn from_env() -> Self {
        let mut builder = Self::default();
        if let Ok(image) = std::env::var("CONAN_DOCKER_BASE_IMAGE")
            && !image.trim().is_empty()
        {
            builder.base_image = image;
        }
        builder
    }

    /// The daemon address (`unix:///var/run/docker.sock`, `tcp://host:2375`); default
    /// `DOCKER_HOST`, else the local socket.
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Base image of Dockerfiles generated for Node projects (default `node:20-slim`).
    /// It must be on the daemon or pullable.
    #[must_use]
    pub fn base_image(mut self, image: impl Into<String>) -> Self {
        self.base_image = image.into();
        self
    }

    /// The host address ports are published on (default `127.0.0.1`).
    #[must_use]
    pub fn bind_address(mut self, address: impl Into<String>) -> Self {
        self.bind_address = address.into();
        self
    }

    /// Revision images kept per deployment (default 3, at least 1).
    #[must_use]
    pub fn keep_images(mut self, n: usize) -> Self {
        self.keep_images = n.max(1);
        self
    }

    /// How long to wait for the daemon to answer when connecting (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Upper bound of any single API request, builds included (default 10 min).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time between readiness probes while a deploy waits for health (default 50 ms).
    #[must_use]
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval.max(Duration::from_millis(5));
        self
    }

    /// Connects, negotiates the API version and checks that the daemon answers.
    ///
    /// # Errors
    /// [`Error::ProviderUnavailable`](conan_core::Error::ProviderUnavailable) with a hint how
    /// to start a daemon when none answers within the connect timeout.
    pub async fn build(self) -> conan_core::Result<DockerProvider> {
        let host = self
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let unreachable = |reason: String, source: Option<bollard::errors::Error>| {
            conan_core::Error::from(DockerError::Unreachable {
                host: host.clone(),
                reason,
                source,
            })
        };
        let docker = Docker::connect_with_host(&host)
            .map_err(|e| unreachable(e.to_string(), Some(e)))?
            .with_timeout(self.request_timeout);
        let docker =
            match tokio::time::timeout(self.connect_timeout, docker.negotiate_version()).await {
                Err(_) => {
                    return Err(unreachable(
                        format!("no answer within {:?}", self.connect_timeout),
                        None,
                    ));
                }
                Ok(Err(e)) => return Err(unreachable(e.to_string(), Some(e))),
                Ok(Ok(docker)) => docker,
            };
        match tokio::time::timeout(self.connect_timeout, docker.ping()).await {
            Err(_) => {
                return Err(unreachable(
                    format!("ping: no answer within {:?}", self.connect_timeout),
                    None,
                ));
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string(), Some(e))),
            Ok(Ok(_)) => {}
        }
        tracing::debug!(%host, api = %docker.client_version(), "connected to Docker");
        let local = host.starts_with("unix://")
            || host.contains("://127.0.0.1")
            || host.contains("://localhost");
        let state = Arc::new(crate::state::StateTable::default());
        let supervisor = crate::supervise::spawn(
            docker.clone(),
            Arc::clone(&state),
            self.bind_address.clone(),
        );
        Ok(DockerProvider {
            docker,
            settings: Arc::new(Settings {
                host,
                base_image: self.base_image,
                bind_address: self.bind_address,
                keep_images: self.keep_images,
                probe_interval: self.probe_interval,
                local,
            }),
            state,
            _supervisor: Arc::new(supervisor),
        })
    }
}
