//! Log aggregation: one query and one follow stream over many deployments, and
//! log-derived counters.
//!
//! - [`aggregate`] answers a [`LogQuery`] over the deployments a [`LogSelector`] picks
//!   (all, by name, by label), each line tagged with its deployment ([`TaggedLine`]).
//!   Lines are merged by timestamp: the history of every deployment is merged exactly;
//!   while following, live lines come in the order they arrive (when several are
//!   waiting, the oldest first). Without `follow`, `tail` keeps the last N lines of the
//!   merged answer; with it, the last N of each deployment precede the live lines. A
//!   deployment whose logs cannot be read is left out with an
//!   [`OutputStream::System`](conan_core::OutputStream::System) line saying why; the others go on.
//! - [`LogCounters`]: lines by level and a sliding minute of lines and errors per
//!   deployment, fed by the monitor following every running deployment's logs (new
//!   deployments are picked up within a second of running, removed ones dropped, a stream
//!   that ends is re-opened with a backoff of 1 s doubling to 30 s).

mod counters;
mod follow;
mod merge;

use std::sync::Arc;

use conan_core::{DeploymentManager, DeploymentRecord, LogLine, LogQuery, Result};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use counters::{LEVELS, LogCounters};
pub(crate) use follow::run;
pub use merge::merge;

/// One line of an aggregated answer: the deployment's name and the line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedLine {
    /// The deployment's name.
    pub deployment: Arc<str>,
    /// The line.
    #[serde(flatten)]
    pub line: LogLine,
}

/// A stream of [`TaggedLine`]s.
pub type TaggedLogStream = BoxStream<'static, TaggedLine>;

/// Which deployments an aggregated query reads: those named (names or ids) and those
/// carrying every label; all when both lists are empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogSelector {
    /// Deployments by name or id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Labels (`key`, `value`) a deployment must all carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
}

impl LogSelector {
    /// Every deployment.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// The deployments named (names or ids).
    #[must_use]
    pub fn names<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Self {
            names: names.into_iter().map(Into::into).collect(),
            labels: Vec::new(),
        }
    }

    /// The same selector, also requiring the label `key=value`.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// The deployments of `manager` it picks, oldest first.
    ///
    /// # Errors
    /// [`Error::NotFound`](conan_core::Error::NotFound) for a name that is no deployment.
    pub fn select(&self, manager: &DeploymentManager) -> Result<Vec<DeploymentRecord>> {
        let mut picked = if self.names.is_empty() {
            manager.list()
        } else {
            let mut picked: Vec<DeploymentRecord> = Vec::with_capacity(self.names.len());
            for name in &self.names {
                let record = manager.get(name)?;
                if !picked.iter().any(|r| r.id == record.id) {
                    picked.push(record);
                }
            }
            picked
        };
        picked.retain(|r| {
            self.labels
                .iter()
                .all(|(k, v)| r.config.labels.get(k).is_some_and(|have| have == v))
        });
        Ok(picked)
    }
}

/// Answers `query` over the deployments `selector` picks, merged by timestamp (see the
/// module docs).
///
/// # Errors
/// [`Error::NotFound`](conan_core::Error::NotFound) for a name that is no deployment. A deployment whose logs cannot be
/// read is not an error: the answer says so in a line of its own.
pub async fn aggregate(
    manager: &DeploymentManager,
    selector: &LogSelector,
    query: &LogQuery,
) -> Result<TaggedLogStream> {
    let records = selector.select(manager)?;
    let opened = futures::future::join_all(records.iter().map(|r| async move {
        let stream = manager.logs(r.id.as_str(), query).await;
        (Arc::clone(&r.name), stream)
    }))
    .await;
    let mut streams = Vec::with_capacity(opened.len());
    for (name, stream) in opened {
        match stream {
            Ok(stream) => streams.push((name, stream)),
            Err(e) => streams.push((name, merge::notice(&e))),
        }
    }
    let merged = merge(streams);
    match query.tail {
        Some(n) if !query.follow => {
            use futures::StreamExt;
            let mut lines: Vec<TaggedLine> = merged.collect().await;
            let drop = lines.len().saturating_sub(n);
            lines.drain(..drop);
            Ok(futures::stream::iter(lines).boxed())
        }
        _ => Ok(merged),
    }
}

impl crate::Monitor {
    /// [`aggregate`] over this monitor's manager.
    ///
    /// # Errors
    /// See [`aggregate`].
    pub async fn logs(&self, selector: &LogSelector, query: &LogQuery) -> Result<TaggedLogStream> {
        aggregate(&self.shared.manager, selector, query).await
    }

    /// The log-derived counters.
    #[must_use]
    pub fn log_counters(&self) -> &LogCounters {
        &self.shared.log_counters
    }
}

#[cfg(test)]
mod tests;
