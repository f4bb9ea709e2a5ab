//! The agent tools over the daemon's API: the same deployments as `conan ls`. Every call
//! connects anew (starting the daemon when none answers, as every command does) and names
//! the MCP client in the request, so the daemon's audit log records who asked.

use conan::monitor::watch::WatchRequest;
use conan::tools::{
    CallContext, Deployment, FailureBundle, Monitoring, Problem, ToolBackend, ToolError,
    UpdateChange, convert,
};
use conan::{DeploymentConfig, LogLine, LogQuery};
use hyper::Method;

use crate::api::{ApiError, DeploymentView, ProgressLine, UpdateBody, query};
use crate::client::{Client, Lines};
use crate::error::CliError;
use crate::home::Home;

/// The tools' backend: the daemon of one `CONAN_HOME`.
#[derive(Clone, Debug)]
pub struct DaemonBackend {
    home: Home,
}

impl DaemonBackend {
    /// The daemon of `home`.
    pub fn new(home: Home) -> Self {
        Self { home }
    }

    async fn client(&self, ctx: Option<&CallContext>) -> Result<Client, ToolError> {
        let client = Client::connect(&self.home)
            .await
            .map_err(|e| cli_error(&e))?;
        Ok(match ctx.and_then(|c| c.requested_by.as_deref()) {
            Some(who) => client.requested_by(who),
            None => client,
        })
    }

    /// Runs an operation with a progress stream; the daemon cancels it when the stream
    /// closes early (`cancel_on_close`), which is what a cancelled call does.
    async fn operate<B: serde::Serialize + Sync>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError> {
        let client = self.client(Some(ctx)).await?;
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}progress=1&cancel_on_close=1");
        let lines = tokio::select! {
            lines = client.stream(method, &path, body) => lines.map_err(|e| cli_error(&e))?,
            () = ctx.cancel.cancelled() => return Err(CallContext::cancelled()),
        };
        follow(lines, ctx).await
    }
}

async fn follow(mut lines: Lines, ctx: &CallContext) -> Result<Deployment, ToolError> {
    loop {
        let line = tokio::select! {
            line = lines.next::<ProgressLine>() => line,
            // Dropping the stream closes the connection: the daemon cancels the operation.
            () = ctx.cancel.cancelled() => return Err(CallContext::cancelled()),
        };
        match line {
            Some(Ok(ProgressLine::Event(env))) => {
                if let Some(step) = convert::describe(&env.event) {
                    ctx.report(step);
                }
            }
            Some(Ok(ProgressLine::Result(view))) => return Ok(deployment(&view)),
            Some(Ok(ProgressLine::Error(api))) => return Err(api_error(&api)),
            Some(Err(e)) => return Err(cli_error(&e)),
            None => {
                return Err(ToolError::new(
                    "unavailable",
                    "the daemon closed the connection before the operation finished",
                )
                .with_hint("list_deployments shows where it got to; the daemon's log is CONAN_HOME/daemon.log"));
            }
        }
    }
}

/// A deployment name or id as one path segment.
fn segment(target: &str) -> String {
    query::encode(&[("", target.to_owned())])
        .trim_start_matches('=')
        .to_owned()
}

/// The tools' view of the daemon's deployment view.
pub fn deployment(view: &DeploymentView) -> Deployment {
    Deployment {
        id: view.id.clone(),
        name: view.name.clone(),
        provider: view.provider.clone(),
        status: view.status.clone(),
        reason: view.reason.clone(),
        url: view.url.clone(),
        start_time: view.started_at.map(|t| t.to_string()),
        pid: view.pid,
        container: view.container.clone(),
        port: view.port,
        revision: view.revision,
        project_path: view.source.display().to_string(),
        env: view.env.clone(),
    }
}

/// The daemon's error as a tool error (code, message, hint, problems, failure bundle).
fn api_error(api: &ApiError) -> ToolError {
    let mut error = ToolError::new(api.code.clone(), api.message.clone());
    error.hint.clone_from(&api.hint);
    error.problems = api
        .problems
        .iter()
        .map(|p| Problem::new(p.path.clone(), p.message.clone()))
        .collect();
    if api.code == "invalid_config" && !error.problems.is_empty() {
        let lines: Vec<String> = error
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        error.message = format!("invalid config: {}", lines.join("; "));
    }
    let failure = api.failure.as_ref().or_else(|| {
        api.deployment
            .as_ref()
            .and_then(|d| d.last_failure.as_ref())
    });
    if let Some(failure) = failure
        && matches!(
            api.code.as_str(),
            "deploy_failed" | "timeout" | "provider" | "build_failed" | "failed"
        )
    {
        error.failure = Some(Box::new(FailureBundle::from_report(failure)));
    }
    // Tool names, not CLI commands, in what an agent reads.
    if let Some(hint) = &error.hint
        && hint.contains("conan ")
    {
        error.hint = Some(format!(
            "{hint} (from a shell; the tools: get_deployment_logs, list_deployments)"
        ));
    }
    error
}

