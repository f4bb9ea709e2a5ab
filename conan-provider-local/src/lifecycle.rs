//! Starting an instance behind the readiness gate, and stopping one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use conan_core::{
    DeploymentSpec, Error, EventSink, ExitStatus, FailureReport, OperationContext, Phase, Result,
};
use tokio::time::{Instant, sleep_until};

use crate::command;
use crate::deployment::Deployment;
use crate::instance::{Instance, NewInstance, Proc};
use crate::logs::Capture;
use crate::ports::PortAllocator;
use crate::probe::{Probe, readiness_delay};
use crate::settings::LocalSettings;
use crate::supervisor;
use crate::tree::signal_of;

/// The provider's shared state.
#[derive(Debug)]
pub(crate) struct Inner {
    pub settings: LocalSettings,
    pub ports: Arc<PortAllocator>,
    pub deployments: Mutex<HashMap<conan_core::DeploymentId, Arc<Deployment>>>,
    pub counter: AtomicU64,
    /// The sink of the latest call: supervisors of deployments adopted outside a call
    /// that has one (a `status` on a fresh provider) report there.
    pub sink: Mutex<Option<EventSink>>,
    /// A recent `/proc` snapshot of the instance markers, for `recover` (see there).
    pub markers: Mutex<Option<(std::time::Instant, Arc<crate::provider::Markers>)>>,
}

/// Kills what an unfinished launch started when its future is dropped (the manager
/// abandoned the call): SIGKILL to the tree at once, then a clean-up task that waits for
/// it to be gone, finishes the log capture and releases the port. The deployment's next
/// operation waits for that task.
struct Armed {
    dep: Arc<Deployment>,
    inst: Option<Arc<Instance>>,
}

impl Armed {
    fn disarm(&mut self) {
        self.inst = None;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let Some(inst) = self.inst.take() else {
            return;
        };
        abandon(&self.dep, inst);
    }
}

/// Kills an instance nobody supervises any more (see [`Armed`]).
pub(crate) fn abandon(dep: &Deployment, inst: Arc<Instance>) {
    inst.stopping.store(true, Ordering::Release);
    inst.cancel.cancel();
    inst.tree().signal(nix::sys::signal::Signal::SIGKILL);
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            let handle = rt.spawn(async move {
                inst.tree().kill_all().await;
                inst.capture.finish();
                inst.release_port();
            });
            dep.cleanups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(handle);
        }
        Err(_) => {
            inst.capture.finish();
            inst.release_port();
        }
    }
}

const CANCELLED: &str = "deploy cancelled";

/// Which port a new instance gets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PortChoice {
    /// The config's port, or an allocated one.
    FromConfig,
    /// Always a fresh allocated port (blue-green beside a running revision).
    Fresh,
}

pub(crate) fn provider_err(message: impl Into<String>, e: std::io::Error) -> Error {
    Error::provider_with_source("local", message, false, e)
}

/// A failed spawn, with the OS's reason in the message; "argument list too long" also says
/// which limit (an env value is one of the strings the kernel bounds).
fn spawn_error(program: &std::path::Path, e: std::io::Error) -> Error {
    let mut message = format!("cannot start {}: {e}", program.display());
    if e.raw_os_error() == Some(nix::errno::Errno::E2BIG as i32) {
        message.push_str(
            " (the environment and arguments exceed the kernel's limit: each env value at most \
             128 KiB, all together about 2 MiB; pass large data in a file instead)",
        );
    }
    provider_err(message, e)
}

impl Inner {
    pub fn source_of(spec: &DeploymentSpec) -> PathBuf {
        let s = &spec.config.source;
        std::fs::canonicalize(s).unwrap_or_else(|_| s.clone())
    }

