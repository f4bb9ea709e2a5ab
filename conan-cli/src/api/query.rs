//! Query strings: percent-encoding both ways, enough for `?grep=some text&tail=10`.

/// Encodes `pairs` as `k=v&k=v`, percent-encoding everything but unreserved characters.
#[must_use]
pub fn encode(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a query string into pairs (`+` is a space; bad escapes are kept as written).
#[must_use]
pub fn decode(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_with_spaces_and_symbols() {
        let q = encode(&[
            ("grep", "GET /health 200&x=y".to_owned()),
            ("n", "5".into()),
        ]);
        assert_eq!(q, "grep=GET%20%2Fhealth%20200%26x%3Dy&n=5");
        assert_eq!(
            decode(&q),
            vec![
                ("grep".to_owned(), "GET /health 200&x=y".to_owned()),
                ("n".to_owned(), "5".to_owned())
            ]
        );
    }

    #[test]
    fn decodes_plus_flags_and_bad_escapes() {
        assert_eq!(
            decode("follow&grep=a+b&x=%zz&y=%4"),
            vec![
                ("follow".to_owned(), String::new()),
                ("grep".to_owned(), "a b".to_owned()),
                ("x".to_owned(), "%zz".to_owned()),
                ("y".to_owned(), "%4".to_owned()),
            ]
        );
    }
}
