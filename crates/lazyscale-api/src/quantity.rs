//! Kubernetes resource quantities (`"250m"`, `"1.5Gi"`, `"2e3"`) parsed into integers, and formatted
//! back: the one quantity implementation of lazyscale (the pod cache, the controller and the vertical
//! engine use it).
//!
//! lazyscale computes in integers: CPU in millicores and memory in bytes. Parsing is exact
//! (integer arithmetic on the decimal mantissa, no floating point) and rounds up the way Kubernetes'
//! `Quantity.MilliValue()` / `Value()` do, so `"0.1m"` is 1 millicore and `"1.5"` bytes is 2 bytes.
//! Anything malformed, negative or too large for a `u64` is an error ([`QuantityError`]); the
//! [`millis`] and [`units`] shorthands turn that into `None`. Nothing here panics on any input.
//! Formatting produces the canonical short forms (`250m`, `2`, `512Mi`, `1Gi`, or plain bytes).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use thiserror::Error;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// The string is empty (or only a sign).
    #[error("empty quantity")]
    Empty,
    /// The number part is not `digits[.digits]`.
    #[error("malformed number in quantity")]
    Malformed,
    /// The suffix is not one of the Kubernetes suffixes or a valid decimal exponent.
    #[error("unknown quantity suffix")]
    BadSuffix,
    /// Negative quantities make no sense for requests and limits.
    #[error("negative quantity")]
    Negative,
    /// The value does not fit the target integer.
    #[error("quantity out of range")]
    Overflow,
}

/// Mantissa digits kept before the value is considered absurd: 10^38 still fits a `u128`.
const MAX_DIGITS: usize = 38;

/// Largest decimal exponent accepted in e-notation; anything larger cannot produce a `u64` anyway (the
/// mantissa is non-zero) and would only make the arithmetic work harder.
const MAX_EXP10: i32 = 64;

/// Bytes in a mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// Bytes in a gibibyte.
pub const GIB: u64 = 1024 * MIB;

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

/// Parses a quantity and returns its value times 1000, rounded up (CPU millicores).
pub fn parse_millis(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 3)
}

/// Parses a quantity and returns its value rounded up to a whole unit (memory bytes).
pub fn parse_units(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 0)
}

/// [`parse_millis`], with any error mapped to `None`.
pub fn millis(s: &str) -> Option<u64> {
    parse_millis(s).ok()
}

/// [`parse_units`], with any error mapped to `None`.
pub fn units(s: &str) -> Option<u64> {
    parse_units(s).ok()
}

/// Parses a quantity into its value in base units as a float (cores for CPU, bytes for memory),
/// exact to the nanounit (`"100n"` is 1e-7), for code that models continuous usage (the simulator's
/// load profiles, metrics). Values too large for nanounits in a `u64` (above ~18 G) are exact to the
/// unit.
pub fn parse_f64(s: &str) -> Result<f64, QuantityError> {
    match parse_scaled(s, 9) {
        Ok(nanos) => Ok(nanos as f64 / 1e9),
        Err(QuantityError::Overflow) => parse_units(s).map(|u| u as f64),
        Err(e) => Err(e),
    }
}

/// Parses `s` and returns `ceil(value * 10^scale)`.
fn parse_scaled(s: &str, scale: i32) -> Result<u64, QuantityError> {
    let s = s.trim();
    let (negative, body) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return Err(QuantityError::Empty);
    }
    let bytes = body.as_bytes();
    // Number part: digits, optional '.', digits.
    let mut i = 0;
    let mut mantissa: u128 = 0;
    let mut digits = 0usize;
    let mut frac_digits: i32 = 0;
    let mut seen_dot = false;
    while i < bytes.len() {
        match bytes[i] {
            b @ b'0'..=b'9' => {
                // Leading zeros do not count towards the digit budget.
                if mantissa != 0 || b != b'0' {
                    digits += 1;
                    if digits > MAX_DIGITS {
                        return Err(QuantityError::Overflow);
                    }
                }
                mantissa = mantissa * 10 + u128::from(b - b'0');
                if seen_dot {
                    frac_digits += 1;
                    if frac_digits > MAX_DIGITS as i32 {
                        return Err(QuantityError::Overflow);
                    }
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        i += 1;
    }
    let number = &body[..i];
    if number.is_empty() || number == "." {
        return Err(QuantityError::Malformed);
    }
    let (exp10, exp2) = suffix(&body[i..])?;
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative);
    }
    if mantissa == 0 {
        return Ok(0);
    }
    // value = mantissa * 10^(exp10 - frac_digits + scale) * 2^exp2
    let e10 = exp10 - frac_digits + scale;
    let mut num = mantissa;
    let mut den: u128 = 1;
    num = shl(num, exp2)?;
    if e10 >= 0 {
        num = mul_pow10(num, e10)?;
    } else {
        match pow10(-e10) {
            Some(d) => den = d,
            // 10^k no longer fits a u128, so it exceeds `num`: the value is in (0, 1) and rounds up to 1.
            None => return Ok(1),
        }
    }
    let q = num.div_ceil(den);
    u64::try_from(q).map_err(|_| QuantityError::Overflow)
}

/// Splits a suffix into (decimal exponent, binary exponent).
fn suffix(s: &str) -> Result<(i32, u32), QuantityError> {
    let r = match s {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => return exponent(s).map(|e| (e, 0)),
    };
    Ok(r)
}

