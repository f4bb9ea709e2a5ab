//! Wall-clock timestamps and human-readable durations.
//!
//! Timestamps serialize as RFC 3339 strings (`2026-11-28T07:48:02.123456Z`); durations in
//! configs are written the way people say them: `"250ms"`, `"5s"`, `"2m"`, `"1h 30m"`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in wall-clock time with microsecond precision (Unix epoch based).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The current time.
    #[must_use]
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// Wraps a [`SystemTime`].
    #[must_use]
    pub fn from_system_time(t: SystemTime) -> Self {
        Self(t)
    }

    /// Microseconds since the Unix epoch (negative times clamp to 0).
    #[must_use]
    pub fn as_unix_micros(&self) -> i64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// A timestamp from microseconds since the Unix epoch.
    #[must_use]
    pub fn from_unix_micros(micros: i64) -> Self {
        let micros = u64::try_from(micros).unwrap_or(0);
        Self(UNIX_EPOCH + Duration::from_micros(micros))
    }

    /// The underlying [`SystemTime`].
    #[must_use]
    pub fn as_system_time(&self) -> SystemTime {
        self.0
    }

    /// Time elapsed since this timestamp (zero if it lies in the future).
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        SystemTime::now().duration_since(self.0).unwrap_or_default()
    }

    /// This timestamp moved back by `d` (saturating at the epoch).
    #[must_use]
    pub fn saturating_sub(&self, d: Duration) -> Self {
        // Never before the epoch: such a time has no RFC 3339 form to display.
        Self(
            self.0
                .checked_sub(d)
                .filter(|t| *t >= UNIX_EPOCH)
                .unwrap_or(UNIX_EPOCH),
        )
    }

    /// Parses an RFC 3339 timestamp such as `2026-11-28T07:48:02Z`.
    ///
    /// # Errors
    /// Returns a message when the text is not RFC 3339.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        humantime::parse_rfc3339_weak(s)
            .map(Self)
            .map_err(|e| format!("invalid timestamp '{s}': {e}"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_micros(self.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a human duration: `"250ms"`, `"5s"`, `"2m"`, `"1h 30m"`, `"0s"`.
///
/// # Errors
/// Returns a message naming the accepted units when the text cannot be read.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("invalid duration '{s}': expected a number with a unit, like \"250ms\", \"5s\", \"2m\" or \"1h\"")
    })
}

/// Formats a duration the way [`parse_duration`] reads it (`"1m 30s"`, `"250ms"`).
#[must_use]
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(d).to_string()
}

/// A duration as a person reads it, rounded to its two largest units: `"720ms"`,
/// `"1.9s"`, `"1m 35s"`, `"2h 5m"`, `"3d 4h"`. For messages and logs; configs and JSON use
/// [`format_duration`] (exact) or numbers.
#[must_use]
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s < 10 {
        let tenths = (ms + 50) / 100;
        return if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    let s = (ms + 500) / 1000;
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let pair = |a: u128, ua: &str, b: u128, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua} {b}{ub}")
        }
    };
    if days > 0 {
        pair(days, "d", hours, "h")
    } else if hours > 0 {
        pair(hours, "h", mins, "m")
    } else if mins > 0 {
        pair(mins, "m", secs, "s")
    } else {
        format!("{secs}s")
    }
}

/// Serde adapter for `Option<Duration>` fields written as whole milliseconds (a JSON
/// number; name the field `..._ms`).
pub mod serde_opt_millis {
    use super::Duration;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as a number of milliseconds, or none.
    ///
    /// # Errors
    /// Never fails for number-capable serializers.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from a number of milliseconds.
    ///
    /// # Errors
    /// Fails for anything but a non-negative integer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Serde adapter for [`Duration`] fields written as human durations.
pub mod serde_duration {
    use super::{Duration, format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as a human duration string.
    ///
    /// # Errors
    /// Never fails for string-capable serializers.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Deserializes from a human duration string.
    ///
    /// # Errors
    /// Fails for text that is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde adapter for `Option<Duration>` fields written as human durations.
pub mod serde_opt_duration {
    use super::{Duration, format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as a human duration string, or none.
    ///
    /// # Errors
    /// Never fails for string-capable serializers.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from a human duration string.
    ///
    /// # Errors
    /// Fails for text that is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod human_tests {
    use super::*;

    /// Issue 14, item 11: "1m 35s", not "1m 35s 774ms 397us 368ns".
    #[test]
    fn human_durations_are_rounded_to_two_units() {
        let ms = Duration::from_millis;
        assert_eq!(human_duration(ms(720)), "720ms");
        assert_eq!(human_duration(ms(1_904)), "1.9s");
        assert_eq!(human_duration(ms(2_000)), "2s");
        assert_eq!(
            human_duration(Duration::from_nanos(95_774_397_368)),
            "1m 36s"
        );
        assert_eq!(human_duration(ms(60_000)), "1m");
        assert_eq!(human_duration(ms(7_500_000)), "2h 5m");
        assert_eq!(human_duration(ms(273_600_000)), "3d 4h");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("five").is_err());
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(5),
            Duration::from_secs(90),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn timestamp_round_trips_through_json() {
        let t = Timestamp::from_unix_micros(1_764_316_082_123_456);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2025-11-28T07:48:02.123456Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}
