//! Exact conversion between Kubernetes resource quantities and the integer units this crate computes in:
//! millicores for CPU and bytes for memory.
//!
//! Parsing is exact (integer arithmetic on the decimal mantissa, no floating point), rounds up to the unit
//! (`1n` CPU is `1m`, `0.5` bytes is `1` byte), accepts every suffix of the Kubernetes quantity grammar
//! (binary `Ki`..`Ei`, decimal `n u m k M G T P E`, exponents `1e3`) and rejects negative values, overflow
//! and anything that is not a quantity, with an error value. Formatting produces the canonical short forms
//! (`250m`, `2`, `512Mi`, `1Gi`, or plain bytes).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Bytes in a mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Bytes in a gibibyte.
pub const GIB: u64 = 1024 * MIB;

/// Why a string is not a usable quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not follow the quantity grammar.
    #[error("{0:?} is not a quantity")]
    Syntax(String),
    /// The quantity is negative.
    #[error("{0:?} is negative")]
    Negative(String),
    /// The quantity does not fit in 64 bits of the unit.
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Parses a CPU quantity into millicores, rounding up (`"250m"` → 250, `"1.5"` → 1500, `"1n"` → 1).
pub fn parse_cpu_millis(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 3)
}

/// Parses a memory quantity into bytes, rounding up (`"128Mi"` → 134217728, `"1G"` → 10⁹).
pub fn parse_memory_bytes(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 0)
}