/// Parses a decimal exponent suffix: `e` or `E` followed by an optionally signed integer.
fn exponent(s: &str) -> Result<i32, QuantityError> {
    let rest = s
        .strip_prefix('e')
        .or_else(|| s.strip_prefix('E'))
        .ok_or(QuantityError::BadSuffix)?;
    let (neg, digits) = match rest.as_bytes().first() {
        Some(b'+') => (false, &rest[1..]),
        Some(b'-') => (true, &rest[1..]),
        _ => (false, rest),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError::BadSuffix);
    }
    let mut e: i32 = 0;
    for b in digits.bytes() {
        e = e.saturating_mul(10).saturating_add(i32::from(b - b'0'));
    }
    if e > MAX_EXP10 {
        // A huge positive exponent overflows; a huge negative one rounds up to the smallest unit, which
        // the caller gets by clamping.
        return if neg {
            Ok(-MAX_EXP10)
        } else {
            Err(QuantityError::Overflow)
        };
    }
    Ok(if neg { -e } else { e })
}

fn pow10(e: i32) -> Option<u128> {
    10u128.checked_pow(u32::try_from(e).ok()?)
}

fn mul_pow10(n: u128, e: i32) -> Result<u128, QuantityError> {
    pow10(e)
        .and_then(|p| n.checked_mul(p))
        .ok_or(QuantityError::Overflow)
}

fn shl(n: u128, bits: u32) -> Result<u128, QuantityError> {
    if bits == 0 {
        return Ok(n);
    }
    if n.leading_zeros() < bits {
        return Err(QuantityError::Overflow);
    }
    Ok(n << bits)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_f64_is_exact_to_the_nanounit_and_to_the_unit_when_large() {
        assert_eq!(parse_f64("250m"), Ok(0.25));
        assert_eq!(parse_f64("2"), Ok(2.0));
        assert_eq!(parse_f64("128Mi"), Ok(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse_f64("1G"), Ok(1e9));
        assert_eq!(parse_f64("1e3"), Ok(1000.0));
        assert_eq!(parse_f64("123456789n"), Ok(0.123456789));
        assert_eq!(parse_f64("100Gi"), Ok(100.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_f64("12Qi"), Err(QuantityError::BadSuffix));
        assert_eq!(parse_f64(""), Err(QuantityError::Empty));
        assert_eq!(parse_f64("-1"), Err(QuantityError::Negative));
    }

    use super::*;

    #[test]
    fn formats_canonical_short_forms() {
        let cpu = [(0, "0"), (250, "250m"), (1000, "1"), (1500, "1500m"), (2000, "2")];
        for (m, want) in cpu {
            assert_eq!(format_cpu_millis(m), want);
            assert_eq!(millis(want), Some(m), "{want} round-trips");
        }
        let memory = [
            (0, "0"),
            (1024, "1Ki"),
            (300 * MIB, "300Mi"),
            (GIB, "1Gi"),
            (1000, "1000"),
        ];
        for (bytes, want) in memory {
            assert_eq!(format_memory_bytes(bytes), want);
            assert_eq!(units(want), Some(bytes), "{want} round-trips");
        }
        assert_eq!(cpu_quantity(250), Quantity("250m".into()));
        assert_eq!(memory_quantity(GIB), Quantity("1Gi".into()));
    }

    #[test]
    fn cpu() {
        for (s, want) in [
            ("1", Some(1000)),
            ("250m", Some(250)),
            ("0.5", Some(500)),
            ("1.5", Some(1500)),
            ("0.1m", Some(1)),
            ("100u", Some(1)),
            ("2k", Some(2_000_000)),
            ("1e3", Some(1_000_000)),
            ("1E3", Some(1_000_000)),
            ("5e-3", Some(5)),
            ("+2", Some(2000)),
            ("0", Some(0)),
            ("-0", Some(0)),
            ("1Ki", Some(1_024_000)),
            (".5", Some(500)),
            ("5.", Some(5000)),
        ] {
            assert_eq!(millis(s), want, "{s}");
        }
    }

    #[test]
    fn memory() {
        for (s, want) in [
            ("128Mi", Some(128 << 20)),
            ("1Gi", Some(1 << 30)),
            ("1.5Gi", Some(3 << 29)),
            ("2Ti", Some(2 << 40)),
            ("1G", Some(1_000_000_000)),
            ("500M", Some(500_000_000)),
            ("64k", Some(64_000)),
            ("1Ei", Some(1 << 60)),
            ("8E", Some(8_000_000_000_000_000_000)),
            ("129e6", Some(129_000_000)),
            ("1.5", Some(2)),
            ("100m", Some(1)),
            ("1e-100", Some(1)),
        ] {
            assert_eq!(units(s), want, "{s}");
        }
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "+",
            "-",
            "-1",
            "abc",
            "1x",
            "1KiB",
            "1e",
            "1e+",
            "1..2",
            ".",
            "1 Gi",
            "Gi",
            "1e1000",
            "16Ei",
            "99999999999999999999999999999999999999999",
            "1E3.5",
            "١",
        ] {
            assert_eq!(units(s), None, "{s:?}");
        }
        assert_eq!(parse_units("-5"), Err(QuantityError::Negative));
        assert_eq!(parse_units("5Q"), Err(QuantityError::BadSuffix));
        assert_eq!(parse_units("20E"), Err(QuantityError::Overflow));
    }
}
