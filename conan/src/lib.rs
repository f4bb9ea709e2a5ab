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
//! | `testing` | `testing`: `MemoryProvider` and the provider conformance suite |
//! | `full` | `local`, `docker` and `sqlite` |
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

/// `use conan::prelude::*` for the common types.
pub mod prelude {
    pub use conan_core::prelude::*;
    pub use conan_core::{DeploymentManager, DeploymentRecord, Request, SubmitOptions};
}
