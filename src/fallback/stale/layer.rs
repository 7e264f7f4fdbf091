use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::HeaderValue;
use tower_layer::Layer;

use super::store::ENTRY_OVERHEAD;
use super::{Settings, Shared};
use super::{StaleIfError, StaleIfErrorHandle};
use crate::classify::HttpClassifier;
use crate::fallback::Failures;
use crate::ConfigError;

/// The default marker: RFC 9211's `Cache-Status`, saying this layer
/// forwarded the request and served a stale copy because of an error.
const MARKER_NAME: &str = "cache-status";
const MARKER_VALUE: &str = "tower-steady; fwd=stale; detail=stale-if-error";

/// Wraps services in one shared [`StaleIfError`] store. See the
/// [module docs](crate::fallback).
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
                name: Arc::from("upstream"),
            },
            classifier: HttpClassifier::new(),
        }
    }
}

impl<C> StaleIfErrorBuilder<C> {
    /// The store's name: the `store` label of
    /// `tower_steady_stale_served_total`, so that the stores of two client
    /// stacks export two series. Default `"upstream"`. 1 to 64 ASCII
    /// letters, digits, `-`, `_`, `.` or `:`, or [`build`](Self::build)
    /// fails with `stale_if_error.name`.
    pub fn name(mut self, name: &str) -> Self {
        self.settings.name = Arc::from(name);
        self
    }

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
        if !crate::observability::is_plain_name(&s.name) {
            return Err(ConfigError::new(
                "stale_if_error.name",
                "must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
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
