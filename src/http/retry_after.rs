use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue};

/// A parsed `Retry-After` header (RFC 9110 §10.2.3): how long a client should
/// wait before trying again.
///
/// Both forms are understood: delta-seconds (`Retry-After: 120`) and an
/// HTTP-date (`Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`, and the two
/// obsolete date formats RFC 9110 asks recipients to accept). The value comes
/// from the network, so it is treated with suspicion:
///
/// * anything malformed is `None`, never an error or a panic;
/// * a delay longer than [`RetryAfter::MAX`] (5 minutes) is capped to it,
///   including numbers too large for any integer type;
/// * a date in the past is a delay of zero.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// use tower_steady::http::RetryAfter;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let ra = RetryAfter::parse(&HeaderValue::from_static("120"), now).unwrap();
/// assert_eq!(ra.delay(), Duration::from_secs(120));
///
/// let date = HeaderValue::from_static("Tue, 14 Nov 2023 22:13:27 GMT"); // now + 7 s
/// assert_eq!(RetryAfter::parse(&date, now).unwrap().delay(), Duration::from_secs(7));
///
/// assert_eq!(RetryAfter::parse(&HeaderValue::from_static("soon"), now), None);
/// let huge = HeaderValue::from_static("99999999999999999999999");
/// assert_eq!(RetryAfter::parse(&huge, now).unwrap().delay(), RetryAfter::MAX);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetryAfter {
    delay: Duration,
}

impl RetryAfter {
    /// The longest delay a parsed `Retry-After` can ask for. A server asking
    /// for more is capped here; the retry layer caps further by the
    /// request's deadline.
    pub const MAX: Duration = Duration::from_secs(300);

    /// A `Retry-After` of `delay`, capped at [`RetryAfter::MAX`].
    pub fn from_delay(delay: Duration) -> Self {
        Self {
            delay: delay.min(Self::MAX),
        }
    }

    /// Parses a header value, taking `now` as the current time for
    /// HTTP-dates. `None` if the value is malformed.
    pub fn parse(value: &HeaderValue, now: SystemTime) -> Option<Self> {
        let text = value.to_str().ok()?.trim();
        if text.is_empty() {
            return None;
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            // All digits: delta-seconds. Too many to fit is still a (large)
            // number of seconds, so it is capped rather than rejected.
            let delay = text.parse::<u64>().map_or(Self::MAX, Duration::from_secs);
            return Some(Self::from_delay(delay));
        }
        let date = httpdate::parse_http_date(text).ok()?;
        let delay = date.duration_since(now).unwrap_or(Duration::ZERO);
        Some(Self::from_delay(delay))
    }

    /// The `Retry-After` of `headers`, if present and well formed, with dates
    /// read against the system clock. A malformed value is logged at debug
    /// and ignored.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(RETRY_AFTER)?;
        let parsed = Self::parse(value, SystemTime::now());
        if parsed.is_none() {
            tracing::debug!(target: "tower_steady::http", ?value, "ignoring malformed Retry-After");
        }
        parsed
    }

    /// The delay to wait.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The delay in whole seconds as a header value, rounded up and at least
    /// one second (a `Retry-After: 0` invites an immediate retry storm).
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from(whole_seconds_at_least_one(self.delay))
    }
}

/// `duration` in whole seconds, rounded up, at least 1.
pub(crate) fn whole_seconds_at_least_one(duration: Duration) -> u64 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        // Tue, 14 Nov 2023 22:13:20 GMT
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn parse(s: &str) -> Option<Duration> {
        RetryAfter::parse(&HeaderValue::from_str(s).unwrap(), now()).map(|r| r.delay())
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse("300"), Some(Duration::from_secs(300)));
    }

    #[test]
    fn large_values_are_capped() {
        assert_eq!(parse("301"), Some(RetryAfter::MAX));
        assert_eq!(parse("18446744073709551615"), Some(RetryAfter::MAX));
        assert_eq!(parse("18446744073709551616000"), Some(RetryAfter::MAX));
    }

    #[test]
    fn all_three_date_formats() {
        let in_a_minute = Some(Duration::from_secs(60));
        assert_eq!(parse("Tue, 14 Nov 2023 22:14:20 GMT"), in_a_minute);
        assert_eq!(parse("Tuesday, 14-Nov-23 22:14:20 GMT"), in_a_minute);
        assert_eq!(parse("Tue Nov 14 22:14:20 2023"), in_a_minute);
    }

    #[test]
    fn past_dates_mean_now_and_far_dates_are_capped() {
        assert_eq!(parse("Tue, 14 Nov 2023 22:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            parse("Fri, 01 Jan 2100 00:00:00 GMT"),
            Some(RetryAfter::MAX)
        );
    }

    #[test]
    fn malformed_values_are_none() {
        for bad in [
            "",
            "  ",
            "-1",
            "1.5",
            "+3",
            "soon",
            "3 s",
            "Tue, 32 Nov 2023 22:14:20 GMT",
            "0x10",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let not_utf8 = HeaderValue::from_bytes(b"\xff12").unwrap();
        assert_eq!(RetryAfter::parse(&not_utf8, now()), None);
    }

    #[test]
    fn header_values_round_up_to_whole_seconds_and_at_least_one() {
        let hv = |d| RetryAfter::from_delay(d).to_header_value();
        assert_eq!(hv(Duration::ZERO), "1");
        assert_eq!(hv(Duration::from_millis(1)), "1");
        assert_eq!(hv(Duration::from_millis(1001)), "2");
        assert_eq!(hv(Duration::from_secs(30)), "30");
        assert_eq!(hv(Duration::from_secs(3600)), "300");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_exceeds_the_cap(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                if let Some(ra) = RetryAfter::parse(&v, now()) {
                    proptest::prop_assert!(ra.delay() <= RetryAfter::MAX);
                }
            }
        }
    }
}
