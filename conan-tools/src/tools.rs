//! The seven tools as typed functions over a [`ToolBackend`], and [`Tools::call`], which
//! takes a tool's name and JSON arguments as an agent framework hands them over.

use std::path::{Path, PathBuf};
use std::time::Duration;

use conan_core::{
    DeploymentConfig, HealthCheck, HealthCheckKind, LogLevel, LogQuery, OutputStream, Timestamp,
    UpdateStrategy,
};
use conan_monitor::watch::{MetricName, WatchRequest};
use serde::de::DeserializeOwned;

use crate::backend::{CallContext, ToolBackend, UpdateChange};
use crate::convert;
use crate::error::{Problem, ToolError};
use crate::registry::{self, ToolSpec};
use crate::types::{
    DeployInput, Deployment, Level, ListInput, ListOutput, LogsInput, LogsOutput, MetricKind,
    MonitorInput, MonitorOutput, OperationOutput, RemoveInput, StopInput, Strategy, Stream,
    UpdateInput,
};

/// The project file a `projectPath` may hold.
pub const PROJECT_FILE: &str = "conan.toml";

/// Limits on what a caller may send (an agent can send anything).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Env variables per call.
    pub env_vars: usize,
    /// Bytes of one env variable's name.
    pub env_name_bytes: usize,
    /// Bytes of one env variable's value.
    pub env_value_bytes: usize,
    /// Log lines one call answers.
    pub log_lines: u32,
    /// Bytes of a path, a search text, a name.
    pub text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            env_vars: 256,
            env_name_bytes: 256,
            env_value_bytes: 32 * 1024,
            log_lines: 5_000,
            text_bytes: 4_096,
        }
    }
}

/// How [`Tools`] checks its inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolOptions {
    /// The providers a deploy may name (the `provider` enum of the schemas).
    pub providers: Vec<String>,
    /// When not empty, a `projectPath` must lie under one of these directories.
    pub allowed_roots: Vec<PathBuf>,
    /// Input limits.
    pub limits: Limits,
}

impl Default for ToolOptions {
    fn default() -> Self {
        Self {
            providers: vec!["local".to_owned()],
            allowed_roots: Vec::new(),
            limits: Limits::default(),
        }
    }
}

impl ToolOptions {
    /// These providers.
    #[must_use]
    pub fn providers<S: Into<String>>(mut self, providers: impl IntoIterator<Item = S>) -> Self {
        self.providers = providers.into_iter().map(Into::into).collect();
        self
    }

    /// Only projects under these roots.
    #[must_use]
    pub fn allowed_roots(mut self, roots: impl IntoIterator<Item = PathBuf>) -> Self {
        self.allowed_roots = roots.into_iter().collect();
        self
    }

