//! Peer comparison for the local provider, all in one run:
//!
//! 1. deploy-to-ready of `examples/apps/hello`: through `LocalProvider` vs spawning
//!    `node app.js` and polling `GET /health` every millisecond (the physical limit) vs
//!    `pm2 start` (PM2 installed from npm into a temp dir; skipped with a notice when npm or
//!    the install fails). The PM2 daemon is started before timing, which favours PM2.
//! 2. the app's resident memory under Conan vs bare;
//! 3. 1,000,000 lines from `examples/apps/burst`: captured through Conan (until every line
//!    is in the log store and file) vs the same app with stdout on a file.
//!
//! ```text
//! cargo run --release -p conan-benches --bin local_peer -- [--runs N] [--lines N] [--no-pm2] [--no-cgroups]
//! ```

use conan_benches::{app_env, free_port, median, ms, pm2_command, pm2_install, rss_kib};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conan_core::RestartMode;
use conan_core::prelude::*;
use conan_provider_local::LocalProvider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn apps() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/apps")
}

async fn health(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap_or(0);
    buf[..n].starts_with(b"HTTP/1.1 200")
}

async fn wait_healthy(port: u16) {
    while !health(port).await {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn bare_ready(runs: usize) -> (Duration, u64) {
    let mut times = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        let port = free_port();
        let t = Instant::now();
        let mut child = app_env(&mut Command::new("node"))
            .arg("app.js")
            .current_dir(apps().join("hello"))
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node");
        wait_healthy(port).await;
        times.push(t.elapsed());
        for _ in 0..20 {
            health(port).await;
        }
        rss = rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
    (median(&mut times), rss)
}

async fn conan_ready(runs: usize, state: &Path) -> (Duration, u64) {
    let provider = LocalProvider::builder()
        .state_dir(state)
        .port_range(26000..=26999)
        .cgroups(!std::env::args().any(|a| a == "--no-cgroups"))
        .build()
        .expect("provider");
    let ctx = OperationContext::detached();
    let mut times = Vec::new();
    let mut rss = 0;
    for i in 0..runs {
        let mut config = DeploymentConfig::new(format!("peer-{i}"));
        config.source = apps().join("hello");
        config.health_check = Some(HealthCheck::http("/health"));
        let spec = DeploymentSpec::new(DeploymentId::generate(), Revision(1), config);
        let t = Instant::now();
        let info = provider.deploy(&ctx, &spec, None).await.expect("deploy");
        times.push(t.elapsed());
        let port = info.port().unwrap_or(0);
        for _ in 0..20 {
            health(port).await;
        }
        rss = info.instances[0].id.parse().map(rss_kib).unwrap_or(0);
        let known = KnownDeployment::new(spec, info);
        provider.remove(&ctx, &known).await.expect("remove");
    }
    (median(&mut times), rss)
}

async fn pm2_ready(pm2: &Path, home: &Path, runs: usize) -> Duration {
    let app_dir = apps().join("hello");
    let pm2_cmd = |args: &[&str]| pm2_command(pm2, home, &app_dir, args);
    let _ = pm2_cmd(&["ping"]).status();
    let mut times = Vec::new();
    for i in 0..runs {
        let port = free_port();
        let name = format!("peer-{i}");
        let t = Instant::now();
        let _ = pm2_cmd(&["start", "app.js", "--name", &name])
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .status();
        wait_healthy(port).await;
        times.push(t.elapsed());
        let _ = pm2_cmd(&["delete", &name]).status();
    }
    let _ = pm2_cmd(&["kill"]).status();
    median(&mut times)
}

fn bare_burst(lines: u32, runs: usize, dir: &Path) -> Duration {
    let mut times = Vec::new();
    for i in 0..runs {
        let out = std::fs::File::create(dir.join(format!("burst-{i}.out"))).expect("file");
        let t = Instant::now();
        let status = app_env(&mut Command::new("node"))
            .args(["app.js", &lines.to_string()])
            .current_dir(apps().join("burst"))
            .stdout(out)
            .status()
            .expect("node");
        times.push(t.elapsed());
        assert!(status.success());
    }
    median(&mut times)
}

async fn conan_burst(lines: u32, runs: usize, state: &Path) -> Duration {
    let provider = LocalProvider::builder()
        .state_dir(state)
        .port_range(27000..=27999)
        .log_rotation(64 * 1024 * 1024, 5)
        .build()
        .expect("provider");
    let ctx = OperationContext::detached();
    let mut times = Vec::new();
    for i in 0..runs {
        let mut config = DeploymentConfig::new(format!("burst-{i}"));
        config.source = apps().join("burst");
        config.env.insert("BURST_LINES", lines.to_string());
        config.restart.policy = RestartMode::Never;
        config.restart.min_uptime = Duration::from_millis(1);
        let spec = DeploymentSpec::new(DeploymentId::generate(), Revision(1), config);
        let t = Instant::now();
        let t0 = conan_core::Timestamp::now();
        let runtime = provider.deploy(&ctx, &spec, None).await.unwrap_or_default();
        let deployed = t.elapsed();
        let known = KnownDeployment::new(spec, runtime);
        // Exited = the process ended and the supervisor drained its output into the store.
        while !matches!(
            provider.status(&known).await,
            Ok(ObservedStatus::Exited { .. } | ObservedStatus::Stopped)
        ) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(t.elapsed());
        if std::env::var_os("LOCAL_PEER_DEBUG").is_some() {
            println!(
                "    deploy returned after {}, stopped after {}",
                ms(deployed),
                ms(t.elapsed())
            );
            let tail = provider
                .logs_vec(&known, &LogQuery::tail(3))
                .await
                .expect("logs");
            for l in tail {
                let at = l.timestamp.as_unix_micros() - t0.as_unix_micros();
                println!("      +{:.1} ms {}", at as f64 / 1000.0, l.message);
            }
        }
        let got = provider
            .logs_vec(&known, &LogQuery::all().stream(OutputStream::Stdout))
            .await
            .expect("logs");
        assert_eq!(got.len(), lines as usize + 1, "every line captured");
        provider.remove(&ctx, &known).await.expect("remove");
    }
    median(&mut times)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(9);
    let lines: u32 = arg("--lines")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let no_pm2 = std::env::args().any(|a| a == "--no-pm2");
    let tmp = tempfile::tempdir().expect("tempdir");

    println!("deploy-to-ready of examples/apps/hello, median of {runs} runs (interleaved)");
    // Warm the page cache for node and the app.
    let _ = bare_ready(1).await;
    let state = tmp.path().join("state");
    let (mut bare_t, mut conan_t) = (Vec::new(), Vec::new());
    let (mut bare_rss, mut conan_rss) = (0, 0);
    for _ in 0..runs {
        let (b, r) = bare_ready(1).await;
        bare_t.push(b);
        bare_rss = r;
        let (c, r) = conan_ready(1, &state).await;
        conan_t.push(c);
        conan_rss = r;
    }
    let (bare, conan) = (median(&mut bare_t), median(&mut conan_t));
    println!("  bare spawn + poll : {}", ms(bare));
    println!(
        "  conan deploy      : {}  ({:.2}x bare)",
        ms(conan),
        conan.as_secs_f64() / bare.as_secs_f64()
    );
    if no_pm2 {
        println!("  pm2 start         : skipped (--no-pm2)");
    } else {
        let dir = tmp.path().join("pm2");
        match pm2_install(&dir) {
            Some(pm2) => {
                let pm2_t = pm2_ready(&pm2, &dir.join(".pm2"), runs).await;
                println!(
                    "  pm2 start         : {}  ({:.2}x bare)",
                    ms(pm2_t),
                    pm2_t.as_secs_f64() / bare.as_secs_f64()
                );
            }
            None => {
                println!("  pm2 start         : skipped (npm missing or `npm install pm2` failed)")
            }
        }
    }
    println!("app memory (VmRSS after 20 requests)");
    println!("  bare              : {bare_rss} KiB");
    println!(
        "  under conan       : {conan_rss} KiB  ({:.2}x bare)",
        conan_rss as f64 / bare_rss.max(1) as f64
    );

    let burst_runs = runs.min(5);
    println!("{lines} lines from examples/apps/burst, median of {burst_runs} runs (interleaved)");
    let (mut direct_t, mut captured_t) = (Vec::new(), Vec::new());
    for i in 0..burst_runs {
        direct_t.push(bare_burst(lines, 1, tmp.path()));
        let state = tmp.path().join(format!("burst-state-{i}"));
        captured_t.push(conan_burst(lines, 1, &state).await);
    }
    let (direct, captured) = (median(&mut direct_t), median(&mut captured_t));
    println!("  app -> file       : {}", ms(direct));
    println!(
        "  through conan     : {}  ({:.2}x file), all {lines} lines verified",
        ms(captured),
        captured.as_secs_f64() / direct.as_secs_f64()
    );
}
