//! The monitor's endpoints: the metrics history of a deployment
//! (`GET /v1/deployments/{name}/metrics`) and `monitor_deployment`
//! (`GET /v1/deployments/{name}/monitor`).

use conan::Timestamp;
use conan::monitor::history::HistoryQuery;
use conan::monitor::watch::{MetricName, WatchError, WatchRequest};
use futures::StreamExt;
use hyper::{Response, StatusCode};

use super::Daemon;
use super::http::{Body, api_error, error, json, line, ndjson_stream};
use crate::api::ApiError;
use crate::api::metrics::{DEFAULT_SINCE, MetricsView, parse_since, parse_step};

fn bad_request(message: impl Into<String>) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        &ApiError::new("bad_request", message),
    )
}

/// `GET /v1/deployments/{name}/metrics?since=1h&step=1m`: the series, as [`MetricsView`].
pub(super) fn metrics(
    daemon: &Daemon,
    target: &str,
    since: Option<&str>,
    step: Option<&str>,
) -> Response<Body> {
    let record = match daemon.manager.get(target) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let since = match since.map(parse_since).transpose() {
        Ok(s) => s.unwrap_or(DEFAULT_SINCE),
        Err(message) => return bad_request(message),
    };
    let mut query = HistoryQuery::range(Timestamp::now().saturating_sub(since), Timestamp::now());
    match step.map(parse_step).transpose() {
        Ok(Some(step)) => query = query.step(step),
        Ok(None) => {}
        Err(message) => return bad_request(message),
    }
    let series = daemon.monitor.history().query(&record.id, &query);
    json(
        StatusCode::OK,
        &MetricsView {
            name: record.name.to_string(),
            series,
        },
    )
}

fn error_response(e: &conan::Error) -> Response<Body> {
    let (status, api) = api_error(e, None);
    error(status, &api)
}

/// The query of `GET /v1/deployments/{name}/monitor`.
pub(super) struct MonitorParams<'a> {
    /// `metrics=cpu,memory` (all when absent).
    pub metrics: Option<&'a str>,
    /// `interval=2s` (5 s).
    pub interval: Option<&'a str>,
    /// `window=10m` (10 min).
    pub window: Option<&'a str>,
    /// `follow=1`: an NDJSON stream of updates.
    pub follow: bool,
}

fn watch_request(target: &str, params: &MonitorParams<'_>) -> Result<WatchRequest, String> {
    let mut request = WatchRequest::new(target);
    if let Some(text) = params.metrics {
        request = request.metrics(MetricName::parse_list(text).map_err(|e| e.to_string())?);
    }
    let duration = |key: &str, text: &str| {
        conan::time::parse_duration(text).map_err(|e| format!("{key}: {e}"))
    };
    if let Some(text) = params.interval {
        request = request.interval(duration("interval", text)?);
    }
    if let Some(text) = params.window {
        request = request.window(duration("window", text)?);
    }
    request.validate().map_err(|e| e.to_string())?;
    Ok(request)
}

/// `GET /v1/deployments/{name}/monitor?metrics=cpu,memory&interval=2s[&window=10m][&follow=1]`:
/// `monitor_deployment`, a [`Monitoring`](conan::monitor::watch::Monitoring); with `follow`,
/// one per line (NDJSON) every interval until the deployment is removed or the client
/// leaves.
pub(super) async fn monitor(
    daemon: &Daemon,
    target: &str,
    params: &MonitorParams<'_>,
) -> Response<Body> {
    let request = match watch_request(target, params) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    if !params.follow {
        return match daemon.monitor.watch(&request).await {
            Ok(m) => json(StatusCode::OK, &m),
            Err(e) => watch_error(&e),
        };
    }
    if let Err(e) = daemon.manager.get(target) {
        return error_response(&e);
    }
    let mut updates = match daemon.monitor.watch_stream(request) {
        Ok(s) => s,
        Err(e) => return watch_error(&e),
    };
    let (tx, response) = ndjson_stream();
    tokio::spawn(async move {
        while let Some(update) = updates.next().await {
            match update {
                Ok(m) => {
                    if tx.send(line(&m)).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "a monitor update failed"),
            }
        }
    });
    response
}

fn watch_error(e: &WatchError) -> Response<Body> {
    match e {
        WatchError::Manager(e) => error_response(e),
        other => bad_request(other.to_string()),
    }
}
