//! Time as the pure modules see it: unix milliseconds ([`Millis`]), and the conversions to and from
//! Kubernetes `Time`, which the API serializes with whole seconds. Times written into the status are
//! truncated to the second first, so what is read back compares equal to what was computed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Unix time in milliseconds.
pub type Millis = i64;

/// The current wall-clock time.
pub fn now() -> Millis {
    Timestamp::now().as_millisecond()
}

/// `t` truncated to the second, as a Kubernetes `Time`.
pub fn to_time(t: Millis) -> Time {
    let secs = t.div_euclid(1000);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A Kubernetes `Time` as unix milliseconds.
pub fn from_time(t: &Time) -> Millis {
    t.0.as_millisecond()
}

/// Unix milliseconds as a `SystemTime` (the engine's time).
pub fn to_system(t: Millis) -> SystemTime {
    match u64::try_from(t) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH - Duration::from_millis(t.unsigned_abs()),
    }
}

/// A `SystemTime` as unix milliseconds.
pub fn of_system(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX),
        Err(e) => -Millis::try_from(e.duration().as_millis()).unwrap_or(Millis::MAX),
    }
}

/// A Kubernetes `Time` as a `SystemTime`.
pub fn system_of(t: &Time) -> SystemTime {
    to_system(from_time(t))
}

/// A `SystemTime` truncated to the second, as a Kubernetes `Time`.
pub fn from_system(t: SystemTime) -> Time {
    to_time(of_system(t))
}

/// `t` truncated to the second.
pub fn truncate(t: Millis) -> Millis {
    t.div_euclid(1000) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_whole_seconds() {
        let t = 1_700_000_123_456;
        assert_eq!(from_time(&to_time(t)), 1_700_000_123_000);
        assert_eq!(truncate(t), 1_700_000_123_000);
        let json = serde_json::to_string(&to_time(t)).unwrap_or_default();
        let back: Time = serde_json::from_str(&json).unwrap_or_else(|_| to_time(0));
        assert_eq!(back, to_time(t));
    }
}