fn cli_error(e: &CliError) -> ToolError {
    match &e.api {
        Some(api) => api_error(api),
        None => {
            let mut error = ToolError::new("unavailable", e.message.clone());
            error.hint.clone_from(&e.hint);
            error
        }
    }
}

#[async_trait::async_trait]
impl ToolBackend for DaemonBackend {
    async fn deploy(
        &self,
        config: DeploymentConfig,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError> {
        self.operate(Method::POST, "/deployments", Some(&config), ctx)
            .await
    }

    async fn update(
        &self,
        target: &str,
        change: UpdateChange,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError> {
        let body = UpdateBody {
            config: change.config,
            source: change.source,
            env: change.env,
            strategy: change.strategy,
        };
        let path = format!("/deployments/{}/update", segment(target));
        self.operate(Method::POST, &path, Some(&body), ctx).await
    }

    async fn stop(&self, target: &str, ctx: &CallContext) -> Result<Deployment, ToolError> {
        let path = format!("/deployments/{}/stop", segment(target));
        self.operate::<()>(Method::POST, &path, None, ctx).await
    }

    async fn remove(
        &self,
        target: &str,
        force: bool,
        ctx: &CallContext,
    ) -> Result<Deployment, ToolError> {
        let force = if force { "?force=1" } else { "" };
        let path = format!("/deployments/{}{force}", segment(target));
        self.operate::<()>(Method::DELETE, &path, None, ctx).await
    }

    async fn list(&self) -> Result<Vec<Deployment>, ToolError> {
        let views: Vec<DeploymentView> = self
            .client(None)
            .await?
            .get("/deployments")
            .await
            .map_err(|e| cli_error(&e))?;
        Ok(views.iter().map(deployment).collect())
    }

    async fn get(&self, target: &str) -> Result<Deployment, ToolError> {
        let view: DeploymentView = self
            .client(None)
            .await?
            .get(&format!("/deployments/{}", segment(target)))
            .await
            .map_err(|e| cli_error(&e))?;
        Ok(deployment(&view))
    }

    async fn logs(&self, target: &str, q: &LogQuery) -> Result<Vec<LogLine>, ToolError> {
        let mut params = Vec::new();
        if let Some(n) = q.tail {
            params.push(("tail", n.to_string()));
        }
        if let Some(t) = q.since {
            params.push(("since", t.to_string()));
        }
        if let Some(level) = q.min_level {
            params.push(("level", level.as_str().to_owned()));
        }
        if let Some(text) = &q.contains {
            params.push(("grep", text.clone()));
        }
        if let Some(stream) = q.stream {
            params.push(("stream", stream.as_str().to_owned()));
        }
        let path = format!(
            "/deployments/{}/logs?{}",
            segment(target),
            query::encode(&params)
        );
        let mut lines = self
            .client(None)
            .await?
            .stream::<()>(Method::GET, &path, None)
            .await
            .map_err(|e| cli_error(&e))?;
        let mut out = Vec::new();
        while let Some(line) = lines.next::<LogLine>().await {
            out.push(line.map_err(|e| cli_error(&e))?);
        }
        Ok(out)
    }

    async fn monitor(&self, request: &WatchRequest) -> Result<Monitoring, ToolError> {
        let metrics: Vec<&str> = request.metrics.iter().map(|m| m.as_str()).collect();
        let mut params = vec![
            ("interval", format!("{}ms", request.interval.as_millis())),
            ("window", format!("{}ms", request.window.as_millis())),
        ];
        if !metrics.is_empty() {
            params.push(("metrics", metrics.join(",")));
        }
        let path = format!(
            "/deployments/{}/monitor?{}",
            segment(&request.target),
            query::encode(&params)
        );
        let m: conan::monitor::watch::Monitoring = self
            .client(None)
            .await?
            .get(&path)
            .await
            .map_err(|e| cli_error(&e))?;
        Ok(convert::monitoring(&m))
    }
}
