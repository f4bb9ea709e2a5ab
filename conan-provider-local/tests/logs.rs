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

/// Regression (issue 10, finding 9): a 10 MB line arrives whole (in 64 KiB pieces, every
/// byte to its `END`), and a last line without a newline from an app that keeps running is
/// shown after a short quiet period — it never was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_line_arrives_to_its_end_and_a_partial_last_line_shows() {
    let (p, _dir) = provider(PORTS);
    let mut c = DeploymentConfig::new(unique("partial"));
    c.source = app("hello");
    c.start_command = Some(
        "node -e \"process.stdout.write('x'.repeat(10 * 1024 * 1024) + 'END\\n'); process.stdout.write('waiting for input'); setInterval(() => {}, 1000)\""
            .into(),
    );
    c.restart.min_uptime = Duration::from_millis(100);
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    p.deploy(&ctx, &s, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = logs(&p, &known(&s)).await;
        if lines
            .last()
            .is_some_and(|l| l.message == "waiting for input")
        {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "the partial last line never showed; last: {:?}",
            lines
                .last()
                .map(|l| l.message.chars().take(80).collect::<String>())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let app_lines: Vec<_> = lines
        .iter()
        .filter(|l| l.stream == OutputStream::Stdout)
        .collect();
    let marker = conan_provider_local::logs::SPLIT_MARKER;
    let pieces = &app_lines[..app_lines.len() - 1];
    assert_eq!(pieces.last().unwrap().message, "END");
    let bytes: usize = pieces
        .iter()
        .map(|l| l.message.strip_suffix(marker).unwrap_or(&l.message).len())
        .sum();
    assert_eq!(bytes, 10 * 1024 * 1024 + 3, "every byte of the long line");
    // Shown once, not again when more arrives.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = logs(&p, &known(&s)).await;
    let shown = again
        .iter()
        .filter(|l| l.message == "waiting for input")
        .count();
    assert_eq!(shown, 1);
    p.remove(&ctx, &known(&s)).await.unwrap();
}

fn instance_dirs(state: &std::path::Path, id: &DeploymentId) -> Vec<String> {
    std::fs::read_dir(
        state
            .join("deployments")
            .join(id.as_str())
            .join("instances"),
    )
    .map(|d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    })
    .unwrap_or_default()
}

/// Descriptors of this process open on files under `dir`.
fn fds_under(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(dir))
        .map(|t| t.display().to_string())
        .collect()
}

