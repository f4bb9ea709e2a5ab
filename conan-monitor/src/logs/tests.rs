use std::sync::Arc;
use std::time::Duration;

use conan_core::testing::MemoryProvider;
use conan_core::{
    DeploymentConfig, DeploymentId, DeploymentManager, Error, LogLevel, LogLine, LogQuery,
    LogStream, OutputStream, Timestamp,
};
use futures::StreamExt;

use super::*;
use crate::{Monitor, MonitorSettings};

fn at(second: i64, text: &str) -> LogLine {
    LogLine::at(
        Timestamp::from_unix_micros(1_800_000_000_000_000 + second * 1_000_000),
        OutputStream::Stdout,
        text,
    )
}

fn history(lines: Vec<LogLine>) -> LogStream {
    futures::stream::iter(lines.into_iter().map(Ok)).boxed()
}

#[tokio::test]
async fn histories_merge_in_timestamp_order_each_line_tagged() {
    let merged: Vec<TaggedLine> = merge(vec![
        (
            Arc::from("a"),
            history(vec![at(1, "a1"), at(4, "a4"), at(6, "a6")]),
        ),
        (Arc::from("b"), history(vec![at(2, "b2"), at(3, "b3")])),
        (Arc::from("c"), history(vec![at(5, "c5"), at(7, "c7")])),
        (Arc::from("empty"), history(vec![])),
    ])
    .collect()
    .await;
    let got: Vec<(&str, &str)> = merged
        .iter()
        .map(|t| (&*t.deployment, t.line.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", "a1"),
            ("b", "b2"),
            ("b", "b3"),
            ("a", "a4"),
            ("c", "c5"),
            ("a", "a6"),
            ("c", "c7"),
        ]
    );
}

#[tokio::test]
async fn live_lines_arrive_as_written_and_a_failed_stream_does_not_end_the_others() {
    let (tx_a, rx_a) = tokio::sync::mpsc::unbounded_channel::<conan_core::Result<LogLine>>();
    let (tx_b, rx_b) = tokio::sync::mpsc::unbounded_channel::<conan_core::Result<LogLine>>();
    let live = |rx: tokio::sync::mpsc::UnboundedReceiver<_>| {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|l| (l, rx)) })
            .boxed()
    };
    let mut merged = merge(vec![
        (
            Arc::from("a"),
            history(vec![at(1, "a1")]).chain(live(rx_a)).boxed(),
        ),
        (Arc::from("b"), live(rx_b)),
    ]);
    assert_eq!(merged.next().await.unwrap().line.message, "a1");
    tx_b.send(Ok(at(9, "b9"))).unwrap();
    assert_eq!(merged.next().await.unwrap().line.message, "b9");
    tx_a.send(Ok(at(10, "a10"))).unwrap();
    let next = merged.next().await.unwrap();
    assert_eq!(
        (&*next.deployment, next.line.message.as_str()),
        ("a", "a10")
    );
    tx_b.send(Err(Error::ShutDown)).unwrap();
    let notice = merged.next().await.unwrap();
    assert_eq!(&*notice.deployment, "b");
    assert_eq!(notice.line.stream, OutputStream::System);
    assert!(
        notice.line.message.contains("ended with an error"),
        "{notice:?}"
    );
    tx_a.send(Ok(at(11, "a11"))).unwrap();
    assert_eq!(merged.next().await.unwrap().line.message, "a11");
    drop((tx_a, tx_b));
    assert!(merged.next().await.is_none());
}

async fn manager() -> DeploymentManager {
    DeploymentManager::builder()
        .provider(MemoryProvider::new())
        .build()
        .await
        .unwrap()
}

fn config(name: &str, tier: &str) -> DeploymentConfig {
    DeploymentConfig::builder(name)
        .source("/srv/app")
        .label("tier", tier)
        .build()
        .unwrap()
}

fn names(records: &[conan_core::DeploymentRecord]) -> Vec<&str> {
    records.iter().map(|r| &*r.name).collect()
}

