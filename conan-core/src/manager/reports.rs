//! Applying what a provider reports on its own (a [`StatusReport`] sent through its
//! [`EventSink`](crate::EventSink)): a crash and the restart that follows, a new runtime,
//! an exit or a failure for good.
//!
//! Each report is a job in its deployment's queue, so it never overlaps an operation. What
//! it may change:
//!
//! - A report that names its origin (revision and instance) applies only while that origin
//!   serves: the record's revision is the origin's, and the record's runtime holds the
//!   origin's instance. A supervisor's report that reaches the queue behind a `restart`, an
//!   `update` or a `stop` is therefore dropped instead of bringing back a pid or a status
//!   that no longer holds.
//! - `Running` and `Restarting` reports move a deployment only between `Running` and
//!   `Restarting`: a provider cannot start a stopped or failed deployment by reporting.
//! - A restart (a `Restarting` report) is written to the audit log with its attempt, exit
//!   status and delay, even when the state machine cannot show it (during an update).
//! - A report's runtime replaces the record's (persisted with the record), so `status` and
//!   a later manager see the new pid and start time.

use std::sync::Arc;

use super::lifecycle::{intermediate, route, status_of, stopped};
use super::ops::Op;
use crate::error::Result;
use crate::event::{Event, ReportOrigin, StatusReport};
use crate::failure::FailureReport;
use crate::provider::ObservedStatus;
use crate::status::StatusKind;
use crate::store::{AuditAction, AuditEntry, DeploymentRecord};

/// Why `report` must not be applied to `record`, if it must not.
fn stale(record: &DeploymentRecord, report: &StatusReport) -> Option<&'static str> {
    stale_origin(record, report.origin.as_ref()?)
}

/// Why `origin` no longer serves in `record`, if it does not.
pub(super) fn stale_origin(
    record: &DeploymentRecord,
    origin: &ReportOrigin,
) -> Option<&'static str> {
    if origin.revision != record.revision {
        return Some("its revision no longer serves");
    }
    // A deployment whose runtime names no instance is guarded by its revision alone.
    if origin.instance.is_empty() {
        return None;
    }
    let on_record = record
        .runtime
        .as_deref()
        .is_some_and(|r| r.instances.iter().any(|i| i.id == origin.instance));
    if !on_record {
        return Some("its instance no longer serves");
    }
    None
}

/// Whether a deployment in `kind` shows a supervised instance (serving or about to again).
fn supervised(kind: StatusKind) -> bool {
    matches!(kind, StatusKind::Running | StatusKind::Restarting)
}

impl Op<'_> {
    pub(super) async fn observe(&mut self, report: &StatusReport) -> Result<DeploymentRecord> {
        let (record, _) = self.snapshot()?;
        let observed = &report.status;
        if let Some(why) = stale(&record, report) {
            tracing::debug!(deployment = %record.id, status = %observed, why, "dropping a stale provider status report");
            return Ok(record);
        }
        if let ObservedStatus::Restarting {
            attempt,
            exit,
            delay_ms,
            ..
        } = observed
        {
            let revision = report
                .origin
                .as_ref()
                .map_or(record.revision, |o| o.revision);
            let entry = AuditEntry::new(
                record.id.clone(),
                None,
                AuditAction::Restart {
                    revision,
                    attempt: *attempt,
                    exit: *exit,
                    delay_ms: *delay_ms,
                },
            );
            if let Err(e) = self.inner.store.append_audit(vec![entry]).await {
                tracing::warn!(deployment = %record.id, error = %e, "could not write a restart to the audit log");
            }
        }
        let status = status_of(observed);
        let from = record.status.kind();
        let to = status.kind();
        if supervised(to) && !supervised(from) {
            tracing::debug!(deployment = %record.id, %from, to = %status, "ignoring provider status report");
            return Ok(record);
        }
        let runtime = report.runtime.clone().map(Arc::new);
        if from == to {
            // No transition: a new runtime (a restart the provider did not announce), a
            // restart's new attempt, or a repeated report.
            if runtime.is_none() && record.status == status {
                return Ok(record);
            }
            return self
                .transition_same(|r| {
                    r.status = status;
                    if let Some(runtime) = runtime {
                        r.runtime = Some(runtime);
                    }
                })
                .await;
        }
        let Some(via) = route(from, to) else {
            tracing::debug!(deployment = %record.id, %from, to = %status, "ignoring provider status report");
            return Ok(record);
        };
        if let Some(via) = via {
            self.transition(intermediate(via), |_| {}).await?;
        }
        let failed = to == StatusKind::Failed;
        let failure = report
            .failure
            .clone()
            .or_else(|| failed.then(|| FailureReport::new(observed.to_string())));
        let record = self
            .transition(status, |r| {
                if let Some(f) = &failure {
                    r.last_failure = Some(Arc::new(f.clone()));
                }
                if let Some(runtime) = runtime {
                    r.runtime = Some(runtime);
                } else if !supervised(r.status.kind()) {
                    r.runtime = stopped(r);
                }
            })
            .await?;
        if let (true, Some(failure)) = (failed, failure) {
            self.inner.bus.emit_with(|| Event::Failed {
                deployment: record.id.clone(),
                failure,
            });
        }
        Ok(record)
    }
}