    /// Starts a new instance of `spec` and waits for its readiness gate. On success the
    /// instance is supervised; on failure nothing of it is left running and the error
    /// carries the failure bundle.
    pub async fn launch(
        self: &Arc<Self>,
        ctx: &OperationContext,
        dep: &Arc<Deployment>,
        spec: &DeploymentSpec,
        choice: PortChoice,
    ) -> Result<Arc<Instance>> {
        let source = Self::source_of(spec);
        let launch = command::resolve(&spec.config, &source, &self.settings.node_path)?;
        ctx.check_cancelled("deploy")?;
        ctx.events.progress(
            &spec.id,
            Phase::Preparing,
            format!("start command: {}", launch.description),
        );
        let port = match (choice, spec.config.port) {
            (PortChoice::FromConfig, Some(p)) => {
                self.ports.reserve(p)?;
                p
            }
            _ => self.ports.allocate()?,
        };
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let key = format!(
            "r{}-{}-{}",
            spec.revision.0,
            conan_core::Timestamp::now().as_unix_micros(),
            n
        );
        let dir = dep.dir.join("instances").join(&key);
        let created = std::fs::create_dir_all(&dir)
            .map_err(|e| provider_err(format!("cannot create {}", dir.display()), e))
            .and_then(|()| {
                Capture::start(&dir, Arc::clone(&dep.logs))
                    .map_err(|e| provider_err("cannot start log capture", e))
            });
        let created = created.and_then(|c| {
            if c.has_room() {
                return Ok(c);
            }
            // A new app would die of ENOSPC at its first line: refuse it, clearly.
            c.finish();
            crate::logs::remove_instance_dir(&dir);
            Err(provider_err(
                format!(
                    "the log volume is full: no room for the app's output in {}; free space there",
                    dep.dir.display()
                ),
                std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32),
            ))
        });
        let capture = match created {
            Ok(c) => c,
            Err(e) => {
                self.ports.release(port);
                return Err(e);
            }
        };
        let inst = Arc::new(Instance::new(NewInstance {
            key,
            revision: spec.revision,
            port: Some(port),
            dir,
            deployment: spec.id.as_str().to_owned(),
            capture,
            ports: Arc::clone(&self.ports),
        }));
        // The intent first: a manager killed from here on leaves a record that explains the
        // process (and its marker finds it even before its pid is recorded).
        inst.save_record();
        // From here on, a dropped future (an abandoned call) kills what it started.
        let mut armed = Armed {
            dep: Arc::clone(dep),
            inst: Some(Arc::clone(&inst)),
        };
        ctx.events.progress(
            &spec.id,
            Phase::Starting,
            format!("starting on port {port}"),
        );
        let mut proc = match inst.spawn(&self.settings, &launch, spec, &source).await {
            Ok(p) => p,
            Err(e) => {
                armed.disarm();
                inst.capture.finish();
                inst.release_port();
                return Err(spawn_error(&launch.program, e));
            }
        };
        ctx.events
            .progress(&spec.id, Phase::WaitingForHealth, "waiting for readiness");
        if let Err(failure) = self.gate(ctx, dep, &inst, &mut proc, spec).await {
            ctx.events
                .progress(&spec.id, Phase::CleaningUp, failure.reason.clone());
            let cancelled = failure.reason == CANCELLED;
            let failure = self.discard(dep, &inst, proc, failure).await;
            armed.disarm();
            if cancelled {
                return Err(Error::Cancelled {
                    operation: "deploy".into(),
                });
            }
            return Err(Error::HealthCheckFailed {
                deployment: spec.config.name.clone(),
                failure: Box::new(failure),
            });
        }
        armed.disarm();
        inst.mark_ready();
        supervisor::start(
            Arc::clone(self),
            Arc::clone(dep),
            Arc::clone(&inst),
            proc,
            launch,
            spec.clone(),
            source,
            ctx.events.clone(),
        );
        Ok(inst)
    }

    /// The readiness gate: the probe passes before the process exits and before
    /// `update.healthy_deadline`.
    async fn gate(
        &self,
        ctx: &OperationContext,
        dep: &Deployment,
        inst: &Instance,
        proc: &mut Proc,
        spec: &DeploymentSpec,
    ) -> std::result::Result<(), FailureReport> {
        let config = &spec.config;
        let deadline = after(config.update.healthy_deadline);
        let probe = Probe::for_check(
            config.health_check.as_ref(),
            &self.settings.host,
            inst.port,
            &Self::source_of(spec),
        );
        let (interval, limit) = config.health_check.as_ref().map_or(
            (config.restart.min_uptime, config.restart.min_uptime),
            |h| (h.interval, h.timeout),
        );
        if matches!(probe, Probe::Alive) {
            // No health check: ready when the app accepts TCP on its PORT, or when it stayed
            // up `min_uptime`, whichever comes first (an app that listens on no port, or on
            // another one, is judged by uptime alone).
            let until = after(config.restart.min_uptime).min(deadline);
            let listening = async {
                match inst.port {
                    Some(port) => wait_listening(&self.settings.host, port).await,
                    None => std::future::pending().await,
                }
            };
            let message = tokio::select! {
                exit = proc.wait() => return Err(exited(exit, config.restart.min_uptime)),
                () = sleep_until(until) => format!(
                    "[conan] process up for {}, ready",
                    conan_core::time::format_duration(config.restart.min_uptime)
                ),
                port = listening => format!("[conan] accepting connections on port {port}, ready"),
                () = ctx.cancel.cancelled() => return Err(FailureReport::new(CANCELLED)),
            };
            dep.logs.system(message);
            return Ok(());
        }
        let mut last = None;
        let mut n = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < std::time::Duration::from_millis(1) && n > 0 {
                return Err(self.deadline_failure(config, last));
            }
            let cut_short = remaining < limit;
            let result = tokio::select! {
                exit = proc.wait() => {
                    let mut f = exited(exit, config.restart.min_uptime);
                    f.probe = last;
                    return Err(f);
                }
                r = probe.run(limit.min(remaining)) => r,
                () = ctx.cancel.cancelled() => return Err(FailureReport::new(CANCELLED)),
            };
            if result.healthy {
                ctx.events
                    .progress(&spec.id, Phase::WaitingForHealth, result.detail);
                return Ok(());
            }
            // A last probe the deadline cut short says less than the answer before it.
            if !(cut_short && result.timed_out && last.is_some()) {
                last = Some(result.detail);
            }
            if Instant::now() >= deadline {
                return Err(self.deadline_failure(config, last));
            }
            let wake = after(readiness_delay(n, interval)).min(deadline);
            n += 1;
            tokio::select! {
                exit = proc.wait() => {
                    let mut f = exited(exit, config.restart.min_uptime);
                    f.probe = last;
                    return Err(f);
                }
                () = sleep_until(wake) => {}
                () = ctx.cancel.cancelled() => return Err(FailureReport::new(CANCELLED)),
            }
        }
    }

    fn deadline_failure(
        &self,
        config: &conan_core::DeploymentConfig,
        last: Option<String>,
    ) -> FailureReport {
        let mut f = FailureReport::new(format!(
            "not ready within the healthy deadline of {}",
            conan_core::time::format_duration(config.update.healthy_deadline)
        ));
        f.probe = last;
        f
    }

    /// Kills what is left of a failed instance, reaps it, and completes the failure report
    /// with its exit status and last log lines.
    async fn discard(
        &self,
        dep: &Deployment,
        inst: &Instance,
        mut proc: Proc,
        mut failure: FailureReport,
    ) -> FailureReport {
        inst.stopping.store(true, Ordering::Release);
        inst.tree().kill_all().await;
        let exit = proc.wait().await;
        if failure.exit.is_none() {
            failure.exit = Some(exit);
        }
        inst.capture.finish();
        crate::logs::remove_instance_dir(&inst.dir);
        inst.release_port();
        // Only this instance's lines: an update's failure bundle showed the serving
        // revision's lines mixed in. Lines are not tagged by instance, so those written
        // since this instance started stand for it (and `[conan]` lines about it).
        let since = inst.started_at().0;
        let lines = dep
            .logs
            .last(FailureReport::MAX_LOG_LINES * 4)
            .into_iter()
            .filter(|l| l.timestamp >= since)
            .collect::<Vec<_>>();
        let skip = lines.len().saturating_sub(FailureReport::MAX_LOG_LINES);
        failure.with_logs(lines.into_iter().skip(skip).collect())
    }

    /// Stops an instance: the configured signal to the whole tree, SIGKILL after the
    /// timeout, and returns once no process of it is left and its output is captured.
    pub async fn stop_instance(&self, dep: &Deployment, inst: &Instance, spec: &DeploymentSpec) {
        inst.stopping.store(true, Ordering::Release);
        inst.cancel.cancel();
        let signal = signal_of(spec.config.stop.signal);
        let killed = inst
            .tree()
            .terminate(signal, spec.config.stop.timeout)
            .await;
        let handle = inst
            .supervisor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        inst.capture.finish();
        crate::logs::remove_instance_dir(&inst.dir);
        if killed {
            dep.logs.system(format!(
                "[conan] instance did not exit within {} of {}; killed",
                conan_core::time::format_duration(spec.config.stop.timeout),
                spec.config.stop.signal
            ));
        }
        inst.release_port();
    }
}

