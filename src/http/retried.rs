//! The response extension a retried request's answer carries.

use std::time::Duration;

/// On a response that took more than one attempt: how many were sent and
/// how long the retry layer waited between them.
///
/// The [retry layer](crate::retry) inserts it on the response it hands on
/// (a success, or the last failure) whenever a second attempt (a retry or
/// a hedge) was sent; the first attempt's response carries none, so the
/// success path allocates nothing for it.
///
/// The [adaptive limit](crate::load_shed) of a server that forwards
/// requests through a retrying client reads it: the backoff is time the
/// request waited on purpose, not time it queued, so it is taken off the
/// latency the limit measures. Without that, a few percent of retried
/// requests, each waiting up to 250 ms, raise a window's mean latency as a
/// queue would, and the limit sheds a server that has room. A handler
/// passes it on by returning the client's response, or by copying the
/// extension to the response it builds.
///
/// ```
/// use std::time::Duration;
/// use http::Response;
/// use tower_steady::http::Retried;
///
/// # let response = Response::new(());
/// if let Some(retried) = response.extensions().get::<Retried>() {
///     println!("{} attempts, {:?} in backoff", retried.attempts, retried.backoff);
/// }
/// # let mut response = response;
/// response.extensions_mut().insert(Retried::new(2, Duration::from_millis(20)));
/// # assert_eq!(response.extensions().get::<Retried>().unwrap().attempts, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retried {
    /// Attempts sent, the first included.
    pub attempts: u32,
    /// The time spent waiting between attempts, as scheduled.
    pub backoff: Duration,
}

impl Retried {
    /// `attempts` attempts with `backoff` waited between them.
    pub const fn new(attempts: u32, backoff: Duration) -> Self {
        Self { attempts, backoff }
    }
}
