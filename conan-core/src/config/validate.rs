//! Validation rules of [`DeploymentConfig`]: all problems at once, each with its field path.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits;
use super::{DeploymentConfig, HealthCheckKind, RestartMode};
use crate::time::format_duration;

/// A bound in the largest whole unit (`"24h"`, `"10m"`).
fn round(d: Duration) -> String {
    match d.as_secs() {
        s if d.subsec_nanos() == 0 && s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if d.subsec_nanos() == 0 && s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format_duration(d),
    }
}

/// A duration as it was probably written: whole seconds as `"Ns"` (so an absurd value shows
/// as the number that was typed), anything finer in human units.
fn exact(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format_duration(d)
    }
}

/// One broken rule of a config: where (`health_check.path`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigProblem {
    /// Dotted field path (`env.1BAD`, `restart.max_restarts`); empty for a syntax error.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    #[must_use]
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Whether `s` is a DNS label: 1–63 of `a-z0-9-`, not starting or ending with `-`.
#[must_use]
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a portable environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
#[must_use]
pub fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(path, message));
    }

    fn positive(&mut self, path: &str, d: Duration) {
        if d.is_zero() {
            self.push(path, "must be a positive duration, like \"5s\"");
        }
    }

    /// A positive duration of at most `max`.
    fn positive_at_most(&mut self, path: &str, d: Duration, max: Duration) {
        self.positive(path, d);
        self.at_most(path, d, max);
    }

    fn at_most(&mut self, path: &str, d: Duration, max: Duration) {
        if d > max {
            self.push(path, format!("at most {} (got {})", round(max), exact(d)));
        }
    }

    fn at_least_one(&mut self, path: &str, n: u32) {
        if n < 1 {
            self.push(path, "must be at least 1");
        }
    }
}

