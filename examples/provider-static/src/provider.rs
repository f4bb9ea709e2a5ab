//! The [`Provider`] implementation: deploy, update, start, stop, remove, observation and
//! recovery.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use conan_core::{
    Capabilities, Capability, DeploymentId, DeploymentSpec, Error, FailureReport, HealthReport,
    HealthStatus, KnownDeployment, LogQuery, LogStream, Metrics, ObservedStatus, OperationContext,
    Phase, Provider, RecoveredDeployment, Result, RuntimeInfo,
};

use crate::health;
use crate::http::CONNECTION_BYTES;
use crate::launch::{FAILURE_LOG_LINES, PORT_RELEASE_WAIT, is_dir, resolve_root, system_line};
use crate::server::{Recorded, SERVER_BYTES};
use crate::state::{Entry, State};
use crate::{NAME, StaticOptions, StaticProvider};

#[async_trait]
impl Provider for StaticProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with(Capability::HealthChecks)
            .with(Capability::Recovery)
            .with(Capability::LogFollow)
            .with(Capability::Metrics)
            .with(Capability::LocalNetwork)
    }

    /// Serves `spec` on its port (or an ephemeral one); whatever this instance held of the
    /// deployment (a stopped or failed entry, another revision) is replaced. Idempotent:
    /// if `spec.revision` already runs, its runtime is returned.
    async fn deploy(
        &self,
        ctx: &OperationContext,
        spec: &DeploymentSpec,
        _previous: Option<&KnownDeployment>,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("deploy")?;
        if let Some(runtime) = self.running(&spec.id, Some(spec.revision)) {
            return Ok(runtime);
        }
        ctx.events.progress(
            &spec.id,
            Phase::Preparing,
            format!("serving {}", spec.config.source.display()),
        );
        let port = spec.config.port.unwrap_or(0);
        self.bring_up(ctx, "deploy", spec, &[port], Duration::ZERO)
            .await
    }

    /// Starts the new revision on a new port (or, when the config fixes the port the old
    /// revision serves on, on that port after stopping the old one), gates it, then
    /// switches: the old server stops. On failure the old revision keeps serving (with a
    /// fixed port it is started again, when `auto_rollback` is set).
    async fn update(
        &self,
        ctx: &OperationContext,
        current: &KnownDeployment,
        spec: &DeploymentSpec,
    ) -> Result<RuntimeInfo> {
        ctx.check_cancelled("update")?;
        let held = {
            let map = self.lock();
            let Some(entry) = map.get(&spec.id) else {
                return Err(Error::deployment_not_found(spec.id.as_str()));
            };
            match &entry.state {
                State::Running(s) if s.is_alive() => {
                    if s.revision == spec.revision {
                        return Ok(s.runtime());
                    }
                    Some((s.port, s.root.clone(), s.revision, entry.log.clone()))
                }
                _ => None,
            }
        };
        // Nothing serves: the new revision is deployed in place.
        let Some((old_port, old_root, old_revision, log)) = held else {
            return self.deploy(ctx, spec, Some(current)).await;
        };
        ctx.events.progress(
            &spec.id,
            Phase::Preparing,
            format!(
                "revision {} replaces {old_revision} (serving {})",
                spec.revision,
                spec.config.source.display()
            ),
        );
        let options = StaticOptions::of(&spec.config)?;
        let root = resolve_root(&spec.config).await?;
        let port = spec.config.port.unwrap_or(0);
        if port == 0 || port != old_port {
            let server = self
                .launch(
                    ctx,
                    "update",
                    spec,
                    root,
                    port,
                    &log,
                    &options,
                    Duration::ZERO,
                )
                .await?;
            ctx.events.progress(
                &spec.id,
                Phase::Switching,
                format!(
                    "revision {} serves on port {}; revision {old_revision} stops",
                    spec.revision, server.port
                ),
            );
            let runtime = server.runtime();
            let (_, old) = self.replace(&spec.id, State::Running(Box::new(server)));
            if let Some(old) = old {
                old.shutdown().await;
                log.push(system_line(format!(
                    "revision {old_revision} stopped serving on port {old_port}"
                )));
            }
            return Ok(runtime);
        }
        // The same fixed port: the old revision must free it first.
        let mut guard = self.starting(&spec.id);
        let (_, old) = self.replace(&spec.id, State::Starting);
        ctx.events.progress(
            &spec.id,
            Phase::Stopping,
            format!("revision {old_revision} stops to free port {port}"),
        );
        if let Some(old) = old {
            old.shutdown().await;
        }
        let result = self
            .launch(
                ctx,
                "update",
                spec,
                root,
                port,
                &log,
                &options,
                PORT_RELEASE_WAIT,
            )
            .await;
        let Err(error) = result else {
            return self.settle(&mut guard, result);
        };
        if !spec.config.update.auto_rollback {
            return self.settle(&mut guard, Err(error));
        }
        ctx.events.progress(
            &spec.id,
            Phase::CleaningUp,
            format!("restoring revision {old_revision} on port {port}"),
        );
        let old_spec =
            DeploymentSpec::new(spec.id.clone(), old_revision, current.spec.config.clone());
        // The restore must not inherit this call's cancellation.
        let restore_ctx = OperationContext::new(ctx.events.clone());
        let old_options = StaticOptions::of(&old_spec.config).unwrap_or_default();
        let restored = self
            .launch(
                &restore_ctx,
                "update",
                &old_spec,
                old_root,
                port,
                &log,
                &old_options,
                PORT_RELEASE_WAIT,
            )
            .await;
        match restored {
            Ok(server) => {
                let _ = self.settle(&mut guard, Ok(server));
                Err(error)
            }
            Err(e) => self.settle(
                &mut guard,
                Err(Error::provider(
                    NAME,
                    format!("{error}; revision {old_revision} could not be restored: {e}"),
                    false,
                )),
            ),
        }
    }

    /// Serves `known.spec` again: on its config's port, else on the port recorded in the
    /// details (an ephemeral one when that is taken). Works from the details alone on a
    /// fresh instance. Idempotent: a running deployment's runtime is returned.
    async fn start(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<RuntimeInfo> {
        ctx.check_cancelled("start")?;
        let held = {
            let map = self.lock();
            match map.get(known.id()) {
                Some(Entry {
                    state: State::Running(s),
                    ..
                }) if s.is_alive() => return Ok(s.runtime()),
                Some(_) => true,
                None => false,
            }
        };
        let recorded = Recorded::of(&known.runtime);
        if !held && recorded.is_none() {
            return Err(Error::deployment_not_found(known.id().as_str()));
        }
        let ports: Vec<u16> = match (known.spec.config.port, recorded) {
            (Some(port), _) => vec![port],
            (None, Some(r)) => vec![r.port, 0],
            (None, None) => vec![0],
        };
        self.bring_up(ctx, "start", &known.spec, &ports, Duration::ZERO)
            .await
    }

    async fn stop(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        ctx.check_cancelled("stop")?;
        self.stop_server(ctx, known.id()).await;
        Ok(())
    }

    async fn remove(&self, ctx: &OperationContext, known: &KnownDeployment) -> Result<()> {
        ctx.check_cancelled("remove")?;
        self.stop_server(ctx, known.id()).await;
        self.lock().remove(known.id());
        Ok(())
    }

    async fn status(&self, known: &KnownDeployment) -> Result<ObservedStatus> {
        let map = self.lock();
        let entry = map
            .get(known.id())
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(match &entry.state {
            State::Running(s) if s.is_alive() => ObservedStatus::Running,
            State::Running(_) => ObservedStatus::failed("its server task ended"),
            State::Starting => ObservedStatus::Starting,
            State::Stopped => ObservedStatus::Stopped,
            State::Failed(reason) => ObservedStatus::failed(reason.clone()),
        })
    }

    async fn logs(&self, known: &KnownDeployment, query: &LogQuery) -> Result<LogStream> {
        let log = self
            .lock()
            .get(known.id())
            .map(|e| e.log.clone())
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(log.stream(query))
    }

    async fn metrics(&self, known: &KnownDeployment) -> Result<Metrics> {
        let map = self.lock();
        let entry = map
            .get(known.id())
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        let log_bytes = entry.log.bytes() as u64;
        let mut metrics = Metrics::new();
        metrics.memory_bytes = Some(log_bytes);
        if let State::Running(s) = &entry.state {
            let open = s.stats.open.load(Ordering::Relaxed);
            metrics.memory_bytes = Some(log_bytes + SERVER_BYTES + open * CONNECTION_BYTES);
            metrics.uptime = Some(s.started.elapsed());
            metrics.port = Some(s.port);
            metrics.network_rx_bytes = Some(s.stats.rx_bytes.load(Ordering::Relaxed));
            metrics.network_tx_bytes = Some(s.stats.tx_bytes.load(Ordering::Relaxed));
        }
        Ok(metrics)
    }

    async fn health(&self, known: &KnownDeployment) -> Result<HealthReport> {
        let map = self.lock();
        let entry = map
            .get(known.id())
            .ok_or_else(|| Error::deployment_not_found(known.id().as_str()))?;
        Ok(match &entry.state {
            State::Running(s) if s.is_alive() => match &s.health {
                Some(report) => health::read(report),
                None => HealthReport::new(HealthStatus::Unknown)
                    .with_detail("no health check configured"),
            },
            _ => HealthReport::new(HealthStatus::Unknown).with_detail("nothing runs"),
        })
    }

    /// Re-serves, on its recorded port, each deployment the store knows as running
    /// (its server ended with the process or instance that ran it); reports stopped ones
    /// stopped; answers failed when the directory vanished, the port is taken or nothing
    /// was recorded. What this instance already serves is adopted as it is.
    async fn recover(
        &self,
        ctx: &OperationContext,
        known: &[KnownDeployment],
    ) -> Result<Vec<RecoveredDeployment>> {
        let mut found = Vec::with_capacity(known.len());
        let mut started: Vec<&DeploymentId> = Vec::new();
        for k in known {
            if ctx.is_cancelled() {
                for id in started {
                    self.stop_server(ctx, id).await;
                    self.lock().remove(id);
                }
                return Err(Error::Cancelled {
                    operation: "recover".to_owned(),
                });
            }
            let (id, revision) = (k.id().clone(), k.revision());
            let held = self.lock().get(&id).map(|e| match &e.state {
                State::Running(s) if s.is_alive() => {
                    RecoveredDeployment::running(id.clone(), s.revision, s.runtime())
                }
                State::Running(_) => RecoveredDeployment::failed(
                    id.clone(),
                    revision,
                    FailureReport::new("its server task ended"),
                ),
                State::Starting => {
                    let mut r =
                        RecoveredDeployment::stopped(id.clone(), revision, k.runtime.stopped());
                    r.status = ObservedStatus::Starting;
                    r
                }
                State::Stopped => {
                    RecoveredDeployment::stopped(id.clone(), revision, k.runtime.stopped())
                }
                State::Failed(reason) => RecoveredDeployment::failed(
                    id.clone(),
                    revision,
                    FailureReport::new(reason.clone()).with_logs(e.log.last(FAILURE_LOG_LINES)),
                ),
            });
            if let Some(answer) = held {
                found.push(answer);
                continue;
            }
            let Some(recorded) = Recorded::of(&k.runtime) else {
                found.push(RecoveredDeployment::failed(
                    id,
                    revision,
                    FailureReport::new("no static server was recorded for it (it never came up)"),
                ));
                continue;
            };
            if k.runtime.instances.is_empty() {
                // Stopped on purpose: what start needs is in the details.
                self.replace(&id, State::Stopped);
                found.push(RecoveredDeployment::stopped(
                    id,
                    revision,
                    (*k.runtime).clone(),
                ));
                continue;
            }
            if !is_dir(&k.spec.config.source).await {
                found.push(RecoveredDeployment::failed(
                    id,
                    revision,
                    FailureReport::new(format!(
                        "its source directory {} vanished",
                        k.spec.config.source.display()
                    )),
                ));
                continue;
            }
            match self
                .bring_up(ctx, "recover", &k.spec, &[recorded.port], PORT_RELEASE_WAIT)
                .await
            {
                Ok(runtime) => {
                    started.push(k.id());
                    found.push(RecoveredDeployment::running(id, revision, runtime));
                }
                Err(Error::Cancelled { .. }) => {
                    self.lock().remove(&id);
                    for id in started {
                        self.stop_server(ctx, id).await;
                        self.lock().remove(id);
                    }
                    return Err(Error::Cancelled {
                        operation: "recover".to_owned(),
                    });
                }
                Err(Error::PortInUse { port, .. }) => {
                    found.push(RecoveredDeployment::failed(
                        id,
                        revision,
                        FailureReport::new(format!("its port {port} is taken by another process")),
                    ));
                }
                Err(e) => {
                    let failure = e
                        .failure()
                        .cloned()
                        .unwrap_or_else(|| FailureReport::new(e.to_string()));
                    found.push(RecoveredDeployment::failed(id, revision, failure));
                }
            }
        }
        Ok(found)
    }
}
