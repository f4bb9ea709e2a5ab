//! The daemon's endpoints (documented in the crate docs): each maps onto one
//! [`DeploymentManager`](conan::DeploymentManager) call.

use std::sync::Arc;

use conan::{
    DeploymentConfig, DeploymentId, LogLevel, LogQuery, OutputStream, Request, Revision,
    SubmitOptions, Timestamp,
};
use futures::StreamExt;
use hyper::body::Incoming;
use hyper::{Method, Response, StatusCode};
use tokio::sync::broadcast::error::RecvError;

use super::Daemon;
use super::http::{
    Body, api_error, docker_hint, error, json, line, ndjson_stream, read_bytes, read_json,
};
use crate::api::{
    ApiError, DaemonInfo, DeploymentView, MaintenanceBody, PauseBody, ProgressLine, RevisionView,
    RollbackBody, StatusView, UpdateBody, query,
};
use conan::monitor::logs::LogSelector;

/// Who asks for an operation and how it wants the answer.
struct Asker {
    /// The [`REQUESTED_BY`](crate::client::REQUESTED_BY) header: goes into the audit entry.
    requested_by: Option<String>,
    /// `cancel_on_close=1` (with `progress=1`): a client that closes the stream cancels
    /// the operation (what `conan mcp` asks, so an agent's cancellation reaches it).
    cancel_on_close: bool,
    /// `progress=1`: an NDJSON stream of events, then the result.
    progress: bool,
}

/// Query parameters of one request.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter, in order.
    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| !matches!(v, "0" | "false" | "no"))
    }
}

fn bad_request(message: impl Into<String>) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        &ApiError::new("bad_request", message),
    )
}

/// Routes one request.
pub async fn handle(daemon: Arc<Daemon>, req: hyper::Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let params = Params(query::decode(parts.uri.query().unwrap_or("")));
    let Some(path) = parts.uri.path().strip_prefix(crate::api::PREFIX) else {
        return not_found();
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let asker = Asker {
        requested_by: parts
            .headers
            .get(crate::client::REQUESTED_BY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        cancel_on_close: params.flag("cancel_on_close"),
        progress: params.flag("progress"),
    };
    tracing::debug!(method = %parts.method, path = parts.uri.path(), "request");
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["daemon"]) => json(StatusCode::OK, &daemon.info()),
        (&Method::POST, ["daemon", "shutdown"]) => {
            tracing::info!("shutdown requested over the API");
            daemon.request_shutdown();
            json(StatusCode::OK, &serde_json::json!({ "stopping": true }))
        }
        (&Method::GET, ["deployments"]) => {
            let views: Vec<_> = daemon
                .manager
                .list()
                .iter()
                .map(DeploymentView::from_record)
                .collect();
            json(StatusCode::OK, &views)
        }
        (&Method::POST, ["deployments"]) => deploy(&daemon, body, &asker).await,
        (&Method::GET, ["deployments", target]) => status(&daemon, target).await,
        (&Method::DELETE, ["deployments", target]) => {
            remove(&daemon, target, &params, &asker).await
        }
        (&Method::POST, ["deployments", target, "pause" | "resume" | "maintenance"]) => {
            let action = segments[2];
            endpoint_control(&daemon, target, action, body).await
        }
        (&Method::POST, ["deployments", target, action]) => {
            action_route(&daemon, target, action, body, &asker).await
        }
        (&Method::GET, ["deployments", target, "history"]) => history(&daemon, target).await,
        (&Method::GET, ["deployments", target, "logs"]) => logs(&daemon, target, &params).await,
        (&Method::GET, ["logs"]) => aggregated_logs(&daemon, &params).await,
        (&Method::GET, ["deployments", target, "metrics"]) => {
            super::monitoring::metrics(&daemon, target, params.get("since"), params.get("step"))
        }
        (&Method::GET, ["deployments", target, "monitor"]) => {
            let monitor = super::monitoring::MonitorParams {
                metrics: params.get("metrics"),
                interval: params.get("interval"),
                window: params.get("window"),
                follow: params.flag("follow"),
            };
            super::monitoring::monitor(&daemon, target, &monitor).await
        }
        (&Method::GET, ["events"]) => events(&daemon, &params),
        (&Method::GET, ["audit"]) => audit(&daemon, &params).await,
        (&Method::GET, ["alerts"]) => alerts(&daemon).await,
        (method, segments) => unmatched(method, segments),
    }
}