pub(super) fn problems(c: &DeploymentConfig) -> Vec<ConfigProblem> {
    let mut p = Problems(Vec::new());

    if !is_dns_label(&c.name) {
        p.push(
            "name",
            format!(
                "'{}' is not a DNS label: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
                c.name
            ),
        );
    }
    if c.source.as_os_str().is_empty() {
        p.push("source", "must not be empty");
    }
    if let Some(provider) = &c.provider
        && !is_dns_label(provider)
    {
        p.push(
            "provider",
            format!("'{provider}' is not a provider name (lowercase letters, digits, '-')"),
        );
    }
    for (key, value) in c.env.iter() {
        if !is_env_name(key) {
            p.push(
                format!("env.{key}"),
                "is not a valid variable name: use letters, digits and '_', not starting with a digit",
            );
        }
        if value.contains('\0') {
            p.push(format!("env.{key}"), "value must not contain a NUL byte");
        }
    }
    if c.port == Some(0) {
        p.push("port", "must be between 1 and 65535");
    }
    if let Some(cmd) = &c.start_command
        && cmd.trim().is_empty()
    {
        p.push(
            "start_command",
            "must not be empty (omit it to let the provider find the start command)",
        );
    }

    if let Some(h) = &c.health_check {
        match h.kind {
            HealthCheckKind::Http => {
                if let Some(path) = &h.path
                    && !path.starts_with('/')
                {
                    p.push("health_check.path", "must start with '/'");
                }
            }
            HealthCheckKind::Command => {
                if h.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    p.push(
                        "health_check.command",
                        "is required for a 'command' health check",
                    );
                }
            }
            HealthCheckKind::Tcp | HealthCheckKind::Process => {}
        }
        if h.kind != HealthCheckKind::Http && h.path.is_some() {
            p.push(
                "health_check.path",
                "is only used by an 'http' health check",
            );
        }
        if h.port == Some(0) {
            p.push("health_check.port", "must be between 1 and 65535");
        }
        p.positive_at_most(
            "health_check.interval",
            h.interval,
            limits::HEALTH_CHECK_INTERVAL,
        );
        p.positive_at_most(
            "health_check.timeout",
            h.timeout,
            limits::HEALTH_CHECK_TIMEOUT,
        );
        p.at_most(
            "health_check.start_period",
            h.start_period,
            limits::HEALTH_CHECK_START_PERIOD,
        );
        p.at_least_one("health_check.failure_threshold", h.failure_threshold);
        p.at_least_one("health_check.success_threshold", h.success_threshold);
    }

    let r = &c.restart;
    if r.policy != RestartMode::Never {
        p.at_least_one("restart.max_restarts", r.max_restarts);
    }
    p.positive_at_most("restart.window", r.window, limits::RESTART_WINDOW);
    p.positive_at_most(
        "restart.backoff_initial",
        r.backoff_initial,
        limits::RESTART_BACKOFF,
    );
    p.positive_at_most(
        "restart.backoff_max",
        r.backoff_max,
        limits::RESTART_BACKOFF,
    );
    if r.backoff_max < r.backoff_initial {
        p.push(
            "restart.backoff_max",
            "must not be smaller than restart.backoff_initial",
        );
    }
    if !(r.backoff_multiplier.is_finite() && r.backoff_multiplier >= 1.0) {
        p.push(
            "restart.backoff_multiplier",
            "must be a number of at least 1.0",
        );
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        p.push("restart.jitter", "must be a fraction between 0.0 and 1.0");
    }
    p.positive_at_most(
        "restart.reset_after",
        r.reset_after,
        limits::RESTART_RESET_AFTER,
    );
    p.positive_at_most(
        "restart.min_uptime",
        r.min_uptime,
        limits::RESTART_MIN_UPTIME,
    );

    p.positive_at_most("stop.timeout", c.stop.timeout, limits::STOP_TIMEOUT);

    if c.resources.memory.is_some_and(|m| m.bytes() == 0) {
        p.push("resources.memory", "must be larger than 0");
    }
    if let Some(cpus) = c.resources.cpus
        && !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0)
    {
        p.push(
            "resources.cpus",
            "must be a number of cores above 0 (like 0.5 or 2)",
        );
    }

    match &c.autoscale {
        None => p.at_least_one("replicas", c.replicas),
        Some(a) => {
            for (path, message) in a.problems(c) {
                p.push(path, message);
            }
        }
    }
    if let Some(plan) = &c.update.canary {
        for (path, message) in plan.problems() {
            p.push(path, message);
        }
    }
    if c.update.max_surge == 0 && c.update.max_unavailable == 0 {
        p.push(
            "update.max_surge",
            "max_surge and max_unavailable cannot both be 0 (a rolling update could not start or stop anything)",
        );
    }

    p.at_least_one("update.max_parallel", c.update.max_parallel);
    p.at_most(
        "update.min_healthy_time",
        c.update.min_healthy_time,
        limits::UPDATE_MIN_HEALTHY_TIME,
    );
    p.positive_at_most(
        "update.healthy_deadline",
        c.update.healthy_deadline,
        limits::UPDATE_HEALTHY_DEADLINE,
    );

    p.at_most(
        "endpoint.drain_timeout",
        c.endpoint.drain_timeout,
        limits::ENDPOINT_DRAIN_TIMEOUT,
    );
    if let Some(listen) = c.endpoint.listen {
        if !c.endpoint.enabled {
            p.push(
                "endpoint.listen",
                "is set but endpoint.enabled is false; remove one of them",
            );
        }
        if listen.port() == 0 {
            p.push("endpoint.listen", "needs a port (like 127.0.0.1:8080)");
        }
        if c.port == Some(listen.port()) {
            p.push(
                "endpoint.listen",
                format!(
                    "uses port {}, which is the app's own port; the endpoint needs a port of its own",
                    listen.port()
                ),
            );
        }
    }

    for key in c.labels.keys() {
        let ok = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'));
        if !ok {
            p.push(
                format!("labels.{key}"),
                "label keys use letters, digits, '.', '-', '_' and '/' (at most 253)",
            );
        }
    }
    for name in c.provider_options.keys() {
        if !is_dns_label(name) {
            p.push(format!("provider_options.{name}"), "is not a provider name");
        }
    }

    p.0
}