    /// Other limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// The seven tools over a backend.
#[derive(Debug)]
pub struct Tools<B> {
    backend: B,
    options: ToolOptions,
    specs: Vec<ToolSpec>,
}

impl<B: ToolBackend> Tools<B> {
    /// The tools over `backend`, checking inputs as `options` say.
    #[must_use]
    pub fn new(backend: B, options: ToolOptions) -> Self {
        let specs = registry::specs(&options.providers);
        Self {
            backend,
            options,
            specs,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The options.
    pub fn options(&self) -> &ToolOptions {
        &self.options
    }

    /// The seven tools: names, descriptions, input and output schemas, annotations.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// Runs the tool `name` on JSON `arguments` and answers its JSON output.
    ///
    /// # Errors
    /// `unknown_tool`, `invalid_input` (every problem, with its field path), or the tool's
    /// own error.
    pub async fn call(
        &self,
        name: &str,
        arguments: serde_json::Value,
        ctx: &CallContext,
    ) -> Result<serde_json::Value, ToolError> {
        let Some(spec) = self.specs.iter().find(|s| s.name == name) else {
            let known: Vec<_> = self.specs.iter().map(|s| s.name).collect();
            return Err(
                ToolError::new("unknown_tool", format!("no tool named '{name}'"))
                    .with_hint(format!("the tools are {}", known.join(", "))),
            );
        };
        let arguments = match arguments {
            serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
            other => other,
        };
        check_required(spec, &arguments)?;
        let out = match name {
            registry::DEPLOY => to_json(&self.deploy_application(parse(arguments)?, ctx).await?),
            registry::MONITOR => to_json(&self.monitor_deployment(parse(arguments)?).await?),
            registry::UPDATE => to_json(&self.update_deployment(parse(arguments)?, ctx).await?),
            registry::STOP => to_json(&self.stop_deployment(parse(arguments)?, ctx).await?),
            registry::LIST => to_json(&self.list_deployments(parse(arguments)?).await?),
            registry::LOGS => to_json(&self.get_deployment_logs(parse(arguments)?).await?),
            registry::REMOVE => to_json(&self.remove_deployment(parse(arguments)?, ctx).await?),
            _ => unreachable!("every spec has a tool"),
        };
        Ok(out)
    }

    /// `deploy_application`.
    ///
    /// # Errors
    /// `invalid_input` / `invalid_config` with every problem, or the deploy's error (with the
    /// failure bundle when the app did not come up).
    pub async fn deploy_application(
        &self,
        input: DeployInput,
        ctx: &CallContext,
    ) -> Result<OperationOutput, ToolError> {
        let config = self.deploy_config(&input)?;
        let deployment = self.backend.deploy(config, ctx).await?;
        let message = format!(
            "{} is {}{}",
            deployment.name,
            deployment.status,
            at(&deployment)
        );
        Ok(operation(deployment, message))
    }

    /// `monitor_deployment`.
    ///
    /// # Errors
    /// `invalid_input`, `not_found`.
    pub async fn monitor_deployment(
        &self,
        input: MonitorInput,
    ) -> Result<MonitorOutput, ToolError> {
        let mut problems = Vec::new();
        self.check_text(&mut problems, "deploymentId", &input.deployment_id);
        let interval = input.interval.unwrap_or(5_000);
        let min = u64::try_from(conan_monitor::watch::MIN_INTERVAL.as_millis()).unwrap_or(100);
        let max =
            u64::try_from(conan_monitor::watch::MAX_INTERVAL.as_millis()).unwrap_or(3_600_000);
        if !(min..=max).contains(&interval) {
            problems.push(Problem::new(
                "interval",
                format!("{interval} ms: must be between {min} and {max}"),
            ));
        }
        finish(problems)?;
        let interval = Duration::from_millis(interval);
        let window =
            (interval * 120).clamp(Duration::from_secs(600), conan_monitor::watch::MAX_WINDOW);
        let request = WatchRequest::new(input.deployment_id)
            .metrics(input.metrics.iter().map(|m| metric_name(*m)))
            .interval(interval)
            .window(window);
        let monitoring = self.backend.monitor(&request).await?;
        Ok(MonitorOutput {
            success: true,
            monitoring,
        })
    }

    /// `update_deployment`.
    ///
    /// # Errors
    /// `invalid_input` / `invalid_config`, `not_found`, or the rollout's error (with the
    /// failure bundle; the previous revision keeps serving when its policy rolls back).
    pub async fn update_deployment(
        &self,
        input: UpdateInput,
        ctx: &CallContext,
    ) -> Result<OperationOutput, ToolError> {
        let mut problems = Vec::new();
        self.check_text(&mut problems, "deploymentId", &input.deployment_id);
        self.check_env(&mut problems, &input.env);
        let dir = match &input.project_path {
            Some(path) => self.project_dir(&mut problems, path),
            None => None,
        };
        finish(problems)?;
        let mut change = UpdateChange {
            env: input.env,
            strategy: input.strategy.map(strategy),
            ..UpdateChange::default()
        };
        if let Some(dir) = dir {
            match read_project(&dir)? {
                Some(table) => {
                    let mut table = table;
                    table.insert(
                        "name".to_owned(),
                        serde_json::Value::String(input.deployment_id.clone()),
                    );
                    // The name is the deployment's (the daemon keeps it); the file's
                    // source is relative to the file.
                    let source = source_of(&dir, &table);
                    table.insert(
                        "source".to_owned(),
                        serde_json::Value::String(source.display().to_string()),
                    );
                    let config: DeploymentConfig =
                        serde_json::from_value(serde_json::Value::Object(table)).map_err(|e| {
                            ToolError::invalid_input(vec![Problem::new(
                                PROJECT_FILE,
                                e.to_string(),
                            )])
                        })?;
                    change.config = Some(config);
                }
                None => change.source = Some(dir),
            }
        }
        let deployment = self
            .backend
            .update(&input.deployment_id, change, ctx)
            .await?;
        let message = format!(
            "{} is {} on revision {}{}",
            deployment.name,
            deployment.status,
            deployment.revision,
            at(&deployment)
        );
        Ok(operation(deployment, message))
    }

    /// `stop_deployment`.
    ///
    /// # Errors
    /// `not_found`, or the stop's error.
    pub async fn stop_deployment(
        &self,
        input: StopInput,
        ctx: &CallContext,
    ) -> Result<OperationOutput, ToolError> {
        let mut problems = Vec::new();
        self.check_text(&mut problems, "deploymentId", &input.deployment_id);
        finish(problems)?;
        let deployment = self.backend.stop(&input.deployment_id, ctx).await?;
        let message = format!("stopped {} ({})", deployment.name, deployment.status);
        Ok(operation(deployment, message))
    }

    /// `remove_deployment`.
    ///
    /// # Errors
    /// `not_found`, `running` (without `force`), or the removal's error.
    pub async fn remove_deployment(
        &self,
        input: RemoveInput,
        ctx: &CallContext,
    ) -> Result<OperationOutput, ToolError> {
        let mut problems = Vec::new();
        self.check_text(&mut problems, "deploymentId", &input.deployment_id);
        finish(problems)?;
        let deployment = self
            .backend
            .remove(&input.deployment_id, input.force, ctx)
            .await?;
        let message = format!("removed {}", deployment.name);
        Ok(operation(deployment, message))
    }

    /// `list_deployments`.
    ///
    /// # Errors
    /// `invalid_input` for an unknown status, or the backend's error.
    pub async fn list_deployments(&self, input: ListInput) -> Result<ListOutput, ToolError> {
        const STATUSES: [&str; 10] = [
            "pending",
            "deploying",
            "running",
            "restarting",
            "updating",
            "stopping",
            "stopped",
            "failed",
            "removing",
            "removed",
        ];
        if let Some(status) = &input.status
            && !STATUSES.contains(&status.as_str())
        {
            return Err(ToolError::invalid_input(vec![Problem::new(
                "status",
                format!("unknown status '{status}'; known: {}", STATUSES.join(", ")),
            )]));
        }
        let deployments: Vec<Deployment> = self
            .backend
            .list()
            .await?
            .into_iter()
            .filter(|d| input.provider.as_ref().is_none_or(|p| &d.provider == p))
            .filter(|d| input.status.as_ref().is_none_or(|s| &d.status == s))
            .collect();
        Ok(ListOutput {
            success: true,
            count: deployments.len(),
            deployments,
        })
    }

    /// `get_deployment_logs`.
    ///
    /// # Errors
    /// `invalid_input` (lines over the limit, a bad `since`), `not_found`.
    pub async fn get_deployment_logs(&self, input: LogsInput) -> Result<LogsOutput, ToolError> {
        let mut problems = Vec::new();
        self.check_text(&mut problems, "deploymentId", &input.deployment_id);
        let lines = input.lines.unwrap_or(100);
        if lines > self.options.limits.log_lines {
            problems.push(Problem::new(
                "lines",
                format!("{lines}: at most {}", self.options.limits.log_lines),
            ));
        }
        let mut query = LogQuery::tail(lines as usize);
        if let Some(since) = &input.since {
            match parse_since(since) {
                Ok(t) => query.since = Some(t),
                Err(message) => problems.push(Problem::new("since", message)),
            }
        }
        if let Some(search) = &input.search {
            self.check_text(&mut problems, "search", search);
            query.contains = Some(search.clone());
        }
        query.min_level = input.level.map(level);
        query.stream = input.stream.map(|s| match s {
            Stream::Stdout => OutputStream::Stdout,
            Stream::Stderr => OutputStream::Stderr,
        });
        finish(problems)?;
        let deployment = self.backend.get(&input.deployment_id).await?;
        let logs: Vec<_> = self
            .backend
            .logs(&deployment.id, &query)
            .await?
            .iter()
            .map(convert::log_entry)
            .collect();
        Ok(LogsOutput {
            success: true,
            deployment_id: deployment.id,
            count: logs.len(),
            logs,
        })
    }

    /// The config a deploy sends: the project's `conan.toml` (if any), the input's `config`
    /// extras, then its typed fields; validated. Every problem is reported at once.
    fn deploy_config(&self, input: &DeployInput) -> Result<DeploymentConfig, ToolError> {
        let mut problems = Vec::new();
        if input.name.trim().is_empty() {
            problems.push(Problem::new("name", "required: a DNS label like \"hello\""));
        }
        self.check_text(&mut problems, "name", &input.name);
        self.check_env(&mut problems, &input.env);
        if let Some(provider) = &input.provider
            && !self.options.providers.iter().any(|p| p == provider)
        {
            problems.push(Problem::new(
                "provider",
                format!(
                    "unknown provider '{provider}'; this build has: {}",
                    self.options.providers.join(", ")
                ),
            ));
        }
        if let Some(path) = &input.health_check_path {
            self.check_text(&mut problems, "healthCheckPath", path);
        }
        if let Some(extra) = &input.config {
            for key in ["name", "source", "env"] {
                if extra.contains_key(key) {
                    let field = match key {
                        "source" => "projectPath",
                        other => other,
                    };
                    problems.push(Problem::new(
                        format!("config.{key}"),
                        format!("not allowed here: use the top-level `{field}` field"),
                    ));
                }
            }
        }
        let dir = self.project_dir(&mut problems, &input.project_path);
        finish(problems)?;
        let Some(dir) = dir else {
            return Err(ToolError::invalid_input(vec![Problem::new(
                "projectPath",
                "cannot be resolved",
            )]));
        };
        let mut table = read_project(&dir)?.unwrap_or_default();
        if let Some(extra) = &input.config {
            for (k, v) in extra {
                table.insert(k.clone(), v.clone());
            }
        }
        let source = source_of(&dir, &table);
        table.insert("name".to_owned(), input.name.clone().into());
        table.insert("source".to_owned(), source.display().to_string().into());
        let mut config: DeploymentConfig = serde_json::from_value(serde_json::Value::Object(table))
            .map_err(|e| ToolError::invalid_input(vec![Problem::new("config", e.to_string())]))?;
        if let Some(provider) = &input.provider {
            config.provider = Some(provider.clone());
        }
        if let Some(port) = input.port {
            config.port = Some(port);
        }
        for (k, v) in &input.env {
            config.env.insert(k.clone(), v.clone());
        }
        if let Some(start) = &input.start_command {
            config.start_command = Some(start.clone());
        }
        if let Some(path) = &input.health_check_path {
            config.health_check = Some(match config.health_check.take() {
                Some(mut check) if check.kind == HealthCheckKind::Http => {
                    check.path = Some(path.clone());
                    check
                }
                _ => HealthCheck::http(path.clone()),
            });
        }
        config.validate().map_err(|e| ToolError::from_core(&e))?;
        Ok(config)
    }

    /// `path` resolved (relative to the working directory) and checked: it exists, is a
    /// directory, and lies under an allowed root. Problems go to `problems`.
    fn project_dir(&self, problems: &mut Vec<Problem>, path: &str) -> Option<PathBuf> {
        const FIELD: &str = "projectPath";
        if path.trim().is_empty() {
            problems.push(Problem::new(FIELD, "required: the application's directory"));
            return None;
        }
        if path.len() > self.options.limits.text_bytes {
            problems.push(Problem::new(
                FIELD,
                format!("longer than {} bytes", self.options.limits.text_bytes),
            ));
            return None;
        }
        let resolved = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(Problem::new(FIELD, format!("{path} does not exist")));
                return None;
            }
            Err(e) => {
                problems.push(Problem::new(FIELD, format!("cannot open {path}: {e}")));
                return None;
            }
        };
        if !resolved.is_dir() {
            problems.push(Problem::new(
                FIELD,
                format!(
                    "{} is a file, not a directory: pass the application's directory",
                    resolved.display()
                ),
            ));
            return None;
        }
        let roots = &self.options.allowed_roots;
        if !roots.is_empty()
            && !roots.iter().any(|root| {
                std::fs::canonicalize(root).is_ok_and(|root| resolved.starts_with(root))
            })
        {
            let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
            problems.push(Problem::new(
                FIELD,
                format!(
                    "{} is outside the allowed roots ({})",
                    resolved.display(),
                    list.join(", ")
                ),
            ));
            return None;
        }
        Some(resolved)
    }