#[tokio::test]
async fn selectors_pick_by_name_and_by_label() {
    let manager = manager().await;
    manager.deploy(config("web", "front")).await.unwrap();
    manager.deploy(config("api", "back")).await.unwrap();
    manager.deploy(config("www", "front")).await.unwrap();
    assert_eq!(
        names(&LogSelector::all().select(&manager).unwrap()),
        ["web", "api", "www"]
    );
    assert_eq!(
        names(
            &LogSelector::all()
                .label("tier", "front")
                .select(&manager)
                .unwrap()
        ),
        ["web", "www"]
    );
    assert_eq!(
        names(
            &LogSelector::names(["www", "api", "www"])
                .select(&manager)
                .unwrap()
        ),
        ["www", "api"]
    );
    assert_eq!(
        names(
            &LogSelector::names(["www", "api"])
                .label("tier", "back")
                .select(&manager)
                .unwrap()
        ),
        ["api"]
    );
    assert!(
        LogSelector::all()
            .label("tier", "none")
            .select(&manager)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        LogSelector::names(["nope"]).select(&manager),
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn an_aggregated_query_merges_deployments_and_tails_the_whole() {
    let manager = manager().await;
    manager.deploy(config("web", "front")).await.unwrap();
    manager.deploy(config("api", "back")).await.unwrap();
    manager.restart("web").await.unwrap();
    let all: Vec<TaggedLine> = aggregate(&manager, &LogSelector::all(), &LogQuery::all())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(all.iter().any(|t| &*t.deployment == "web"));
    assert!(all.iter().any(|t| &*t.deployment == "api"));
    assert!(
        all.windows(2)
            .all(|w| w[0].line.timestamp <= w[1].line.timestamp),
        "{all:#?}"
    );
    let last: Vec<TaggedLine> = aggregate(&manager, &LogSelector::all(), &LogQuery::tail(2))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(last, all[all.len() - 2..]);
    let front: Vec<TaggedLine> = aggregate(
        &manager,
        &LogSelector::all().label("tier", "back"),
        &LogQuery::all(),
    )
    .await
    .unwrap()
    .collect()
    .await;
    assert!(!front.is_empty() && front.iter().all(|t| &*t.deployment == "api"));
}

#[tokio::test(start_paused = true)]
async fn counters_slide_over_a_minute_by_level() {
    let counters = LogCounters::default();
    let web = DeploymentId::new("web");
    for _ in 0..3 {
        counters.record(&web, LogLevel::Info);
    }
    counters.record(&web, LogLevel::Error);
    tokio::time::advance(Duration::from_secs(30)).await;
    counters.record(&web, LogLevel::Fatal);
    counters.record(&web, LogLevel::Warn);
    assert_eq!(counters.lines_per_minute(&web), 6);
    assert_eq!(counters.errors_per_minute(&web), 2);
    tokio::time::advance(Duration::from_secs(31)).await;
    // The first four lines are more than a minute old.
    assert_eq!(counters.lines_per_minute(&web), 2);
    assert_eq!(counters.errors_per_minute(&web), 1);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(counters.lines_per_minute(&web), 0);
    assert_eq!(counters.errors_per_minute(&web), 0);
    // Totals stay.
    assert_eq!(counters.lines_by_level(&web), Some([0, 0, 3, 1, 1, 1]));
    assert_eq!(counters.errors_per_minute(&DeploymentId::new("other")), 0);
    assert_eq!(counters.lines_by_level(&DeploymentId::new("other")), None);
}

#[tokio::test]
async fn the_monitor_follows_running_deployments_and_counts_their_lines() {
    let manager = manager().await;
    let settings = MonitorSettings {
        health: false,
        ..MonitorSettings::default()
    };
    let monitor = Monitor::builder(manager.clone()).settings(settings).build();
    let web = manager.deploy(config("web", "front")).await.unwrap().id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while monitor.log_counters().lines_by_level(&web).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never followed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A restart writes lines (stopped, listening); the follower re-opens the stream
    // if the restart ended it, and counts them.
    manager.restart("web").await.unwrap();
    loop {
        let counts = monitor
            .log_counters()
            .lines_by_level(&web)
            .unwrap_or_default();
        if counts.iter().sum::<u64>() >= 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no line counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(monitor.log_counters().lines_per_minute(&web) >= 1);
    let text = monitor.render_prometheus();
    assert!(
        text.contains(r#"conan_log_lines_total{deployment="web",level="info"}"#),
        "{text}"
    );
    manager.stop("web").await.unwrap();
    manager.remove("web").await.unwrap();
    while monitor.log_counters().lines_by_level(&web).is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never dropped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    monitor.shutdown().await;
}
