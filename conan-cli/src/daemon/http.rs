//! HTTP plumbing of the daemon: response bodies (whole JSON or an NDJSON stream), reading
//! request bodies, and turning [`conan::Error`] into an [`ApiError`] with a status code.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::api::{ApiError, DeploymentView};

/// The response body type of every route.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted (a config is a few KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The hint printed when a Docker deploy meets a daemon without Docker: which setting
/// names the Docker daemon, and that the Conan daemon connects to it once it answers.
#[must_use]
pub fn docker_hint() -> String {
    format!(
        "the Conan daemon uses the Docker daemon that DOCKER_HOST names (default \
         unix:///var/run/docker.sock) and tries it again every {}: once Docker runs there and \
         this user may use its socket, deploy again. After changing DOCKER_HOST, run \
         `conan daemon stop` so that the next command starts a daemon with the new value",
        humanize(
            DOCKER_RETRY
                .get()
                .copied()
                .unwrap_or_else(|| super::settings::DockerSettings::default().retry)
        )
    )
}

/// The daemon's `docker.retry`, for [`docker_hint`] (set once at start).
pub static DOCKER_RETRY: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

fn humanize(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let (status, bytes) = match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            (status, bytes)
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"code\":\"internal\",\"message\":\"cannot encode the answer: {e}\"}}\n")
                .into_bytes(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error response.
pub fn error(status: StatusCode, error: &ApiError) -> Response<Body> {
    json(status, error)
}

/// A streaming NDJSON response fed by the returned sender; the stream ends when the sender
/// is dropped. Sending fails once the client went away.
pub fn ndjson_stream() -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    (tx, response)
}

/// One NDJSON line.
pub fn line<T: Serialize>(value: &T) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"cannot encode: {e}\"}}}}")
            .into_bytes()
    });
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Reads and decodes a JSON request body (an empty body decodes as `T::default()`).
///
/// # Errors
/// A ready-made 400 response.
pub async fn read_json<T: DeserializeOwned + Default>(body: Incoming) -> Result<T, Response<Body>> {
    let bytes = read_bytes(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &ApiError::new("bad_request", format!("cannot read the request body: {e}")),
        )
    })
}

/// Reads a whole request body, within the body timeout of
/// [`Limits`](super::server::Limits) (a client that stops sending mid-body is answered
/// 408 and its connection closed, instead of holding it open).
///
/// # Errors
/// A ready-made 400, 408 or 413 response.
pub async fn read_bytes(body: Incoming) -> Result<Bytes, Response<Body>> {
    let within = super::server::Limits::current().body_timeout;
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(within, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            let e: &(dyn std::error::Error + 'static) = &*e;
            Err(error(
                if too_large {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                },
                &ApiError::new(
                    "bad_request",
                    format!(
                        "cannot read the request body: {}",
                        conan::error::DisplayChain(e)
                    ),
                ),
            ))
        }
        Err(_) => {
            let mut response = error(
                StatusCode::REQUEST_TIMEOUT,
                &ApiError::new(
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {}",
                        humanize(within)
                    ),
                ),
            );
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            Err(response)
        }
    }
}

/// The API error and HTTP status for a library error. `deployment` is attached when the
/// deployment exists (a failed deploy's record carries the failure bundle).
pub fn api_error(e: &conan::Error, deployment: Option<DeploymentView>) -> (StatusCode, ApiError) {
    use conan::Error as E;
    let name = deployment
        .as_ref()
        .map_or_else(|| "NAME".to_owned(), |d| d.name.clone());
    let logs_hint = format!("run `conan logs {name}` to see why");
    let (status, mut api) = match e {
        E::NotFound {
            what: "revision",
            id,
        } => {
            // `id` is "9 of hello" or "successful revision before 3 of hello".
            let asked = id.rsplit_once(" of ").map_or(id.as_str(), |(r, _)| r);
            let message = if asked.starts_with("successful") {
                format!("{name} has no {asked} to roll back to")
            } else {
                format!("{name} has no revision {asked}")
            };
            (
                StatusCode::NOT_FOUND,
                ApiError::new("not_found", message)
                    .with_hint(format!("`conan history {name}` lists its revisions")),
            )
        }
        E::NotFound { .. } => (
            StatusCode::NOT_FOUND,
            ApiError::new("not_found", e.to_string()).with_hint("`conan ls` lists the deployments"),
        ),
        E::AlreadyExists { .. } => (
            StatusCode::CONFLICT,
            ApiError::new("already_exists", e.to_string()).with_hint(
                "pick another --name, or roll out a new revision with `conan update NAME`",
            ),
        ),
        E::InvalidConfig { problems } => {
            let mut api = ApiError::new("invalid_config", "invalid config");
            api.problems.clone_from(problems);
            (StatusCode::UNPROCESSABLE_ENTITY, api)
        }
        E::IllegalTransition { .. } => (
            StatusCode::CONFLICT,
            ApiError::new("illegal_transition", e.to_string()),
        ),
        E::PortInUse { .. } => (
            StatusCode::CONFLICT,
            ApiError::new("port_in_use", e.to_string())
                .with_hint("pick another --port, or leave it out to get a free one"),
        ),
        E::HealthCheckFailed {
            failure,
            deployment,
        } => {
            let mut api = ApiError::new(
                "deploy_failed",
                format!("deployment '{deployment}' did not become ready"),
            )
            .with_hint(logs_hint);
            api.failure = Some((**failure).clone());
            (StatusCode::INTERNAL_SERVER_ERROR, api)
        }
        E::BuildFailed { deployment, .. } => {
            // The reason once, the build output once (as the bundle's lines).
            let failure = e.failure_report();
            let hint = if failure.reason.contains("conan docker base-image") {
                "`conan docker base-image` builds a Node base image from this machine's node \
                 (no registry needed); then deploy again"
                    .to_owned()
            } else {
                format!("`conan logs {deployment}` shows the build output")
            };
            let mut api = ApiError::new("build_failed", failure.reason.clone()).with_hint(hint);
            api.failure = Some(failure);
            (StatusCode::INTERNAL_SERVER_ERROR, api)
        }
        E::ProviderUnavailable { provider, .. } => {
            let api = ApiError::new("provider_unavailable", e.to_string());
            let api = if provider == "docker" {
                api.with_hint(docker_hint())
            } else {
                api
            };
            (StatusCode::SERVICE_UNAVAILABLE, api)
        }
        E::NoProvider { .. } | E::NotSupported { .. } => (
            StatusCode::BAD_REQUEST,
            ApiError::new("not_supported", e.to_string()),
        ),
        E::Timeout { .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            ApiError::new("timeout", e.to_string()).with_hint(logs_hint),
        ),
        E::Cancelled { .. } | E::ShutDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            ApiError::new("cancelled", e.to_string()),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new("failed", e.to_string()).with_hint(logs_hint),
        ),
    };
    if api.failure.is_none()
        && let Some(d) = &deployment
        && d.status == "failed"
    {
        api.failure.clone_from(&d.last_failure);
    }
    api.causes = e.causes();
    api.deployment = deployment;
    (status, api)
}