    fn check_text(&self, problems: &mut Vec<Problem>, field: &str, text: &str) {
        let limit = self.options.limits.text_bytes;
        if text.len() > limit {
            problems.push(Problem::new(field, format!("longer than {limit} bytes")));
        }
    }

    /// Checks sizes; the messages name variables, never their values.
    fn check_env(
        &self,
        problems: &mut Vec<Problem>,
        env: &std::collections::BTreeMap<String, String>,
    ) {
        let limits = &self.options.limits;
        if env.len() > limits.env_vars {
            problems.push(Problem::new(
                "env",
                format!("{} variables: at most {}", env.len(), limits.env_vars),
            ));
        }
        for (name, value) in env {
            if name.len() > limits.env_name_bytes {
                problems.push(Problem::new(
                    "env",
                    format!("a name is longer than {} bytes", limits.env_name_bytes),
                ));
            } else if value.len() > limits.env_value_bytes {
                problems.push(Problem::new(
                    format!("env.{name}"),
                    format!("the value is longer than {} bytes", limits.env_value_bytes),
                ));
            }
        }
    }
}

/// The required fields of the tool's input schema that `arguments` lacks, as problems
/// (a clearer answer than serde's first complaint).
fn check_required(spec: &ToolSpec, arguments: &serde_json::Value) -> Result<(), ToolError> {
    let Some(object) = arguments.as_object() else {
        return Err(ToolError::invalid_input(vec![Problem::new(
            "",
            "the arguments must be a JSON object",
        )]));
    };
    let missing: Vec<Problem> = spec
        .input_schema
        .get("required")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .filter(|field| object.get(*field).is_none_or(serde_json::Value::is_null))
        .map(|field| Problem::new(field, "required"))
        .collect();
    finish(missing)
}

fn parse<T: DeserializeOwned>(arguments: serde_json::Value) -> Result<T, ToolError> {
    serde_json::from_value(arguments)
        .map_err(|e| ToolError::invalid_input(vec![Problem::new("", e.to_string())]))
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "a tool output did not serialize");
        serde_json::Value::Null
    })
}

