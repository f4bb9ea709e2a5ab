//! The serialized form of [`DeploymentConfig`]: the same fields, except that `replicas` is
//! an integer or an autoscaling table ([`Autoscale`]), which sets two fields of the config
//! (`replicas` and `autoscale`). Files and stores written before autoscaling existed hold
//! an integer and load unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::autoscale::ReplicasRepr;
use super::{
    DeploymentConfig, EndpointConfig, HealthCheck, Resources, RestartPolicy, StopConfig,
    UpdatePolicy, default_source,
};
use crate::capability::Capabilities;
use crate::secret::Env;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigRepr {
    name: String,
    #[serde(default = "default_source")]
    source: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(default, skip_serializing_if = "Env::is_empty")]
    env: Env,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health_check: Option<HealthCheck>,
    #[serde(default)]
    restart: RestartPolicy,
    #[serde(default)]
    stop: StopConfig,
    #[serde(default, skip_serializing_if = "Resources::is_unlimited")]
    resources: Resources,
    #[serde(default)]
    replicas: ReplicasRepr,
    #[serde(default)]
    update: UpdatePolicy,
    #[serde(default, skip_serializing_if = "EndpointConfig::is_default")]
    endpoint: EndpointConfig,
    #[serde(default, skip_serializing_if = "Capabilities::is_empty")]
    requirements: Capabilities,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    provider_options: BTreeMap<String, serde_json::Value>,
}

impl From<ConfigRepr> for DeploymentConfig {
    fn from(r: ConfigRepr) -> Self {
        let (replicas, autoscale) = match r.replicas {
            ReplicasRepr::Fixed(n) => (n, None),
            ReplicasRepr::Auto(a) => (a.min, Some(a)),
        };
        Self {
            name: r.name,
            source: r.source,
            provider: r.provider,
            env: r.env,
            port: r.port,
            start_command: r.start_command,
            health_check: r.health_check,
            restart: r.restart,
            stop: r.stop,
            resources: r.resources,
            replicas,
            autoscale,
            update: r.update,
            endpoint: r.endpoint,
            requirements: r.requirements,
            labels: r.labels,
            provider_options: r.provider_options,
        }
    }
}

impl From<DeploymentConfig> for ConfigRepr {
    fn from(c: DeploymentConfig) -> Self {
        let replicas = match c.autoscale {
            Some(a) => ReplicasRepr::Auto(a),
            None => ReplicasRepr::Fixed(c.replicas),
        };
        Self {
            name: c.name,
            source: c.source,
            provider: c.provider,
            env: c.env,
            port: c.port,
            start_command: c.start_command,
            health_check: c.health_check,
            restart: c.restart,
            stop: c.stop,
            resources: c.resources,
            replicas,
            update: c.update,
            endpoint: c.endpoint,
            requirements: c.requirements,
            labels: c.labels,
            provider_options: c.provider_options,
        }
    }
}