/// Returns `port` once a TCP connection to it succeeds, probing on the readiness schedule
/// ([`readiness_delay`]); never returns while nothing listens.
/// Waits until the app accepts TCP on `host:port`, and answers `port`.
///
/// For the first [`FINE_TRIES`] tries (about 200 ms, when most apps start listening) a
/// blocking thread connects every [`FINE_PACE`]: a refused connection to a local port costs
/// microseconds, while the runtime's timer has a 1 ms grain, and an async probe paced by it
/// notices readiness about a millisecond late on average. After that (or for a host that is
/// not an IP address), the async probe on [`readiness_delay`]'s schedule.
async fn wait_listening(host: &str, port: u16) -> u16 {
    if let Some(addr) = ip_of(host).map(|ip| std::net::SocketAddr::new(ip, port)) {
        let stop = StopOnDrop::default();
        let stopped = Arc::clone(&stop.0);
        let fine = tokio::task::spawn_blocking(move || {
            for _ in 0..FINE_TRIES {
                if stopped.load(Ordering::Relaxed) {
                    return false;
                }
                if std::net::TcpStream::connect_timeout(&addr, FINE_CONNECT_LIMIT).is_ok() {
                    return true;
                }
                std::thread::sleep(FINE_PACE);
            }
            false
        });
        if fine.await.unwrap_or(false) {
            return port;
        }
    }
    let probe = conan_core::probe::Probe::tcp(host, port);
    let mut n = 0;
    loop {
        if probe
            .run(std::time::Duration::from_millis(250))
            .await
            .is_healthy()
        {
            return port;
        }
        tokio::time::sleep(readiness_delay(n, std::time::Duration::from_millis(250))).await;
        n += 1;
    }
}

