//! Environment variables whose values are secrets.
//!
//! Conan treats every env value as a secret: [`Env`]'s `Debug` shows names only, and no
//! event, error or log line of Conan contains a value. Values leave an [`Env`] only through
//! [`Env::iter`] / [`Env::get`] (for a provider to hand them to the app) and through
//! `Serialize` (so a store can persist the config).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A string whose `Debug` and `Display` never show its content.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call this only to hand the value to the application.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Environment variables for an application, ordered by name.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Env(BTreeMap<String, SecretString>);

impl Env {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), SecretString::new(value));
    }

    /// Removes a variable; returns whether it was set.
    pub fn remove(&mut self, key: &str) -> bool {
        self.0.remove(key).is_some()
    }

    /// The value of `key`, if set.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(SecretString::expose)
    }

    /// Whether `key` is set.
    #[must_use]
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Names and values, for handing to the application.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.expose()))
    }

    /// The variable names (safe to print).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Number of variables.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no variable is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Copies every variable of `other` over this set (used for `--env` overrides).
    pub fn extend_from(&mut self, other: &Env) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut env = Env::new();
        for (k, v) in iter {
            env.insert(k, v);
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_not_values() {
        let env: Env = [("DATABASE_URL", "postgres://user:hunter2@db")]
            .into_iter()
            .collect();
        let shown = format!("{env:?}");
        assert!(shown.contains("DATABASE_URL"));
        assert!(!shown.contains("hunter2"));
        assert_eq!(env.get("DATABASE_URL"), Some("postgres://user:hunter2@db"));
    }

    #[test]
    fn serializes_values_for_persistence() {
        let env: Env = [("A", "1")].into_iter().collect();
        assert_eq!(serde_json::to_string(&env).unwrap(), r#"{"A":"1"}"#);
    }
}