fn finish(problems: Vec<Problem>) -> Result<(), ToolError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ToolError::invalid_input(problems))
    }
}

fn operation(deployment: Deployment, message: String) -> OperationOutput {
    OperationOutput {
        success: true,
        deployment,
        message,
    }
}

fn at(d: &Deployment) -> String {
    d.url
        .as_ref()
        .map(|u| format!(" at {u}"))
        .unwrap_or_default()
}

/// The project's `conan.toml` as a JSON object, when it has one.
fn read_project(
    dir: &Path,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ToolError> {
    let file = dir.join(PROJECT_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ToolError::new(
                "invalid_input",
                format!("cannot read {}: {e}", file.display()),
            ));
        }
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ToolError::invalid_input(vec![Problem::new(
            PROJECT_FILE,
            format!("{}: {}", file.display(), e.message().trim()),
        )])
    })?;
    match serde_json::to_value(table) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        _ => Err(ToolError::invalid_input(vec![Problem::new(
            PROJECT_FILE,
            "not a table",
        )])),
    }
}

/// The app's source: the file's `source` relative to the directory, else the directory.
fn source_of(dir: &Path, table: &serde_json::Map<String, serde_json::Value>) -> PathBuf {
    match table.get("source").and_then(serde_json::Value::as_str) {
        Some(s) => dir.join(s),
        None => dir.to_path_buf(),
    }
}

