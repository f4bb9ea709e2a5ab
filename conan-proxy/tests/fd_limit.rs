//! At the file-descriptor limit an endpoint cannot be opened, and the error says so with
//! the OS error; it does not claim the port range is full (a regression: every failed
//! `bind` in the range scan counted as "taken"). Alone in its binary, because it lowers
//! the limit of the whole test process.

use std::process::Command;

use conan_core::error::DisplayChain;
use conan_core::traffic::Traffic;
use conan_core::{DeploymentId, EndpointConfig, Error};
use conan_proxy::{Proxy, ProxySettings};

/// Sets this process's soft limit of open files with `prlimit` (util-linux).
fn set_soft_fd_limit(soft: u64) {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={soft}:"),
        ])
        .status()
        .expect("prlimit (util-linux) is needed by this test");
    assert!(status.success(), "prlimit --nofile={soft}: failed");
}

fn soft_fd_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("a soft limit")
}

/// The lowest descriptor number not in use: the kernel hands out the lowest free number
/// and refuses one at or above the soft limit, so a limit of this leaves none.
fn lowest_free_fd() -> u64 {
    use std::os::fd::AsRawFd;
    let probe = std::fs::File::open("/dev/null").expect("/dev/null");
    u64::try_from(probe.as_raw_fd()).expect("a descriptor number")
}

#[tokio::test(flavor = "current_thread")]
async fn an_endpoint_at_the_fd_limit_fails_with_the_os_error_not_a_full_range() {
    let settings = ProxySettings {
        port_range: 45900..=45909,
        ..ProxySettings::default()
    };
    let proxy = Proxy::new(settings).expect("a proxy");
    let id = DeploymentId::new("dep-fdlimit");
    let config = EndpointConfig::default();

    let soft = soft_fd_limit();
    set_soft_fd_limit(lowest_free_fd());
    let result = proxy.open(&id, "fdlimit", &config, None).await;
    set_soft_fd_limit(soft);

    let e = result.expect_err("no descriptor is left for the listener");
    let text = DisplayChain(&e).to_string();
    assert!(matches!(e, Error::Provider { .. }), "{e:?}");
    assert!(text.contains("os error 24"), "{text}");
    assert!(!text.contains("no free port"), "{text}");

    // With descriptors free again the same call opens the endpoint.
    let addr = proxy
        .open(&id, "fdlimit", &config, None)
        .await
        .expect("an endpoint once descriptors are free");
    assert!((45900..=45909).contains(&addr.port()), "{addr}");
}
