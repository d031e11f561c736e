//! Quantities and durations as scenario files and Kubernetes write them: CPU (`250m`, `1.5`),
//! memory (`128Mi`, `1G`, `1e9`) and durations (`15s`, `2m`, `1h30m`, `500ms`, or a number of seconds).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Parses a Kubernetes quantity into its value in base units (cores for CPU, bytes for memory), with
/// the project's one quantity parser ([`lazyscale_api::quantity::parse_f64`]).
pub fn parse_quantity(s: &str) -> Option<f64> {
    lazyscale_api::quantity::parse_f64(s).ok()
}

/// Formats CPU cores as metrics-server does: whole nanocores (`123456789n`).
pub fn format_cpu_nanos(cores: f64) -> String {
    format!("{}n", (cores.max(0.0) * 1e9).round() as u64)
}

/// Formats bytes as metrics-server does: whole kibibytes (`12345Ki`).
pub fn format_mem_ki(bytes: f64) -> String {
    format!("{}Ki", (bytes.max(0.0) / 1024.0).round() as u64)
}

/// Parses `15s`, `2m`, `1h30m`, `250ms`, `1d` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0.0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let mult = match unit {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += n * mult;
    }
    // try_: a sum beyond Duration's range (`6666…6s`, found by the scenario fuzz target) is invalid, not a panic
    Duration::try_from_secs_f64(total).ok()
}

struct QuantityVisitor(&'static str);

impl Visitor<'_> for QuantityVisitor {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        parse_quantity(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// An amount of CPU in cores; deserializes from `250m`, `0.25` or `1`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cpu(pub f64);

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor("a CPU quantity such as 250m or 1.5"))
            .map(Cpu)
    }
}

impl Serialize for Cpu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}m", (self.0 * 1000.0).round() as i64))
    }
}

/// An amount of memory in bytes; deserializes from `128Mi`, `1G` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bytes(pub f64);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor("a memory quantity such as 128Mi or 1G"))
            .map(Bytes)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}", self.0.round() as i64))
    }
}

/// A duration; deserializes from `15s`, `2m`, `1h30m`, `500ms` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

struct DurVisitor;

impl Visitor<'_> for DurVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 15s, 2m, 1h30m or a number of seconds")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v).map_err(|_| E::invalid_value(de::Unexpected::Float(v), &self))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurVisitor).map(Dur)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert!((parse_quantity("100n").unwrap_or(0.0) - 100e-9).abs() < 1e-15);
        assert_eq!(parse_quantity("12Qi"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(format_cpu_nanos(0.25), "250000000n");
        assert_eq!(format_mem_ki(2048.0), "2Ki");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(parse_duration("s"), None);
        // out of Duration's range, negative, not a number: invalid, never a panic
        assert_eq!(parse_duration(&format!("{}s", "6".repeat(60))), None);
        assert_eq!(parse_duration(&"6".repeat(60)), None);
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("NaN"), None);
    }
}
