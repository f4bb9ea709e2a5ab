//! Peer comparison: deploy-to-ready of the same image through Conan's Docker provider vs
//! `docker run` followed by polling the published port until it answers.
//!
//! Both sides run the same image (`conan-test/node:20`, built locally from the host's node
//! by `conan-cli/assets/make-node-image.sh`, what `conan docker base-image` runs), the same command, publish on
//! a daemon-chosen 127.0.0.1 port and poll every 50 ms. Runs alternate to spread daemon noise.
//!
//! `cargo run --release -p conan-benches --bin docker_peer [-- ITERATIONS]`
//! (needs a Docker daemon; `DOCKER_HOST` names it).

use conan_benches::median;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use conan_core::{
    DeploymentConfig, DeploymentId, DeploymentSpec, HealthCheck, KnownDeployment, OperationContext,
    Provider, Revision,
};
use conan_provider_docker::{DockerOptions, DockerProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "conan-test/node:20";
const APP: &str = "require('http').createServer((q,s)=>s.end('ok')).listen(process.env.PORT||3000)";
const POLL: Duration = Duration::from_millis(50);

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn answers(port: u16) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `docker run` + `docker port` + poll; the time until the app answers.
async fn peer_once(i: usize) -> Result<Duration, String> {
    let name = format!("conan-peer-bench-{}-{i}", std::process::id());
    let start = Instant::now();
    let id = docker(&[
        "run",
        "-d",
        "--init",
        "--name",
        &name,
        "--label",
        "conan.bench=peer",
        "-e",
        "PORT=3000",
        "-p",
        "127.0.0.1::3000",
        IMAGE,
        "node",
        "-e",
        APP,
    ])?;
    let port: u16 = docker(&["port", &id, "3000/tcp"])?
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .ok_or("no published port")?;
    let deadline = start + Duration::from_secs(30);
    while !answers(port).await {
        if Instant::now() > deadline {
            return Err("peer app never answered".into());
        }
        tokio::time::sleep(POLL).await;
    }
    let elapsed = start.elapsed();
    docker(&["rm", "-f", &id])?;
    Ok(elapsed)
}

async fn conan_once(provider: &DockerProvider, i: usize) -> Result<Duration, String> {
    let name = format!("bench-{}-{i}", std::process::id());
    let config = DeploymentConfig::builder(&name)
        .start_command(format!("node -e \"{APP}\""))
        .health_check(HealthCheck::http("/"))
        .label("conan.bench", "conan")
        .provider_options(
            "docker",
            DockerOptions {
                image: Some(IMAGE.to_owned()),
                ..DockerOptions::default()
            },
        )
        .build()
        .map_err(|e| e.to_string())?;
    let spec = DeploymentSpec::new(DeploymentId::generate(), Revision(1), config);
    let ctx = OperationContext::detached();
    let start = Instant::now();
    let runtime = provider
        .deploy(&ctx, &spec, None)
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    provider
        .remove(&ctx, &KnownDeployment::new(spec, runtime))
        .await
        .map_err(|e| e.to_string())?;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../conan-cli/assets/make-node-image.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(IMAGE)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{} failed", script.display()));
    }
    let provider = DockerProvider::builder()
        .probe_interval(POLL)
        .build()
        .await
        .map_err(|e| format!("{e}"))?;
    // Warm-up of both paths (page cache, daemon).
    peer_once(usize::MAX).await?;
    conan_once(&provider, usize::MAX).await?;
    let (mut conan, mut peer) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        if i % 2 == 0 {
            conan.push(conan_once(&provider, i).await?);
            peer.push(peer_once(i).await?);
        } else {
            peer.push(peer_once(i).await?);
            conan.push(conan_once(&provider, i).await?);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("deploy-to-ready, {iterations} runs each, image {IMAGE}, poll {POLL:?}");
    println!("  conan (DockerProvider::deploy):   {conan:.0?}");
    println!("  peer  (docker run + poll):        {peer:.0?}");
    let (c, p) = (median(&mut conan), median(&mut peer));
    println!(
        "  median conan {:.1} ms, peer {:.1} ms, ratio conan/peer {:.2}",
        ms(c),
        ms(p),
        ms(c) / ms(p)
    );
    Ok(())
}
