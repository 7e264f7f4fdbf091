//! Reading and writing the deadline headers.
//!
//! Values come from the network, so every parser here is total: anything
//! malformed is `None`, and nothing can overflow or panic.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header that carries the caller's remaining time budget, in whole
/// milliseconds (`x-request-timeout-ms: 2500`).
///
/// Read on the server side, written on the client side; the name can be
/// changed with [`DeadlineBuilder::header_name`](super::DeadlineBuilder::header_name).
pub const REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// [`REQUEST_TIMEOUT_MS`] where a `'static` reference is needed.
pub(crate) static DEFAULT_HEADER: HeaderName = REQUEST_TIMEOUT_MS;

/// gRPC's deadline header (`grpc-timeout: 100m`), read on the server side.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Longest value accepted in the milliseconds header: 10 digits is over
/// 100 days, far beyond any request budget, and cannot overflow a `u64`.
const MAX_MS_DIGITS: usize = 10;

/// Parses the milliseconds header: ASCII digits only, at most 10 of them.
pub(crate) fn parse_millis(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let millis = parse_digits(bytes, MAX_MS_DIGITS)?;
    Some(Duration::from_millis(millis))
}

/// Parses `grpc-timeout`: at most 8 ASCII digits followed by one unit,
/// `H`, `M`, `S`, `m`, `u` or `n` (gRPC over HTTP/2, "Timeout").
pub(crate) fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (unit, digits) = bytes.split_last()?;
    let n = parse_digits(digits, 8)?;
    // 8 digits of hours is below 2^49 seconds: no overflow anywhere below.
    let duration = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    Some(duration)
}

fn parse_digits(bytes: &[u8], max_digits: usize) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > max_digits {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Up to this many values, [`find`] looks at every header instead of
/// hashing two names.
const SCAN_LIMIT: usize = 16;

/// The first values of `name` and of `grpc-timeout`. Asked of every
/// request; most carry a handful of headers and neither of these, and one
/// pass comparing names (a standard name against a custom one is one
/// comparison) costs less than two hashed lookups that find nothing.
fn find<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> (Option<&'a HeaderValue>, Option<&'a HeaderValue>) {
    if headers.len() > SCAN_LIMIT {
        return (headers.get(name), headers.get(GRPC_TIMEOUT));
    }
    // The names only (the values' iterator also walks each name's extra
    // values); a name found is then looked up for its first value.
    let (mut ours, mut grpc) = (false, false);
    for n in headers.keys() {
        ours |= n == name;
        grpc |= n == GRPC_TIMEOUT;
    }
    (
        ours.then(|| headers.get(name)).flatten(),
        grpc.then(|| headers.get(GRPC_TIMEOUT)).flatten(),
    )
}

/// The smallest budget among the deadline headers present, ignoring (and
/// logging) malformed ones.
pub(crate) fn read(headers: &HeaderMap, name: &HeaderName) -> Option<Duration> {
    let (ours, grpc) = find(headers, name);
    let ours = ours.and_then(|v| {
        let parsed = parse_millis(v);
        if parsed.is_none() {
            tracing::debug!(target: "tower_steady::deadline", header = %name, value = ?v, "ignoring malformed deadline header");
        }
        parsed
    });
    let grpc = grpc.and_then(|v| {
        let parsed = parse_grpc_timeout(v);
        if parsed.is_none() {
            tracing::debug!(target: "tower_steady::deadline", header = "grpc-timeout", value = ?v, "ignoring malformed deadline header");
        }
        parsed
    });
    match (ours, grpc) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Writes `remaining` as whole milliseconds, rounded down so the next hop
/// never believes it has more time than it does.
pub(crate) fn write(headers: &mut HeaderMap, name: &HeaderName, remaining: Duration) {
    headers.insert(name.clone(), value(remaining));
}

/// What a retry keeps of its first attempt's deadline header, so that every
/// later attempt sends what is left of the budget instead of the first
/// attempt's figure: the header (the one the [`DeadlineLayer`] above wrote,
/// as its [`Deadline`] says, else [`REQUEST_TIMEOUT_MS`] when the request
/// carries one) and the budget it said when the first attempt was sent.
///
/// The deadline layer owns its header; a retry layer asks this type to
/// refresh it, as linkerd's retry asks its policy to set each attempt's
/// headers.
///
/// [`DeadlineLayer`]: super::DeadlineLayer
/// [`Deadline`]: super::Deadline
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "retry"), allow(dead_code))]
pub(crate) struct AttemptBudget {
    name: &'static HeaderName,
    budget: Duration,
}

