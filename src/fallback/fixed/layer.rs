use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use tower_layer::Layer;

use super::Fallback;
use super::Template;
use crate::classify::HttpClassifier;
use crate::fallback::Failures;
use crate::ConfigError;

/// Answers chosen failures with a fixed response: a maintenance page, a
/// default document, an empty list. See the [module docs](crate::fallback).
///
/// It is the last resort: put it above
/// [`StaleIfErrorLayer`](crate::fallback::StaleIfErrorLayer), so a stored
/// copy of the real page is preferred, and below the error mapping. The
/// response is built once and copied for each failure it answers; an
/// answer the upstream meant (a `500`, a `429`, by default) passes through.
///
/// # Example
///
/// ```
/// use std::io;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::{BodyExt, Empty};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_steady::fallback::FallbackLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_steady::BoxError> {
/// let maintenance = Response::builder()
///     .status(StatusCode::SERVICE_UNAVAILABLE)
///     .header("retry-after", "60")
///     .header("content-type", "text/html")
///     .body("<h1>Back in a minute</h1>")?;
///
/// // An upstream that cannot be reached.
/// let upstream = service_fn(|_: Request<()>| async {
///     Err::<Response<Empty<bytes::Bytes>>, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
/// });
/// let svc = ServiceBuilder::new()
///     .layer(FallbackLayer::builder(maintenance).build()?)
///     .service(upstream);
///
/// let response = svc.oneshot(Request::new(())).await?;
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(response.headers()["retry-after"], "60");
/// assert_eq!(response.into_body().collect().await?.to_bytes(), "<h1>Back in a minute</h1>");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FallbackLayer<C = HttpClassifier> {
    template: Arc<Template>,
    failures: Failures,
    classifier: C,
}

impl FallbackLayer {
    /// A builder for a layer that answers with `response`.
    pub fn builder<T: Into<Bytes>>(response: Response<T>) -> FallbackBuilder {
        let (parts, body) = response.into_parts();
        FallbackBuilder {
            template: Template {
                status: parts.status,
                headers: parts.headers,
                body: body.into(),
            },
            failures: Failures::default(),
            classifier: HttpClassifier::new(),
        }
    }
}

impl<S, C: Clone> Layer<S> for FallbackLayer<C> {
    type Service = Fallback<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::new(
            inner,
            self.template.clone(),
            self.failures,
            self.classifier.clone(),
        )
    }
}

/// Builds a [`FallbackLayer`], checking its response.
#[derive(Debug)]
#[must_use = "call `build()` to get the layer"]
pub struct FallbackBuilder<C = HttpClassifier> {
    template: Template,
    failures: Failures,
    classifier: C,
}

impl<C> FallbackBuilder<C> {
    /// The failures answered with the response. Default
    /// [`Failures::default()`]: every error and the gateway statuses `502`,
    /// `503`, `504`.
    pub fn failures(mut self, failures: Failures) -> Self {
        self.failures = failures;
        self
    }

    /// Decides what a failure is with `classifier` instead of
    /// [`HttpClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> FallbackBuilder<C2> {
        FallbackBuilder {
            template: self.template,
            failures: self.failures,
            classifier,
        }
    }

    /// Checks the response and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `fallback.status` (an
    /// informational status, or `502`: a fallback must not be the failure
    /// it replaces), `fallback.failures` (empty).
    pub fn build(self) -> Result<FallbackLayer<C>, ConfigError> {
        let status = self.template.status;
        if status.is_informational() {
            return Err(ConfigError::new(
                "fallback.status",
                "must be a final status, not 1xx",
            ));
        }
        if status == http::StatusCode::BAD_GATEWAY {
            return Err(ConfigError::new(
                "fallback.status",
                "must not be 502: answer 503 with Retry-After, or a page that works",
            ));
        }
        if self.failures == Failures::none() {
            return Err(ConfigError::new(
                "fallback.failures",
                "must hold at least one failure kind",
            ));
        }
        crate::observability::emit::fallback_built();
        Ok(FallbackLayer {
            template: Arc::new(self.template),
            failures: self.failures,
            classifier: self.classifier,
        })
    }
}
