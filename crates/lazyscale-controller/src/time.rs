//! Time in the controller is `std::time::SystemTime`, the horizontal engine's time; this module
//! converts it to and from Kubernetes `Time`, which the API serializes with whole seconds. Times
//! written into the status are truncated to the second first, so what is read back compares equal to
//! what was computed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The current wall-clock time.
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Signed milliseconds since the Unix epoch (for ordering keys and arithmetic across the epoch).
pub fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A time from signed milliseconds since the Unix epoch.
pub fn from_unix_millis(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs()),
    }
}

/// `t` truncated to the second.
pub fn truncate(t: SystemTime) -> SystemTime {
    from_unix_millis(unix_millis(t).div_euclid(1000) * 1000)
}

/// `t` truncated to the second, as a Kubernetes `Time`.
pub fn to_time(t: SystemTime) -> Time {
    let secs = unix_millis(t).div_euclid(1000);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A Kubernetes `Time` as a `SystemTime`.
pub fn from_time(t: &Time) -> SystemTime {
    from_unix_millis(t.0.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_whole_seconds() {
        let t = from_unix_millis(1_700_000_123_456);
        assert_eq!(unix_millis(from_time(&to_time(t))), 1_700_000_123_000);
        assert_eq!(truncate(t), from_time(&to_time(t)));
        let json = serde_json::to_string(&to_time(t)).unwrap_or_default();
        let back: Time = serde_json::from_str(&json).unwrap_or_else(|_| to_time(UNIX_EPOCH));
        assert_eq!(back, to_time(t));
        assert_eq!(unix_millis(from_unix_millis(-1_500)), -1_500);
    }
}
