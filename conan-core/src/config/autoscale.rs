//! The autoscaled form of `replicas`: a range and a target, instead of a count.
//!
//! ```toml
//! replicas = { min = 1, max = 4, target_in_flight = 8 }
//! # or: replicas = { min = 2, max = 6, target_cpu = 70, scale_in_cooldown = "5m" }
//! ```
//!
//! `replicas = N` (an integer) keeps meaning a fixed count. In a [`DeploymentConfig`] the
//! table sets [`DeploymentConfig::autoscale`] and `replicas` to `min` (the count a first
//! deploy starts with); the count the autoscaler sets later lives in the deployment's
//! runtime ([`RuntimeInfo::replicas`](crate::RuntimeInfo::replicas)), not in its config,
//! so it changes without a new revision. See [`crate::autoscale`] for what drives it.

use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DeploymentConfig;
use crate::time::serde_duration;

/// How the replica count of a deployment follows its load (`replicas = { min, max, .. }`).
///
/// Exactly one target is set: `target_in_flight` (requests in flight per replica, read
/// from the proxy's counters) or `target_cpu` (percent of one core per replica, from the
/// provider's metrics). Validation lists every problem ([`DeploymentConfig::validate`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// The fewest replicas (at least 1); a first deploy starts with these.
    pub min: u32,
    /// The most replicas (at least `min`).
    pub max: u32,
    /// Target of requests in flight per replica (averaged over the autoscaler's window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_in_flight: Option<f64>,
    /// Target CPU per replica, in percent of one core (70 = 0.7 cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cpu: Option<f64>,
    /// The least time between a scale change and the next scale-out (default 30 s).
    #[serde(
        default = "Autoscale::default_scale_out_cooldown",
        with = "serde_duration"
    )]
    pub scale_out_cooldown: Duration,
    /// The least time between a scale change and the next scale-in (default 2 min).
    #[serde(
        default = "Autoscale::default_scale_in_cooldown",
        with = "serde_duration"
    )]
    pub scale_in_cooldown: Duration,
}

/// What an [`Autoscale`] aims at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScaleTarget {
    /// Requests in flight per replica.
    InFlight(f64),
    /// Percent of one core per replica.
    Cpu(f64),
}

impl ScaleTarget {
    /// The target value.
    #[must_use]
    pub fn value(self) -> f64 {
        match self {
            ScaleTarget::InFlight(v) | ScaleTarget::Cpu(v) => v,
        }
    }

    /// What is measured, for messages (`"in-flight requests"`, `"CPU %"`).
    #[must_use]
    pub fn measure(self) -> &'static str {
        match self {
            ScaleTarget::InFlight(_) => "in-flight requests",
            ScaleTarget::Cpu(_) => "CPU %",
        }
    }
}

impl Autoscale {
    /// Default of [`scale_out_cooldown`](Self::scale_out_cooldown): 30 s.
    pub const DEFAULT_SCALE_OUT_COOLDOWN: Duration = Duration::from_secs(30);
    /// Default of [`scale_in_cooldown`](Self::scale_in_cooldown): 2 min.
    pub const DEFAULT_SCALE_IN_COOLDOWN: Duration = Duration::from_secs(120);

    fn default_scale_out_cooldown() -> Duration {
        Self::DEFAULT_SCALE_OUT_COOLDOWN
    }
    fn default_scale_in_cooldown() -> Duration {
        Self::DEFAULT_SCALE_IN_COOLDOWN
    }

    fn with_targets(min: u32, max: u32, in_flight: Option<f64>, cpu: Option<f64>) -> Self {
        Self {
            min,
            max,
            target_in_flight: in_flight,
            target_cpu: cpu,
            scale_out_cooldown: Self::DEFAULT_SCALE_OUT_COOLDOWN,
            scale_in_cooldown: Self::DEFAULT_SCALE_IN_COOLDOWN,
        }
    }

    /// Between `min` and `max` replicas, aiming at `target` requests in flight per replica.
    #[must_use]
    pub fn in_flight(min: u32, max: u32, target: f64) -> Self {
        Self::with_targets(min, max, Some(target), None)
    }

    /// Between `min` and `max` replicas, aiming at `percent` of one core per replica.
    #[must_use]
    pub fn cpu(min: u32, max: u32, percent: f64) -> Self {
        Self::with_targets(min, max, None, Some(percent))
    }

    /// The same with other cool-downs.
    #[must_use]
    pub fn cooldowns(mut self, scale_out: Duration, scale_in: Duration) -> Self {
        self.scale_out_cooldown = scale_out;
        self.scale_in_cooldown = scale_in;
        self
    }

    /// The target, when exactly one is set.
    #[must_use]
    pub fn target(&self) -> Option<ScaleTarget> {
        match (self.target_in_flight, self.target_cpu) {
            (Some(v), None) => Some(ScaleTarget::InFlight(v)),
            (None, Some(v)) => Some(ScaleTarget::Cpu(v)),
            _ => None,
        }
    }

    /// `n` within `[min, max]`.
    #[must_use]
    pub fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.min.max(1), self.max.max(self.min.max(1)))
    }

    /// The problems of this table, each with its path under `replicas`.
    pub(super) fn problems(&self, c: &DeploymentConfig) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut push = |path: &str, message: String| p.push((path.to_owned(), message));
        if self.min < 1 {
            push("replicas.min", "must be at least 1".to_owned());
        }
        if self.max < self.min {
            push(
                "replicas.max",
                format!("must be at least replicas.min ({})", self.min),
            );
        }
        match (self.target_in_flight, self.target_cpu) {
            (None, None) => push(
                "replicas",
                "an autoscaled replicas table needs a target: target_in_flight (requests in flight per replica) or target_cpu (percent of a core per replica)".to_owned(),
            ),
            (Some(_), Some(_)) => push(
                "replicas",
                "set one target, target_in_flight or target_cpu, not both".to_owned(),
            ),
            _ => {}
        }
        for (path, value) in [
            ("replicas.target_in_flight", self.target_in_flight),
            ("replicas.target_cpu", self.target_cpu),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0 && v <= 1e6)
            {
                push(path, format!("must be a number above 0 (got {v})"));
            }
        }
        for (path, d) in [
            ("replicas.scale_out_cooldown", self.scale_out_cooldown),
            ("replicas.scale_in_cooldown", self.scale_in_cooldown),
        ] {
            if d > super::limits::AUTOSCALE_COOLDOWN {
                push(path, "at most 24h".to_owned());
            }
        }
        if c.replicas != self.min {
            push(
                "replicas",
                format!(
                    "an autoscaled deployment starts at replicas.min ({}), not {}",
                    self.min, c.replicas
                ),
            );
        }
        if !c.endpoint.enabled {
            push(
                "replicas",
                "autoscaling needs the deployment's endpoint (the proxy balances the replicas and counts their requests); endpoint.enabled is false".to_owned(),
            );
        }
        p
    }
}

/// `replicas` as written: a count, or an autoscaling table.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum ReplicasRepr {
    Fixed(u32),
    Auto(Autoscale),
}

impl Serialize for ReplicasRepr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ReplicasRepr::Fixed(n) => s.serialize_u32(*n),
            ReplicasRepr::Auto(a) => a.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ReplicasRepr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReplicasRepr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of replicas, or a table like { min = 1, max = 4, target_in_flight = 8 }")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(ReplicasRepr::Fixed)
                    .map_err(|_| E::custom(format!("{v} replicas is too many")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("replicas cannot be negative (got {v})")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Autoscale::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ReplicasRepr::Auto)
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for ReplicasRepr {
    fn default() -> Self {
        ReplicasRepr::Fixed(1)
    }
}
