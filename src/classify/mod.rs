//! Outcome classification: the one place that decides what a response or an
//! error *is*.
//!
//! Every layer that reacts to failures (retry, circuit breaker, upstream
//! health, throttling, the error-to-response mapping) asks the same question:
//! did this call succeed, and if not, what went wrong and could the upstream
//! have seen the request? This module answers it once, so that no layer
//! re-invents it and they all agree.
//!
//! An [`Outcome`] is a success or a failure with a [`FailureKind`] and a
//! [`RetrySafety`]:
//!
//! * [`RetrySafety::NotSent`]: the upstream never saw the request (connection
//!   refused, DNS failure, connect timeout, a local rejection). Retrying it is
//!   safe whatever the method.
//! * [`RetrySafety::MaybeSent`]: the upstream may have acted on it (it
//!   answered, the connection was reset after the request was written, the
//!   attempt timed out). Retrying is safe only for [idempotent] requests.
//!
//! # Responses
//!
//! [`HttpClassifier`] treats these statuses as failures:
//!
//! | status | kind |
//! |---|---|
//! | 502 | [`FailureKind::BadGateway`] |
//! | 503 | [`FailureKind::Unavailable`] |
//! | 504 | [`FailureKind::GatewayTimeout`] |
//! | 429 | [`FailureKind::TooManyRequests`] |
//! | 408 | [`FailureKind::Timeout`] |
//! | other 5xx | [`FailureKind::ServerError`] |
//!
//! Everything else, including every other 4xx, is a success *for resilience
//! purposes*: a 404 or a 400 is the upstream working correctly, and retrying
//! it or tripping a breaker on it would only add load.
//!
//! # gRPC
//!
//! A gRPC call that fails before its body is a *trailers-only* response:
//! HTTP 200 with `grpc-status` in its headers, which is how servers and
//! proxies send `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and
//! `DEADLINE_EXCEEDED`. [`HttpClassifier`] reads it (see [`grpc`]):
//!
//! | `grpc-status` | kind | retry safety |
//! |---|---|---|
//! | 14 `UNAVAILABLE` | [`FailureKind::Unavailable`] | `NotSent`: retried whatever the method (every gRPC call is a `POST`), as gRPC defines it as transient |
//! | 8 `RESOURCE_EXHAUSTED` | [`FailureKind::TooManyRequests`] | `MaybeSent` |
//! | 4 `DEADLINE_EXCEEDED` | [`FailureKind::GatewayTimeout`] | `MaybeSent` |
//! | 2 `UNKNOWN`, 13 `INTERNAL`, 15 `DATA_LOSS` | [`FailureKind::ServerError`] | `MaybeSent` |
//! | 0 `OK` and every other code | success | |
//!
//! Which codes are retried whatever the method is configurable, as gRFC
//! A6's `retryableStatusCodes`: [`HttpClassifier::grpc_retryable`].
//!
//! A status sent in the trailers at the end of a streamed body (a gRPC
//! response whose headers carry none) is read with
//! [`Classify::classify_trailers`] when the body ends, by the layers that
//! keep a record of the upstream's health: the circuit breaker
//! ([`BreakerBody`](crate::circuit_breaker::BreakerBody)) and the endpoint
//! set ([`EndpointBody`](crate::upstream::EndpointBody)). A retry cannot
//! act on it (the response has been handed on), nor the throttle, which
//! counts the response's head.
//!
//! # Errors
//!
//! Errors are classified by walking the whole [`source()`] chain, outermost
//! first, and stopping at the first error that says something definite:
//!
//! * this crate's own errors ([`Elapsed`], [`DeadlineExceeded`], and
//!   [`CircuitOpen`], [`Overloaded`] and [`NoHealthyUpstream`], rejections
//!   that were never sent);
//! * `hyper_util::client::legacy::Error` (feature `hyper-util`): `is_connect()`
//!   means the request was never sent;
//! * `hyper::Error` (feature `hyper`): an incomplete message or a closed
//!   connection is a reset after sending, a canceled request was never
//!   written, a parse error is a malformed response;
//! * [`std::io::Error`], by [`ErrorKind`](std::io::ErrorKind): refused, host
//!   or network unreachable, address unavailable and not connected mean the
//!   request was not sent; reset, aborted, broken pipe and unexpected end of
//!   file are resets after sending; timed out is a timeout. An `io::Error`
//!   wrapping another error is looked through, too.
//!
//! An error nothing recognises is [`FailureKind::Other`], `MaybeSent`: when
//! in doubt, assume the upstream may have seen the request.
//!
//! # What each layer does with each kind
//!
//! One classification, read by every layer; what each then does with it:
//!
//! | kind | [`RetryLayer`] | [`CircuitBreakerLayer`] | [`Upstreams`] (the endpoint's health) | [`ThrottleLayer`] | [`StaleIfErrorLayer`] (default) | [`ErrorResponseLayer`] |
//! |---|---|---|---|---|---|---|
//! | `BadGateway`, `Unavailable`, `GatewayTimeout` | retried if safe | failure | gateway failure (5 in a row eject) | refusal | answered from a copy | an answer passes on, but a `502` becomes `503` + `Retry-After`; as an error, `503` (`504` for `GatewayTimeout`) |
//! | `TooManyRequests` | retried if safe, after its `Retry-After` | not counted (configurable) | failure (success rate) | refusal | passed on | `503` |
//! | `ServerError` | retried if safe | failure | failure (success rate) | accepted | passed on | `500` |
//! | `Timeout` | retried if safe | failure | gateway failure | refusal | answered from a copy | `504` |
//! | `DeadlineExceeded` | never | failure once sent; not counted before | ignored | refusal once sent; not counted before | answered from a copy | `504` |
//! | `Connect`, `Reset` | retried (`Connect` is never sent: whatever the method) | failure | gateway failure | refusal | answered from a copy | `503` |
//! | `Rejected` | never | failure (no healthy upstream), except a throttle's or a limit's own refusal ([`Overloaded`]), which is not counted | ignored | refusal | answered from a copy | `503` + the rejection's `Retry-After` |
//! | `Protocol` | retried if safe | failure | failure (success rate) | accepted | answered from a copy | `502` |
//! | `Unsupported` | never | not counted | ignored | not counted | passed on | `501` |
//! | `Other` | retried if safe | failure | ignored | accepted | answered from a copy | `500` |
//!
//! "If safe": the request was not sent, or it is [idempotent]; and always
//! within the retry budget and the deadline. The adaptive limit of a server
//! counts only successes as latencies; every failure is ignored there.
//!
//! [`RetryLayer`]: crate::retry::RetryLayer
//! [`CircuitBreakerLayer`]: crate::circuit_breaker::CircuitBreakerLayer
//! [`Upstreams`]: crate::upstream::Upstreams
//! [`ThrottleLayer`]: crate::load_shed::ThrottleLayer
//! [`StaleIfErrorLayer`]: crate::fallback::StaleIfErrorLayer
//! [`ErrorResponseLayer`]: crate::http::ErrorResponseLayer
//!
//! # Your own classification
//!
//! [`Classify`] is a trait so that a service with its own conventions (a 503
//! that means "maintenance, do not retry", a custom error type) can plug in
//! its own, usually by delegating the rest to [`HttpClassifier`]:
//!
//! ```
//! use std::error::Error;
//! use http::{Response, StatusCode};
//! use tower_steady::classify::{Classify, FailureKind, HttpClassifier, Outcome, RetrySafety};
//!
//! /// Our upstream answers 500 to every overloaded request it dropped
//! /// before doing any work: that is a 503 in all but name.
//! #[derive(Clone, Debug, Default)]
//! struct LegacyUpstream(HttpClassifier);
//!
//! impl Classify for LegacyUpstream {
//!     fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
//!         if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
//!             return Outcome::failure(FailureKind::Unavailable, RetrySafety::MaybeSent);
//!         }
//!         self.0.classify_response(response)
//!     }
//!
//!     fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
//!         self.0.classify_error(error)
//!     }
//! }
//!
//! let response = Response::builder().status(500).body(()).unwrap();
//! assert_eq!(LegacyUpstream::default().classify_response(&response).kind(), Some(FailureKind::Unavailable));
//! ```
//!
//! [idempotent]: is_idempotent
//! [`source()`]: std::error::Error::source
//! [`Elapsed`]: crate::timeout::Elapsed
//! [`DeadlineExceeded`]: crate::deadline::DeadlineExceeded
//! [`CircuitOpen`]: crate::circuit_breaker::CircuitOpen
//! [`Overloaded`]: crate::load_shed::Overloaded
//! [`NoHealthyUpstream`]: crate::upstream::NoHealthyUpstream

