//! Fault injection: the calls faults target ([`ProviderOp`]), the faults ([`Fault`]),
//! and the bookkeeping of each call (what it decides, how it waits, calls in flight).

use std::time::Duration;

use crate::error::Result;
use crate::id::DeploymentId;
use crate::provider::{DeploymentSpec, KnownDeployment, OperationContext};

use super::MemoryProvider;

/// The provider calls faults can target.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ProviderOp {
    /// `deploy`.
    Deploy,
    /// `update`.
    Update,
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `remove`.
    Remove,
    /// `recover`.
    Recover,
    /// `status` (delays do not apply to it; the other faults do).
    Status,
    /// `scale`.
    Scale,
}

impl ProviderOp {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ProviderOp::Deploy => "deploy",
            ProviderOp::Update => "update",
            ProviderOp::Start => "start",
            ProviderOp::Stop => "stop",
            ProviderOp::Remove => "remove",
            ProviderOp::Recover => "recover",
            ProviderOp::Status => "status",
            ProviderOp::Scale => "scale",
        }
    }

    /// Every op, in declaration order (the index of the call counters).
    pub const ALL: [ProviderOp; 8] = [
        ProviderOp::Deploy,
        ProviderOp::Update,
        ProviderOp::Start,
        ProviderOp::Stop,
        ProviderOp::Remove,
        ProviderOp::Recover,
        ProviderOp::Status,
        ProviderOp::Scale,
    ];
}

/// A fault to inject into one kind of call.
///
/// Errors and panics happen when the call begins, before it changes anything on the
/// platform (like an unreachable API). `Delay` and `Hang` happen at the call's wait
/// point: for `deploy` after the new instance was created (it shows as `Starting` in the
/// backend), for `update` before the switch (the old revision serves), for the others
/// before they act.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Fault {
    /// The next `n` calls fail with a transient error.
    Transient(u32),
    /// Every call fails with a permanent error.
    Permanent,
    /// Each call fails transiently with this probability (seeded, see
    /// [`MemoryProvider::seed`]).
    RandomTransient(f64),
    /// Every call panics (a provider bug), to test that callers contain it.
    Panic,
    /// Every call takes this long (racing cancellation), instead of the global
    /// [`MemoryProvider::set_delay`].
    Delay(Duration),
    /// Every call waits forever, ignoring cancellation: only dropping its future ends it
    /// (what the manager does when it abandons a call).
    Hang,
}

/// What happens to a deployment some time after an instance of it came up.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Ending {
    /// Crashes with exit code 1: `Failed`, reported through the sink's `failed`.
    Crash,
    /// Exits cleanly: `Exited`, reported through the sink's `exited`.
    Exit,
}

#[derive(Default)]
pub(super) struct Faults {
    pub(super) per_op: foldhash::HashMap<ProviderOp, Fault>,
    pub(super) delay: Option<Duration>,
    pub(super) ending: Option<(Ending, Duration)>,
    pub(super) rng: Option<fastrand::Rng>,
    /// Whether calls in flight are counted ([`MemoryProvider::track_concurrency`]).
    pub(super) track: bool,
    /// Mutating calls in flight per deployment: (now, highest seen).
    pub(super) in_flight: foldhash::HashMap<DeploymentId, (u32, u32)>,
    /// Deployments (by name) whose probes fail, with what the probe "saw".
    pub(super) unhealthy: foldhash::HashMap<String, String>,
    /// Deployments (by name) whose metrics show this resident memory.
    pub(super) memory: foldhash::HashMap<String, u64>,
    /// Deployments (by name) whose metrics show this CPU percent.
    pub(super) cpu: foldhash::HashMap<String, f64>,
}

/// What [`Faults::decide`] makes of one call.
pub(super) enum Decision {
    Proceed,
    Fail { transient: bool },
    Panic,
}

impl Faults {
    pub(super) fn decide(&mut self, op: ProviderOp) -> (Decision, Wait) {
        let mut wait = match self.delay {
            Some(d) if op != ProviderOp::Status => Wait::Delay(d),
            _ => Wait::None,
        };
        let decision = match self.per_op.get_mut(&op) {
            None | Some(Fault::Transient(0)) => Decision::Proceed,
            Some(Fault::Panic) => Decision::Panic,
            Some(Fault::Permanent) => Decision::Fail { transient: false },
            Some(Fault::Transient(n)) => {
                *n -= 1;
                Decision::Fail { transient: true }
            }
            Some(Fault::RandomTransient(p)) => {
                let p = *p;
                let roll = self.rng.get_or_insert_with(fastrand::Rng::new).f64();
                if roll < p {
                    Decision::Fail { transient: true }
                } else {
                    Decision::Proceed
                }
            }
            Some(Fault::Delay(d)) => {
                wait = Wait::Delay(*d);
                Decision::Proceed
            }
            Some(Fault::Hang) => {
                wait = Wait::Hang;
                Decision::Proceed
            }
        };
        (decision, wait)
    }
}

/// How a call waits at its wait point.
#[derive(Clone, Copy)]
pub(super) enum Wait {
    None,
    Delay(Duration),
    Hang,
}

/// The deployments a call is about, for counting calls in flight.
#[derive(Clone, Copy)]
pub(super) enum Ids<'a> {
    None,
    One(&'a DeploymentId),
    Known(&'a [KnownDeployment]),
}

impl Ids<'_> {
    pub(super) fn for_each(self, mut f: impl FnMut(&DeploymentId)) {
        match self {
            Ids::None => {}
            Ids::One(id) => f(id),
            Ids::Known(known) => known.iter().for_each(|k| f(k.id())),
        }
    }
}

/// One call in progress: counted in flight until dropped (also by a panic or when the
/// caller abandons the call's future).
pub(super) struct Call<'a> {
    pub(super) provider: &'a MemoryProvider,
    pub(super) ids: Ids<'a>,
    pub(super) wait: Wait,
    pub(super) op: ProviderOp,
    /// The crash or exit to schedule after an instance comes up, read with the faults.
    pub(super) ending: Option<(Ending, Duration)>,
}

impl Call<'_> {
    /// The call's wait point: the configured delay racing cancellation, or a hang.
    pub(super) async fn wait(&self, ctx: &OperationContext) -> Result<()> {
        match self.wait {
            Wait::None => {}
            Wait::Delay(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = ctx.cancel.cancelled() => {}
                }
            }
            Wait::Hang => std::future::pending::<()>().await,
        }
        ctx.check_cancelled(self.op.as_str())
    }
}

impl Call<'_> {
    /// Makes the call wait as long as a [`MemoryProvider::SLOW_LABEL`] asks (unless it
    /// hangs anyway).
    pub(super) fn slow_down(&mut self, spec: &DeploymentSpec) {
        let labels = &spec.config.labels;
        if labels.is_empty() || matches!(self.wait, Wait::Hang) {
            return;
        }
        if let Some(ms) = labels.get(MemoryProvider::SLOW_LABEL) {
            let ms = ms.parse().unwrap_or(2000);
            self.wait = Wait::Delay(Duration::from_millis(ms));
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if matches!(self.ids, Ids::None) {
            return;
        }
        let mut faults = self.provider.faults();
        self.ids.for_each(|id| {
            if let Some((now, _)) = faults.in_flight.get_mut(id) {
                *now = now.saturating_sub(1);
            }
        });
    }
}