/// The methods the routes above answer on a path of this shape; empty for an unknown path.
/// Keep it beside [`handle`]: a route added there is added here (a test checks that every
/// route's method is listed for its path).
fn allowed_methods(segments: &[&str]) -> &'static [Method] {
    match segments {
        ["daemon"] | ["logs"] | ["events"] | ["audit"] | ["alerts"] => &[Method::GET],
        ["daemon", "shutdown"] => &[Method::POST],
        ["deployments"] => &[Method::GET, Method::POST],
        ["deployments", _] => &[Method::GET, Method::DELETE],
        ["deployments", _, "history" | "logs" | "metrics" | "monitor"] => &[Method::GET],
        [
            "deployments",
            _,
            "stop" | "start" | "restart" | "rollback" | "update" | "pause" | "resume"
            | "maintenance" | "scale",
        ] => &[Method::POST],
        _ => &[],
    }
}

/// No route for this method and path: 405 with `Allow` when the path exists under another
/// method, else 404.
fn unmatched(method: &Method, segments: &[&str]) -> Response<Body> {
    let allowed = allowed_methods(segments);
    if allowed.is_empty() || allowed.contains(method) {
        return not_found();
    }
    let list = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &ApiError::new(
            "method_not_allowed",
            format!("{method} is not allowed here; use {list}"),
        ),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(&list) {
        response.headers_mut().insert(hyper::header::ALLOW, value);
    }
    response
}

fn not_found() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        &ApiError::new(
            "no_route",
            "no such endpoint (see the conan-cli docs for the API)",
        ),
    )
}

fn view_of(daemon: &Daemon, target: &str) -> Option<DeploymentView> {
    daemon
        .manager
        .get(target)
        .ok()
        .map(|r| DeploymentView::from_record(&r))
}

fn failure_response(daemon: &Daemon, e: &conan::Error, target: &str) -> Response<Body> {
    let view = view_of(daemon, target);
    let (status, mut api) = api_error(e, view.clone());
    // The deployment exists but its provider has nothing of it (a failed deploy's
    // containers are gone): say that rather than "not found".
    if let (conan::Error::NotFound { .. }, Some(view)) = (e, &view) {
        api.message = format!(
            "nothing of '{}' is running (it is {}): {e}",
            view.name, view.status
        );
        api.hint = Some(format!(
            "`conan status {0}` shows its last failure; `conan start {0}` starts it again",
            view.name
        ));
    }
    error(status, &api)
}

async fn deploy(daemon: &Arc<Daemon>, body: Incoming, asker: &Asker) -> Response<Body> {
    let bytes = match read_bytes(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = String::from_utf8_lossy(&bytes);
    let config = match DeploymentConfig::from_json_str(&text) {
        Ok(c) => c,
        Err(e) => return failure_response(daemon, &e, ""),
    };
    if let Some(provider) = &config.provider
        && daemon.manager.registry().get(provider).is_none()
        && provider == "docker"
    {
        let reason = daemon
            .docker_error()
            .unwrap_or_else(|| "not connected".to_owned());
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &ApiError::new(
                "provider_unavailable",
                format!("Docker is not available to the Conan daemon: {reason}"),
            )
            .with_hint(docker_hint()),
        );
    }
    // A deployment whose last attempt failed (a port in use, a crash at start) is not in
    // the way of deploying it again: the new config is rolled out as its next revision,
    // instead of "already exists" with the old reason.
    if let Ok(existing) = daemon.manager.get(&config.name)
        && existing.status.kind() == conan::StatusKind::Failed
        && config
            .provider
            .as_deref()
            .is_none_or(|p| p == &*existing.provider)
    {
        let target = existing.name.to_string();
        return operation(daemon, Request::Update { target, config }, asker).await;
    }
    operation(daemon, Request::Deploy(config), asker).await
}

