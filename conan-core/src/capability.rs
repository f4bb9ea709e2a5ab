//! What a provider can do, and what a deployment requires.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One thing a provider may be able to do. Deployments list the ones they need in
/// `requirements`; the manager's registry picks a provider that has them all.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Capability {
    /// Replaces replicas one batch at a time, each batch health-gated.
    RollingUpdate,
    /// Starts the new revision beside the old one and switches once it is healthy.
    BlueGreen,
    /// Runs the configured health check and gates readiness on it.
    HealthChecks,
    /// Reports CPU and memory.
    Metrics,
    /// Serves the app on a custom domain.
    CustomDomains,
    /// Streams logs as they are written (`LogQuery::follow`).
    LogFollow,
    /// Adopts what an earlier manager process started (`Provider::recover`).
    Recovery,
    /// Runs more than one replica of a deployment.
    Replicas,
    /// Builds an artifact (an image) from the source directory.
    Build,
    /// Enforces memory and CPU limits.
    ResourceLimits,
    /// Restarts crashed instances by itself according to the restart policy.
    Supervision,
    /// Runs the app on this machine, so a local port is reachable.
    LocalNetwork,
    /// Changes the replica count of a running deployment without a new revision
    /// (`Provider::scale`), which autoscaling needs.
    Scale,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 13] = [
        Capability::RollingUpdate,
        Capability::BlueGreen,
        Capability::HealthChecks,
        Capability::Metrics,
        Capability::CustomDomains,
        Capability::LogFollow,
        Capability::Recovery,
        Capability::Replicas,
        Capability::Build,
        Capability::ResourceLimits,
        Capability::Supervision,
        Capability::LocalNetwork,
        Capability::Scale,
    ];

    /// The kebab-case name used in configs (`"blue-green"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::RollingUpdate => "rolling-update",
            Capability::BlueGreen => "blue-green",
            Capability::HealthChecks => "health-checks",
            Capability::Metrics => "metrics",
            Capability::CustomDomains => "custom-domains",
            Capability::LogFollow => "log-follow",
            Capability::Recovery => "recovery",
            Capability::Replicas => "replicas",
            Capability::Build => "build",
            Capability::ResourceLimits => "resource-limits",
            Capability::Supervision => "supervision",
            Capability::LocalNetwork => "local-network",
            Capability::Scale => "scale",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Capability::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown capability '{s}' (known: {})", names.join(", "))
            })
    }
}

/// A set of [`Capability`] values.
#[derive(Clone, PartialEq, Eq, Default, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capabilities(BTreeSet<Capability>);

impl Capabilities {
    /// The empty set.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Every capability.
    #[must_use]
    pub fn all() -> Self {
        Capability::ALL.into_iter().collect()
    }

    /// This set plus `cap`.
    #[must_use]
    pub fn with(mut self, cap: Capability) -> Self {
        self.0.insert(cap);
        self
    }

    /// Whether `cap` is in the set.
    #[must_use]
    pub fn contains(&self, cap: Capability) -> bool {
        self.0.contains(&cap)
    }

    /// Whether every capability of `required` is in this set.
    #[must_use]
    pub fn satisfies(&self, required: &Capabilities) -> bool {
        required.0.is_subset(&self.0)
    }

    /// The capabilities of `required` that this set lacks.
    #[must_use]
    pub fn missing(&self, required: &Capabilities) -> Vec<Capability> {
        required.0.difference(&self.0).copied().collect()
    }

    /// Iterates in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        self.0.iter().copied()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(c.as_str().parse::<Capability>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
        assert!("teleport".parse::<Capability>().is_err());
    }

    #[test]
    fn satisfies_and_missing() {
        let have: Capabilities = [Capability::Metrics, Capability::BlueGreen]
            .into_iter()
            .collect();
        let need: Capabilities = [Capability::Metrics].into_iter().collect();
        assert!(have.satisfies(&need));
        let need2 = need.clone().with(Capability::CustomDomains);
        assert!(!have.satisfies(&need2));
        assert_eq!(have.missing(&need2), vec![Capability::CustomDomains]);
    }
}