#[cfg_attr(not(feature = "retry"), allow(dead_code))]
impl AttemptBudget {
    /// The header `name`, which said `budget` when the first attempt was
    /// sent.
    pub(crate) fn new(name: &'static HeaderName, budget: Duration) -> Self {
        Self { name, budget }
    }

    /// The budget the first attempt's headers carry, if any.
    pub(crate) fn of(headers: &HeaderMap, deadline: Option<&super::Deadline>) -> Option<Self> {
        let name = Self::name(deadline);
        let budget = parse_millis(headers.get(name)?)?;
        Some(Self { name, budget })
    }

    /// The budget when its header is the only one in `headers` (then a
    /// retry keeps the head without it, and writes it anew each time);
    /// found without hashing the name, as every request asks.
    pub(crate) fn of_only_header(
        headers: &HeaderMap,
        deadline: Option<&super::Deadline>,
    ) -> Option<Self> {
        if headers.len() != 1 {
            return None;
        }
        let (name, value) = headers.iter().next()?;
        let ours = Self::name(deadline);
        if name != ours {
            return None;
        }
        Some(Self {
            name: ours,
            budget: parse_millis(value)?,
        })
    }

    fn name(deadline: Option<&super::Deadline>) -> &'static HeaderName {
        deadline
            .and_then(super::Deadline::header)
            .unwrap_or(&DEFAULT_HEADER)
    }

    /// Writes what is left of the budget `spent` after the first attempt
    /// was sent, and the same as `grpc-timeout` when the request has one
    /// (the deadline layer writes both on a gRPC request).
    pub(crate) fn write(&self, headers: &mut HeaderMap, spent: Duration) {
        let left = self.budget.saturating_sub(spent);
        write(headers, self.name, left);
        if headers.contains_key(GRPC_TIMEOUT) {
            write_grpc(headers, left);
        }
    }
}

/// `remaining` as a `grpc-timeout` value: at most 8 digits and a unit, the
/// finest unit that fits (milliseconds up to about 27 hours, then seconds,
/// minutes, hours), rounded down; under a millisecond, in microseconds.
pub(crate) fn grpc_value(remaining: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let millis = remaining.as_millis();
    let (amount, unit) = if millis == 0 {
        (remaining.as_micros(), 'u')
    } else if millis <= MAX {
        (millis, 'm')
    } else if u128::from(remaining.as_secs()) <= MAX {
        (u128::from(remaining.as_secs()), 'S')
    } else if u128::from(remaining.as_secs() / 60) <= MAX {
        (u128::from(remaining.as_secs() / 60), 'M')
    } else {
        (u128::from(remaining.as_secs() / 3600).min(MAX), 'H')
    };
    HeaderValue::try_from(format!("{amount}{unit}")).unwrap_or(HeaderValue::from_static("0m"))
}

/// Writes `remaining` as the request's `grpc-timeout`.
pub(crate) fn write_grpc(headers: &mut HeaderMap, remaining: Duration) {
    headers.insert(GRPC_TIMEOUT, grpc_value(remaining));
}

/// `remaining` in whole milliseconds, rounded down (and capped).
fn whole_millis(remaining: Duration) -> u64 {
    u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX)
}

/// The value [`value`] would make, as a static header value: cloning it
/// (once per request that carries a whole budget) is a copy of a pointer,
/// where a formatted value's clone is an atomic reference count. Each
/// distinct number of milliseconds is formatted once for the life of the
/// program (a builder built in a loop reuses it), when a layer is built.
pub(crate) fn static_value(remaining: Duration) -> &'static HeaderValue {
    type Kept = Vec<(u64, &'static HeaderValue)>;
    static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Vec::new());
    let millis = whole_millis(remaining);
    let mut kept = KEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match kept.iter().find(|(m, _)| *m == millis) {
        Some(&(_, value)) => value,
        None => {
            let text: &'static str = Box::leak(millis.to_string().into_boxed_str());
            let value: &'static HeaderValue = Box::leak(Box::new(HeaderValue::from_static(text)));
            kept.push((millis, value));
            value
        }
    }
}

