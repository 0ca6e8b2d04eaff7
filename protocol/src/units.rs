//! Human-written quantities in manifests and policy files: sizes
//! (`"128MiB"`), CPU shares (`"50%"`) and durations (`"30s"`). Each type
//! serialises back to the same text so `policy show` prints what an
//! operator would write.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A size in bytes, written `"128MiB"`, `"64 KiB"`, `"1G"`, `"4096"` or as
/// a bare integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("K", 1 << 10),
    ("M", 1 << 20),
    ("G", 1 << 30),
    ("T", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if digits_end == 0 {
            return Err(format!(
                "`{s}` is not a size: expected a number with a unit such as 128MiB"
            ));
        }
        let number: u64 = text[..digits_end]
            .parse()
            .map_err(|_| format!("`{s}` is too large"))?;
        let unit = text[digits_end..].trim();
        let multiplier = if unit.is_empty() {
            1
        } else {
            SIZE_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    format!(
                        "`{s}` has unknown unit `{unit}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB)"
                    )
                })?
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, m) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= m && self.0 % m == 0 {
                return write!(f, "{}{name}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A share of one CPU, written `"50%"` (half a CPU) or `"200%"` (two CPUs).
/// Stored in basis points of one CPU: 100% = 10_000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuShare(pub u32);

impl CpuShare {
    /// Quota per period for the CFS bandwidth controller.
    pub fn quota_us(self, period_us: u64) -> u64 {
        (period_us * u64::from(self.0) / 10_000).max(1_000)
    }
}

impl FromStr for CpuShare {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let number = text.strip_suffix('%').ok_or_else(|| {
            format!("`{s}` is not a CPU share: write a percentage of one CPU such as 50%")
        })?;
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a CPU share: `{number}` is not a number"))?;
        if !(value > 0.0 && value <= 100_000.0) {
            return Err(format!("`{s}` is out of range (above 0%, at most 100000%)"));
        }
        Ok(CpuShare((value * 100.0).round() as u32))
    }
}

impl fmt::Display for CpuShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 100 == 0 {
            write!(f, "{}%", self.0 / 100)
        } else {
            write!(f, "{}%", f64::from(self.0) / 100.0)
        }
    }
}

/// A duration written the humantime way: `"30s"`, `"250ms"`, `"2m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 30s or 250ms"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

macro_rules! text_serde {
    ($ty:ty, $expecting:literal, int = $int:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        let from_int: fn(u64) -> Result<$ty, String> = $int;
                        from_int(v).map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        let v =
                            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
                        self.visit_u64(v)
                    }
                }
                deserializer.deserialize_any(V)
            }
        }
    };
}

text_serde!(
    ByteSize,
    "a size such as \"128MiB\"",
    int = |v| Ok(ByteSize(v))
);
text_serde!(
    CpuShare,
    "a CPU share such as \"50%\"",
    int = |v| Err(format!(
        "{v} is not a CPU share: write a percentage such as \"50%\""
    ))
);
text_serde!(
    HumanDuration,
    "a duration such as \"30s\"",
    int = |v| Err(format!(
        "{v} is not a duration: write it with a unit such as \"30s\""
    ))
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("128MiB".parse::<ByteSize>(), Ok(ByteSize(128 << 20)));
        assert_eq!("64 KiB".parse::<ByteSize>(), Ok(ByteSize(64 << 10)));
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert_eq!("2MB".parse::<ByteSize>(), Ok(ByteSize(2_000_000)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
        assert!("18446744073709551615GiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(128 << 20).to_string(), "128MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn cpu_shares_parse_and_give_quotas() {
        let half: CpuShare = "50%".parse().expect("parse");
        assert_eq!(half.quota_us(100_000), 50_000);
        let two: CpuShare = "200%".parse().expect("parse");
        assert_eq!(two.quota_us(100_000), 200_000);
        assert_eq!(
            "12.5%".parse::<CpuShare>().map(|c| c.to_string()),
            Ok("12.5%".into())
        );
        assert!("50".parse::<CpuShare>().is_err());
        assert!("0%".parse::<CpuShare>().is_err());
        assert!("-5%".parse::<CpuShare>().is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            "250ms".parse::<HumanDuration>(),
            Ok(HumanDuration(Duration::from_millis(250)))
        );
        assert!("soon".parse::<HumanDuration>().is_err());
    }
}