use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

use http::{Response, StatusCode};

use crate::error::{
    CircuitOpen, DeadlineExceeded, Elapsed, NoHealthyUpstream, Overloaded, UnsupportedTarget,
};

pub mod grpc;
mod idempotency;

pub use self::idempotency::{is_idempotent, IDEMPOTENCY_KEY};

/// What a call to a service came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded, for resilience purposes.
    Success,
    /// The call failed.
    Failure {
        /// What went wrong.
        kind: FailureKind,
        /// Whether the upstream may have seen the request.
        safety: RetrySafety,
    },
}

impl Outcome {
    /// A failure of `kind` with the given retry safety.
    pub const fn failure(kind: FailureKind, safety: RetrySafety) -> Self {
        Outcome::Failure { kind, safety }
    }

    /// Whether this is a success.
    pub const fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// The failure's kind, or `None` for a success.
    pub const fn kind(&self) -> Option<FailureKind> {
        match self {
            Outcome::Success => None,
            Outcome::Failure { kind, .. } => Some(*kind),
        }
    }

    /// The failure's retry safety, or `None` for a success.
    pub const fn safety(&self) -> Option<RetrySafety> {
        match self {
            Outcome::Success => None,
            Outcome::Failure { safety, .. } => Some(*safety),
        }
    }

