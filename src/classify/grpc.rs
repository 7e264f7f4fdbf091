//! gRPC's statuses, for the classifier and the layers that answer gRPC
//! requests: the `grpc-status` of a trailers-only response (how servers and
//! proxies send `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`),
//! and the `grpc-retry-pushback-ms` that comes with it.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::HeaderMap;

use super::{FailureKind, Outcome, RetrySafety};

/// The header (or trailer) that carries a gRPC call's status code.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The header that carries a gRPC status's message.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The server's request that the client wait this many milliseconds
/// before retrying, or not retry at all (gRFC A6).
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// gRPC's status codes that the crate reads or writes.
pub mod code {
    /// The call succeeded.
    pub const OK: u32 = 0;
    /// The call was cancelled, usually by the caller.
    pub const CANCELLED: u32 = 1;
    /// An error nothing more is known of.
    pub const UNKNOWN: u32 = 2;
    /// The deadline passed before the call completed.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// A quota or a resource ran out.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// The method is not implemented.
    pub const UNIMPLEMENTED: u32 = 12;
    /// An internal error of the server.
    pub const INTERNAL: u32 = 13;
    /// The service is unavailable for now: a transient condition that a
    /// retry with backoff can correct.
    pub const UNAVAILABLE: u32 = 14;
    /// Unrecoverable data loss or corruption.
    pub const DATA_LOSS: u32 = 15;
}

/// Whether `headers` say the message is gRPC (`content-type:
/// application/grpc`, or `application/grpc+proto` and the like).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|value| {
        let value = value.as_bytes();
        value.len() >= 16
            && value[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(value.get(16), None | Some(b'+' | b';'))
    })
}

/// Up to this many values, [`content_type`] looks at each name instead of
/// hashing one.
const SCAN_LIMIT: usize = 8;

/// The first `content-type` value. Asked of every response by each layer
/// that classifies it, and of gRPC requests: a response's head holds a
/// handful of headers, and comparing a standard name with each (one
/// comparison of two small numbers) costs less than hashing it and
/// probing the map.
fn content_type(headers: &HeaderMap) -> Option<&HeaderValue> {
    if headers.len() > SCAN_LIMIT {
        return headers.get(CONTENT_TYPE);
    }
    headers
        .iter()
        .find_map(|(name, value)| (name == CONTENT_TYPE).then_some(value))
}

/// Whether `request` is a gRPC call: a `POST` (gRPC calls are all `POST`s,
/// so any other method is answered without looking at a header) whose
/// headers say gRPC ([`is_grpc`]).
pub fn is_grpc_request<B>(request: &http::Request<B>) -> bool {
    request.method() == http::Method::POST && is_grpc(request.headers())
}

/// Whether the outcome of a response with these `headers` waits for its
/// trailers: a gRPC response (`content-type: application/grpc`) whose
/// status is not in its headers.
#[allow(dead_code)] // read by the layers that count outcomes, when compiled
pub(crate) fn status_in_trailers(headers: &HeaderMap) -> bool {
    // The content type first: a standard header, the cheap lookup.
    is_grpc(headers) && !headers.contains_key(GRPC_STATUS)
}

/// What a frame of a streamed gRPC body says of the call, read by the
/// layers that count outcomes (`None`: nothing yet): the trailers'
/// status, a reset for an error while reading, a success for an end
/// without trailers.
#[allow(dead_code)] // read by the layers that count outcomes, when compiled
pub(crate) fn frame_outcome<D, E, C: super::Classify>(
    frame: &Option<Result<http_body::Frame<D>, E>>,
    classifier: &C,
) -> Option<Outcome> {
    match frame {
        Some(Ok(frame)) => frame
            .trailers_ref()
            .map(|trailers| classifier.classify_trailers(trailers)),
        Some(Err(_)) => Some(Outcome::failure(FailureKind::Reset, RetrySafety::MaybeSent)),
        None => Some(Outcome::Success),
    }
}

