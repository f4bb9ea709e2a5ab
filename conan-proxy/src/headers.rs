//! Header rules of a forwarding proxy (RFC 9110 §7.6.1 and §7.6.3, RFC 9112 §9.6):
//! hop-by-hop fields are removed in both directions, including every field the
//! `Connection` header names; `X-Forwarded-For` / `-Proto` / `-Host` are set.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that only concern one connection (RFC 9110 §7.6.1; `Proxy-Connection` and
/// `Keep-Alive` are the legacy ones every proxy still strips; `TE` and `Upgrade` are
/// handled by the caller: `Upgrade` is kept for an upgrade request).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// The field names listed by the `Connection` headers (lowercase, without `close` and
/// `keep-alive`, which are options rather than fields).
fn named_by_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
        })
        // `HeaderName` lowercases what it parses.
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

/// Whether a `Connection` header lists `token` (case-insensitive).
#[must_use]
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` and `Upgrade`).
#[must_use]
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

/// Removes hop-by-hop fields. For an upgrade (`keep_upgrade`), `Upgrade` is kept and
/// `Connection: upgrade` is set again, since the upgrade is what is being forwarded.
/// A `TE: trailers` is kept (the only value a proxy forwards).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them (not even `Connection`): a scan of the few names
    // present is cheaper than a removal for each hop-by-hop name.
    let any = headers
        .keys()
        .any(|k| k == header::UPGRADE || HOP_BY_HOP.contains(k));
    if !any {
        if keep_upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in named_by_connection(headers) {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Sets `X-Forwarded-For` (the client's address appended to what a proxy before us
/// sent), `X-Forwarded-Proto` (`http`, unless a proxy before us said otherwise) and
/// `X-Forwarded-Host` (the `Host` the client asked for, unless already set).
pub fn set_forwarded(headers: &mut HeaderMap, client: IpAddr, host: Option<&HeaderValue>) {
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    let client = client.to_canonical().to_string();
    let prior: Vec<&str> = headers
        .get_all(&XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        client
    } else {
        format!("{}, {client}", prior.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(&XFF, v);
    }
    if !headers.contains_key(&XFP) {
        headers.insert(&XFP, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&XFH)
        && let Some(h) = host
    {
        headers.insert(&XFH, h.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic abc"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("content-type", "text/plain"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["content-type", "x-app"]);
    }

    #[test]
    fn te_trailers_survives_and_an_upgrade_keeps_its_fields() {
        let mut h = map(&[("te", "trailers, deflate")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get("te").unwrap(), "trailers");

        let mut h = map(&[
            ("connection", "Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(h.get("x-hop").is_none());
        assert!(h.get("sec-websocket-key").is_some());
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_headers_append_and_keep_what_came_before() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        let host = HeaderValue::from_static("example.test:8080");
        set_forwarded(&mut h, "127.0.0.1".parse().unwrap(), Some(&host));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example.test:8080");

        let mut h = map(&[("x-forwarded-proto", "https")]);
        set_forwarded(&mut h, "::ffff:10.1.2.3".parse().unwrap(), None);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert!(h.get("x-forwarded-host").is_none());
    }
}
