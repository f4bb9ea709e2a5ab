//! The traffic seam (see [`crate::traffic`]): what the manager tells a traffic layer on
//! deploy, update, restart, stop, remove and recovery, with a recording traffic layer.

use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::config::EndpointConfig;
use crate::status::StatusKind;
use crate::testing::MemoryProvider;
use crate::traffic::{Routes, Traffic, TrafficStats};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Open(Option<SocketAddr>),
    Route(Vec<u16>, bool),
    Close,
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(DeploymentId, Call)>>,
    next: Mutex<u16>,
    taken: Option<SocketAddr>,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }
}

#[async_trait]
impl Traffic for Recorder {
    async fn open(
        &self,
        deployment: &DeploymentId,
        _name: &str,
        config: &EndpointConfig,
        kept: Option<SocketAddr>,
    ) -> Result<SocketAddr> {
        let want = config.listen.or(kept);
        if want.is_some() && want == self.taken {
            return Err(Error::InvalidConfig {
                problems: vec![ConfigProblem::new("endpoint.listen", "in use by pid 1")],
            });
        }
        self.calls
            .lock()
            .unwrap()
            .push((deployment.clone(), Call::Open(kept)));
        let mut next = self.next.lock().unwrap();
        *next += 1;
        Ok(want.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 18000 + *next))))
    }
    async fn route(&self, deployment: &DeploymentId, routes: Routes) -> Result<()> {
        let ports = routes.backends.iter().map(|b| b.addr.port()).collect();
        self.calls
            .lock()
            .unwrap()
            .push((deployment.clone(), Call::Route(ports, routes.hold)));
        Ok(())
    }
    async fn close(&self, deployment: &DeploymentId) {
        self.calls
            .lock()
            .unwrap()
            .push((deployment.clone(), Call::Close));
    }
    fn stats(&self, _: &DeploymentId) -> Option<TrafficStats> {
        None
    }
}

async fn manager(
    provider: &MemoryProvider,
    traffic: Arc<Recorder>,
    store: Arc<dyn StateStore>,
) -> DeploymentManager {
    DeploymentManager::builder()
        .provider(provider.clone())
        .traffic_arc(traffic)
        .store_arc(store)
        .build()
        .await
        .unwrap()
}

fn port_of(record: &DeploymentRecord) -> u16 {
    record.runtime.as_ref().unwrap().instances[0].port.unwrap()
}

#[tokio::test]
async fn the_endpoint_is_opened_kept_routed_and_closed() {
    let provider = MemoryProvider::new();
    let traffic = Arc::new(Recorder::default());
    let store: Arc<dyn StateStore> = Arc::new(crate::store::MemoryStore::new());
    let m = manager(&provider, traffic.clone(), store.clone()).await;
    let config = DeploymentConfig::builder("web").build().unwrap();
    let rec = m.deploy(config.clone()).await.unwrap();
    let endpoint = rec.runtime.as_ref().unwrap().endpoint.expect("an endpoint");
    let p1 = port_of(&rec);
    let calls = traffic.calls();
    assert_eq!(calls[0], Call::Open(None));
    // Deploying holds requests; running routes to the instance.
    assert!(calls.contains(&Call::Route(vec![], true)));
    assert_eq!(calls.last(), Some(&Call::Route(vec![p1], false)));

    let mut next = config.clone();
    next.env.insert("V", "2");
    let rec = m.update("web", next).await.unwrap();
    assert_eq!(rec.runtime.as_ref().unwrap().endpoint, Some(endpoint));
    let p2 = port_of(&rec);
    assert_eq!(traffic.calls().last(), Some(&Call::Route(vec![p2], false)));

    let rec = m.stop("web").await.unwrap();
    assert_eq!(rec.status.kind(), StatusKind::Stopped);
    assert_eq!(
        rec.runtime.as_ref().unwrap().endpoint,
        Some(endpoint),
        "kept while stopped"
    );
    let calls = traffic.calls();
    let stopping = calls
        .iter()
        .rposition(|c| *c == Call::Route(vec![], true))
        .unwrap();
    assert_eq!(calls.last(), Some(&Call::Route(vec![], false)));
    assert!(stopping < calls.len() - 1);

    let rec = m.start("web").await.unwrap();
    assert_eq!(rec.runtime.as_ref().unwrap().endpoint, Some(endpoint));

    // A new manager on the same store opens the kept endpoint again.
    m.shutdown().await;
    let traffic2 = Arc::new(Recorder::default());
    let m2 = manager(&provider, traffic2.clone(), store).await;
    m2.recover().await.unwrap();
    assert_eq!(traffic2.calls()[0], Call::Open(Some(endpoint)));
    let rec = m2.get("web").unwrap();
    assert_eq!(
        traffic2.calls().last(),
        Some(&Call::Route(vec![port_of(&rec)], false))
    );

    m2.remove("web").await.unwrap();
    assert_eq!(traffic2.calls().last(), Some(&Call::Close));
}

#[tokio::test]
async fn a_taken_endpoint_fails_the_deploy_and_leaves_nothing() {
    let provider = MemoryProvider::new();
    let taken: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let traffic = Arc::new(Recorder {
        taken: Some(taken),
        ..Recorder::default()
    });
    let store: Arc<dyn StateStore> = Arc::new(crate::store::MemoryStore::new());
    let m = manager(&provider, traffic.clone(), store.clone()).await;
    let mut config = DeploymentConfig::builder("web").build().unwrap();
    config.endpoint.listen = Some(taken);
    let err = m.deploy(config).await.unwrap_err();
    assert!(err.to_string().contains("endpoint.listen"), "{err}");
    assert!(m.list().is_empty());
    assert!(store.load_deployments().await.unwrap().is_empty());
    assert_eq!(provider.len(), 0);
    assert!(traffic.calls().is_empty());
}

#[tokio::test]
async fn without_endpoint_nothing_is_routed() {
    let provider = MemoryProvider::new();
    let traffic = Arc::new(Recorder::default());
    let store: Arc<dyn StateStore> = Arc::new(crate::store::MemoryStore::new());
    let m = manager(&provider, traffic.clone(), store).await;
    let mut config = DeploymentConfig::builder("web").build().unwrap();
    config.endpoint.enabled = false;
    let rec = m.deploy(config).await.unwrap();
    assert_eq!(rec.runtime.as_ref().unwrap().endpoint, None);
    m.restart("web").await.unwrap();
    assert!(traffic.calls().is_empty());
}

#[tokio::test]
async fn a_restart_behind_an_endpoint_falls_back_to_stop_and_start_holding_requests() {
    // MemoryProvider does not implement `replace`: the manager stops and starts, and the
    // traffic layer is told to hold requests in between.
    let provider = MemoryProvider::new();
    let traffic = Arc::new(Recorder::default());
    let store: Arc<dyn StateStore> = Arc::new(crate::store::MemoryStore::new());
    let m = manager(&provider, traffic.clone(), store).await;
    m.deploy(DeploymentConfig::builder("web").build().unwrap())
        .await
        .unwrap();
    let before = traffic.calls().len();
    let rec = m.restart("web").await.unwrap();
    let after: Vec<_> = traffic.calls()[before..].to_vec();
    assert_eq!(after.first(), Some(&Call::Route(vec![], true)), "{after:?}");
    assert!(
        !after.contains(&Call::Route(vec![], false)),
        "never refused: {after:?}"
    );
    assert_eq!(after.last(), Some(&Call::Route(vec![port_of(&rec)], false)));
}