    /// Whether repeating the request could not make things worse than they
    /// are: the call failed, and either the upstream never saw the request or
    /// the request is idempotent.
    ///
    /// This says nothing of budgets or deadlines; the retry layer adds those.
    pub const fn is_retry_safe(&self, idempotent: bool) -> bool {
        match self {
            Outcome::Success => false,
            Outcome::Failure { safety, .. } => safety.allows_retry(idempotent),
        }
    }
}

/// What kind of failure an [`Outcome`] is.
///
/// The kinds are coarse on purpose: they are what retry, breaker, health and
/// the error mapping need to decide, not a replacement for the error itself,
/// which goes to the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The upstream answered `502 Bad Gateway`.
    BadGateway,
    /// The upstream answered `503 Service Unavailable`.
    Unavailable,
    /// The upstream answered `504 Gateway Timeout`.
    GatewayTimeout,
    /// The upstream answered `429 Too Many Requests`.
    TooManyRequests,
    /// The upstream answered another 5xx status.
    ServerError,
    /// The attempt timed out (or the upstream answered `408`).
    Timeout,
    /// The request's total time budget ran out.
    DeadlineExceeded,
    /// No connection could be made: refused, unreachable, DNS failure,
    /// connect timeout.
    Connect,
    /// The connection was reset, aborted or closed before a complete
    /// response arrived.
    Reset,
    /// A layer of this stack rejected the request before sending it
    /// (overload, open breaker, no healthy upstream).
    Rejected,
    /// The upstream's response was malformed.
    Protocol,
    /// The request cannot be sent as it is: its target is not a path that
    /// an endpoint can serve (a `CONNECT`, or another authority-form
    /// target, through an endpoint set). The fault is the request's, so it
    /// is never retried nor counted against an upstream, and is answered
    /// `501 Not Implemented`.
    Unsupported,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// Every kind, in declaration order: for tables, tests and metric
    /// series made ahead of their first event.
    pub const ALL: [FailureKind; 13] = [
        FailureKind::BadGateway,
        FailureKind::Unavailable,
        FailureKind::GatewayTimeout,
        FailureKind::TooManyRequests,
        FailureKind::ServerError,
        FailureKind::Timeout,
        FailureKind::DeadlineExceeded,
        FailureKind::Connect,
        FailureKind::Reset,
        FailureKind::Rejected,
        FailureKind::Protocol,
        FailureKind::Unsupported,
        FailureKind::Other,
    ];

    /// Whether this is one of the gateway statuses: 502, 503 or 504.
    pub const fn is_gateway_status(&self) -> bool {
        matches!(
            self,
            FailureKind::BadGateway | FailureKind::Unavailable | FailureKind::GatewayTimeout
        )
    }

    /// A short, stable name for logs and metric labels.
    pub const fn as_str(&self) -> &'static str {
        match self {
            FailureKind::BadGateway => "bad_gateway",
            FailureKind::Unavailable => "unavailable",
            FailureKind::GatewayTimeout => "gateway_timeout",
            FailureKind::TooManyRequests => "too_many_requests",
            FailureKind::ServerError => "server_error",
            FailureKind::Timeout => "timeout",
            FailureKind::DeadlineExceeded => "deadline_exceeded",
            FailureKind::Connect => "connect",
            FailureKind::Reset => "reset",
            FailureKind::Rejected => "rejected",
            FailureKind::Protocol => "protocol",
            FailureKind::Unsupported => "unsupported",
            FailureKind::Other => "other",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the upstream may have seen a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetrySafety {
    /// The upstream never saw the request: retrying is safe for any method.
    NotSent,
    /// The upstream may have seen, and acted on, the request: retrying is
    /// safe only for idempotent requests.
    MaybeSent,
}

impl RetrySafety {
    /// Whether a request with this safety may be retried, given whether it is
    /// [idempotent](is_idempotent).
    pub const fn allows_retry(self, idempotent: bool) -> bool {
        match self {
            RetrySafety::NotSent => true,
            RetrySafety::MaybeSent => idempotent,
        }
    }
}

/// Decides the [`Outcome`] of a call.
///
/// Implement it to change what counts as a failure for every layer at once;
/// [`HttpClassifier`] is the default. Implementations should be cheap: they
/// run on every response.
pub trait Classify {
    /// Classifies a response.
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome;

    /// Classifies an error returned by a service.
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome;

    /// Classifies a response as [`classify_response`](Self::classify_response)
    /// does, and says whether its outcome is still to come in its trailers:
    /// a successful gRPC response (`content-type: application/grpc`) whose
    /// `grpc-status` is not in its headers. The layers that count outcomes
    /// (the circuit breaker and the `upstream` balancer) ask
    /// this of each response, and watch such a one to its end.
    ///
    /// The default calls `classify_response`, then looks at the headers;
    /// [`HttpClassifier`] does both with one look for the content type. A
    /// classifier that overrides it must agree with that default.
    fn classify_head<B>(&self, response: &Response<B>) -> (Outcome, bool) {
        let outcome = self.classify_response(response);
        let trailers = outcome.is_success() && grpc::status_in_trailers(response.headers());
        (outcome, trailers)
    }

    /// Classifies the trailers that end a streamed response: a gRPC call's
    /// `grpc-status` (see [`grpc`]), which a server sends there when the
    /// call fails after its response began. The default reads it as
    /// [`HttpClassifier`] does with its defaults; trailers without one are a
    /// success.
    fn classify_trailers(&self, trailers: &http::HeaderMap) -> Outcome {
        trailers
            .get(grpc::GRPC_STATUS)
            .and_then(grpc::parse_status)
            .map_or(Outcome::Success, |code| {
                grpc::outcome(code, 1 << grpc::code::UNAVAILABLE)
            })
    }

    /// Classifies what a service returned: its response or its error.
    fn classify_result<B>(&self, result: &Result<Response<B>, crate::BoxError>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(error) => self.classify_error(&**error),
        }
    }

    /// How long the caller should wait before trying again after `error`,
    /// when the error says so (an open breaker knows when it will probe,
    /// a shed request knows the limit's cool-down).
    ///
    /// The default knows of none. [`ErrorResponseLayer`] uses it for the
    /// `Retry-After` of a `503`, falling back to its configured default.
    ///
    /// [`ErrorResponseLayer`]: crate::http::ErrorResponseLayer
    fn retry_after(&self, error: &(dyn Error + 'static)) -> Option<Duration> {
        let _ = error;
        None
    }
}

/// The default [`Classify`]: HTTP statuses and the errors of tokio, hyper,
/// hyper-util and this crate, as described in the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct HttpClassifier {
    /// The gRPC codes retried whatever the method, a bit per code.
    grpc_retryable: u32,
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClassifier {
    /// The default classifier.
    pub const fn new() -> Self {
        Self {
            grpc_retryable: 1 << grpc::code::UNAVAILABLE,
        }
    }

    /// The gRPC status codes that may be retried whatever the method (gRPC
    /// calls are all `POST`s), as gRFC A6's `retryableStatusCodes`: by
    /// default `UNAVAILABLE` alone, which gRPC defines as a transient
    /// condition that a retry corrects. `RESOURCE_EXHAUSTED` and
    /// `DEADLINE_EXCEEDED` are failures either way, retried only when
    /// listed here. Codes above 31 are ignored.
    ///
    /// ```
    /// use tower_steady::classify::{grpc::code, HttpClassifier};
    ///
    /// let classifier =
    ///     HttpClassifier::new().grpc_retryable(&[code::UNAVAILABLE, code::RESOURCE_EXHAUSTED]);
    /// # let _ = classifier;
    /// ```
    pub const fn grpc_retryable(mut self, codes: &[u32]) -> Self {
        let mut mask = 0;
        let mut i = 0;
        while i < codes.len() {
            if codes[i] < 32 {
                mask |= 1 << codes[i];
            }
            i += 1;
        }
        self.grpc_retryable = mask;
        self
    }

    /// For a `200 OK` gRPC response (`content-type: application/grpc`):
    /// its outcome, and whether its status is still to come in the
    /// trailers; `None` for any other response.
    ///
    /// A gRPC call that failed before its body is a trailers-only
    /// response: HTTP 200, `content-type: application/grpc`, the
    /// `grpc-status` in its headers. The content type first: a standard
    /// header, found without hashing a name, so an HTTP response pays one
    /// cheap lookup.
    #[inline]
    fn grpc_head(&self, status: StatusCode, headers: &http::HeaderMap) -> Option<(Outcome, bool)> {
        if status != StatusCode::OK || !grpc::is_grpc(headers) {
            return None;
        }
        Some(match headers.get(grpc::GRPC_STATUS) {
            Some(value) => (
                grpc::parse_status(value).map_or_else(
                    || self.classify_status(status),
                    |code| grpc::outcome(code, self.grpc_retryable),
                ),
                false,
            ),
            None => {
                let outcome = self.classify_status(status);
                (outcome, outcome.is_success())
            }
        })
    }

    /// Classifies a status code alone, as [`Classify::classify_response`]
    /// does.
    pub const fn classify_status(&self, status: StatusCode) -> Outcome {
        let kind = match status.as_u16() {
            502 => FailureKind::BadGateway,
            503 => FailureKind::Unavailable,
            504 => FailureKind::GatewayTimeout,
            429 => FailureKind::TooManyRequests,
            408 => FailureKind::Timeout,
            500..=599 => FailureKind::ServerError,
            _ => return Outcome::Success,
        };
        // The upstream answered, so it saw the request.
        Outcome::failure(kind, RetrySafety::MaybeSent)
    }
}

impl Classify for HttpClassifier {
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        let status = response.status();
        match self.grpc_head(status, response.headers()) {
            Some((outcome, _)) => outcome,
            None => self.classify_status(status),
        }
    }

    /// One look for the content type, where the default makes two.
    fn classify_head<B>(&self, response: &Response<B>) -> (Outcome, bool) {
        let status = response.status();
        let headers = response.headers();
        if let Some(head) = self.grpc_head(status, headers) {
            return head;
        }
        let outcome = self.classify_status(status);
        // Only a status other than `200 OK` needs the second look: a gRPC
        // response has that status, so this is the rare case.
        let trailers =
            status != StatusCode::OK && outcome.is_success() && grpc::status_in_trailers(headers);
        (outcome, trailers)
    }

    fn classify_trailers(&self, trailers: &http::HeaderMap) -> Outcome {
        trailers
            .get(grpc::GRPC_STATUS)
            .and_then(grpc::parse_status)
            .map_or(Outcome::Success, |code| {
                grpc::outcome(code, self.grpc_retryable)
            })
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        let mut current = Some(error);
        while let Some(err) = current {
            if let Some(outcome) = classify_one(err) {
                return outcome;
            }
            current = next_in_chain(err);
        }
        Outcome::failure(FailureKind::Other, RetrySafety::MaybeSent)
    }

    /// The hint of the first error in the chain that carries one: an open
    /// breaker's time until its next probe, a shed request's cool-down, the
    /// time until an ejected upstream's probe.
    fn retry_after(&self, error: &(dyn Error + 'static)) -> Option<Duration> {
        let mut current = Some(error);
        while let Some(err) = current {
            if let Some(open) = err.downcast_ref::<CircuitOpen>() {
                return Some(open.retry_after());
            }
            if let Some(overloaded) = err.downcast_ref::<Overloaded>() {
                return Some(overloaded.retry_after());
            }
            if let Some(none) = err.downcast_ref::<NoHealthyUpstream>() {
                return Some(none.retry_after());
            }
            current = next_in_chain(err);
        }
        None
    }
}

/// The next error to look at after `err`.
///
/// `io::Error::source()` skips the error an `io::Error` wraps and returns
/// *that* error's source, so an `io::Error::new(kind, inner)` whose kind says
/// nothing definite would hide `inner`. Look at the wrapped error itself.
fn next_in_chain<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    if let Some(io) = err.downcast_ref::<io::Error>() {
        if let Some(inner) = io.get_ref() {
            return Some(inner);
        }
    }
    err.source()
}