/// How often [`wait_listening`] tries at first.
const FINE_PACE: std::time::Duration = std::time::Duration::from_micros(500);
/// How many fine-paced tries [`wait_listening`] makes (about 200 ms).
const FINE_TRIES: u32 = 400;
/// How long one fine-paced connect may take (a full accept backlog drops the SYN).
const FINE_CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Tells a blocking loop to stop once its waiter is gone.
#[derive(Default)]
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The address to connect to for an app listening on `host`, when `host` is an IP
/// address (a wildcard is reached on loopback).
fn ip_of(host: &str) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match host.trim_start_matches('[').trim_end_matches(']') {
        "" | "0.0.0.0" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "::" => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        other => other.parse().ok(),
    }
}

/// Now plus `d`, or a far future when that is past what an `Instant` can hold (durations
/// are bounded at validation; this keeps an unbounded one from panicking).
pub(crate) fn after(d: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// About thirty years: "never" for a deadline.
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);

fn exited(exit: ExitStatus, _min_uptime: std::time::Duration) -> FailureReport {
    FailureReport::new(format!("the process exited before it was ready ({exit})")).with_exit(exit)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn the_fine_readiness_wait_connects_to_ip_addresses_and_loopback_for_wildcards() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(ip_of("127.0.0.1"), Some(v4));
        assert_eq!(ip_of("0.0.0.0"), Some(v4));
        assert_eq!(ip_of(""), Some(v4));
        assert_eq!(ip_of("::"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_of("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_of("10.1.2.3"), "10.1.2.3".parse().ok());
        // A name is left to the async probe, which resolves it.
        assert_eq!(ip_of("localhost"), None);
    }

    #[tokio::test]
    async fn the_fine_readiness_wait_answers_once_the_port_listens() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let listen = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()
        });
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            wait_listening("127.0.0.1", port),
        )
        .await;
        let _listener = listen.await.unwrap();
        assert_eq!(waited.ok(), Some(port));
    }
}
