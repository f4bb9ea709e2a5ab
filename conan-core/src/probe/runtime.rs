//! Probing a deployment through what its runtime info says: the default of
//! [`Provider::probe`](crate::Provider::probe).

use std::time::Duration;

use super::{Probe, ProbeOutcome};
use crate::config::{HealthCheck, HealthCheckKind};
use crate::provider::KnownDeployment;

/// The host and port a user reaches `known` on: the runtime's URL (`http://host:port/…`),
/// else the first instance's port on `127.0.0.1`.
#[must_use]
pub fn runtime_address(known: &KnownDeployment) -> Option<(String, u16)> {
    if let Some(url) = known.runtime.url.as_deref()
        && let Some(address) = parse_http_authority(url)
    {
        return Some(address);
    }
    known
        .runtime
        .instances
        .iter()
        .find_map(|i| i.port)
        .map(|port| ("127.0.0.1".to_owned(), port))
}

/// `host` and `port` of an `http://` or `https://` URL (default ports 80 and 443).
fn parse_http_authority(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, 80)
    } else {
        (url.strip_prefix("https://")?, 443)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None if !authority.is_empty() => Some((authority.to_owned(), default_port)),
        None => None,
    }
}

/// Runs `check` once against `known` as [`Provider::probe`](crate::Provider::probe)'s
/// default does (see there). A `process` check is answered healthy without probing: the
/// provider's supervisor watches the process itself.
pub async fn probe_runtime(known: &KnownDeployment, check: &HealthCheck) -> ProbeOutcome {
    let address = runtime_address(known);
    let probe = match check.kind {
        HealthCheckKind::Process => {
            return ProbeOutcome::healthy("process check: supervised by the provider");
        }
        HealthCheckKind::Command => {
            let (host, port) = address.unwrap_or_else(|| ("127.0.0.1".to_owned(), 0));
            Probe::for_check(check, &host, port, &known.spec.config.source)
        }
        HealthCheckKind::Http | HealthCheckKind::Tcp => match address {
            Some((host, port)) => Probe::for_check(check, &host, port, &known.spec.config.source),
            None => {
                return ProbeOutcome::unhealthy(
                    "no address to probe: the runtime has no URL or port",
                )
                .with_duration(Duration::ZERO);
            }
        },
    };
    match probe {
        Some(probe) => probe.run(check.timeout).await,
        None => ProbeOutcome::unhealthy("the check cannot be run (no command)"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_http_authority;

    #[test]
    fn authorities_of_urls() {
        let a = |h: &str, p| Some((h.to_owned(), p));
        assert_eq!(
            parse_http_authority("http://127.0.0.1:20000"),
            a("127.0.0.1", 20000)
        );
        assert_eq!(
            parse_http_authority("http://localhost:8080/x?y"),
            a("localhost", 8080)
        );
        assert_eq!(
            parse_http_authority("https://example.com/"),
            a("example.com", 443)
        );
        assert_eq!(parse_http_authority("http://[::1]:9000/"), a("::1", 9000));
        assert_eq!(parse_http_authority("http://u:p@h:81"), a("h", 81));
        assert_eq!(parse_http_authority("ftp://h:1"), None);
        assert_eq!(parse_http_authority("http://h:bad"), None);
    }
}
