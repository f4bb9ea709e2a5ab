//! Log capture: lossless bursts up to process.exit(), long lines, filters, follow.

mod common;

use std::time::{Duration, Instant};

use common::*;
use conan_core::prelude::*;
use conan_core::{OutputStream, RestartMode};
use futures::StreamExt;

const PORTS: std::ops::RangeInclusive<u16> = 22000..=22499;

fn burst(name: &str, lines: u32) -> DeploymentConfig {
    let mut c = DeploymentConfig::new(name);
    c.source = app("burst");
    c.env.insert("BURST_LINES", lines.to_string());
    c.restart.policy = RestartMode::Never;
    c.restart.min_uptime = Duration::from_millis(1);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_lines_written_right_before_exit_are_all_kept_in_order() {
    let (p, _dir) = provider(PORTS);
    let s = spec(burst(&unique("burst"), 1_000_000));
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let t = Instant::now();
    // The app may exit before or after min_uptime: both are fine here.
    let _ = p.deploy(&ctx, &s, None).await;
    let done = wait_until(Duration::from_secs(120), || {
        marked(s.id.as_str()).is_empty()
    })
    .await;
    assert!(done);
    let q = LogQuery::all().stream(OutputStream::Stdout);
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = p.logs_vec(&known(&s), &q).await.unwrap();
        if lines
            .last()
            .is_some_and(|l| l.message.starts_with("burst done"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("1M lines captured and queried in {:?}", t.elapsed());
    assert_eq!(lines.len(), 1_000_001, "every line plus the final one");
    for (i, l) in lines[..1_000_000].iter().enumerate() {
        let want = format!("line {:07}", i + 1);
        assert_eq!(l.message, want, "line {i} whole and in order");
    }
    assert_eq!(lines[1_000_000].message, "burst done: 1000000 lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_split_with_marker_and_queries_filter() {
    let (p, _dir) = provider(PORTS);
    let mut c = DeploymentConfig::new(unique("long"));
    c.source = app("hello");
    c.start_command = Some(
        "node -e \"console.log('x'.repeat(200000)); console.error('WARN careful'); console.log('{\\\"level\\\":50,\\\"msg\\\":\\\"boom\\\"}')\"; exec node app.js"
            .into(),
    );
    c.health_check = Some(HealthCheck::http("/health"));
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let all = logs(&p, &known(&s)).await;
    let pieces: Vec<_> = all
        .iter()
        .filter(|l| l.message.starts_with("xxx"))
        .collect();
    assert_eq!(
        pieces.len(),
        4,
        "200000 bytes = 3 full 64 KiB pieces + rest"
    );
    assert!(
        pieces[0]
            .message
            .ends_with(conan_provider_local::logs::SPLIT_MARKER)
    );
    assert!(!pieces[3].message.contains("[conan"));

    let warn = p
        .logs_vec(&known(&s), &LogQuery::all().stream(OutputStream::Stderr))
        .await
        .unwrap();
    assert_eq!(warn.len(), 1);
    assert_eq!(warn[0].level, LogLevel::Warn);
    let errors = p
        .logs_vec(&known(&s), &LogQuery::all().min_level(LogLevel::Error))
        .await
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("boom"));

    // Follow: history first, then new lines as the app writes them.
    let mut follow = p
        .logs(
            &known(&s),
            &LogQuery::tail(1).contains("GET /follow").follow(),
        )
        .await
        .unwrap();
    let port = info.port().unwrap();
    let _ = get(port, "/follow-1").await;
    let first = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.message, "GET /follow-1");

    // since/until.
    let now = conan_core::Timestamp::now();
    let none = p
        .logs_vec(
            &known(&s),
            &LogQuery {
                since: Some(now),
                ..LogQuery::all()
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    p.remove(&ctx, &known(&s)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_rotates_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = conan_provider_local::LocalProvider::builder()
        .state_dir(dir.path())
        .port_range(22400..=22499)
        .log_rotation(64 * 1024, 3)
        .build()
        .unwrap();
    let s = spec(burst(&unique("rot"), 20_000));
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let _ = p.deploy(&ctx, &s, None).await;
    let logdir = dir
        .path()
        .join("deployments")
        .join(s.id.as_str())
        .join("logs");
    let ok = wait_until(Duration::from_secs(20), || {
        logdir.join("app.log.2").exists()
    })
    .await;
    assert!(ok);
    assert!(!logdir.join("app.log.3").exists());
    for f in ["app.log", "app.log.1", "app.log.2"] {
        let size = std::fs::metadata(logdir.join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size <= 64 * 1024, "{f}: {size}");
    }
}