/// Classifies one error of a chain, or `None` to look at its source.
fn classify_one(err: &(dyn Error + 'static)) -> Option<Outcome> {
    if err.is::<Elapsed>() {
        return Some(Outcome::failure(
            FailureKind::Timeout,
            RetrySafety::MaybeSent,
        ));
    }
    if let Some(exceeded) = err.downcast_ref::<DeadlineExceeded>() {
        let safety = if exceeded.was_sent() {
            RetrySafety::MaybeSent
        } else {
            RetrySafety::NotSent
        };
        return Some(Outcome::failure(FailureKind::DeadlineExceeded, safety));
    }
    if err.is::<CircuitOpen>() {
        return Some(Outcome::failure(
            FailureKind::Rejected,
            RetrySafety::NotSent,
        ));
    }
    if err.is::<Overloaded>() {
        return Some(Outcome::failure(
            FailureKind::Rejected,
            RetrySafety::NotSent,
        ));
    }
    if err.is::<NoHealthyUpstream>() {
        return Some(Outcome::failure(
            FailureKind::Rejected,
            RetrySafety::NotSent,
        ));
    }
    if err.is::<UnsupportedTarget>() {
        return Some(Outcome::failure(
            FailureKind::Unsupported,
            RetrySafety::NotSent,
        ));
    }
    #[cfg(feature = "hyper-util")]
    if let Some(e) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
        if e.is_connect() {
            return Some(Outcome::failure(FailureKind::Connect, RetrySafety::NotSent));
        }
        // Otherwise the cause is in its source chain.
        return None;
    }
    #[cfg(feature = "hyper")]
    if let Some(e) = err.downcast_ref::<hyper::Error>() {
        return classify_hyper(e);
    }
    if let Some(e) = err.downcast_ref::<io::Error>() {
        return classify_io(e.kind());
    }
    None
}

