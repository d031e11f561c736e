//! lazyscale's one wall-clock time type: [`Timestamp`] (jiff's, the same type Kubernetes `Time` and
//! `MicroTime` wrap in `k8s-openapi`), with the few conversions every crate needs. Durations are
//! `std::time::Duration` (non-negative spans: windows, periods, delays); monotonic deadlines inside one
//! process stay `tokio::time::Instant`, which is not a wall-clock time.
//!
//! Kubernetes serializes `Time` with whole seconds, so times written into a status are truncated to
//! the second first ([`to_time`]); what is read back then compares equal to what was computed.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
pub use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The current wall-clock time.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Signed milliseconds since the Unix epoch.
pub fn unix_millis(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// A time from signed milliseconds since the Unix epoch, clamped to the representable range.
pub fn from_unix_millis(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

/// A time from whole seconds since the Unix epoch, clamped to the representable range.
pub fn from_unix_seconds(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(if s < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

/// `t` truncated to the second (towards the past).
pub fn truncate(t: Timestamp) -> Timestamp {
    from_unix_seconds(t.as_millisecond().div_euclid(1000))
}

/// `t` truncated to the second, as a Kubernetes `Time`.
pub fn to_time(t: Timestamp) -> Time {
    Time(truncate(t))
}

/// A Kubernetes `Time` as a [`Timestamp`].
pub fn from_time(t: &Time) -> Timestamp {
    t.0
}

/// The time from `earlier` to `later`, zero when `later` is not after `earlier`.
pub fn since(later: Timestamp, earlier: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// `t + d`, or `None` past the representable range.
pub fn add(t: Timestamp, d: Duration) -> Option<Timestamp> {
    t.checked_add(d).ok()
}

/// `t - d`, or `None` before the representable range.
pub fn sub(t: Timestamp, d: Duration) -> Option<Timestamp> {
    t.checked_sub(d).ok()
}

/// `t - d`, clamped to the smallest representable time.
pub fn saturating_sub(t: Timestamp, d: Duration) -> Timestamp {
    sub(t, d).unwrap_or(Timestamp::MIN)
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
        let back: Time = serde_json::from_str(&json).unwrap_or_else(|_| to_time(Timestamp::UNIX_EPOCH));
        assert_eq!(back, to_time(t));
        assert_eq!(unix_millis(from_unix_millis(-1_500)), -1_500);
        assert_eq!(unix_millis(truncate(from_unix_millis(-1_500))), -2_000);
    }

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = from_unix_millis(10_000);
        assert_eq!(since(t, from_unix_millis(4_000)), Duration::from_secs(6));
        assert_eq!(since(from_unix_millis(4_000), t), Duration::ZERO);
        assert_eq!(add(t, Duration::from_secs(1)), Some(from_unix_millis(11_000)));
        assert_eq!(sub(Timestamp::MIN, Duration::from_secs(1)), None);
        assert_eq!(add(Timestamp::MAX, Duration::from_secs(1)), None);
        assert_eq!(
            saturating_sub(Timestamp::MIN, Duration::from_secs(1)),
            Timestamp::MIN
        );
        assert_eq!(from_unix_millis(i64::MAX), Timestamp::MAX);
    }
}