/// What [`value`] and [`static_value`] say of `remaining`: whole
/// milliseconds, rounded down.
pub(crate) fn said(remaining: Duration) -> Duration {
    Duration::from_millis(whole_millis(remaining))
}

/// `remaining` as the header's value: whole milliseconds, rounded down.
///
/// The last value made on this thread is kept and handed out again while
/// the figure is the same: a proxy forwards many requests a millisecond
/// with the same budget left (its callers' budgets are alike), and a
/// clone of a kept value is a reference count where a new one is an
/// allocation and its formatting.
pub(crate) fn value(remaining: Duration) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let millis = whole_millis(remaining);
    // `try_with`: a thread being torn down makes its value anew.
    LAST.try_with(|last| {
        // Never borrowed twice: nothing in here calls out.
        let mut last = last.borrow_mut();
        match &*last {
            Some((kept, value)) if *kept == millis => value.clone(),
            _ => {
                let value = HeaderValue::from(millis);
                *last = Some((millis, value.clone()));
                value
            }
        }
    })
    .unwrap_or_else(|_| HeaderValue::from(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_value_is_the_formatted_one_made_once_per_figure() {
        for ms in [14_990, 9_990, 0, u64::MAX / 1_000_000] {
            let remaining = Duration::from_millis(ms) + Duration::from_micros(999);
            let (a, b) = (static_value(remaining), static_value(remaining));
            assert_eq!(*a, value(remaining), "{ms} ms");
            // The same text both times: formatted once, never again.
            assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr(), "{ms} ms");
        }
        assert_ne!(
            static_value(Duration::from_millis(1)),
            static_value(Duration::from_millis(2))
        );
    }

    #[test]
    fn a_kept_value_is_handed_out_only_for_the_same_figure() {
        for ms in [14_990, 14_990, 14_989, 14_990, 0, 0, u64::MAX / 1_000_000] {
            let remaining = Duration::from_millis(ms) + Duration::from_micros(999);
            assert_eq!(value(remaining), HeaderValue::from(ms), "{ms} ms");
        }
        // From another thread, which keeps its own.
        std::thread::spawn(|| assert_eq!(value(Duration::from_millis(7)), hv("7")))
            .join()
            .unwrap();
        assert_eq!(value(Duration::from_millis(14_990)), hv("14990"));
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn millis_accepts_plain_digits() {
        assert_eq!(parse_millis(&hv("0")), Some(Duration::ZERO));
        assert_eq!(parse_millis(&hv("2500")), Some(Duration::from_millis(2500)));
        assert_eq!(
            parse_millis(&hv("9999999999")),
            Some(Duration::from_millis(9_999_999_999))
        );
    }

    #[test]
    fn millis_rejects_anything_else() {
        for bad in [
            "",
            " 10",
            "10 ",
            "-1",
            "+1",
            "1.5",
            "1e3",
            "0x10",
            "99999999999",
            "10ms",
        ] {
            assert_eq!(parse_millis(&hv(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(
            parse_grpc_timeout(&hv("2H")),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            parse_grpc_timeout(&hv("3M")),
            Some(Duration::from_secs(180))
        );
        assert_eq!(parse_grpc_timeout(&hv("4S")), Some(Duration::from_secs(4)));
        assert_eq!(
            parse_grpc_timeout(&hv("100m")),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            parse_grpc_timeout(&hv("7u")),
            Some(Duration::from_micros(7))
        );
        assert_eq!(
            parse_grpc_timeout(&hv("99999999n")),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(
            parse_grpc_timeout(&hv("99999999H")),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn grpc_timeout_rejects_malformed_values() {
        for bad in ["", "m", "100", "100x", "123456789S", "-1S", "1.5S", "S1"] {
            assert_eq!(parse_grpc_timeout(&hv(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn read_keeps_the_smaller_of_both_headers_and_skips_bad_ones() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_TIMEOUT_MS, hv("800"));
        h.insert(GRPC_TIMEOUT, hv("1S"));
        assert_eq!(
            read(&h, &REQUEST_TIMEOUT_MS),
            Some(Duration::from_millis(800))
        );
        h.insert(GRPC_TIMEOUT, hv("300m"));
        assert_eq!(
            read(&h, &REQUEST_TIMEOUT_MS),
            Some(Duration::from_millis(300))
        );
        h.insert(GRPC_TIMEOUT, hv("soon"));
        assert_eq!(
            read(&h, &REQUEST_TIMEOUT_MS),
            Some(Duration::from_millis(800))
        );
        h.insert(REQUEST_TIMEOUT_MS, hv("later"));
        assert_eq!(read(&h, &REQUEST_TIMEOUT_MS), None);
    }

    #[test]
    fn a_small_map_is_read_as_a_large_one_is() {
        let mut h = HeaderMap::new();
        for i in 0..SCAN_LIMIT + 4 {
            let both = (
                find(&h, &REQUEST_TIMEOUT_MS),
                h.get(&REQUEST_TIMEOUT_MS),
                h.get(GRPC_TIMEOUT),
            );
            assert_eq!(both.0, (both.1, both.2), "{} values", h.len());
            match i {
                3 => h.append(REQUEST_TIMEOUT_MS, hv("700")),
                5 => h.append(REQUEST_TIMEOUT_MS, hv("600")),
                7 => h.append(GRPC_TIMEOUT, hv("2S")),
                _ => h.append(
                    HeaderName::try_from(format!("x-other-{i}")).unwrap(),
                    hv("1"),
                ),
            };
        }
        assert_eq!(
            read(&h, &REQUEST_TIMEOUT_MS),
            Some(Duration::from_millis(700))
        );
        // A custom header name that is `grpc-timeout` itself is found as both.
        let mut g = HeaderMap::new();
        g.insert(GRPC_TIMEOUT, hv("5S"));
        assert_eq!(
            find(&g, &GRPC_TIMEOUT),
            (g.get(GRPC_TIMEOUT), g.get(GRPC_TIMEOUT))
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..24)) {
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                let _ = parse_millis(&v);
                let _ = parse_grpc_timeout(&v);
            }
        }
    }

    #[test]
    fn grpc_timeout_is_written_in_at_most_eight_digits() {
        let ms = Duration::from_millis;
        assert_eq!(grpc_value(ms(1500)), "1500m");
        assert_eq!(grpc_value(Duration::from_micros(700)), "700u");
        assert_eq!(grpc_value(ms(99_999_999)), "99999999m");
        assert_eq!(grpc_value(ms(100_000_000)), "100000S");
        assert_eq!(grpc_value(Duration::from_secs(200_000_000)), "3333333M");
        assert_eq!(grpc_value(Duration::MAX), "99999999H");
        // What is written reads back as no more than it was.
        for d in [
            ms(1),
            ms(2_500),
            Duration::from_secs(86_400 * 400),
            Duration::from_micros(5),
        ] {
            let read = parse_grpc_timeout(&grpc_value(d)).unwrap();
            assert!(read <= d, "{d:?} -> {read:?}");
        }
    }

    /// A million random byte strings through each header parser: none
    /// panics, and what they accept is within their documented bounds.
    #[test]
    fn the_parsers_take_any_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"0123456789HMSmun-+. ";
        let mut buf = Vec::with_capacity(16);
        for _ in 0..1_000_000 {
            buf.clear();
            for _ in 0..(next() % 12) {
                let r = next();
                buf.push(if r & 1 == 0 {
                    alphabet[(r >> 8) as usize % alphabet.len()]
                } else {
                    (r >> 16) as u8
                });
            }
            let Ok(value) = HeaderValue::from_bytes(&buf) else {
                continue;
            };
            if parse_grpc_timeout(&value).is_some() {
                assert!((2..=9).contains(&buf.len()), "{buf:?}");
            }
            if parse_millis(&value).is_some() {
                assert!(buf.iter().all(u8::is_ascii_digit), "{buf:?}");
            }
        }
    }
}
