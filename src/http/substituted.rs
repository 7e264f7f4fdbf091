//! The response extension on an answer that stands in for a failure.

use crate::classify::FailureKind;

/// On a response that stands in for a failure: a stale copy served by
/// [`StaleIfErrorLayer`](crate::fallback::StaleIfErrorLayer) or a page of
/// [`FallbackLayer`](crate::fallback::FallbackLayer). It carries the kind of
/// the failure it answers, for an in-process caller that wants to know the
/// page is not fresh, or log why.
///
/// The [adaptive limit](crate::load_shed) of a server that forwards requests
/// through such a client reads it: a substitute's latency is how long the
/// stack spent on a failing upstream (retries, their backoff, a timeout)
/// before it answered, not time spent queueing in the server, so it is not
/// a latency sample. A handler passes it on by returning the client's
/// response, or by copying the extension to the response it builds.
///
/// ```
/// use http::Response;
/// use tower_steady::classify::FailureKind;
/// use tower_steady::http::Substituted;
///
/// # let mut response = Response::new(());
/// # response.extensions_mut().insert(Substituted::new(FailureKind::Connect));
/// if let Some(substituted) = response.extensions().get::<Substituted>() {
///     println!("served in place of a {} failure", substituted.failure);
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Substituted {
    /// The failure the response stands in for.
    pub failure: FailureKind,
}

impl Substituted {
    /// A response standing in for a failure of `failure`.
    pub const fn new(failure: FailureKind) -> Self {
        Self { failure }
    }
}
