use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderValue, Response};
use tower_layer::Layer;

use super::respond::Template;
use super::stale::{Settings, Shared};
use super::store::ENTRY_OVERHEAD;
use super::{Failures, Fallback, StaleIfError, StaleIfErrorHandle};
use crate::classify::HttpClassifier;
use crate::ConfigError;

/// The default marker: RFC 9211's `Cache-Status`, saying this layer
/// forwarded the request and served a stale copy because of an error.
const MARKER_NAME: &str = "cache-status";
const MARKER_VALUE: &str = "tower-steady; fwd=stale; detail=stale-if-error";

/// Wraps services in one shared [`StaleIfError`] store. See the
/// [module docs](super).
///
/// The store is created with the layer: every service the layer makes, and
/// every clone of those, stores into and serves from the same one. Build one
/// layer per upstream (or per site), and read it with
/// [`handle`](Self::handle).
#[derive(Debug, Clone)]
pub struct StaleIfErrorLayer<C = HttpClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl StaleIfErrorLayer {
    /// A layer with the default settings (see [`StaleIfErrorBuilder`]).
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared::new(StaleIfErrorBuilder::new().settings)),
            classifier: HttpClassifier::new(),
        }
    }

    /// A builder to configure the layer.
    pub fn builder() -> StaleIfErrorBuilder {
        StaleIfErrorBuilder::new()
    }
}

impl Default for StaleIfErrorLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> StaleIfErrorLayer<C> {
    /// A handle on the store: its size and its counters.
    pub fn handle(&self) -> StaleIfErrorHandle {
        StaleIfErrorHandle::new(self.shared.clone())
    }
}

impl<S, C: Clone> Layer<S> for StaleIfErrorLayer<C> {
    type Service = StaleIfError<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        StaleIfError::new(inner, self.classifier.clone(), self.shared.clone())
    }
}

/// Builds a [`StaleIfErrorLayer`], checking its configuration.
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get the layer"]
pub struct StaleIfErrorBuilder<C = HttpClassifier> {
    settings: Settings,
    classifier: C,
}

impl StaleIfErrorBuilder {
    fn new() -> Self {
        Self {
            settings: Settings {
                max_stale: Duration::from_secs(300),
                max_bytes: 32 << 20,
                max_entry_bytes: 1 << 20,
                refresh: Duration::from_secs(1),
                failures: Failures::default(),
                marker: Some((
                    HeaderName::from_static(MARKER_NAME),
                    HeaderValue::from_static(MARKER_VALUE),
                )),
            },
            classifier: HttpClassifier::new(),
        }
    }
}

impl<C> StaleIfErrorBuilder<C> {
    /// How long past its freshness a copy may be served after a failure,
    /// when the response did not say (`Cache-Control: stale-if-error=N`
    /// wins when present). Default 5 minutes: long enough to ride out a
    /// restart or a deploy gone wrong, short enough that a page is not
    /// silently hours old. Zero serves only copies that are still fresh or
    /// carry their own `stale-if-error`.
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.settings.max_stale = max_stale;
        self
    }

    /// The most bytes all stored copies may take together (bodies, headers,
    /// keys and 512 bytes of bookkeeping each); the least recently used are
    /// evicted to make room. Default 32 MiB.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.settings.max_bytes = max_bytes;
        self
    }

    /// The most bytes one stored copy may take, counted as for
    /// [`max_bytes`](Self::max_bytes). A larger response streams through
    /// untouched and is not stored. Default 1 MiB.
    pub fn max_entry_bytes(mut self, max_entry_bytes: usize) -> Self {
        self.settings.max_entry_bytes = max_entry_bytes;
        self
    }

    /// How often one key (or one variant of it) is stored again while its
    /// responses keep succeeding. Default 1 s: a page requested a thousand
    /// times a second is copied once a second, and its other requests cost
    /// one atomic load; the copy served after a failure is at most this much
    /// older than the last good response. Zero stores every response.
    pub fn refresh(mut self, refresh: Duration) -> Self {
        self.settings.refresh = refresh;
        self
    }

    /// The failures a stored copy answers. Default
    /// [`Failures::default()`]: every error and the gateway statuses `502`,
    /// `503`, `504`.
    pub fn failures(mut self, failures: Failures) -> Self {
        self.settings.failures = failures;
        self
    }

    /// The header added to a stale copy when it is served. Default
    /// `cache-status: tower-steady; fwd=stale; detail=stale-if-error`
    /// (RFC 9211).
    pub fn marker(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.settings.marker = Some((name, value));
        self
    }

    /// Adds no marker header to a stale copy (its `Age` still says how old
    /// it is).
    pub fn no_marker(mut self) -> Self {
        self.settings.marker = None;
        self
    }

    /// Decides what a failure is with `classifier` instead of
    /// [`HttpClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> StaleIfErrorBuilder<C2> {
        StaleIfErrorBuilder {
            settings: self.settings,
            classifier,
        }
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `stale_if_error.max_bytes` (zero),
    /// `stale_if_error.max_entry_bytes` (not over the 512 bytes an entry's
    /// bookkeeping counts, or over `max_bytes`), `stale_if_error.failures`
    /// (empty).
    pub fn build(self) -> Result<StaleIfErrorLayer<C>, ConfigError> {
        let s = &self.settings;
        if s.max_bytes == 0 {
            return Err(ConfigError::new(
                "stale_if_error.max_bytes",
                "must be greater than zero",
            ));
        }
        if s.max_entry_bytes <= ENTRY_OVERHEAD {
            return Err(ConfigError::new(
                "stale_if_error.max_entry_bytes",
                "must be more than the 512 bytes each entry's bookkeeping counts",
            ));
        }
        if s.max_entry_bytes > s.max_bytes {
            return Err(ConfigError::new(
                "stale_if_error.max_entry_bytes",
                "must not exceed max_bytes",
            ));
        }
        if s.failures == Failures::none() {
            return Err(ConfigError::new(
                "stale_if_error.failures",
                "must hold at least one failure kind",
            ));
        }
        Ok(StaleIfErrorLayer {
            shared: Arc::new(Shared::new(self.settings)),
            classifier: self.classifier,
        })
    }
}

/// Answers chosen failures with a fixed response: a maintenance page, a
/// default document, an empty list. See the [module docs](super).
///
/// It is the last resort: put it above [`StaleIfErrorLayer`], so a stored
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
        Ok(FallbackLayer {
            template: Arc::new(self.template),
            failures: self.failures,
            classifier: self.classifier,
        })
    }
}
