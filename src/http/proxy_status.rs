//! What an answer the crate made instead of the upstream's says about why:
//! the `Proxy-Status` header of RFC 9209 and the [`ProxyStatus`] response
//! extension.

use std::error::Error;
use std::fmt::Write as _;
use std::io;

use http::{HeaderValue, Response, StatusCode};

use crate::classify::FailureKind;
use crate::error::{
    CircuitOpen, DeadlineExceeded, Elapsed, NoHealthyUpstream, Overloaded, UnsupportedTarget,
};

/// Why the crate answered a request itself: the response extension beside
/// the `Proxy-Status` header that [`ErrorResponseLayer`] puts on every
/// response it makes (an error turned into a `503`, `504`, `501`, `502` or
/// `500`, and an upstream's `502` rewritten to `503`).
///
/// It lets a caller in the same process tell its own stack's answer from
/// the upstream's: a `503` with a `ProxyStatus` whose
/// [`details`](Self::details) is `"circuit open"` came from this process's
/// breaker, a `503` without one from the upstream.
///
/// The header carries the same facts for callers over the network, in the
/// form RFC 9209 gives them: the proxy's name, an `error` from the RFC's
/// registry, a short generic `details`, and `received-status` for a
/// rewritten upstream status:
///
/// ```text
/// Proxy-Status: tower-steady; error=destination_unavailable; details="circuit open"
/// Proxy-Status: tower-steady; error=connection_refused; details="connection refused"
/// Proxy-Status: tower-steady; received-status=502; details="upstream answered 502"
/// ```
///
/// Nothing in either names an address, a host or an error's own text.
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_steady::http::ProxyStatus;
///
/// fn made_here(response: &Response<()>) -> bool {
///     ProxyStatus::of(response).is_some()
/// }
/// # assert!(!made_here(&Response::new(())));
/// ```
///
/// [`ErrorResponseLayer`]: crate::http::ErrorResponseLayer
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyStatus {
    error: Option<&'static str>,
    details: &'static str,
    kind: FailureKind,
    received_status: Option<StatusCode>,
}

impl ProxyStatus {
    /// The extension on `response`, if the crate made it.
    pub fn of<B>(response: &Response<B>) -> Option<&ProxyStatus> {
        response.extensions().get::<ProxyStatus>()
    }

    /// The RFC 9209 error type (`connection_refused`,
    /// `destination_unavailable`, `http_response_timeout`, ...), or `None`
    /// for a rewritten upstream status, which is not an error of the
    /// proxy's.
    pub fn error(&self) -> Option<&'static str> {
        self.error
    }

    /// A short, fixed description: `"circuit open"`, `"overloaded"`,
    /// `"throttled"`, `"no healthy upstream"`, `"connection refused"`,
    /// `"attempt timeout"`, `"handler timeout"`, `"deadline exceeded"`, ...
    pub fn details(&self) -> &'static str {
        self.details
    }

    /// How the failure was classified.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The upstream's status, when the answer replaces one (an upstream
    /// `502` rewritten to `503`).
    pub fn received_status(&self) -> Option<StatusCode> {
        self.received_status
    }

    /// The cause of an error the stack failed with, classified `kind`.
    pub(crate) fn of_error(kind: FailureKind, error: &(dyn Error + 'static)) -> Self {
        let (error, details) = cause(kind, error);
        Self {
            error: Some(error),
            details,
            kind,
            received_status: None,
        }
    }

    /// An upstream's `status` that the crate replaced.
    pub(crate) fn replaced(kind: FailureKind, status: StatusCode, details: &'static str) -> Self {
        Self {
            error: None,
            details,
            kind,
            received_status: Some(status),
        }
    }

    /// The `Proxy-Status` value: `name` (as a token when it is one, else as
    /// a quoted string of its printable ASCII) and the parameters.
    pub(crate) fn header(&self, name: &str) -> HeaderValue {
        let mut value = String::with_capacity(80);
        if is_token(name) {
            value.push_str(name);
        } else {
            value.push('"');
            for c in name.chars().filter(|c| matches!(c, ' '..='~')) {
                if c == '"' || c == '\\' {
                    value.push('\\');
                }
                value.push(c);
            }
            value.push('"');
        }
        if let Some(error) = self.error {
            let _ = write!(value, "; error={error}");
        }
        if let Some(status) = self.received_status {
            let _ = write!(value, "; received-status={}", status.as_u16());
        }
        let _ = write!(value, "; details=\"{}\"", self.details);
        // Every part is a checked token, a number or a fixed text.
        HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("tower-steady"))
    }
}

/// Whether `name` is an RFC 8941 token, as the first member of a
/// `Proxy-Status` must be (or a string): a letter or `*`, then token
/// characters, `:` or `/`.
pub(crate) fn is_token(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'*')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
}

/// The RFC 9209 error type and the details for an error classified `kind`:
/// the crate's own refusals by their type, transport failures by the I/O
/// error (or hyper's) in the chain, the rest by the kind.
fn cause(kind: FailureKind, error: &(dyn Error + 'static)) -> (&'static str, &'static str) {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(found) = known(err) {
            return found;
        }
        current = err.source();
    }
    match kind {
        FailureKind::Connect => ("destination_unavailable", "connect failed"),
        FailureKind::Reset => ("connection_terminated", "connection closed"),
        FailureKind::Timeout => ("http_response_timeout", "attempt timeout"),
        FailureKind::DeadlineExceeded => ("http_response_timeout", "deadline exceeded"),
        FailureKind::Protocol => ("http_protocol_error", "malformed response"),
        FailureKind::Rejected => ("proxy_internal_response", "rejected"),
        FailureKind::Unsupported => ("proxy_internal_response", "unsupported target"),
        FailureKind::BadGateway
        | FailureKind::Unavailable
        | FailureKind::GatewayTimeout
        | FailureKind::TooManyRequests => ("destination_unavailable", "upstream unavailable"),
        FailureKind::ServerError | FailureKind::Other => ("proxy_internal_error", "internal error"),
    }
}

