//! HTTP answers: `Retry-After`, and every error turned into an honest
//! response.
//!
//! * [`RetryAfter`] parses the header a `503` or `429` may carry, in both of
//!   its forms, capped and never panicking.
//! * [`ErrorResponseLayer`] sits at the top of a server (or proxy) stack and
//!   turns every error below it into a well-formed response, so the stack's
//!   error type is `Infallible` and an axum `Router` accepts it. The mapping
//!   is in [its docs](ErrorResponseLayer#which-status).
//! * [`ResponseBody`] is the body type of those responses: the inner
//!   service's body, or a short error page.
//! * [`Retried`] is the extension on a response that took more than one
//!   attempt; [`Attempt`] the one on a retry's request, and [`Endpoint`] /
//!   [`EndpointError`] what a balancer reports of where an attempt went.
//!   The retry layer and a balancer speak them, and neither needs the
//!   other to build.
//! * [`Substituted`] is the extension on a response that stands in for a
//!   failure (a stale copy, a fallback page).

mod attempt;
mod body;
mod error_response;
mod proxy_status;
mod retried;
mod retry_after;
mod substituted;

#[cfg(feature = "upstream")]
pub(crate) use self::attempt::{endpoint_wanted, not_retry_calling};
#[cfg(feature = "retry")]
pub(crate) use self::attempt::{retry_calling, unwrap_endpoint};
pub use self::attempt::{Attempt, Endpoint, EndpointError};
pub use self::body::ResponseBody;
pub use self::error_response::{future, ErrorResponse, ErrorResponseLayer};
pub use self::proxy_status::ProxyStatus;
pub use self::retried::Retried;
pub use self::retry_after::RetryAfter;
pub use self::substituted::Substituted;
