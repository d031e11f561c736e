//! Kubernetes quantities (`250m`, `1.5`, `123456n`, `64Mi`, `1G`, `1e3`) as numbers.
//!
//! Only what the recommender needs: a value in base units (cores, bytes) as `f64`. Precision beyond
//! `f64` does not matter for utilization.

/// The value of `s` in base units (cores for CPU, bytes for memory), or `None` when it does not parse.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let v = number * factor;
    v.is_finite().then_some(v)
}

/// The value of `s` in thousandths of the base unit, rounded up (CPU requests in millicores).
pub fn millis(s: &str) -> Option<u64> {
    parse(s).filter(|v| *v >= 0.0).map(|v| (v * 1000.0).ceil() as u64)
}

/// The value of `s` in base units, rounded up (memory in bytes).
pub fn units(s: &str) -> Option<u64> {
    parse(s).filter(|v| *v >= 0.0).map(|v| v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        let cases: [(&str, Option<f64>); 12] = [
            ("250m", Some(0.25)),
            ("1.5", Some(1.5)),
            ("123456789n", Some(0.123456789)),
            ("64Mi", Some(64.0 * 1024.0 * 1024.0)),
            ("1Gi", Some(1073741824.0)),
            ("1G", Some(1e9)),
            ("2k", Some(2000.0)),
            ("1e3", Some(1000.0)),
            ("10u", Some(1e-5)),
            ("", None),
            ("abc", None),
            ("1Xi", None),
        ];
        for (s, want) in cases {
            match (parse(s), want) {
                (Some(got), Some(want)) => assert!((got - want).abs() < 1e-9 * want.max(1.0), "{s}"),
                (got, want) => assert_eq!(got, want, "{s}"),
            }
        }
        assert_eq!(millis("250m"), Some(250));
        assert_eq!(millis("1"), Some(1000));
        assert_eq!(units("64Mi"), Some(67108864));
    }
}
