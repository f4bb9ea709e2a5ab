//! `conan mcp`: the seven agent tools ([`conan::tools`]) as a Model Context Protocol server
//! on stdin/stdout, through the daemon (the same deployments as `conan ls`; the daemon
//! starts when none runs, as for every command).
//!
//! - `tools/list`: the seven tools with their input and output JSON Schemas and
//!   annotations (`readOnlyHint` on list/logs/monitor, `destructiveHint` on stop/remove).
//! - `tools/call`: `structuredContent` (the tool's JSON answer) plus a short text; a tool
//!   that fails answers `isError: true` with `{ success: false, message, error: { code,
//!   message, hint, problems, failure } }` — bad arguments included, so an agent reads why.
//!   An unknown tool name is the one protocol error.
//! - Progress: with a `progressToken`, each step of a deploy, update, stop or remove is a
//!   `notifications/progress`. `notifications/cancelled` cancels the operation in the
//!   daemon (the provider cleans up what it started).
//! - Resources: `conan://deployments/{name}` (the deployment, JSON) and
//!   `conan://deployments/{name}/logs` (its last 100 lines, text) for each deployment.
//! - Safety: `projectPath` must be an existing directory, under one of `[mcp]
//!   allowed_roots` of `CONAN_HOME/daemon.toml` when set; input sizes are bounded
//!   ([`conan::tools::Limits`]); the daemon's audit log names the MCP client
//!   (`mcp:NAME VERSION`, from `initialize`'s `clientInfo`) on every operation it causes.
//! - Stdout carries only protocol messages: diagnostics go to stderr (`CONAN_LOG`, default
//!   `warn`). Env values never appear in an answer.

mod backend;

use std::sync::Arc;

use conan::tools::{CallContext, ToolBackend, ToolError, ToolOptions, Tools};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};

use crate::daemon::settings::DaemonSettings;
use crate::error::{CliError, CliResult};
use crate::home::Home;
use backend::DaemonBackend;

/// The providers this build has (the `provider` enum of the schemas).
const PROVIDERS: [&str; 2] = ["local", "docker"];

/// How many log lines a logs resource shows.
const RESOURCE_LOG_LINES: usize = 100;

/// The MCP server.
struct Server {
    tools: Arc<Tools<DaemonBackend>>,
    listed: Vec<Tool>,
}

