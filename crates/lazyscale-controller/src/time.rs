//! Time as the pure modules see it: unix milliseconds ([`Millis`]), and the conversions to and from
//! Kubernetes `Time`, which the API serializes with whole seconds. Times written into the status are
//! truncated to the second first, so what is read back compares equal to what was computed.

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