/// Parses a `grpc-status` value: a decimal code, at most 10 digits. `None`
/// for anything else (then the response is classified by its HTTP status).
pub fn parse_status(value: &HeaderValue) -> Option<u32> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// What a `grpc-retry-pushback-ms` asks of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushback {
    /// Wait this long before the retry.
    Wait(Duration),
    /// Do not retry: the value was negative or malformed, which gRFC A6
    /// reads as the server asking for no retry at all.
    DoNotRetry,
}

/// Parses a `grpc-retry-pushback-ms` value: whole milliseconds, at most 10
/// digits (capped at a day); a negative or malformed value is
/// [`Pushback::DoNotRetry`].
pub fn parse_pushback(value: &HeaderValue) -> Pushback {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return Pushback::DoNotRetry;
    }
    let ms = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    match ms {
        Some(ms) => Pushback::Wait(Duration::from_millis(ms.min(86_400_000))),
        None => Pushback::DoNotRetry,
    }
}

/// The outcome of a gRPC status `code`; the codes in `retryable` (a bit
/// per code) may be retried whatever the method.
///
/// | code | outcome |
/// |---|---|
/// | `OK` | success |
/// | `UNAVAILABLE` (14) | [`FailureKind::Unavailable`] |
/// | `RESOURCE_EXHAUSTED` (8) | [`FailureKind::TooManyRequests`] |
/// | `DEADLINE_EXCEEDED` (4) | [`FailureKind::GatewayTimeout`] |
/// | `UNKNOWN` (2), `INTERNAL` (13), `DATA_LOSS` (15) | [`FailureKind::ServerError`] |
/// | every other code | success: the server answered the call, as a `404` answers a request |
pub(crate) const fn outcome(code: u32, retryable: u32) -> Outcome {
    let kind = match code {
        code::UNAVAILABLE => FailureKind::Unavailable,
        code::RESOURCE_EXHAUSTED => FailureKind::TooManyRequests,
        code::DEADLINE_EXCEEDED => FailureKind::GatewayTimeout,
        code::UNKNOWN | code::INTERNAL | code::DATA_LOSS => FailureKind::ServerError,
        _ => return Outcome::Success,
    };
    // gRPC calls are POSTs: only a code the configuration calls retryable
    // (gRFC A6's `retryableStatusCodes`; `UNAVAILABLE` by default, which
    // gRPC defines as safe to retry) is retried whatever the method.
    let safety = if code < 32 && retryable & (1 << code) != 0 {
        RetrySafety::NotSent
    } else {
        RetrySafety::MaybeSent
    };
    Outcome::failure(kind, safety)
}

