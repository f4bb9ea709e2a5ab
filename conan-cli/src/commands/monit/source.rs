//! Where `conan monit` gets its data: a small trait, so the UI runs against the daemon or,
//! in tests, against a fake; and the daemon's implementation over [`Client`].

use std::future::Future;
use std::time::Duration;

use conan::{LogLine, Timestamp};
use futures::StreamExt;
use futures::stream::BoxStream;
use hyper::Method;

use crate::api::metrics::{MetricsView, Series};
use crate::api::{DeploymentView, StatusView, query};
use crate::client::Client;
use crate::error::{CliError, CliResult};

/// One deployment as the table shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// Deployment id (selection and history follow it across renames of the list).
    pub id: String,
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Status (`running`, `stopped`, ...).
    pub status: String,
    /// Why it failed, or when it restarts.
    pub note: Option<String>,
    /// `healthy`, `unhealthy`, `starting`, `unknown`; `None` when not running.
    pub health: Option<String>,
    /// The last probe's detail.
    pub health_detail: Option<String>,
    /// Restarts by the supervisor since the deploy.
    pub restarts: Option<u32>,
    /// CPU in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory.
    pub memory_bytes: Option<u64>,
    /// Its memory limit.
    pub memory_limit_bytes: Option<u64>,
    /// Time since the serving instance started (when running).
    pub uptime: Option<Duration>,
    /// Where it answers.
    pub url: Option<String>,
    /// Serving revision.
    pub revision: u64,
    /// Process id or container id of the first instance.
    pub instance: Option<String>,
}

impl Row {
    /// The row of a deployment as the list shows it; the live fields (health, restarts,
    /// CPU, memory) stay empty until a [`Live`] fills them.
    #[must_use]
    pub fn from_view(view: &DeploymentView) -> Self {
        let note = view.reason.clone().or_else(|| {
            view.restart
                .as_ref()
                .map(|r| format!("restart {} after {}", r.attempt, r.exit))
        });
        let uptime = view
            .started_at
            .filter(|_| is_running(&view.status))
            .map(|t| t.elapsed());
        let instance = view
            .pid
            .filter(|_| view.restart.is_none())
            .map(|p| p.to_string())
            .or_else(|| {
                view.container
                    .as_ref()
                    .map(|c| c.chars().take(12).collect())
            });
        Self {
            id: view.id.clone(),
            name: view.name.clone(),
            provider: view.provider.clone(),
            status: view.status.clone(),
            note,
            uptime,
            url: view.url.clone(),
            revision: view.revision,
            instance,
            ..Self::default()
        }
    }

    /// Whether it runs (and so has live numbers and a history).
    #[must_use]
    pub fn is_running(&self) -> bool {
        is_running(&self.status)
    }
}

fn is_running(status: &str) -> bool {
    matches!(status, "running" | "updating")
}

/// A running deployment's live health and resource use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Live {
    /// `healthy`, `unhealthy`, `starting`, `unknown`.
    pub health: Option<String>,
    /// The last probe's detail.
    pub health_detail: Option<String>,
    /// Restarts by the supervisor since the deploy.
    pub restarts: Option<u32>,
    /// CPU in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory.
    pub memory_bytes: Option<u64>,
    /// Its memory limit.
    pub memory_limit_bytes: Option<u64>,
}

impl Live {
    /// The live part of a status answer.
    #[must_use]
    pub fn from_status(status: &StatusView) -> Self {
        let health = status.health.as_ref();
        let metrics = status.metrics.as_ref();
        Self {
            health: health.map(|h| format!("{:?}", h.status).to_lowercase()),
            health_detail: health.and_then(|h| h.detail.clone()),
            restarts: metrics.map(|m| m.restarts),
            cpu_percent: metrics.and_then(|m| m.cpu_percent),
            memory_bytes: metrics.and_then(|m| m.memory_bytes),
            memory_limit_bytes: metrics.and_then(|m| m.memory_limit_bytes),
        }
    }

