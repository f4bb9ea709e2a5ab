//! Identifiers: deployments, revisions and queued operations.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The stable identifier of a deployment, assigned when it is first deployed.
///
/// It is cheap to clone (a shared string) and looks like `dep-3f9c1a2b7d4e5f60`.
/// A deployment also has a human name (unique among live deployments); the manager
/// accepts either wherever it takes a "deployment reference".
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeploymentId(Arc<str>);

impl DeploymentId {
    /// A fresh random identifier.
    #[must_use]
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = *b"dep-0000000000000000";
        let n = fastrand::u64(..);
        for (i, b) in buf[4..].iter_mut().enumerate() {
            *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        // Only ASCII was written, so the buffer is valid UTF-8.
        Self(String::from_utf8_lossy(&buf).into())
    }

    /// Wraps an existing identifier (for example one read back from a store).
    #[must_use]
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The identifier as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeploymentId({})", self.0)
    }
}

// Hash, Eq and Ord are those of the inner `str`, so maps keyed by id can be searched by `&str`.
impl std::borrow::Borrow<str> for DeploymentId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for DeploymentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for DeploymentId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for DeploymentId {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

/// A revision number of one deployment: 1 for the first deploy, then one more for every
/// update or rollback. Rolling back creates a *new* revision carrying an older config,
/// the way Kubernetes rollouts do, so the history only ever grows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// The first revision of every deployment.
    pub const FIRST: Revision = Revision(1);

    /// The revision after this one.
    #[must_use]
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one queued or running operation of the [`DeploymentManager`](crate::DeploymentManager).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(pub u64);

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op-{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_dep_and_sixteen_hex_digits() {
        let a = DeploymentId::generate();
        let b = DeploymentId::generate();
        assert_ne!(a, b);
        let hex = a.as_str().strip_prefix("dep-").unwrap();
        assert_eq!(hex.len(), 16);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
