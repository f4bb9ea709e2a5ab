//! Listing what the state directory holds, for a manager that lost its own records.

use conan_core::{InstanceInfo, KnownDeployment, RuntimeInfo, Timestamp};

use crate::LocalProvider;
use crate::deployment::{DETAIL_INSTANCE, DETAIL_STATE_DIR};
use crate::state::{self, Loaded};

impl LocalProvider {
    /// Every deployment recorded in the state directory (`<state_dir>/deployments/*`), as
    /// a [`KnownDeployment`]: the spec of the revision it last held (`spec.json`, with its
    /// env values) and its last runtime (`state.json`: the serving instance's pid, port
    /// and start time, and the details a fresh provider needs to find it again). This
    /// reads files only; nothing is adopted, started or killed until the result is passed
    /// to [`Provider::recover`](conan_core::Provider::recover), which reconciles each one
    /// as after a manager restart.
    ///
    /// Meant for rebuilding a manager's lost database (`conan daemon repair`). A
    /// deployment whose `spec.json` is missing or damaged cannot be described and is
    /// skipped (with a warning); a damaged `state.json` gives a runtime with the details
    /// only. Ordered by deployment id.
    #[must_use]
    pub fn discover(&self) -> Vec<KnownDeployment> {
        let root = self.settings().state_dir.join("deployments");
        let host = &self.settings().host;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let spec = match state::load_spec(&dir) {
                Loaded::Found(s) if entry.file_name().to_str() == Some(s.id.as_str()) => {
                    s.into_spec()
                }
                Loaded::Found(_) => {
                    tracing::warn!(dir = %dir.display(), "spec.json names another deployment; skipped");
                    continue;
                }
                Loaded::Missing => {
                    tracing::warn!(dir = %dir.display(), "no spec.json; skipped");
                    continue;
                }
                Loaded::Damaged(why) => {
                    tracing::warn!(%why, "damaged spec.json; skipped");
                    continue;
                }
            };
            let mut runtime = RuntimeInfo::default();
            if let Loaded::Found(saved) = state::load(&dir)
                && let Some(inst) = &saved.instance
            {
                runtime = runtime.with_instance(
                    InstanceInfo::new(inst.pid.to_string(), conan_core::Revision(inst.revision))
                        .with_port(inst.port)
                        .with_started_at(Some(Timestamp::from_unix_micros(inst.started_at_micros))),
                );
                if let Some(p) = inst.port {
                    runtime = runtime.with_url(format!("http://{host}:{p}"));
                }
                if let Ok(v) = serde_json::to_value(inst) {
                    runtime = runtime.with_detail(DETAIL_INSTANCE, v);
                }
            }
            let runtime = runtime.with_detail(DETAIL_STATE_DIR, dir.display().to_string());
            out.push(KnownDeployment::new(spec, runtime));
        }
        out.sort_by(|a, b| a.id().as_str().cmp(b.id().as_str()));
        out
    }
}