/// Runs `conan mcp` until stdin closes.
///
/// # Errors
/// A daemon that cannot be started, or bad daemon settings.
pub async fn run(home: &Home) -> CliResult {
    init_tracing();
    let settings = DaemonSettings::load(&home.root().join("daemon.toml"))?;
    // Start the daemon now (as every command does), not on the first call.
    crate::client::Client::connect(home).await?;
    let options = ToolOptions::default()
        .providers(PROVIDERS)
        .allowed_roots(settings.mcp.allowed_roots);
    let tools = Tools::new(DaemonBackend::new(home.clone()), options);
    let listed = tools.specs().iter().map(tool_of).collect();
    let server = Server {
        tools: Arc::new(tools),
        listed,
    };
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| CliError::failed(format!("MCP: the session did not start: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| CliError::failed(format!("MCP: the session ended with an error: {e}")))?;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Stdout is the protocol's: diagnostics go to stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn tool_of(spec: &conan::tools::ToolSpec) -> Tool {
    let a = spec.annotations;
    let annotations = ToolAnnotations::with_title(spec.title)
        .read_only(a.read_only_hint)
        .destructive(a.destructive_hint)
        .idempotent(a.idempotent_hint)
        .open_world(a.open_world_hint);
    Tool::new(
        spec.name,
        spec.description,
        Arc::new(spec.input_schema.clone()),
    )
    .with_title(spec.title)
    .with_raw_output_schema(Arc::new(spec.output_schema.clone()))
    .with_annotations(annotations)
}

/// Who asks, for the audit log: `mcp:NAME VERSION`.
fn requested_by(context: &RequestContext<RoleServer>) -> String {
    match context.client_info() {
        Some(info) => format!("mcp:{} {}", info.name, info.version),
        None => "mcp:unknown client".to_owned(),
    }
}

/// A progress callback that sends `notifications/progress` in order.
fn progress_of(
    context: &RequestContext<RoleServer>,
    request: &CallToolRequestParams,
) -> Option<conan::tools::ProgressFn> {
    let token = context.meta.get_progress_token().or_else(|| {
        request
            .meta
            .as_ref()
            .and_then(rmcp::model::RequestMetaObject::get_progress_token)
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let peer = context.peer.clone();
    tokio::spawn(async move {
        let mut step = 0.0;
        while let Some(message) = rx.recv().await {
            step += 1.0;
            let param = ProgressNotificationParam::new(token.clone(), step).with_message(message);
            if let Err(e) = peer.notify_progress(param).await {
                tracing::debug!(error = %e, "a progress notification was not sent");
                break;
            }
        }
    });
    Some(Arc::new(move |message: String| {
        let _ = tx.send(message);
    }))
}

/// The short text beside a structured answer.
fn summary(tool: &str, value: &serde_json::Value) -> String {
    if let Some(message) = value.get("message").and_then(serde_json::Value::as_str) {
        return message.to_owned();
    }
    match tool {
        conan::tools::registry::LIST => {
            let items: Vec<String> = value["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} ({}, {})",
                        d["name"].as_str().unwrap_or("?"),
                        d["status"].as_str().unwrap_or("?"),
                        d["provider"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            if items.is_empty() {
                "no deployments".to_owned()
            } else {
                format!("{} deployments: {}", items.len(), items.join(", "))
            }
        }
        conan::tools::registry::LOGS => {
            let lines: Vec<String> = value["logs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    format!(
                        "{} {} {}",
                        l["timestamp"].as_str().unwrap_or(""),
                        l["stream"].as_str().unwrap_or(""),
                        l["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            format!("{} lines\n{}", lines.len(), lines.join("\n"))
        }
        conan::tools::registry::MONITOR => {
            let m = &value["monitoring"];
            let mut parts = vec![format!(
                "{} is {}",
                m["name"].as_str().unwrap_or("?"),
                m["status"].as_str().unwrap_or("?")
            )];
            if let Some(cpu) = m["metrics"]["cpu"]["usage"].as_f64() {
                parts.push(format!("cpu {cpu:.1}%"));
            }
            if let Some(mem) = m["metrics"]["memory"]["usage"].as_u64() {
                parts.push(format!("memory {:.1} MiB", mem as f64 / 1_048_576.0));
            }
            if let Some(health) = m["metrics"]["health"]["status"].as_str() {
                parts.push(format!("health {health}"));
            }
            parts.join(", ")
        }
        _ => "done".to_owned(),
    }
}

/// The text of a failure: the message, every problem, the hint, and the bundle's evidence.
fn failure_text(error: &ToolError) -> String {
    let mut text = format!("error ({}): {}", error.code, error.message);
    for p in &error.problems {
        text.push_str(&format!("\n- {}: {}", p.path, p.message));
    }
    if let Some(f) = &error.failure {
        text.push_str(&format!("\nfailure: {}", f.reason));
        if let Some(code) = f.exit_code {
            text.push_str(&format!("\nexit code: {code}"));
        }
        if let Some(probe) = &f.probe {
            text.push_str(&format!("\nprobe: {probe}"));
        }
        let skip = f.last_logs.len().saturating_sub(10);
        for line in &f.last_logs[skip..] {
            text.push_str(&format!("\n| {}", line.message));
        }
    }
    if let Some(hint) = &error.hint {
        text.push_str(&format!("\nhint: {hint}"));
    }
    text
}

impl Server {
    async fn resource_list(&self) -> Result<Vec<Resource>, ToolError> {
        let deployments = self.tools.backend().list().await?;
        Ok(deployments
            .iter()
            .flat_map(|d| {
                [
                    Resource::new(format!("conan://deployments/{}", d.name), d.name.clone())
                        .with_title(format!("{} ({})", d.name, d.status))
                        .with_description("The deployment: status, url, pid, port, revision")
                        .with_mime_type("application/json"),
                    Resource::new(
                        format!("conan://deployments/{}/logs", d.name),
                        format!("{} logs", d.name),
                    )
                    .with_description("Its last 100 log lines")
                    .with_mime_type("text/plain"),
                ]
            })
            .collect())
    }

    async fn resource(&self, uri: &str) -> Result<ResourceContents, McpError> {
        let not_found = || McpError::resource_not_found(format!("no resource {uri}"), None);
        let rest = uri
            .strip_prefix("conan://deployments/")
            .ok_or_else(not_found)?;
        let (name, logs) = match rest.strip_suffix("/logs") {
            Some(name) => (name, true),
            None => (rest, false),
        };
        let backend = self.tools.backend();
        let as_mcp = |e: ToolError| match e.code.as_str() {
            "not_found" => not_found(),
            _ => McpError::internal_error(e.message, None),
        };
        if logs {
            let lines = backend
                .logs(name, &conan::LogQuery::tail(RESOURCE_LOG_LINES))
                .await
                .map_err(as_mcp)?;
            let text: Vec<String> = lines
                .iter()
                .map(|l| format!("{} {} {}", l.timestamp, l.stream.as_str(), l.message))
                .collect();
            Ok(ResourceContents::text(text.join("\n"), uri).with_mime_type("text/plain"))
        } else {
            let d = backend.get(name).await.map_err(as_mcp)?;
            let json = serde_json::to_string_pretty(&d)
                .map_err(|e| McpError::internal_error(e.to_string(), None))?;
            Ok(ResourceContents::text(json, uri).with_mime_type("application/json"))
        }
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build();
        let mut info = InitializeResult::new(capabilities).with_instructions(
            "Conan deploys Node.js apps as supervised local processes or Docker containers \
             and keeps them healthy. deploy_application takes a project directory; the \
             other tools take the deployment's name or id as deploymentId.",
        );
        info.server_info = Implementation::new("conan", env!("CARGO_PKG_VERSION"));
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.listed.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        if !self.tools.specs().iter().any(|s| s.name == name) {
            return Err(McpError::invalid_params(
                format!("no tool named '{name}'"),
                None,
            ));
        }
        let ctx = CallContext {
            requested_by: Some(requested_by(&context)),
            progress: progress_of(&context, &request),
            cancel: context.ct.clone(),
        };
        let arguments = request
            .arguments
            .clone()
            .map_or(serde_json::Value::Null, serde_json::Value::Object);
        tracing::info!(tool = %name, by = ?ctx.requested_by, "tools/call");
        let result = match self.tools.call(&name, arguments, &ctx).await {
            Ok(value) => {
                let mut result = CallToolResult::structured(value.clone());
                result.content = vec![ContentBlock::text(summary(&name, &value))];
                result
            }
            Err(error) => {
                tracing::info!(tool = %name, code = %error.code, "a tool call failed");
                let text = failure_text(&error);
                let value =
                    serde_json::to_value(error.into_failure()).unwrap_or(serde_json::Value::Null);
                let mut result = CallToolResult::structured_error(value);
                result.content = vec![ContentBlock::text(text)];
                result
            }
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.resource_list()
            .await
            .map(ListResourcesResult::with_all_items)
            .map_err(|e| McpError::internal_error(e.message, None))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let contents = self.resource(&request.uri).await?;
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}
