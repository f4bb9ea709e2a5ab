//! What the manager tells its traffic layer, and when (the rules are in
//! [`crate::traffic`]): the endpoint opened before a deploy, kept in the record's runtime,
//! routes sent on every status change, the cutover handed to `update` and `replace`.

use std::net::SocketAddr;
use std::sync::Arc;

use super::ops::Op;
use crate::config::DeploymentConfig;
use crate::error::Result;
use crate::id::DeploymentId;
use crate::provider::RuntimeInfo;
use crate::status::{DeploymentStatus, StatusKind};
use crate::store::DeploymentRecord;
use crate::traffic::{Cutover, DynTraffic, Routes};

/// The endpoint a record keeps.
pub(super) fn endpoint_of(record: &DeploymentRecord) -> Option<SocketAddr> {
    record.runtime.as_ref().and_then(|r| r.endpoint)
}

/// Puts `endpoint` into the record's runtime (making one when it has none).
pub(super) fn set_endpoint(record: &mut DeploymentRecord, endpoint: Option<SocketAddr>) {
    match &mut record.runtime {
        Some(runtime) if runtime.endpoint != endpoint => {
            Arc::make_mut(runtime).endpoint = endpoint;
        }
        Some(_) => {}
        None if endpoint.is_some() => {
            record.runtime = Some(Arc::new(RuntimeInfo::new().with_endpoint(endpoint)));
        }
        None => {}
    }
}

/// Carries the endpoint a record had over a change that replaced its runtime (a provider's
/// answer knows nothing of endpoints), unless the endpoint was turned off or the
/// deployment removed.
pub(super) fn keep_endpoint(record: &mut DeploymentRecord, before: Option<SocketAddr>) {
    if before.is_none()
        || endpoint_of(record).is_some()
        || !record.config.endpoint.enabled
        || record.status.kind() == StatusKind::Removed
    {
        return;
    }
    set_endpoint(record, before);
}

impl Op<'_> {
    fn traffic(&self) -> Option<Arc<DynTraffic>> {
        self.inner.traffic.clone()
    }

    /// Opens the endpoint `config` asks for (or closes the one `record` has when `config`
    /// turns it off). Answers the address to keep.
    ///
    /// # Errors
    /// The traffic layer's refusal (an address in use).
    pub(super) async fn ensure_endpoint(
        &self,
        record: &DeploymentRecord,
        config: &DeploymentConfig,
    ) -> Result<Option<SocketAddr>> {
        let Some(traffic) = self.traffic() else {
            return Ok(None);
        };
        if !config.endpoint.enabled {
            if endpoint_of(record).is_some() {
                traffic.close(&record.id).await;
            }
            return Ok(None);
        }
        let addr = traffic
            .open(
                &record.id,
                &record.name,
                &config.endpoint,
                endpoint_of(record),
            )
            .await?;
        Ok(Some(addr))
    }

    /// Opens the kept endpoint again after a manager restart; a failure is logged (the
    /// deployment runs; its endpoint does not answer).
    pub(super) async fn reopen_endpoint(&self, record: &DeploymentRecord) {
        if record.status.kind() == StatusKind::Removed || !record.config.endpoint.enabled {
            return;
        }
        if let Err(e) = self.ensure_endpoint(record, &record.config).await {
            tracing::error!(deployment = %record.id, error = %e, "cannot open the deployment's endpoint again");
        }
    }

    /// Sends the routes `record`'s status implies (closing the endpoint once removed).
    pub(super) async fn sync_traffic(&self, record: &DeploymentRecord) {
        let Some(traffic) = self.traffic() else {
            return;
        };
        if record.status.kind() == StatusKind::Removed {
            traffic.close(&record.id).await;
            return;
        }
        if !record.config.endpoint.enabled {
            return;
        }
        let mut routes = Routes::of(
            record.status.kind(),
            record.runtime.as_deref(),
            &record.config.endpoint,
        );
        if self.holding && record.status.kind() == StatusKind::Stopped {
            routes.hold = true;
        }
        if let Err(e) = traffic.route(&record.id, routes).await {
            tracing::warn!(deployment = %record.id, error = %e, "the traffic layer refused new routes");
        }
    }

    /// The cutover handed to provider calls that start instances beside running ones.
    pub(super) fn cutover_for(&self, config: &DeploymentConfig) -> Option<Cutover> {
        let traffic = self.traffic()?;
        if !config.endpoint.enabled {
            return None;
        }
        let id: DeploymentId = self.deployment.clone();
        let endpoint = config.endpoint.clone();
        Some(Cutover::new(move |runtime: RuntimeInfo| {
            let (traffic, id, endpoint) = (traffic.clone(), id.clone(), endpoint.clone());
            Box::pin(async move {
                let routes = Routes::of(StatusKind::Running, Some(&runtime), &endpoint);
                if let Err(e) = traffic.route(&id, routes).await {
                    tracing::warn!(deployment = %id, error = %e, "the traffic layer refused the cutover");
                }
            })
        }))
    }

    /// A restart without a gap, when the deployment runs behind an endpoint: the provider's
    /// [`replace`](crate::Provider::replace). `None` when that does not apply (no
    /// endpoint, not running, or the provider answered `NotSupported`): the caller stops
    /// and starts.
    pub(super) async fn try_replace(
        &mut self,
        record: &DeploymentRecord,
    ) -> Option<Result<DeploymentRecord>> {
        if record.status.kind() != StatusKind::Running || endpoint_of(record).is_none() {
            return None;
        }
        let cutover = self.cutover_for(&record.config)?;
        let provider = match self.inner.provider(&record.provider) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let known = Self::known(record);
        let deadline = self.inner.timeouts(provider.name()).rollout(&record.config);
        self.cutover = Some(cutover);
        let result = self
            .call(&provider, "replace", deadline, |ctx| {
                let (p, known) = (&provider, &known);
                async move { p.replace(&ctx, known).await }
            })
            .await;
        self.cutover = None;
        match result {
            Err(crate::Error::NotSupported { .. }) => None,
            Ok(runtime) => Some(
                self.transition_same(|r| {
                    r.status = DeploymentStatus::Running;
                    r.runtime = Some(Arc::new(runtime));
                })
                .await,
            ),
            // The old instances serve untouched: the restart failed, the deployment runs.
            Err(e) => Some(Err(e)),
        }
    }
}
