//! The monitor's endpoints: the metrics history of a deployment
//! (`GET /v1/deployments/{name}/metrics`) and `monitor_deployment`
//! (`GET /v1/deployments/{name}/monitor`).

use conan::Timestamp;
use conan::monitor::history::HistoryQuery;
use hyper::{Response, StatusCode};

use super::Daemon;
use super::http::{Body, api_error, error, json};
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
