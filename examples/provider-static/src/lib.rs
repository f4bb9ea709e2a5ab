//! # conan-provider-static
//!
//! A whole third-party Conan provider in one small crate, written against `conan-core`
//! alone: it serves a directory of static files over HTTP with a tiny built-in server.
//!
//! - **What it runs.** A deployment's `source` directory, served on `127.0.0.1` on the
//!   config's `port`, or on an ephemeral port when none is set. The server speaks
//!   HTTP/1.1 `GET` and `HEAD`, one request per connection, picks `Content-Type` by file
//!   extension, serves a directory's `index.html`, answers 404 for what does not exist and
//!   403 for anything that resolves outside the root (`..`, symlinks). See [`MAX_HEAD_BYTES`]
//!   and [`HEAD_TIMEOUT`] for its bounds.
//! - **Health.** The readiness gate and the liveness loop probe the server with
//!   `conan_core::probe` (the config's health check; a TCP connect without one). Nothing is
//!   special-cased: a check of `/health` passes only if the site has a `health` file, so
//!   `HealthCheck::http("/")` (the site's `index.html`) is the natural one.
//! - **Logs.** One access-log line per request plus lifecycle lines, kept in a bounded ring
//!   per deployment ([`LOG_LINES`]) and broadcast to followers.
//! - **Metrics.** Requests and bytes received and sent (`network_rx_bytes`,
//!   `network_tx_bytes`), uptime, port, and `memory_bytes`: an estimate of what the
//!   provider holds for the deployment (its log ring and open connections), since the
//!   server shares this process. [`StaticProvider::requests_served`] has the request count.
//!
//! ## Where its state lives
//!
//! The provider is stateless across instances: everything needed to find a deployment
//! again is in the [`RuntimeInfo::details`] it returns (`port`, `root`, `revision`; see
//! [`DETAIL_PORT`] and friends), which the manager persists and hands back in every
//! [`KnownDeployment`]. An instance keeps the servers it runs (and their logs) in memory;
//! dropping the instance aborts them and frees their ports. A **fresh** instance holds
//! nothing, so it answers `NotFound` for status, logs, metrics and health until
//! [`recover`](Provider::recover) (or a deploy or start) serves the deployment again:
//! `recover` re-serves each deployment the store knows as running on its recorded port,
//! reports stopped ones stopped, and answers failed (with a reason) when the directory
//! vanished or the port is taken. `start` of a stopped deployment works from the details
//! alone, too.
//!
//! ## Provider options
//!
//! `[provider_options.static]` decodes into [`StaticOptions`]:
//!
//! ```toml
//! [provider_options.static]
//! startup_delay_ms = 2000   # wait this long before accepting connections (default 0)
//! ```
//!
//! The delay makes a slow app out of a static site, for testing what happens while one
//! starts (the conformance suite's mid-deploy cancellation uses it).
//!
//! ## Use
//!
//! ```no_run
//! use std::sync::Arc;
//! use conan_core::{DeploymentConfig, DeploymentManager, HealthCheck};
//! use conan_provider_static::StaticProvider;
//!
//! # async fn demo() -> conan_core::Result<()> {
//! let manager = DeploymentManager::builder()
//!     .provider(StaticProvider::new())
//!     .build()
//!     .await?;
//! let config = DeploymentConfig::builder("docs")
//!     .source("./public")
//!     .provider("static")
//!     .health_check(HealthCheck::http("/"))
//!     .build()?;
//! let record = manager.deploy(config).await?;
//! println!("serving at {:?}", record.runtime.and_then(|r| r.url.clone()));
//! # Ok(())
//! # }
//! ```

mod health;
mod http;
mod launch;
mod logbook;
mod options;
mod provider;
mod registry;
mod server;
mod state;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use conan_core::DeploymentId;
#[cfg(doc)]
use conan_core::{KnownDeployment, Provider, RuntimeInfo};

use crate::state::{Entry, State};

pub use crate::http::{HEAD_TIMEOUT, MAX_HEAD_BYTES};
pub use crate::logbook::RING_LINES as LOG_LINES;
pub use crate::options::StaticOptions;
pub use crate::registry::live_listeners;

/// The provider's name, as written in `DeploymentConfig::provider`.
pub const NAME: &str = "static";

/// [`RuntimeInfo::details`] key: the port the deployment is served on (a number).
pub const DETAIL_PORT: &str = "port";
/// [`RuntimeInfo::details`] key: the canonical directory served (a string).
pub const DETAIL_ROOT: &str = "root";
/// [`RuntimeInfo::details`] key: the revision served (a number).
pub const DETAIL_REVISION: &str = "revision";

/// Serves directories of static files over HTTP; see the [crate documentation](crate).
///
/// Dropping it stops every server it runs.
pub struct StaticProvider {
    deployments: Mutex<HashMap<DeploymentId, Entry>>,
}

impl std::fmt::Debug for StaticProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticProvider")
            .field("deployments", &self.lock().len())
            .finish()
    }
}

impl Default for StaticProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticProvider {
    /// A provider holding nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            deployments: Mutex::new(HashMap::new()),
        }
    }

    /// Requests the current server of `deployment` answered, if this instance serves it.
    #[must_use]
    pub fn requests_served(&self, deployment: &DeploymentId) -> Option<u64> {
        match &self.lock().get(deployment)?.state {
            State::Running(server) => Some(server.stats.requests.load(Ordering::Relaxed)),
            _ => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DeploymentId, Entry>> {
        self.deployments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