async fn action_route(
    daemon: &Arc<Daemon>,
    target: &str,
    action: &str,
    body: Incoming,
    asker: &Asker,
) -> Response<Body> {
    let target = (*target).to_owned();
    let request = match action {
        "stop" => Request::Stop { target },
        "start" => Request::Start { target },
        "restart" => Request::Restart { target },
        "scale" => {
            let body: crate::api::ScaleBody = match read_json(body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            Request::Scale {
                target,
                replicas: body.replicas,
                reason: None,
                revision: None,
            }
        }
        "rollback" => {
            let body: RollbackBody = match read_json(body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            Request::Rollback {
                target,
                to: body.to.map(Revision),
            }
        }
        "update" => {
            let body: UpdateBody = match read_json(body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match updated_config(daemon, &target, body) {
                Ok(Some(config)) => Request::Update { target, config },
                Ok(None) => return unchanged(daemon, &target),
                Err(e) => return failure_response(daemon, &e, &target),
            }
        }
        _ => return unmatched(&Method::POST, &["deployments", &target, action]),
    };
    operation(daemon, request, asker).await
}

/// An update that would roll out the config already serving: no revision is created.
fn unchanged(daemon: &Daemon, target: &str) -> Response<Body> {
    let (name, revision) = daemon
        .manager
        .get(target)
        .map(|r| (r.name.to_string(), r.revision.0))
        .unwrap_or_else(|_| (target.to_owned(), 0));
    error(
        StatusCode::CONFLICT,
        &ApiError::new(
            "unchanged",
            format!("nothing changed: '{name}' stays on revision {revision}"),
        )
        .with_hint(format!(
            "edit its conan.toml (or pass --env), then `conan update {name}`; `conan restart {name}` restarts it as it is"
        )),
    )
}

/// The config an update rolls out: the body's config (else the current one), with the
/// current env under the new one, then the body's source, env and strategy on top; `None`
/// when that is the config already serving.
fn updated_config(
    daemon: &Daemon,
    target: &str,
    body: UpdateBody,
) -> conan::Result<Option<DeploymentConfig>> {
    let current = daemon.manager.get(target)?;
    // The same merge as the `update_deployment` tool's.
    let mut change = conan::tools::UpdateChange::default();
    change.config = body.config;
    change.source = body.source;
    change.env = body.env;
    change.strategy = body.strategy;
    let config = change.apply(&current)?;
    let serving = matches!(
        current.status.kind(),
        conan::StatusKind::Running | conan::StatusKind::Updating
    );
    Ok((!serving || config != *current.config).then_some(config))
}

async fn remove(
    daemon: &Arc<Daemon>,
    target: &str,
    params: &Params,
    asker: &Asker,
) -> Response<Body> {
    let record = match daemon.manager.get(target) {
        Ok(r) => r,
        Err(e) => return failure_response(daemon, &e, target),
    };
    let active = matches!(
        record.status.kind(),
        conan::StatusKind::Running | conan::StatusKind::Deploying | conan::StatusKind::Updating
    );
    if active && !params.flag("force") {
        return error(
            StatusCode::CONFLICT,
            &ApiError::new(
                "running",
                format!("deployment '{}' is {}", record.name, record.status.kind()),
            )
            .with_hint(format!(
                "stop it first with `conan stop {0}`, or use `conan rm --force {0}`",
                record.name
            )),
        );
    }
    let request = Request::Remove {
        target: target.to_owned(),
    };
    operation(daemon, request, asker).await
}

/// Runs an operation; with `progress`, streams the deployment's events as NDJSON
/// ([`ProgressLine`]) and ends with its result. A client that goes away does not cancel it,
/// unless it asked `cancel_on_close`.
async fn operation(daemon: &Arc<Daemon>, request: Request, asker: &Asker) -> Response<Body> {
    let target = match &request {
        Request::Deploy(c) => c.name.clone(),
        other => other.target().unwrap_or_default().to_owned(),
    };
    let mut events = daemon.manager.subscribe();
    let mut options = SubmitOptions::default();
    options.requested_by.clone_from(&asker.requested_by);
    let handle = match daemon.manager.submit(request, options) {
        Ok(h) => h,
        Err(e) => return failure_response(daemon, &e, &target),
    };
    let id = handle.deployment().clone();
    if !asker.progress {
        return match handle.wait().await {
            Ok(record) => json(StatusCode::OK, &DeploymentView::from_record(&record)),
            Err(e) => failure_response(daemon, &e, id.as_str()),
        };
    }
    let (tx, response) = ndjson_stream();
    let daemon = Arc::clone(daemon);
    let cancel_on_close = asker.cancel_on_close;
    tokio::spawn(async move {
        let canceller = handle.canceller();
        let wait = handle.wait();
        tokio::pin!(wait);
        let mut listening = true;
        let mut watching = cancel_on_close;
        let outcome = loop {
            tokio::select! {
                outcome = &mut wait => break outcome,
                () = tx.closed(), if watching => {
                    tracing::info!(deployment = %id, "the client went away: cancelling its operation");
                    canceller.cancel();
                    watching = false;
                }
                event = events.recv(), if listening => match event {
                    Ok(env) if env.event.deployment() == &id => {
                        // The client may be gone; the operation goes on regardless.
                        let _ = tx.send(line(&ProgressLine::Event(env))).await;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => listening = false,
                },
            }
        };
        while let Ok(env) = events.try_recv() {
            if env.event.deployment() == &id {
                let _ = tx.send(line(&ProgressLine::Event(env))).await;
            }
        }
        let last = match outcome {
            Ok(record) => ProgressLine::Result(DeploymentView::from_record(&record)),
            Err(e) => ProgressLine::Error(api_error(&e, view_of(&daemon, id.as_str())).1),
        };
        let _ = tx.send(line(&last)).await;
    });
    response
}

async fn status(daemon: &Daemon, target: &str) -> Response<Body> {
    let record = match daemon.manager.get(target) {
        Ok(r) => r,
        Err(e) => return failure_response(daemon, &e, target),
    };
    let running = record.status.is_running();
    let (health, metrics) = if running {
        let id = record.id.as_str();
        let (h, m) = tokio::join!(daemon.manager.health(id), daemon.manager.metrics(id));
        (h.ok(), m.ok())
    } else {
        (None, None)
    };
    let view = StatusView {
        deployment: DeploymentView::from_record(&record),
        health,
        metrics,
        traffic: daemon
            .manager
            .traffic_stats(record.id.as_str())
            .ok()
            .flatten(),
    };
    json(StatusCode::OK, &view)
}

async fn history(daemon: &Daemon, target: &str) -> Response<Body> {
    let record = match daemon.manager.get(target) {
        Ok(r) => r,
        Err(e) => return failure_response(daemon, &e, target),
    };
    match daemon.manager.history(record.id.as_str()).await {
        Ok(revisions) => {
            let views: Vec<_> = revisions
                .iter()
                .map(|r| RevisionView::from_record(r, record.revision.0))
                .collect();
            json(StatusCode::OK, &views)
        }
        Err(e) => failure_response(daemon, &e, target),
    }
}

fn log_query(params: &Params) -> Result<LogQuery, String> {
    let mut query = LogQuery::all();
    if let Some(n) = params.get("tail") {
        query.tail = Some(n.parse().map_err(|_| format!("tail: not a number: {n}"))?);
    }
    for (key, slot) in [("since", &mut query.since), ("until", &mut query.until)] {
        if let Some(t) = params.get(key) {
            *slot = Some(Timestamp::parse_rfc3339(t).map_err(|e| format!("{key}: {e}"))?);
        }
    }
    if let Some(level) = params.get("level") {
        query.min_level = Some(LogLevel::from_name(level).ok_or_else(|| {
            format!("level: unknown level '{level}' (trace, debug, info, warn, error, fatal)")
        })?);
    }
    if let Some(text) = params.get("grep") {
        query.contains = Some(text.to_owned());
    }
    if let Some(stream) = params.get("stream") {
        query.stream = Some(match stream {
            "stdout" => OutputStream::Stdout,
            "stderr" => OutputStream::Stderr,
            other => return Err(format!("stream: expected stdout or stderr, got '{other}'")),
        });
    }
    query.follow = params.flag("follow");
    Ok(query)
}

async fn logs(daemon: &Daemon, target: &str, params: &Params) -> Response<Body> {
    let query = match log_query(params) {
        Ok(q) => q,
        Err(message) => return bad_request(message),
    };
    let mut stream = match daemon.manager.logs(target, &query).await {
        Ok(s) => s,
        Err(e) => return failure_response(daemon, &e, target),
    };
    let (tx, response) = ndjson_stream();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let sent = match item {
                Ok(log) => tx.send(line(&log)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "log stream ended with an error");
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
    });
    response
}

/// `GET /v1/logs?deployment=a&deployment=b&label=k=v&...`: the lines of many deployments
/// (all when neither `deployment` nor `label` is given), merged by time, each tagged with
/// its deployment (see [`conan::monitor::logs`]); the other parameters as for one
/// deployment's logs.
async fn aggregated_logs(daemon: &Daemon, params: &Params) -> Response<Body> {
    let query = match log_query(params) {
        Ok(q) => q,
        Err(message) => return bad_request(message),
    };
    let mut selector = LogSelector::names(params.all("deployment"));
    for label in params.all("label") {
        let Some((key, value)) = label.split_once('=') else {
            return bad_request(format!("label: expected KEY=VALUE, got '{label}'"));
        };
        selector = selector.label(key, value);
    }
    let mut stream = match daemon.monitor.logs(&selector, &query).await {
        Ok(s) => s,
        Err(e) => return failure_response(daemon, &e, ""),
    };
    let (tx, response) = ndjson_stream();
    tokio::spawn(async move {
        while let Some(tagged) = stream.next().await {
            if tx.send(line(&tagged)).await.is_err() {
                break;
            }
        }
    });
    response
}

fn events(daemon: &Daemon, params: &Params) -> Response<Body> {
    // An unknown deployment is a 404, not every event.
    let only: Option<DeploymentId> = match params.get("deployment") {
        Some(t) => match daemon.manager.get(t) {
            Ok(r) => Some(r.id),
            Err(e) => return failure_response(daemon, &e, t),
        },
        None => None,
    };
    let mut rx = daemon.manager.subscribe();
    let (tx, response) = ndjson_stream();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(env) => {
                    if only.as_ref().is_some_and(|id| env.event.deployment() != id) {
                        continue;
                    }
                    if tx.send(line(&env)).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "an event subscriber lagged");
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
    response
}

async fn audit(daemon: &Daemon, params: &Params) -> Response<Body> {
    let mut query = conan::AuditQuery::default();
    if let Some(t) = params.get("deployment") {
        match daemon.manager.get(t) {
            Ok(r) => query.deployment = Some(r.id),
            Err(e) => return failure_response(daemon, &e, t),
        }
    }
    let limit: usize = match params.get("limit").map(str::parse).transpose() {
        Ok(l) => l.unwrap_or(100),
        Err(_) => return bad_request("limit: not a number"),
    };
    query.limit = Some(limit);
    query.newest = true;
    match daemon.manager.audit(&query).await {
        Ok(entries) => json(StatusCode::OK, &entries),
        Err(e) => failure_response(daemon, &e, ""),
    }
}

/// What fires and what waits for delivery (`conan alerts`).
async fn alerts(daemon: &Daemon) -> Response<Body> {
    let alerts = daemon.monitor.alerts();
    let view = async {
        Ok::<_, conan::Error>(crate::api::AlertsView {
            firing: alerts.firing().await?,
            pending: alerts.pending(100).await?,
        })
    };
    match view.await {
        Ok(view) => json(StatusCode::OK, &view),
        Err(e) => failure_response(daemon, &e, ""),
    }
}

impl Daemon {
    fn info(&self) -> DaemonInfo {
        DaemonInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            home: self.home.root().to_path_buf(),
            providers: self
                .manager
                .registry()
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            docker_error: self.docker_error(),
            containment: Some(self.containment.clone()),
            metrics_addr: self.metrics_addr,
            metrics_error: self.metrics_error.clone(),
            started_at: self.started_at,
            deployments: self.manager.list().len(),
            state: self.manager.store_health(),
            unsaved: self.manager.unsaved_state(),
            settings: self.settings.effective(),
        }
    }
}

/// `pause`, `resume` and `maintenance`: the deployment's endpoint, at the proxy. Answers
/// the endpoint's state (its [`TrafficStats`](conan::traffic::TrafficStats)).
async fn endpoint_control(
    daemon: &Arc<Daemon>,
    target: &str,
    action: &str,
    body: Incoming,
) -> Response<Body> {
    let record = match daemon.manager.get(target) {
        Ok(r) => r,
        Err(e) => return failure_response(daemon, &e, target),
    };
    let no_endpoint = || {
        error(
            StatusCode::CONFLICT,
            &ApiError::new(
                "no_endpoint",
                format!(
                    "'{}' has no endpoint (endpoint.enabled = false, or it was never deployed behind the proxy)",
                    record.name
                ),
            ),
        )
    };
    let result = match action {
        "pause" => {
            let body: PauseBody = match read_json(body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let timeout = match body.timeout.as_deref().map(conan::time::parse_duration) {
                None => std::time::Duration::from_secs(30),
                Some(Ok(t)) => t,
                Some(Err(e)) => return bad_request(format!("timeout: {e} (like 30s or 2m)")),
            };
            daemon.proxy.pause(&record.id, timeout)
        }
        "resume" => daemon.proxy.resume(&record.id),
        _ => {
            let body: MaintenanceBody = match read_json(body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let text = body.on.then(|| {
                bytes::Bytes::from(body.body.unwrap_or_else(|| {
                    format!(
                        "{} is down for maintenance; please retry shortly.\n",
                        record.name
                    )
                }))
            });
            daemon.proxy.maintenance(&record.id, text)
        }
    };
    if result.is_err() {
        return no_endpoint();
    }
    match daemon.manager.traffic_stats(record.id.as_str()) {
        Ok(Some(stats)) => json(StatusCode::OK, &stats),
        _ => no_endpoint(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 11: every route's method is listed for its path, so a wrong method
    /// answers 405 (with `Allow`) rather than 404.
    #[test]
    fn every_route_is_in_the_allowed_methods() {
        let source = include_str!("routes.rs");
        let start = source
            .find("match (&parts.method, segments.as_slice())")
            .unwrap();
        let end = start
            + source[start..]
                .find("(method, segments) => unmatched")
                .unwrap();
        let mut seen = 0;
        for line in source[start..end].lines() {
            let Some(rest) = line.trim().strip_prefix("(&Method::") else {
                continue;
            };
            let (method, rest) = rest.split_once(", [").unwrap();
            let pattern = &rest[..rest.find(']').unwrap()];
            let segments: Vec<&str> = pattern
                .split(", ")
                .map(|s| s.split(" | ").next().unwrap_or(s).trim_matches('"'))
                .map(|s| {
                    if s == "target" || s == "action" {
                        "x"
                    } else {
                        s
                    }
                })
                .collect();
            let method: Method = method.parse().unwrap();
            let allowed = if segments == ["deployments", "x", "x"] {
                allowed_methods(&["deployments", "x", "stop"])
            } else {
                allowed_methods(&segments)
            };
            assert!(
                allowed.contains(&method),
                "{method} {segments:?} is not listed"
            );
            seen += 1;
        }
        assert!(seen >= 15, "read {seen} routes");
        assert!(allowed_methods(&["nothing"]).is_empty());
    }
}