fn known(err: &(dyn Error + 'static)) -> Option<(&'static str, &'static str)> {
    if err.is::<CircuitOpen>() {
        return Some(("destination_unavailable", "circuit open"));
    }
    if err.is::<NoHealthyUpstream>() {
        return Some(("destination_unavailable", "no healthy upstream"));
    }
    if let Some(overloaded) = err.downcast_ref::<Overloaded>() {
        return Some(if overloaded.is_throttled() {
            ("destination_unavailable", "throttled")
        } else {
            ("proxy_internal_response", "overloaded")
        });
    }
    if let Some(elapsed) = err.downcast_ref::<Elapsed>() {
        return Some(if elapsed.is_handler() {
            ("http_response_timeout", "handler timeout")
        } else {
            ("http_response_timeout", "attempt timeout")
        });
    }
    if err.is::<DeadlineExceeded>() {
        return Some(("http_response_timeout", "deadline exceeded"));
    }
    if err.is::<UnsupportedTarget>() {
        return Some(("proxy_internal_response", "unsupported target"));
    }
    if let Some(io) = err.downcast_ref::<io::Error>() {
        return io_cause(io.kind());
    }
    #[cfg(feature = "hyper")]
    if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
        if hyper.is_incomplete_message() {
            return Some(("http_response_incomplete", "response incomplete"));
        }
        if hyper.is_parse() || hyper.is_parse_status() {
            return Some(("http_protocol_error", "malformed response"));
        }
        if hyper.is_timeout() {
            return Some(("connection_read_timeout", "read timeout"));
        }
    }
    None
}

fn io_cause(kind: io::ErrorKind) -> Option<(&'static str, &'static str)> {
    use io::ErrorKind::*;
    Some(match kind {
        ConnectionRefused => ("connection_refused", "connection refused"),
        TimedOut => ("connection_timeout", "connect timeout"),
        HostUnreachable | NetworkUnreachable | AddrNotAvailable => {
            ("destination_ip_unroutable", "destination unreachable")
        }
        ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected => {
            ("connection_terminated", "connection closed")
        }
        UnexpectedEof => ("http_response_incomplete", "response incomplete"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn of(kind: FailureKind, error: impl Error + 'static) -> (Option<&'static str>, &'static str) {
        let status = ProxyStatus::of_error(kind, &error);
        (status.error(), status.details())
    }

    #[test]
    fn the_crates_refusals_say_which() {
        use FailureKind::*;
        let second = Duration::from_secs(1);
        assert_eq!(
            of(Rejected, CircuitOpen::new(second)),
            (Some("destination_unavailable"), "circuit open")
        );
        assert_eq!(
            of(Rejected, NoHealthyUpstream::new(second)),
            (Some("destination_unavailable"), "no healthy upstream")
        );
        assert_eq!(
            of(Rejected, Overloaded::throttled(second)),
            (Some("destination_unavailable"), "throttled")
        );
        assert_eq!(
            of(Rejected, Overloaded::new(second)),
            (Some("proxy_internal_response"), "overloaded")
        );
        assert_eq!(
            of(Timeout, Elapsed::new()),
            (Some("http_response_timeout"), "attempt timeout")
        );
        assert_eq!(
            of(Timeout, Elapsed::handler()),
            (Some("http_response_timeout"), "handler timeout")
        );
    }

    #[test]
    fn transport_failures_by_their_io_error() {
        use io::ErrorKind::*;
        let io = |kind| of(FailureKind::Connect, io::Error::from(kind));
        assert_eq!(
            io(ConnectionRefused),
            (Some("connection_refused"), "connection refused")
        );
        assert_eq!(
            io(TimedOut),
            (Some("connection_timeout"), "connect timeout")
        );
        assert_eq!(
            io(ConnectionReset),
            (Some("connection_terminated"), "connection closed")
        );
        // An I/O error of no known kind: the classification decides.
        assert_eq!(
            io(Other),
            (Some("destination_unavailable"), "connect failed")
        );
    }

    #[test]
    fn the_header_is_a_valid_structured_field() {
        let status =
            ProxyStatus::of_error(FailureKind::Rejected, &CircuitOpen::new(Duration::ZERO));
        assert_eq!(
            status.header("edge-1"),
            "edge-1; error=destination_unavailable; details=\"circuit open\""
        );
        let replaced = ProxyStatus::replaced(
            FailureKind::BadGateway,
            StatusCode::BAD_GATEWAY,
            "upstream answered 502",
        );
        assert_eq!(
            replaced.header("tower-steady"),
            "tower-steady; received-status=502; details=\"upstream answered 502\""
        );
        assert!(is_token("tower-steady"));
        assert!(is_token("edge/1:a"));
        assert!(!is_token(""));
        assert!(!is_token("1proxy"));
        assert!(!is_token("my proxy"));
        assert!(!is_token("a\"b"));
    }
}