    /// Copies the live fields into `row`.
    pub fn apply_to(&self, row: &mut Row) {
        row.health.clone_from(&self.health);
        row.health_detail.clone_from(&self.health_detail);
        row.restarts = self.restarts;
        row.cpu_percent = self.cpu_percent;
        row.memory_bytes = self.memory_bytes;
        row.memory_limit_bytes = self.memory_limit_bytes;
    }
}

/// One point of a deployment's metrics history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When it was taken (the start of its step when downsampled).
    pub at: Timestamp,
    /// CPU in percent of one core (the step's average).
    pub cpu_percent: Option<f64>,
    /// Resident memory (the step's average).
    pub memory_bytes: Option<u64>,
}

/// What the user can do to the selected deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop and start it.
    Restart,
    /// Stop it (it stays listed).
    Stop,
    /// Start a stopped or failed one.
    Start,
}

impl Action {
    /// The API's path segment, and the verb the UI shows.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Start => "start",
        }
    }
}

/// A followed log: its lines until the daemon ends the stream.
pub type LogFeed = BoxStream<'static, CliResult<LogLine>>;

/// The data `conan monit` shows and the operations it starts. Every call is one request;
/// the UI decides how often to ask.
pub trait DataSource: Clone + Send + Sync + 'static {
    /// Every deployment, as the list shows it (cheap: one request).
    fn list(&self) -> impl Future<Output = CliResult<Vec<Row>>> + Send;

    /// A running deployment's live health and metrics (dearer: the daemon measures its
    /// processes); `Ok(None)` when it does not run (any more).
    fn live(&self, id: &str) -> impl Future<Output = CliResult<Option<Live>>> + Send;

    /// The metrics history of a deployment over the last `window` at `step`; `Ok(None)`
    /// when the daemon has no history route (an older daemon): sparklines stay empty.
    fn history(
        &self,
        id: &str,
        window: Duration,
        step: Duration,
    ) -> impl Future<Output = CliResult<Option<Vec<Sample>>>> + Send;

    /// The last `tail` lines of a deployment's logs, then the new ones as they come.
    fn follow_logs(
        &self,
        id: &str,
        tail: usize,
        since: Option<Timestamp>,
    ) -> impl Future<Output = CliResult<LogFeed>> + Send;

    /// Runs `action` on a deployment and waits for its outcome; the status after it.
    fn act(&self, id: &str, action: Action) -> impl Future<Output = CliResult<String>> + Send;
}

/// The daemon, through its API.
#[derive(Clone, Debug)]
pub struct DaemonSource {
    client: Client,
}

impl DaemonSource {
    /// A source that asks the daemon behind `client`.
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn segment(name: &str) -> String {
    query::encode(&[("", name.to_owned())])
        .trim_start_matches('=')
        .to_owned()
}

/// Whether an error is the daemon saying it has no such endpoint.
fn no_route(e: &CliError) -> bool {
    e.api.as_deref().is_some_and(|a| a.code == "no_route")
}

impl DataSource for DaemonSource {
    async fn list(&self) -> CliResult<Vec<Row>> {
        let views: Vec<DeploymentView> = self.client.get("/deployments").await?;
        Ok(views.iter().map(Row::from_view).collect())
    }

    async fn live(&self, id: &str) -> CliResult<Option<Live>> {
        let status: StatusView = self
            .client
            .get(&format!("/deployments/{}", segment(id)))
            .await?;
        Ok(is_running(&status.deployment.status).then(|| Live::from_status(&status)))
    }