/// Formats millicores as a CPU quantity: whole cores without a suffix, else millicores (`"2"`, `"250m"`).
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes as a memory quantity with the largest exact binary suffix (`"1Gi"`, `"300Mi"`, `"1000"`).
pub fn format_memory_bytes(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    for (suffix, unit) in [("Ti", 1024 * GIB), ("Gi", GIB), ("Mi", MIB), ("Ki", 1024)] {
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    format!("{bytes}")
}

/// [`format_cpu_millis`] as a [`Quantity`].
pub fn cpu_quantity(millis: u64) -> Quantity {
    Quantity(format_cpu_millis(millis))
}

/// [`format_memory_bytes`] as a [`Quantity`].
pub fn memory_quantity(bytes: u64) -> Quantity {
    Quantity(format_memory_bytes(bytes))
}

/// Parses `s` and returns `ceil(value × 10^extra_decimal)` as an integer.
fn parse_scaled(s: &str, extra_decimal: i32) -> Result<u64, QuantityError> {
    let syntax = || QuantityError::Syntax(truncate(s));
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut negative = false;
    match bytes.first() {
        Some(b'+') => pos = 1,
        Some(b'-') => {
            negative = true;
            pos = 1;
        }
        _ => {}
    }
    // Mantissa: digits with at most one dot, at least one digit.
    let mut mantissa: u128 = 0;
    let mut digits = 0usize;
    let mut frac_digits: i32 = 0;
    let mut seen_dot = false;
    let mut dropped_nonzero = false;
    let mut dropped: i32 = 0;
    while let Some(&c) = bytes.get(pos) {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                let d = u128::from(c - b'0');
                if mantissa == 0 && d == 0 && !seen_dot {
                    // leading zero: nothing to keep
                } else if mantissa < 10u128.pow(36) {
                    mantissa = mantissa * 10 + d;
                    if seen_dot {
                        frac_digits += 1;
                    }
                } else {
                    // More precision than we can hold: drop the digit but keep the magnitude; remember it
                    // so the result still rounds up.
                    if d != 0 {
                        dropped_nonzero = true;
                    }
                    if !seen_dot {
                        dropped += 1;
                    }
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        pos += 1;
    }
    if digits == 0 {
        return Err(syntax());
    }
    let rest = bytes.get(pos..).unwrap_or_default();
    let (dec_exp, bin_exp): (i32, u32) = match rest {
        b"" => (0, 0),
        b"Ki" => (0, 10),
        b"Mi" => (0, 20),
        b"Gi" => (0, 30),
        b"Ti" => (0, 40),
        b"Pi" => (0, 50),
        b"Ei" => (0, 60),
        b"n" => (-9, 0),
        b"u" => (-6, 0),
        b"m" => (-3, 0),
        b"k" => (3, 0),
        b"M" => (6, 0),
        b"G" => (9, 0),
        b"T" => (12, 0),
        b"P" => (15, 0),
        b"E" => (18, 0),
        [b'e' | b'E', exp @ ..] => (parse_exponent(exp).ok_or_else(syntax)?, 0),
        _ => return Err(syntax()),
    };
    if negative && (mantissa != 0 || dropped_nonzero) {
        return Err(QuantityError::Negative(truncate(s)));
    }
    let overflow = || QuantityError::Overflow(truncate(s));
    let exp10 = dec_exp
        .checked_add(extra_decimal)
        .and_then(|e| e.checked_add(dropped))
        .and_then(|e| e.checked_sub(frac_digits))
        .ok_or_else(overflow)?;
    if mantissa == 0 {
        return Ok(u64::from(dropped_nonzero));
    }
    let scaled = mantissa.checked_shl(bin_exp).filter(|v| v >> bin_exp == mantissa);
    let scaled = scaled.ok_or_else(overflow)?;
    let value: u128 = if exp10 >= 0 {
        let pow = u32::try_from(exp10)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
            .ok_or_else(overflow)?;
        scaled.checked_mul(pow).ok_or_else(overflow)?
    } else {
        match u32::try_from(-i64::from(exp10))
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
        {
            Some(pow) => scaled.div_ceil(pow),
            // Divided by more than 10^38: a positive value smaller than one unit rounds up to one.
            None => 1,
        }
    };
    let value = if dropped_nonzero && exp10 >= 0 {
        value.saturating_add(1)
    } else {
        value
    };
    u64::try_from(value).map_err(|_| overflow())
}

fn parse_exponent(s: &[u8]) -> Option<i32> {
    let (negative, digits) = match s {
        [b'-', d @ ..] => (true, d),
        [b'+', d @ ..] => (false, d),
        d => (false, d),
    };
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: i32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if negative { -v } else { v })
}

/// The input, cut to a length fit for an error message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        for (s, m) in [
            ("250m", 250),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("100n", 1),
            ("123456789n", 124),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("0", 0),
            ("+2", 2000),
            ("2k", 2_000_000),
            ("0.0005", 1),
            ("-0", 0),
            ("007", 7000),
            (".5", 500),
            ("5.", 5000),
        ] {
            assert_eq!(parse_cpu_millis(s), Ok(m), "{s}");
        }
    }

    #[test]
    fn memory() {
        for (s, b) in [
            ("128Mi", 128 * MIB),
            ("1Gi", GIB),
            ("1G", 1_000_000_000),
            ("1.5Ki", 1536),
            ("100", 100),
            ("0.5", 1),
            ("1E", 1_000_000_000_000_000_000),
            ("8Ei", 8u64 << 60),
            ("1e6", 1_000_000),
            ("129m", 1),
        ] {
            assert_eq!(parse_memory_bytes(s), Ok(b), "{s}");
        }
    }

    #[test]
    fn errors() {
        for s in [
            "", "abc", "1x", "Mi", "1 Mi", "1e", "1e+", "1..2", "1Mi2", "1e99999", "--1",
        ] {
            assert!(
                matches!(parse_memory_bytes(s), Err(QuantityError::Syntax(_))),
                "{s}"
            );
        }
        assert!(matches!(
            parse_memory_bytes("-1"),
            Err(QuantityError::Negative(_))
        ));
        assert!(matches!(
            parse_memory_bytes("16Ei"),
            Err(QuantityError::Overflow(_))
        ));
        assert!(matches!(
            parse_cpu_millis("1e30"),
            Err(QuantityError::Overflow(_))
        ));
        assert!(parse_cpu_millis(&"9".repeat(100)).is_err());
        assert_eq!(parse_cpu_millis(&format!("0.{}1", "0".repeat(60))), Ok(1));
    }

    #[test]
    fn format() {
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_cpu_millis(250), "250m");
        assert_eq!(format_memory_bytes(GIB), "1Gi");
        assert_eq!(format_memory_bytes(300 * MIB), "300Mi");
        assert_eq!(format_memory_bytes(1000), "1000");
        assert_eq!(format_memory_bytes(0), "0");
        for b in [1, 1023, 1024, 5 * MIB + 1, 7 * GIB] {
            assert_eq!(parse_memory_bytes(&format_memory_bytes(b)), Ok(b));
        }
        for m in [1, 999, 1000, 1001, 123_000] {
            assert_eq!(parse_cpu_millis(&format_cpu_millis(m)), Ok(m));
        }
    }
}
