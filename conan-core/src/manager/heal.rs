//! A monitor's requests ([`Request::Heal`](super::Request::Heal)): restart a deployment
//! that is alive but unhealthy, or give up on it. Queued like every operation, so a heal
//! never overlaps a user's `update` or `stop`, and applied only while what the monitor
//! observed still serves: a heal that reaches the queue behind a `restart`, an `update`, a
//! `stop` or a supervised restart changes nothing.

use std::sync::Arc;

use super::handle::HealAction;
use super::lifecycle::stopped;
use super::ops::Op;
use super::reports::stale_origin;
use crate::error::Result;
use crate::event::{Event, ReportOrigin};
use crate::status::{DeploymentStatus, StatusKind};
use crate::store::DeploymentRecord;

impl Op<'_> {
    pub(super) async fn heal(
        &mut self,
        origin: &ReportOrigin,
        action: &HealAction,
    ) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        if record.status.kind() != StatusKind::Running {
            tracing::debug!(deployment = %record.id, status = %record.status, "dropping a monitor's request: the deployment does not run");
            return Ok(record);
        }
        if let Some(why) = stale_origin(&record, origin) {
            tracing::debug!(deployment = %record.id, why, "dropping a monitor's stale request");
            return Ok(record);
        }
        match action {
            HealAction::Restart => self.restart().await,
            HealAction::Fail(failure) => {
                self.stop_instances(&record).await?;
                let record = self
                    .transition(DeploymentStatus::failed(failure.reason.clone()), |r| {
                        r.last_failure = Some(Arc::new(failure.clone()));
                        r.runtime = stopped(r);
                    })
                    .await?;
                self.inner.bus.emit_with(|| Event::Failed {
                    deployment: record.id.clone(),
                    failure: failure.clone(),
                });
                Ok(record)
            }
        }
    }
}