fn metric_name(m: MetricKind) -> MetricName {
    match m {
        MetricKind::Cpu => MetricName::Cpu,
        MetricKind::Memory => MetricName::Memory,
        MetricKind::Network => MetricName::Network,
        MetricKind::Health => MetricName::Health,
        MetricKind::Restarts => MetricName::Restarts,
        MetricKind::Requests => MetricName::Requests,
    }
}

fn strategy(s: Strategy) -> UpdateStrategy {
    match s {
        Strategy::Recreate => UpdateStrategy::Recreate,
        Strategy::Rolling => UpdateStrategy::Rolling,
        Strategy::BlueGreen => UpdateStrategy::BlueGreen,
        Strategy::Canary => UpdateStrategy::Canary,
    }
}

fn level(l: Level) -> LogLevel {
    match l {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
        Level::Fatal => LogLevel::Fatal,
    }
}

/// RFC 3339, or an age (`10m`) before now.
fn parse_since(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = Timestamp::parse_rfc3339(text) {
        return Ok(t);
    }
    conan_core::time::parse_duration(text)
        .map(|age| Timestamp::now().saturating_sub(age))
        .map_err(|_| {
            format!("'{text}': expected RFC 3339 (2026-12-01T10:00:00Z) or an age (10m, 2h)")
        })
}
