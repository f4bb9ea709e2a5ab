//! Logs from the daemon's log API (with timestamps), filtered by conan-core's [`LogQuery`].
//!
//! History is read from every container of the deployment, merged by time, with the build
//! output of this process (stream `system`) in front; the query's filters and `tail` apply
//! to the merged lines. A follow then streams each container's new lines as they are
//! written and ends when every container has stopped (or `until` has passed).

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use conan_core::{LogLine, LogQuery, LogStream, OutputStream, Timestamp};
use futures::{StreamExt, stream};

use crate::container::Instance;
use crate::error::DockerError;

/// Splits one frame of the log API (`<RFC 3339 timestamp> <text>` lines) into log lines.
pub(crate) fn parse_frame(frame: &LogOutput, source: &str) -> Vec<LogLine> {
    let (stream, bytes) = match frame {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (OutputStream::Stdout, message)
        }
        LogOutput::StdErr { message } => (OutputStream::Stderr, message),
        LogOutput::StdIn { .. } => return Vec::new(),
    };
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (timestamp, text) = match line.split_once(' ') {
                Some((ts, rest)) => match Timestamp::parse_rfc3339(ts) {
                    Ok(t) => (t, rest),
                    Err(_) => (Timestamp::now(), line),
                },
                None => match Timestamp::parse_rfc3339(line) {
                    Ok(t) => (t, ""),
                    Err(_) => (Timestamp::now(), line),
                },
            };
            LogLine::at(timestamp, stream, text.trim_end_matches('\r')).with_source(source)
        })
        .collect()
}

fn options(
    query: &LogQuery,
    follow: bool,
    tail: Option<usize>,
) -> bollard::query_parameters::LogsOptions {
    let mut builder = LogsOptionsBuilder::new()
        .stdout(query.stream != Some(OutputStream::Stderr))
        .stderr(query.stream != Some(OutputStream::Stdout))
        .timestamps(true)
        .follow(follow);
    // The daemon's since/until are whole seconds; the exact filter is `LogQuery::matches`.
    if let Some(since) = query.since {
        let secs = since.as_unix_micros().div_euclid(1_000_000);
        builder = builder.since(i32::try_from(secs).unwrap_or(0));
    }
    if let Some(until) = query.until
        && !follow
    {
        let secs = until.as_unix_micros().div_euclid(1_000_000) + 1;
        builder = builder.until(i32::try_from(secs).unwrap_or(i32::MAX));
    }
    builder = builder.tail(&tail.map_or_else(|| "all".to_owned(), |n| n.to_string()));
    builder.build()
}

/// The last `n` lines of one container (for failure bundles). Best effort.
pub(crate) async fn last_lines(docker: &Docker, instance: &Instance, n: usize) -> Vec<LogLine> {
    read_history(
        docker,
        &instance.id,
        &instance.name,
        &LogQuery::all(),
        Some(n),
    )
    .await
    .unwrap_or_default()
}

async fn read_history(
    docker: &Docker,
    id: &str,
    source: &str,
    query: &LogQuery,
    tail: Option<usize>,
) -> Result<Vec<LogLine>, DockerError> {
    let mut frames = docker.logs(id, Some(options(query, false, tail)));
    let mut lines = Vec::new();
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| DockerError::api(format!("logs of {source}"), e))?;
        lines.extend(parse_frame(&frame, source));
    }
    Ok(lines)
}

/// Answers `query` for `containers` (id, name), with `build_log` in front.
pub(crate) async fn query(
    docker: &Docker,
    containers: &[(String, String)],
    build_log: &[LogLine],
    query: &LogQuery,
) -> conan_core::Result<LogStream> {
    // The daemon can apply `tail` itself only when no other filter narrows the lines.
    let daemon_tail = query
        .tail
        .filter(|_| query.min_level.is_none() && query.contains.is_none());
    let mut history: Vec<LogLine> = build_log
        .iter()
        .filter(|l| query.matches(l))
        .cloned()
        .collect();
    let mut last_seen = Vec::with_capacity(containers.len());
    for (id, name) in containers {
        let lines = read_history(docker, id, name, query, daemon_tail).await?;
        last_seen.push(lines.last().map(|l| l.timestamp));
        history.extend(lines);
    }
    history.sort_by_key(|l| l.timestamp);
    let history = query.apply(&history);
    if !query.follow {
        return Ok(stream::iter(history.into_iter().map(Ok)).boxed());
    }
    let follows = containers.iter().zip(last_seen).map(|((id, name), seen)| {
        follow_one(
            docker.clone(),
            id.clone(),
            name.clone(),
            query.clone(),
            seen,
        )
    });
    let live = stream::select_all(follows);
    Ok(stream::iter(history.into_iter().map(Ok))
        .chain(live)
        .boxed())
}

/// New lines of one container after `seen` (the newest line already delivered).
fn follow_one(
    docker: Docker,
    id: String,
    name: String,
    query: LogQuery,
    seen: Option<Timestamp>,
) -> LogStream {
    let mut opts_query = query.clone();
    // Start at the last delivered second; lines up to `seen` are dropped below.
    if let Some(seen) = seen {
        opts_query.since = Some(opts_query.since.map_or(seen, |s| s.max(seen)));
    }
    let frames = docker.logs(&id, Some(options(&opts_query, true, None)));
    frames
        .flat_map(move |frame| {
            let lines: Vec<conan_core::Result<LogLine>> = match frame {
                Ok(frame) => parse_frame(&frame, &name)
                    .into_iter()
                    .filter(|l| seen.is_none_or(|s| l.timestamp > s))
                    .map(Ok)
                    .collect(),
                Err(e) => vec![Err(
                    DockerError::api(format!("follow logs of {name}"), e).into()
                )],
            };
            stream::iter(lines)
        })
        .take_while(move |line| {
            let past = matches!((line, query.until), (Ok(l), Some(u)) if l.timestamp > u);
            std::future::ready(!past)
        })
        .filter(move |line| {
            let keep = match line {
                Ok(l) => opts_matches(&query, l),
                Err(_) => true,
            };
            std::future::ready(keep)
        })
        .boxed()
}

fn opts_matches(query: &LogQuery, line: &LogLine) -> bool {
    query.matches(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use conan_core::LogLevel;

    #[test]
    fn frames_split_into_timestamped_lines() {
        let frame = LogOutput::StdErr {
            message: Bytes::from_static(
                b"2026-11-28T08:00:00.123456789Z [warn] low disk\n2026-11-28T08:00:01Z boom\n",
            ),
        };
        let lines = parse_frame(&frame, "c1");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message, "[warn] low disk");
        assert_eq!(lines[0].level, LogLevel::Warn);
        assert_eq!(lines[1].level, LogLevel::Error);
        assert_eq!(lines[1].stream, OutputStream::Stderr);
        assert_eq!(lines[0].source.as_deref(), Some("c1"));
        assert!(lines[0].timestamp < lines[1].timestamp);
    }
}
