//! Conan's agent tools: `deploy_application`, `monitor_deployment`, `update_deployment`,
//! `stop_deployment`, `list_deployments`, `get_deployment_logs` and `remove_deployment`, as
//! typed functions with JSON Schemas, so a Rust host hands them to any agent framework
//! (and `conan mcp` serves them over the Model Context Protocol).
//!
//! - [`Tools`] runs the tools over a [`ToolBackend`]: [`LocalBackend`] is an in-process
//!   [`DeploymentManager`](conan_core::DeploymentManager) (plus a
//!   [`Monitor`](conan_monitor::Monitor) for metric series); the `conan` CLI's daemon client
//!   is another, so `conan mcp` acts on the same deployments as `conan ls`.
//! - [`Tools::specs`] lists each tool's name, description, input and output JSON Schema
//!   (2020-12, generated from the types in [`types`] with `schemars`) and annotations
//!   (`readOnlyHint` on list/logs/monitor, `destructiveHint` on stop/remove).
//! - [`Tools::call`] takes a tool's name and JSON arguments, as a framework hands them over,
//!   and answers the JSON output.
//!
//! Inputs follow the design's field names (camelCase: `projectPath`, `deploymentId`,
//! `healthCheckPath`); `deploymentId` takes an id or a name. A success answers
//! `{ success: true, ... }`; a failure is a [`ToolError`] (code, message, hint, every input
//! problem with its field path, and the failure bundle of a deploy that did not come up),
//! which a host answers as [`ToolFailure`] `{ success: false, message, error }`.
//!
//! Safety: `projectPath` is resolved and must be an existing directory, under one of
//! [`ToolOptions::allowed_roots`] when any are set; `provider` must be one the build has;
//! [`Limits`] bound env sizes, log lines and texts. Nothing is deployed when an input is
//! bad. Env values are never in an answer or an error: deployments list env *names*.
//! [`CallContext`] names who asks (recorded in each operation's audit entry), takes
//! progress, and cancels an operation in flight.
//!
//! ```no_run
//! # async fn demo(manager: conan_core::DeploymentManager) -> Result<(), conan_tools::ToolError> {
//! use conan_tools::{CallContext, LocalBackend, ToolOptions, Tools};
//!
//! let tools = Tools::new(LocalBackend::new(manager), ToolOptions::default());
//! let answer = tools
//!     .call(
//!         "deploy_application",
//!         serde_json::json!({ "name": "hello", "projectPath": "examples/apps/hello" }),
//!         &CallContext::default(),
//!     )
//!     .await?;
//! println!("{}", answer["deployment"]["url"]);
//! # Ok(()) }
//! ```

mod backend;
pub mod convert;
mod error;
pub mod registry;
mod tools;
pub mod types;

pub use backend::{CallContext, LocalBackend, ProgressFn, ToolBackend, UpdateChange};
pub use error::{FailureBundle, ProbeEntry, Problem, ToolError, ToolFailure};
pub use registry::{Annotations, ToolSpec};
pub use tools::{Limits, PROJECT_FILE, ToolOptions, Tools};
pub use types::*;
