//! Small value types of the config: byte sizes and stop signals.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written `"512MiB"`, `"1g"`, `"256m"`, `"64KB"` or a plain byte count.
///
/// Single-letter units (`k`, `m`, `g`, `t`) are binary, as in Docker's `--memory 512m`;
/// `KiB`/`MiB`/`GiB` are binary, `KB`/`MB`/`GB` are decimal.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` mebibytes.
    #[must_use]
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    /// The size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let invalid = || {
            format!(
                "invalid size '{s}': expected a number with a unit, like \"512MiB\", \"1g\" or \"64KB\""
            )
        };
        let value: f64 = num.parse().map_err(|_| invalid())?;
        let mult: u64 = match unit.trim() {
            "" | "b" | "B" => 1,
            "k" | "K" | "KiB" | "kib" => 1 << 10,
            "m" | "M" | "MiB" | "mib" => 1 << 20,
            "g" | "G" | "GiB" | "gib" => 1 << 30,
            "t" | "T" | "TiB" | "tib" => 1 << 40,
            "KB" | "kB" | "kb" => 1_000,
            "MB" | "mb" => 1_000_000,
            "GB" | "gb" => 1_000_000_000,
            "TB" | "tb" => 1_000_000_000_000,
            _ => return Err(invalid()),
        };
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(invalid());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (size, name) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A POSIX signal used to stop an application.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[non_exhaustive]
pub enum StopSignal {
    /// `SIGTERM` (the default, as in Docker, Nomad and PM2).
    #[default]
    Term,
    /// `SIGINT`.
    Int,
    /// `SIGQUIT`.
    Quit,
    /// `SIGHUP`.
    Hup,
    /// `SIGKILL`: no graceful period.
    Kill,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
}

impl StopSignal {
    /// Every signal, in declaration order.
    pub const ALL: [StopSignal; 7] = [
        StopSignal::Term,
        StopSignal::Int,
        StopSignal::Quit,
        StopSignal::Hup,
        StopSignal::Kill,
        StopSignal::Usr1,
        StopSignal::Usr2,
    ];

    /// The conventional name (`"SIGTERM"`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
            StopSignal::Quit => "SIGQUIT",
            StopSignal::Hup => "SIGHUP",
            StopSignal::Kill => "SIGKILL",
            StopSignal::Usr1 => "SIGUSR1",
            StopSignal::Usr2 => "SIGUSR2",
        }
    }

    /// The signal number on Linux.
    #[must_use]
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Term => 15,
            StopSignal::Int => 2,
            StopSignal::Quit => 3,
            StopSignal::Hup => 1,
            StopSignal::Kill => 9,
            StopSignal::Usr1 => 10,
            StopSignal::Usr2 => 12,
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        StopSignal::ALL
            .into_iter()
            .find(|sig| &sig.as_str()[3..] == name)
            .ok_or_else(|| format!("unknown signal '{s}' (known: SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL, SIGUSR1, SIGUSR2)"))
    }
}

impl Serialize for StopSignal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!("512MiB".parse::<ByteSize>(), Ok(ByteSize::mib(512)));
        assert_eq!("512m".parse::<ByteSize>(), Ok(ByteSize::mib(512)));
        assert_eq!("1g".parse::<ByteSize>(), Ok(ByteSize(1 << 30)));
        assert_eq!("64KB".parse::<ByteSize>(), Ok(ByteSize(64_000)));
        assert_eq!("1.5GiB".parse::<ByteSize>(), Ok(ByteSize(3 << 29)));
        assert!("lots".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize::mib(512).to_string(), "512MiB");
    }

    #[test]
    fn signals() {
        assert_eq!("SIGTERM".parse::<StopSignal>(), Ok(StopSignal::Term));
        assert_eq!("int".parse::<StopSignal>(), Ok(StopSignal::Int));
        assert!("SIGFOO".parse::<StopSignal>().is_err());
        assert_eq!(StopSignal::Kill.number(), 9);
    }
}
