//! The tool registry: each tool's name, description, JSON Schemas (generated from the
//! types in [`crate::types`], never written by hand) and annotations.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;

use crate::types::{
    DeployInput, ListInput, ListOutput, LogsInput, LogsOutput, MonitorInput, MonitorOutput,
    OperationOutput, RemoveInput, StopInput, UpdateInput,
};

/// `deploy_application`.
pub const DEPLOY: &str = "deploy_application";
/// `monitor_deployment`.
pub const MONITOR: &str = "monitor_deployment";
/// `update_deployment`.
pub const UPDATE: &str = "update_deployment";
/// `stop_deployment`.
pub const STOP: &str = "stop_deployment";
/// `list_deployments`.
pub const LIST: &str = "list_deployments";
/// `get_deployment_logs`.
pub const LOGS: &str = "get_deployment_logs";
/// `remove_deployment`.
pub const REMOVE: &str = "remove_deployment";

/// Hints about what a tool does (MCP's tool annotations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    /// It changes nothing.
    pub read_only_hint: bool,
    /// It may destroy something (stop or delete a deployment).
    pub destructive_hint: bool,
    /// Calling it again with the same arguments changes nothing more.
    pub idempotent_hint: bool,
    /// It reaches outside this machine's deployments.
    pub open_world_hint: bool,
}

impl Annotations {
    const READ: Self = Self {
        read_only_hint: true,
        destructive_hint: false,
        idempotent_hint: true,
        open_world_hint: false,
    };
    const ADD: Self = Self {
        read_only_hint: false,
        destructive_hint: false,
        idempotent_hint: false,
        open_world_hint: false,
    };
    const DESTROY: Self = Self {
        read_only_hint: false,
        destructive_hint: true,
        idempotent_hint: true,
        open_world_hint: false,
    };
}

/// One tool, as an agent framework lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    /// Its name (`deploy_application`).
    pub name: &'static str,
    /// A short title.
    pub title: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// The JSON Schema (2020-12) of its arguments.
    pub input_schema: serde_json::Map<String, serde_json::Value>,
    /// The JSON Schema (2020-12) of its successful answer.
    pub output_schema: serde_json::Map<String, serde_json::Value>,
    /// What it does to the world.
    pub annotations: Annotations,
}

fn schema<T: JsonSchema>(settings: SchemaSettings) -> serde_json::Map<String, serde_json::Value> {
    let schema = settings.into_generator().into_root_schema_for::<T>();
    match serde_json::to_value(schema) {
        Ok(serde_json::Value::Object(mut map)) => {
            // The wrapper type's name is noise to a model.
            map.remove("title");
            map
        }
        _ => serde_json::Map::new(),
    }
}

fn spec<I: JsonSchema, O: JsonSchema>(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    annotations: Annotations,
) -> ToolSpec {
    ToolSpec {
        name,
        title,
        description,
        input_schema: schema::<I>(SchemaSettings::draft2020_12()),
        output_schema: schema::<O>(SchemaSettings::draft2020_12().for_serialize()),
        annotations,
    }
}

/// Narrows a `provider` property to the providers this build has.
fn provider_enum(schema: &mut serde_json::Map<String, serde_json::Value>, providers: &[String]) {
    if let Some(serde_json::Value::Object(props)) = schema.get_mut("properties")
        && let Some(serde_json::Value::Object(provider)) = props.get_mut("provider")
    {
        provider.insert("type".to_owned(), "string".into());
        provider.insert("enum".to_owned(), providers.to_vec().into());
    }
}

/// The seven tools; the `provider` fields list `providers`.
#[must_use]
pub fn specs(providers: &[String]) -> Vec<ToolSpec> {
    let mut specs = vec![
        spec::<DeployInput, OperationOutput>(
            DEPLOY,
            "Deploy an application",
            "Deploy the Node.js application in projectPath as a new deployment named `name`, \
             and wait until it is ready (healthy). Its conan.toml, when present, is read first. \
             Answers the deployment (id, status, url, pid, port); on failure, the failure \
             bundle: exit code, the app's last log lines and what the health check saw.",
            Annotations::ADD,
        ),
        spec::<MonitorInput, MonitorOutput>(
            MONITOR,
            "Monitor a deployment",
            "A deployment's CPU, memory, network, health, restarts and requests now, with \
             their recent series (one point per `interval` ms).",
            Annotations::READ,
        ),
        spec::<UpdateInput, OperationOutput>(
            UPDATE,
            "Update a deployment",
            "Roll out a new revision of a deployment: a new projectPath, env variables merged \
             over the current ones, and the rollout strategy. Waits until the new revision \
             serves; a failed rollout answers its failure bundle.",
            Annotations::ADD,
        ),
        spec::<StopInput, OperationOutput>(
            STOP,
            "Stop a deployment",
            "Stop a deployment's processes or containers (gracefully, then by force). It can \
             be started again.",
            Annotations::DESTROY,
        ),
        spec::<ListInput, ListOutput>(
            LIST,
            "List deployments",
            "The deployments this Conan manages, optionally only those of one provider or in \
             one status.",
            Annotations::READ,
        ),
        spec::<LogsInput, LogsOutput>(
            LOGS,
            "Read a deployment's logs",
            "The newest log lines of a deployment, filtered by time, level, text and stream.",
            Annotations::READ,
        ),
        spec::<RemoveInput, OperationOutput>(
            REMOVE,
            "Remove a deployment",
            "Stop and delete a deployment and its history. A running one needs force: true.",
            Annotations::DESTROY,
        ),
    ];
    for s in &mut specs {
        provider_enum(&mut s.input_schema, providers);
    }
    specs
}
