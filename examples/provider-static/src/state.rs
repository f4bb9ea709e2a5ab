//! What an instance holds of each deployment (its log and whether, and what, it serves)
//! and the transitions between those states.

use std::sync::Arc;

use conan_core::{DeploymentId, Error, OperationContext, Phase, Result, Revision, RuntimeInfo};

use crate::StaticProvider;
use crate::launch::system_line;
use crate::logbook::LogBook;
use crate::server::Server;

/// What an instance holds of one deployment.
pub(crate) enum State {
    Running(Box<Server>),
    /// A deploy, start or recovery is bringing it up.
    Starting,
    Stopped,
    Failed(String),
}

pub(crate) struct Entry {
    pub(crate) log: Arc<LogBook>,
    pub(crate) state: State,
}

/// Sets a deployment that is still `Starting` to failed when the call bringing it up is
/// dropped before it finished (an abandoned call).
pub(crate) struct StartingGuard<'a> {
    provider: &'a StaticProvider,
    id: &'a DeploymentId,
    armed: bool,
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(entry) = self.provider.lock().get_mut(self.id)
            && matches!(entry.state, State::Starting)
        {
            entry.state = State::Failed("the call starting it was abandoned".to_owned());
        }
    }
}

impl StaticProvider {
    /// The runtime of the server of `id`, if one runs (at `revision`, when given).
    pub(crate) fn running(
        &self,
        id: &DeploymentId,
        revision: Option<Revision>,
    ) -> Option<RuntimeInfo> {
        match &self.lock().get(id)?.state {
            State::Running(s) if s.is_alive() && revision.is_none_or(|r| r == s.revision) => {
                Some(s.runtime())
            }
            _ => None,
        }
    }

    /// Puts the deployment into `state` (creating its entry), answering its log and the
    /// server it ran before, if any.
    pub(crate) fn replace(
        &self,
        id: &DeploymentId,
        state: State,
    ) -> (Arc<LogBook>, Option<Box<Server>>) {
        let mut map = self.lock();
        let entry = map.entry(id.clone()).or_insert_with(|| Entry {
            log: Arc::new(LogBook::new()),
            state: State::Stopped,
        });
        let old = std::mem::replace(&mut entry.state, state);
        let server = match old {
            State::Running(s) => Some(s),
            _ => None,
        };
        (entry.log.clone(), server)
    }

    pub(crate) fn starting<'a>(&'a self, id: &'a DeploymentId) -> StartingGuard<'a> {
        StartingGuard {
            provider: self,
            id,
            armed: true,
        }
    }

    /// Records the outcome of bringing a deployment up: its server, or why it failed.
    pub(crate) fn settle(
        &self,
        guard: &mut StartingGuard<'_>,
        result: Result<Server>,
    ) -> Result<RuntimeInfo> {
        guard.armed = false;
        let mut map = self.lock();
        let entry = map.get_mut(guard.id);
        match (result, entry) {
            (Ok(server), Some(entry)) => {
                let runtime = server.runtime();
                entry.state = State::Running(Box::new(server));
                Ok(runtime)
            }
            // Removed meanwhile (only a caller breaking the one-call-at-a-time rule):
            // the server is dropped, and stops.
            (Ok(_), None) => Err(Error::deployment_not_found(guard.id.as_str())),
            (Err(e), Some(entry)) => {
                entry.state = State::Failed(e.to_string());
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Stops what runs of `id` (its entry stays, `Stopped`), waiting until its port is
    /// free; answers whether something ran.
    pub(crate) async fn stop_server(&self, ctx: &OperationContext, id: &DeploymentId) -> bool {
        let old = {
            let mut map = self.lock();
            match map.get_mut(id) {
                Some(entry) => {
                    let log = entry.log.clone();
                    match std::mem::replace(&mut entry.state, State::Stopped) {
                        State::Running(s) => Some((s, log)),
                        _ => None,
                    }
                }
                None => None,
            }
        };
        match old {
            Some((server, log)) => {
                ctx.events.progress(
                    id,
                    Phase::Stopping,
                    format!("stopping the server on port {}", server.port),
                );
                let port = server.port;
                server.shutdown().await;
                log.push(system_line(format!("stopped serving on port {port}")));
                true
            }
            None => false,
        }
    }
}