/// The gRPC status for an answer this crate makes in place of a failure of
/// `kind`, and its short message.
pub(crate) const fn answer_for(kind: FailureKind) -> (u32, &'static str) {
    match kind {
        FailureKind::Timeout | FailureKind::DeadlineExceeded | FailureKind::GatewayTimeout => {
            (code::DEADLINE_EXCEEDED, "deadline exceeded")
        }
        FailureKind::TooManyRequests => (code::RESOURCE_EXHAUSTED, "resource exhausted"),
        FailureKind::Rejected
        | FailureKind::Connect
        | FailureKind::Reset
        | FailureKind::BadGateway
        | FailureKind::Unavailable => (code::UNAVAILABLE, "service unavailable"),
        FailureKind::Unsupported => (code::UNIMPLEMENTED, "not implemented"),
        FailureKind::Protocol | FailureKind::ServerError | FailureKind::Other => {
            (code::INTERNAL, "internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &[u8]) -> Option<HeaderValue> {
        HeaderValue::from_bytes(s).ok()
    }

    #[test]
    fn statuses_and_pushback_parse() {
        assert_eq!(parse_status(&hv(b"14").unwrap()), Some(14));
        assert_eq!(parse_status(&hv(b"0").unwrap()), Some(0));
        for bad in [&b""[..], b"-1", b"1a", b" 14", b"99999999999", b"1.0"] {
            if let Some(v) = hv(bad) {
                assert_eq!(parse_status(&v), None, "{bad:?}");
            }
        }
        assert_eq!(
            parse_pushback(&hv(b"250").unwrap()),
            Pushback::Wait(Duration::from_millis(250))
        );
        assert_eq!(
            parse_pushback(&hv(b"9999999999").unwrap()),
            Pushback::Wait(Duration::from_secs(86_400))
        );
        for bad in [&b"-1"[..], b"", b"1s", b"abc", b"+5"] {
            assert_eq!(
                parse_pushback(&hv(bad).unwrap()),
                Pushback::DoNotRetry,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_grpc_content_types_are_grpc() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("Application/GRPC;charset=utf-8"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
        let call = |method: http::Method| {
            http::Request::builder()
                .method(method)
                .header(CONTENT_TYPE, "application/grpc")
                .body(())
                .unwrap()
        };
        assert!(is_grpc_request(&call(http::Method::POST)));
        assert!(!is_grpc_request(&call(http::Method::GET)));
    }

    #[test]
    fn the_content_type_is_found_as_a_lookup_finds_it() {
        // Below and above the scan limit, first, last, repeated, absent.
        for others in [0, 1, 3, SCAN_LIMIT - 2, SCAN_LIMIT, SCAN_LIMIT + 4] {
            for at in [0, others / 2, others] {
                let mut h = HeaderMap::new();
                for i in 0..others {
                    if i == at {
                        h.append(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                        h.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    }
                    let name = HeaderName::try_from(format!("x-h{i}")).unwrap();
                    h.append(name, HeaderValue::from_static("v"));
                }
                if at == others {
                    h.append(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                }
                assert_eq!(content_type(&h), h.get(CONTENT_TYPE), "{others} {at}");
                assert!(is_grpc(&h));
                h.remove(CONTENT_TYPE);
                assert_eq!(content_type(&h), None);
            }
        }
    }

    #[test]
    fn codes_map_onto_the_failure_kinds() {
        let unavailable_only = 1 << code::UNAVAILABLE;
        assert_eq!(
            outcome(code::UNAVAILABLE, unavailable_only),
            Outcome::failure(FailureKind::Unavailable, RetrySafety::NotSent)
        );
        assert_eq!(
            outcome(code::RESOURCE_EXHAUSTED, unavailable_only),
            Outcome::failure(FailureKind::TooManyRequests, RetrySafety::MaybeSent)
        );
        assert_eq!(
            outcome(code::DEADLINE_EXCEEDED, unavailable_only),
            Outcome::failure(FailureKind::GatewayTimeout, RetrySafety::MaybeSent)
        );
        assert_eq!(
            outcome(code::INTERNAL, unavailable_only),
            Outcome::failure(FailureKind::ServerError, RetrySafety::MaybeSent)
        );
        assert_eq!(
            outcome(code::INTERNAL, 1 << code::INTERNAL),
            Outcome::failure(FailureKind::ServerError, RetrySafety::NotSent)
        );
        for answered in [0, 1, 3, 5, 6, 7, 9, 10, 11, 12, 16, 99, u32::MAX] {
            assert_eq!(outcome(answered, u32::MAX), Outcome::Success, "{answered}");
        }
    }

    /// A million random byte strings through each parser: none panics, and
    /// what each accepts is what it says.
    #[test]
    fn the_parsers_take_any_bytes() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"0123456789-+. mMsSuUnHa\x7f\xff";
        let mut buf = Vec::with_capacity(16);
        for _ in 0..1_000_000 {
            buf.clear();
            let len = (next() % 14) as usize;
            for _ in 0..len {
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
            if let Some(code) = parse_status(&value) {
                let text = std::str::from_utf8(&buf).unwrap();
                assert_eq!(code.to_string(), text.parse::<u32>().unwrap().to_string());
            }
            if let Pushback::Wait(wait) = parse_pushback(&value) {
                assert!(wait <= Duration::from_secs(86_400));
                assert!(buf.iter().all(u8::is_ascii_digit));
            }
        }
    }
}
