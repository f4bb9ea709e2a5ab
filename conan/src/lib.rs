//! # Conan
//!
//! Deploys applications — Node.js services first — to pluggable targets and keeps them
//! healthy. This facade re-exports [`conan_core`] (the model, the [`DeploymentManager`],
//! events and stores) and, behind Cargo features, the providers:
//!
//! | feature | what it adds |
//! |---|---|
//! | `local` (default) | [`local`]: supervised local processes |
//! | `docker` | `docker`: containers on a Docker daemon |
//! | `sqlite` | [`store::SqliteStore`](conan_core::store): durable state in SQLite |
//! | `monitor` | `monitor`: health checks that restart, metrics history, Prometheus, alerts |
//! | `proxy` | `proxy`: the reverse proxy that gives deployments a stable endpoint |
//! | `testing` | `testing`: `MemoryProvider` and the provider conformance suite |
//! | `tools` | `tools`: the seven agent tools (deploy, monitor, update, stop, list, logs, remove) with JSON Schemas |
//! | `full` | `local`, `docker`, `sqlite`, `monitor`, `proxy` and `tools` |
//!
//! ```no_run
//! use conan::prelude::*;
//!
//! # async fn demo() -> conan::Result<()> {
//! let manager = DeploymentManager::builder()
//!     .provider(conan::local::LocalProvider::builder().build()?)
//!     .build()
//!     .await?;
//! let config = DeploymentConfig::builder("hello")
//!     .source("examples/apps/hello")
//!     .health_check(HealthCheck::http("/health"))
//!     .build()?;
//! let record = manager.deploy(config).await?;
//! println!("{} is {} at {:?}", record.name, record.status, record.runtime.and_then(|r| r.url.clone()));
//! manager.stop("hello").await?;
//! # Ok(())
//! # }
//! ```

pub use conan_core::*;

/// Supervised local processes (feature `local`).
#[cfg(feature = "local")]
pub mod local {
    pub use conan_provider_local::*;
}

/// Containers on a Docker daemon (feature `docker`).
#[cfg(feature = "docker")]
pub mod docker {
    pub use conan_provider_docker::*;
}

/// Keeping deployments healthy after go-live (feature `monitor`).
#[cfg(feature = "monitor")]
pub mod monitor {
    pub use conan_monitor::*;
}

/// The reverse proxy (feature `proxy`): set it as the manager's traffic layer
/// ([`DeploymentManagerBuilder::traffic`]) and every deployment gets a stable endpoint.
#[cfg(feature = "proxy")]
pub mod proxy {
    pub use conan_proxy::*;
}

/// The agent tools as typed functions with JSON Schemas (feature `tools`; `conan mcp` serves
/// them over MCP).
#[cfg(feature = "tools")]
pub mod tools {
    pub use conan_tools::*;
}

/// `use conan::prelude::*;`: what an embedder and a provider author need.
///
/// - Everything of [`conan_core::prelude`]: the [`Provider`] trait and what it is handed
///   and answers (specs, known state, runtime info, observed status, metrics, health,
///   logs, events), the config and error types, and `async_trait`.
/// - For embedding: the [`DeploymentManager`] and its builder, requests and handles,
///   records and statuses, events, stores, retry and timeout policies.
/// - The providers of the enabled features: `LocalProvider` (`local`), `DockerProvider`
///   (`docker`), `SqliteStore` (`sqlite`), `MemoryProvider` (`testing`).
pub mod prelude {
    pub use conan_core::prelude::*;

    pub use conan_core::{
        AuditQuery, DeploymentConfigBuilder, DeploymentManager, DeploymentManagerBuilder,
        DeploymentRecord, Env, EventEnvelope, MemoryStore, OperationHandle, OperationId,
        OperationKind, Outcome, Priority, Request, RetryPolicy, RevisionRecord, SecretString,
        StateStore, StatusKind, SubmitOptions,
    };

    pub use conan_core::manager::CallTimeouts;
    #[cfg(feature = "sqlite")]
    pub use conan_core::store::SqliteStore;
    #[cfg(feature = "testing")]
    pub use conan_core::testing::MemoryProvider;
    #[cfg(feature = "docker")]
    pub use conan_provider_docker::{DockerProvider, DockerProviderBuilder};
    #[cfg(feature = "local")]
    pub use conan_provider_local::{LocalProvider, LocalProviderBuilder};
}
