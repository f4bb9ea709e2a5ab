//! Choosing a provider for a deployment.

use std::sync::Arc;

use crate::config::DeploymentConfig;
use crate::error::{Error, Result};
use crate::provider::DynProvider;

/// The providers a manager can deploy with, in registration order.
///
/// Choice for a config:
/// 1. `config.provider` names one: that one (an error if unknown, or if it lacks a required
///    capability);
/// 2. else, when `config.requirements` is not empty: the first registered provider whose
///    capabilities include them all;
/// 3. else the default provider (set with [`ProviderRegistry::set_default`], otherwise the
///    first registered).
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: Vec<Arc<DynProvider>>,
    /// The providers' names, shared by every record that names them.
    names: Vec<Arc<str>>,
    default: Option<String>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("providers", &self.names())
            .field("default", &self.default)
            .finish()
    }
}

impl ProviderRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider. Names are unique: one rule for the builder and for
    /// [`DeploymentManager::add_provider`](crate::DeploymentManager::add_provider).
    ///
    /// # Errors
    /// [`Error::ProviderExists`] when a provider of that name is registered already.
    pub fn register(&mut self, provider: Arc<DynProvider>) -> Result<()> {
        if self.get(provider.name()).is_some() {
            return Err(Error::ProviderExists {
                name: provider.name().to_owned(),
            });
        }
        self.names.push(provider.name().into());
        self.providers.push(provider);
        Ok(())
    }

    /// The registered name `name` as a shared string (no allocation per deployment).
    pub(crate) fn shared_name(&self, name: &str) -> Arc<str> {
        self.names
            .iter()
            .find(|n| ***n == *name)
            .cloned()
            .unwrap_or_else(|| name.into())
    }

    /// Makes `name` the default.
    pub fn set_default(&mut self, name: impl Into<String>) {
        self.default = Some(name.into());
    }

    /// The registered names, in order.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.name()).collect()
    }

    /// The provider called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Arc<DynProvider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Every provider.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<DynProvider>> {
        self.providers.iter()
    }

    /// Picks the provider for `config` (see the type docs).
    ///
    /// # Errors
    /// [`Error::NoProvider`] saying why none fits.
    pub fn resolve(&self, config: &DeploymentConfig) -> Result<Arc<DynProvider>> {
        let required = &config.requirements;
        if let Some(name) = &config.provider {
            let p = self.get(name).ok_or_else(|| Error::NoProvider {
                reason: format!("no provider named '{name}' (registered: {})", self.list()),
            })?;
            let missing = p.capabilities().missing(required);
            if !missing.is_empty() {
                return Err(Error::NoProvider {
                    reason: format!(
                        "provider '{name}' lacks required capabilities: {}",
                        join(&missing)
                    ),
                });
            }
            return Ok(p.clone());
        }
        if !required.is_empty() {
            return self
                .providers
                .iter()
                .find(|p| p.capabilities().satisfies(required))
                .cloned()
                .ok_or_else(|| Error::NoProvider {
                    reason: format!(
                        "no registered provider ({}) has all of: {}",
                        self.list(),
                        join(&required.iter().collect::<Vec<_>>())
                    ),
                });
        }
        let default = match &self.default {
            Some(name) => self.get(name),
            None => self.providers.first(),
        };
        default.cloned().ok_or_else(|| Error::NoProvider {
            reason: "no provider is registered".into(),
        })
    }

    fn list(&self) -> String {
        if self.providers.is_empty() {
            "none".into()
        } else {
            self.names().join(", ")
        }
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
