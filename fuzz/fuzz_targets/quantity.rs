//! Fuzz target: the quantity parser (`lazyscale_api::quantity`). Invariants: no panic; a parsed value
//! formats back to a string that parses to the same value (CPU in millicores, memory in bytes); the
//! millicore and unit readings of one string agree (both round up); floats are finite and >= 0.
#![no_main]

use lazyscale_api::quantity::{format_cpu_millis, format_memory_bytes, parse_f64, parse_millis, parse_units};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let millis = parse_millis(s);
    let units = parse_units(s);
    if let Ok(m) = millis {
        assert_eq!(parse_millis(&format_cpu_millis(m)), Ok(m), "{s:?} -> {m}m");
    }
    if let Ok(u) = units {
        assert_eq!(parse_units(&format_memory_bytes(u)), Ok(u), "{s:?} -> {u}");
    }
    if let (Ok(m), Ok(u)) = (millis, units) {
        // u = ceil(v) and m = ceil(1000 v), so 1000 (u - 1) < m <= 1000 u.
        let m = u128::from(m);
        let u = u128::from(u);
        assert!(m <= u * 1000, "{s:?}: {m}m > {u} units");
        assert!(u == 0 || m > (u - 1) * 1000, "{s:?}: {m}m <= {} units", u - 1);
    }
    if let Ok(f) = parse_f64(s) {
        assert!(f.is_finite() && f >= 0.0, "{s:?} -> {f}");
    }
    assert_eq!(
        parse_f64(s).is_ok(),
        units.is_ok(),
        "{s:?}: f64 and unit readings agree on validity"
    );
});