#[cfg(feature = "hyper")]
fn classify_hyper(e: &hyper::Error) -> Option<Outcome> {
    use FailureKind::*;
    use RetrySafety::*;

    if e.is_canceled() {
        // hyper cancels requests still queued on a connection that closed
        // before it wrote them.
        Some(Outcome::failure(Reset, NotSent))
    } else if e.is_parse() || e.is_parse_status() {
        Some(Outcome::failure(Protocol, MaybeSent))
    } else if e.is_incomplete_message() || e.is_closed() || e.is_body_write_aborted() {
        Some(Outcome::failure(Reset, MaybeSent))
    } else if e.is_timeout() {
        Some(Outcome::failure(Timeout, MaybeSent))
    } else {
        // An I/O error or a user error: its source says more.
        None
    }
}

fn classify_io(kind: io::ErrorKind) -> Option<Outcome> {
    use io::ErrorKind as K;
    use FailureKind::*;
    use RetrySafety::*;

    let outcome = match kind {
        K::ConnectionRefused
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::AddrNotAvailable
        | K::NotConnected => Outcome::failure(Connect, NotSent),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Outcome::failure(Reset, MaybeSent)
        }
        K::TimedOut => Outcome::failure(Timeout, MaybeSent),
        _ => return None,
    };
    Some(outcome)
}