/// Regression (issue 10, findings 10 and 5): the instance directories of old revisions
/// piled up until `rm`, and every deployment kept four descriptors open for its logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_revisions_leave_no_directory_and_an_idle_deployment_holds_no_log_descriptor() {
    let (p, dir) = provider(22100..=22199);
    // No health check: the app's request log would keep the deployment busy.
    let mut c = config(&unique("dirs"), "hello");
    c.health_check = None;
    c.restart.min_uptime = Duration::from_millis(200);
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let v1 = p.deploy(&ctx, &s, None).await.unwrap();
    let s2 = DeploymentSpec::new(s.id.clone(), Revision(2), s.config.clone());
    let v2 = p
        .update(&ctx, &KnownDeployment::new(s.clone(), v1), &s2)
        .await
        .unwrap();
    let dirs = instance_dirs(dir.path(), &s.id);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0].starts_with("r2-"), "{dirs:?}");
    // A failed revision leaves none either.
    let mut bad = s.config.as_ref().clone();
    bad.health_check = Some(HealthCheck::http("/fail"));
    bad.update.healthy_deadline = Duration::from_secs(1);
    let s3 = DeploymentSpec::new(s.id.clone(), Revision(3), bad);
    let port2 = v2.port().unwrap();
    let k2 = KnownDeployment::new(s2.clone(), v2);
    p.update(&ctx, &k2, &s3).await.unwrap_err();
    assert_eq!(instance_dirs(dir.path(), &s.id), dirs);

    // Idle: the spools, app.log and the offsets file are all closed.
    let idle = wait_until(conan_provider_local::logs::IDLE * 3, || {
        fds_under(dir.path()).is_empty()
    })
    .await;
    assert!(idle, "open: {:?}", fds_under(dir.path()));
    // And reopened as needed: a request's log line still arrives.
    assert_eq!(get(port2, "/after-idle").await, Some(200));
    let mut arrived = false;
    for _ in 0..100 {
        let lines = p
            .logs_vec(&k2, &LogQuery::all().contains("/after-idle"))
            .await;
        if lines.is_ok_and(|l| l.len() == 1) {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(arrived);
    p.stop(&ctx, &k2).await.unwrap();
    assert!(instance_dirs(dir.path(), &s.id).is_empty());
    p.remove(&ctx, &k2).await.unwrap();
}

/// A tmpfs mounted for a test at `.0`, inside the temp dir `.1`: unmounted when dropped,
/// then the temp dir removed (a field drops after `drop`, so the mount point is free by
/// then; dropped the other way round, every run left an empty directory in /tmp).
struct Tmpfs(std::path::PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`) at a fresh directory; `None` (with a
    /// printed reason) when this process may not mount.
    fn mount(size: &str) -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1));
        if euid != Some("0") {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("vol");
        std::fs::create_dir(&mnt).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(mnt, dir)),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the volume holding `path` until a write fails.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![b'f'; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

async fn dropped_volume_full(p: &conan_provider_local::LocalProvider, k: &KnownDeployment) -> u64 {
    let (ctx, _rx) = ctx();
    p.recover(&ctx, std::slice::from_ref(k)).await.unwrap()[0]
        .runtime
        .details
        .get("log_lines_dropped_volume_full")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// Regression (issue 10, finding 3, its log part): on a full log volume the app died of
/// ENOSPC on its stdout. Now it keeps running, lines that cannot be stored are dropped and
/// counted, and logging resumes by itself once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_volume_drops_and_counts_lines_and_the_app_keeps_running() {
    let Some(vol) = Tmpfs::mount("2m") else {
        return;
    };
    let p = conan_provider_local::LocalProvider::builder()
        .state_dir(&vol.0)
        .port_range(22200..=22299)
        .node_path("/usr/bin/node")
        .log_rotation(128 * 1024, 2)
        .build()
        .unwrap();
    let mut c = DeploymentConfig::new(unique("full"));
    c.source = app("hello");
    c.start_command = Some(
        "node -e \"const fs = require('fs'); let i = 0; setInterval(() => { for (let k = 0; k < 10; k++) fs.writeSync(1, 'chatty line ' + (++i) + ' ' + 'x'.repeat(80) + '\\n'); }, 5)\""
            .into(),
    );
    c.restart.policy = RestartMode::Never;
    c.restart.min_uptime = Duration::from_millis(100);
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let (ctx, _rx) = ctx();
    let info = p.deploy(&ctx, &s, None).await.unwrap();
    let pid: u32 = info.instances[0].id.parse().unwrap();
    let k = KnownDeployment::new(s.clone(), info);
    let filler = vol.0.join("filler");
    fill(&filler);

    // Full: lines are dropped and counted, the app writes on.
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped_volume_full(&p, &k).await == 0 {
        assert!(Instant::now() < deadline, "no line was counted as dropped");
        assert!(alive(pid), "the app died on the full volume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = dropped_volume_full(&p, &k).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped_volume_full(&p, &k).await < first + 5000 {
        assert!(Instant::now() < deadline, "the app stopped writing");
        assert!(alive(pid), "the app died on the full volume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Space freed: logging resumes, with one line saying what was lost.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = p.logs_vec(&k, &LogQuery::tail(200)).await.unwrap();
        let notice = lines
            .iter()
            .position(|l| l.message.ends_with("log lines dropped: log volume full"));
        if let Some(at) = notice
            && lines[at + 1..]
                .iter()
                .any(|l| l.message.starts_with("chatty line"))
        {
            assert_eq!(lines[at].stream, OutputStream::System);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logging did not resume: {:?}",
            lines.last()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(alive(pid));
    p.remove(&ctx, &k).await.unwrap();
}

/// Regression (issue 10, finding 3): on a full log volume a new instance got spools with no
/// room: an app that writes a line died of ENOSPC and the deploy said only "the process
/// exited before it was ready (exit code 1)" (the faults suite's full-volume scenario); one
/// that writes later (this one) came up and died at its first line. Now the launch is
/// refused before the spawn with the cause, nothing of it is left, and the same deploy
/// works once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_on_a_full_log_volume_is_refused_with_the_cause_and_works_once_space_is_freed() {
    let Some(vol) = Tmpfs::mount("2m") else {
        return;
    };
    let p = conan_provider_local::LocalProvider::builder()
        .state_dir(&vol.0)
        .port_range(22300..=22399)
        .node_path("/usr/bin/node")
        .build()
        .unwrap();
    let mut c = DeploymentConfig::new(unique("fullnew"));
    c.source = app("hello");
    c.health_check = Some(HealthCheck::http("/health"));
    let s = spec(c);
    let _g = Guard::new(&[&s.id]);
    let filler = vol.0.join("filler");
    fill(&filler);
    let (ctx, _rx) = ctx();
    let err = p.deploy(&ctx, &s, None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("log volume is full") && text.contains("os error 28"),
        "{text}"
    );
    let id = format!("CONAN_INSTANCE={}/", s.id.as_str());
    let left: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("environ")).ok())
        .filter(|env| env.windows(id.len()).any(|w| w == id.as_bytes()))
        .collect();
    assert!(left.is_empty(), "a process of the refused launch is left");

    std::fs::remove_file(&filler).unwrap();
    // In one loaded CI run (session 7) this deploy still found no room right after the
    // filler was removed, and passed in every run alone; the cause was not found. What is
    // promised is that the deploy works once the space is back: polled until a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        match p.deploy(&ctx, &s, None).await {
            Ok(info) => break info,
            Err(e) if e.to_string().contains("log volume is full") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the deploy after freeing space failed: {e}"),
        }
    };
    let k = KnownDeployment::new(s.clone(), info);
    p.remove(&ctx, &k).await.unwrap();
}
