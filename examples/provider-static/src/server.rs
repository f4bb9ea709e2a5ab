//! One running server of a deployment (its listener task and liveness loop) and the
//! runtime details it records for finding it again.

use std::path::PathBuf;
use std::sync::Arc;

use conan_core::{InstanceInfo, Revision, RuntimeInfo, Timestamp};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::health::SharedReport;
use crate::http::Stats;
use crate::{DETAIL_PORT, DETAIL_REVISION, DETAIL_ROOT};

/// Approximate bytes of one running server besides its connections and log (task,
/// listener, counters).
pub(crate) const SERVER_BYTES: u64 = 4 * 1024;

/// What this provider recorded in a runtime's details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) port: u16,
}

impl Recorded {
    pub(crate) fn of(runtime: &RuntimeInfo) -> Option<Self> {
        let port = runtime.details.get(DETAIL_PORT)?.as_u64()?;
        let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
        runtime.details.get(DETAIL_ROOT)?.as_str()?;
        Some(Self { port })
    }
}

pub(crate) fn instance_id(port: u16, revision: Revision) -> String {
    format!("static-{port}-r{revision}")
}

/// One running server: a listener task and, with a health check, its liveness loop.
/// Dropping it aborts both (the port is released once the runtime drops the task);
/// [`Server::shutdown`] also waits for that.
pub(crate) struct Server {
    pub(crate) revision: Revision,
    pub(crate) root: PathBuf,
    pub(crate) port: u16,
    pub(crate) started_at: Timestamp,
    pub(crate) started: Instant,
    pub(crate) stats: Arc<Stats>,
    pub(crate) health: Option<SharedReport>,
    pub(crate) task: Option<JoinHandle<()>>,
    pub(crate) monitor: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn runtime(&self) -> RuntimeInfo {
        RuntimeInfo::new()
            .with_instance(
                InstanceInfo::new(instance_id(self.port, self.revision), self.revision)
                    .with_port(Some(self.port))
                    .with_started_at(Some(self.started_at)),
            )
            .with_url(format!("http://127.0.0.1:{}", self.port))
            .with_detail(DETAIL_PORT, self.port)
            .with_detail(DETAIL_ROOT, self.root.display().to_string())
            .with_detail(DETAIL_REVISION, self.revision.0)
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Aborts the server and its liveness loop and waits until both are gone (the port is
    /// free when this returns).
    pub(crate) async fn shutdown(mut self) {
        for handle in [self.task.take(), self.monitor.take()]
            .into_iter()
            .flatten()
        {
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for handle in [&self.task, &self.monitor].into_iter().flatten() {
            handle.abort();
        }
    }
}