    async fn history(
        &self,
        id: &str,
        window: Duration,
        step: Duration,
    ) -> CliResult<Option<Vec<Sample>>> {
        let path = format!(
            "/deployments/{}/metrics?{}",
            segment(id),
            query::encode(&[
                ("since", format!("{}s", window.as_secs().max(1))),
                ("step", format!("{}s", step.as_secs().max(1))),
            ])
        );
        match self.client.get::<MetricsView>(&path).await {
            Ok(answer) => Ok(Some(samples_of(&answer.series))),
            Err(e) if no_route(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn follow_logs(
        &self,
        id: &str,
        tail: usize,
        since: Option<Timestamp>,
    ) -> CliResult<LogFeed> {
        let mut params = vec![("tail", tail.to_string()), ("follow", "1".to_owned())];
        if let Some(since) = since {
            params.push(("since", since.to_string()));
        }
        let path = format!(
            "/deployments/{}/logs?{}",
            segment(id),
            query::encode(&params)
        );
        let lines = self.client.stream::<()>(Method::GET, &path, None).await?;
        Ok(futures::stream::unfold(lines, |mut lines| async move {
            lines.next::<LogLine>().await.map(|line| (line, lines))
        })
        .boxed())
    }

    async fn act(&self, id: &str, action: Action) -> CliResult<String> {
        let view: DeploymentView = self
            .client
            .call::<(), DeploymentView>(
                Method::POST,
                &format!("/deployments/{}/{}", segment(id), action.as_str()),
                None,
            )
            .await?;
        Ok(view.status)
    }
}

/// At most this many points of one answer are kept (a day at 10 s, should a daemon answer
/// more than asked).
const MAX_SAMPLES: usize = 8640;

/// The points of a history, one per step from the first: steps without a sample (the
/// daemon leaves them out) come back as samples without values, so a sparkline shows the
/// gap. CPU and memory are the steps' averages.
fn samples_of(series: &Series) -> Vec<Sample> {
    let step = i64::try_from(series.step_ms.max(1)).unwrap_or(i64::MAX / 1000) * 1000;
    let Some(first) = series.points.first().map(|p| p.time.as_unix_micros()) else {
        return Vec::new();
    };
    let mut out: Vec<Sample> = Vec::new();
    for point in &series.points {
        let index = (point.time.as_unix_micros() - first) / step;
        let Ok(index) = usize::try_from(index) else {
            continue;
        };
        if index >= MAX_SAMPLES {
            break;
        }
        while out.len() < index {
            let at = first + i64::try_from(out.len()).unwrap_or(0) * step;
            out.push(Sample {
                at: Timestamp::from_unix_micros(at),
                cpu_percent: None,
                memory_bytes: None,
            });
        }
        // Bytes to whole bytes: the average of whole numbers, rounded.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let memory = point
            .memory_bytes
            .as_ref()
            .map(|g| g.avg.max(0.0).round() as u64);
        if out.len() == index {
            out.push(Sample {
                at: point.time,
                cpu_percent: point.cpu_percent.as_ref().map(|g| g.avg),
                memory_bytes: memory,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_answer_becomes_one_sample_per_step_with_gaps_kept() {
        let answer = serde_json::json!({
            "name": "web",
            "deployment": "dep-1",
            "resolution": "full",
            "since": "2026-12-01T10:00:00Z",
            "until": "2026-12-01T10:01:00Z",
            "step_ms": 10_000,
            "points": [
                {"time": "2026-12-01T10:00:00Z", "samples": 1, "restarts": {"total": 0, "increase": 0},
                 "cpu_percent": {"min": 1.0, "avg": 1.5, "max": 2.0},
                 "memory_bytes": {"min": 100, "avg": 150.4, "max": 200}},
                {"time": "2026-12-01T10:00:10Z", "samples": 1, "restarts": {"total": 0, "increase": 0},
                 "cpu_percent": {"min": 3.0, "avg": 3.0, "max": 3.0}},
                {"time": "2026-12-01T10:00:40Z", "samples": 1, "restarts": {"total": 1, "increase": 1},
                 "memory_bytes": {"min": 300, "avg": 300.0, "max": 300},
                 "network_rx_bytes": {"total": 5, "increase": 5}}
            ]
        });
        let view: MetricsView = serde_json::from_value(answer).expect("decodes");
        let samples = samples_of(&view.series);
        let cpu: Vec<_> = samples.iter().map(|s| s.cpu_percent).collect();
        let memory: Vec<_> = samples.iter().map(|s| s.memory_bytes).collect();
        assert_eq!(cpu, vec![Some(1.5), Some(3.0), None, None, None]);
        assert_eq!(memory, vec![Some(150), None, None, None, Some(300)]);
        assert_eq!(
            samples[2].at,
            Timestamp::parse_rfc3339("2026-12-01T10:00:20Z").expect("time")
        );
        let mut empty = view.series.clone();
        empty.points.clear();
        assert!(samples_of(&empty).is_empty());
    }
}
