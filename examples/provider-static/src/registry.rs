//! Every listener this process holds for a deployment, process-wide: what the conformance
//! suite's leftover check (and anyone debugging) asks "is anything of it still bound?".
//!
//! Binding a port and registering it, and closing it and unregistering it, each happen
//! under the registry's lock, so the registry and the sockets never disagree, not even
//! while one provider instance is being dropped and a fresh one rebinds the same port.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};

use conan_core::{DeploymentId, Revision};
use tokio::net::TcpListener;

static LIVE: Mutex<Vec<(DeploymentId, Revision, u16)>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<(DeploymentId, Revision, u16)>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A listener on `127.0.0.1` and its entry in the registry; dropping it closes the socket
/// and removes the entry at once.
#[derive(Debug)]
pub(crate) struct BoundListener {
    listener: Option<TcpListener>,
    id: DeploymentId,
    revision: Revision,
    port: u16,
}

impl BoundListener {
    /// Binds `127.0.0.1:port` (0: an ephemeral port) for one revision of a deployment.
    /// Must run inside a Tokio runtime.
    pub(crate) fn bind(port: u16, id: &DeploymentId, revision: Revision) -> io::Result<Self> {
        let mut live = live();
        let std = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        std.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std)?;
        let port = listener.local_addr()?.port();
        live.push((id.clone(), revision, port));
        Ok(Self {
            listener: Some(listener),
            id: id.clone(),
            revision,
            port,
        })
    }

    /// The bound port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The listener (present until drop).
    pub(crate) fn listener(&self) -> &TcpListener {
        self.listener
            .as_ref()
            .unwrap_or_else(|| unreachable!("the listener is taken only by drop"))
    }
}

impl Drop for BoundListener {
    fn drop(&mut self) {
        let mut live = live();
        drop(self.listener.take());
        if let Some(i) = live.iter().position(|(id, rev, port)| {
            *id == self.id && *rev == self.revision && *port == self.port
        }) {
            live.swap_remove(i);
        }
    }
}

/// The listeners this process still holds for `deployment`, across every provider
/// instance, as `"127.0.0.1:<port> (revision <n>)"`. Empty once every server of it is
/// stopped, removed, cancelled or dropped.
#[must_use]
pub fn live_listeners(deployment: &DeploymentId) -> Vec<String> {
    live()
        .iter()
        .filter(|(id, _, _)| id == deployment)
        .map(|(_, revision, port)| format!("127.0.0.1:{port} (revision {revision})"))
        .collect()
}
