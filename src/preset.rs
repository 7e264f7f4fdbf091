//! The layers composed in the documented order, with the documented
//! defaults: [`Resilience::client()`] and [`Resilience::server()`].
//!
//! # The client stack
//!
//! For a service that calls upstreams: a hyper-util client, an
//! [`Upstreams`](crate::upstream::Upstreams) set, or a reverse proxy's
//! forwarding service. Outermost first:
//!
//! | layer | default | why here |
//! |---|---|---|
//! | [`ErrorResponseLayer`] | on | outermost: whatever fails below becomes a `503` + `Retry-After` or a `504`, and an upstream's `502` a `503`; the stack's error type is `Infallible` |
//! | [`DeadlineLayer::client()`] | 15 s, written to `x-request-timeout-ms` | one budget for everything below, retries and backoff included |
//! | [`StaleIfErrorLayer`] | on (32 MiB, 5 min) | above retry: a stale copy answers only what retries could not |
//! | [`RetryLayer`] | 3 attempts, budget 20% + 10/s | above the breaker and the throttle, so that their fast refusals are not retried into a storm ([`FailureKind::Rejected`](crate::classify::FailureKind) is never retried) |
//! | [`CircuitBreakerLayer`] | on, named `"upstream"` | sees each attempt, so it counts what the upstream really did |
//! | [`ThrottleLayer`] | on (K = 2 over 60 s) | refuses locally what the upstream would refuse anyway |
//! | [`TimeoutLayer`] | off; [`attempt_timeout`](ClientBuilder::attempt_timeout) | innermost: bounds one attempt, so a hung attempt is retried within the deadline |
//!
//! Around an [`Upstreams`](crate::upstream::Upstreams) set, leave
//! `attempt_timeout` off and put a [`TimeoutLayer`] inside each replica's
//! service instead (in the function that makes it): a hang then counts
//! against that replica, which is ejected for it, rather than against the
//! set as a whole.
//!
//! # The server stack
//!
//! For an axum or hyper server:
//!
//! | layer | default | why here |
//! |---|---|---|
//! | [`ErrorResponseLayer`] | on | shed requests, expired deadlines and timeouts become `503` + `Retry-After` and `504` |
//! | [`DeadlineLayer::server()`] | 15 s, or less when the caller's header says so | a request that arrives with no time left is answered at once, before it takes a slot |
//! | [`AdaptiveLimitLayer`] | on, starting open | sheds a standing queue at once instead of queueing into timeouts; a burst waits for a place and is served |
//! | [`TimeoutLayer`] | off; [`timeout`](ServerBuilder::timeout) | bounds the handler alone, when it should be tighter than the deadline |
//!
//! # A reverse proxy
//!
//! `Resilience::server()` around a handler that forwards through
//! `Resilience::client()`: the server stack bounds the work the proxy takes
//! on, the client stack answers for the upstreams. The order guarantees
//! that a request the client stack can answer from a stale copy is answered
//! from it, even through an outage at any load: the stale copy is in the
//! client stack, and the server's limit learns only from the handler's own
//! answers, never from failures, from the time a retry backed off
//! ([`Retried`](crate::http::Retried)) or from a response that stands in
//! for a failure ([`Substituted`](crate::http::Substituted)); a handler
//! that returns the client's response (or copies its extensions) passes
//! those on. So an outage leaves the limit open, and nothing is shed that a
//! stale copy could serve.
//!
//! # Tuning and turning off
//!
//! One classifier for the whole stack is given once, with
//! [`ClientBuilder::classifier`] or [`ServerBuilder::classifier`], rather
//! than to each part's builder.
//!
//! Each part is set with its own builder (validated in
//! [`build`](ClientBuilder::build), so a bad value is a [`ConfigError`]
//! naming the field, `retry.max_attempts` say) or turned off with a
//! `without_*` method. A part turned off is not in the stack at all: its
//! place is a [`tower_layer::Identity`], at no cost per request. The type
//! of the builder records which parts are on, so a stack's types say what
//! it does; code rarely names them.
//!
//! ```
//! # fn main() -> Result<(), tower_steady::ConfigError> {
//! use std::time::Duration;
//! use tower_steady::circuit_breaker::CircuitBreakerLayer;
//! use tower_steady::retry::RetryLayer;
//! use tower_steady::Resilience;
//!
//! let layer = Resilience::client()
//!     .retry(RetryLayer::builder().max_attempts(2))
//!     .circuit_breaker(CircuitBreakerLayer::builder().name("payments"))
//!     .attempt_timeout(Duration::from_secs(1))
//!     .without_stale_if_error()
//!     .build()?;
//! // Handles to the parts that keep state, for a status route.
//! let handles = layer.handles();
//! assert_eq!(handles.breaker.as_ref().map(|b| b.name()), Some("payments"));
//! assert!(handles.stale_if_error.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! Every service the layer makes, and every clone, shares the parts' state:
//! one breaker, one budget, one limit per built layer. Build one layer per
//! upstream (each its own breaker and budget), and one per server.

use std::time::Duration;

use tower_layer::{Identity, Layer};

use crate::circuit_breaker::{self, BreakerHandle, CircuitBreakerBuilder, CircuitBreakerLayer};
use crate::deadline::{DeadlineBuilder, DeadlineLayer};
use crate::fallback::{
    StaleIfErrorBuilder, StaleIfErrorHandle, StaleIfErrorLayer, StaleIfErrorStats,
};
use crate::http::ErrorResponseLayer;
use crate::load_shed::{
    AdaptiveLimitBuilder, AdaptiveLimitLayer, LimitHandle, LimitSnapshot, ThrottleBuilder,
    ThrottleHandle, ThrottleLayer, ThrottleSnapshot,
};
use crate::retry::{self, RetryBuilder, RetryHandle, RetryLayer};
use crate::timeout::TimeoutLayer;
use crate::ConfigError;

/// Where the presets start. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Resilience;

impl Resilience {
    /// The client stack with its defaults: error responses, a 15 s
    /// deadline written to the upstream, stale-if-error, budgeted retries,
    /// a circuit breaker named `"upstream"`, adaptive throttling.
    pub fn client() -> ClientBuilder {
        ClientBuilder {
            error_response: ErrorResponseLayer::new(),
            deadline: DeadlineLayer::client(),
            stale_if_error: StaleIfErrorLayer::builder(),
            retry: RetryLayer::builder(),
            breaker: CircuitBreakerLayer::builder().name("upstream"),
            throttle: ThrottleLayer::builder(),
            timeout: Identity::new(),
        }
    }

    /// The server stack with its defaults: error responses, a 15 s
    /// deadline shortened by the caller's header, an adaptive concurrency
    /// limit.
    pub fn server() -> ServerBuilder {
        ServerBuilder {
            error_response: ErrorResponseLayer::new(),
            deadline: DeadlineLayer::server(),
            limit: AdaptiveLimitLayer::builder(),
            timeout: Identity::new(),
        }
    }
}

/// A part of a preset: a layer's builder (or a layer) that
/// [`build`](ClientBuilder::build) checks and turns into the layer, or
/// [`Identity`] for a part turned off.
pub trait Part {
    /// The layer it becomes.
    type Layer;

    /// Checks the part's settings and builds its layer, keeping its handle
    /// (if it has state) in `handles`.
    fn build_part(self, handles: &mut Handles) -> Result<Self::Layer, ConfigError>;

    /// The built layer, once the client preset knows that its retry part
    /// is on, below this one. A deadline then hands the request's
    /// `Deadline` and header to the retry layer, which writes them into the
    /// first attempt after copying the request's head for later ones.
    /// Every other part is unchanged.
    #[doc(hidden)]
    fn above_retry(layer: Self::Layer) -> Self::Layer {
        layer
    }
}

/// Parts that are layers already, with no state to hand out.
macro_rules! ready_part {
    ($($ty:ty),* $(,)?) => {$(
        impl Part for $ty {
            type Layer = Self;

            fn build_part(self, _: &mut Handles) -> Result<Self, ConfigError> {
                Ok(self)
            }
        }
    )*};
}

ready_part!(Identity);

impl Part for TimeoutLayer {
    type Layer = Self;

    /// A zero timeout fails every request that is not ready at once: in a
    /// preset it is always a mistake.
    fn build_part(self, _: &mut Handles) -> Result<Self, ConfigError> {
        if self.timeout().is_zero() {
            return Err(ConfigError::new(
                "timeout.timeout",
                "must be greater than zero",
            ));
        }
        Ok(self)
    }
}

impl<C> Part for ErrorResponseLayer<C> {
    type Layer = Self;

    fn build_part(self, _: &mut Handles) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

impl Part for DeadlineBuilder {
    type Layer = DeadlineLayer;

    fn build_part(self, _: &mut Handles) -> Result<DeadlineLayer, ConfigError> {
        self.build()
    }

    fn above_retry(layer: DeadlineLayer) -> DeadlineLayer {
        layer.above_retry()
    }
}

/// Builders of stateful layers: built, and their handle kept in `field`.
macro_rules! stateful_part {
    ($($builder:ident => $layer:ident, $field:ident;)*) => {$(
        impl<C> Part for $builder<C> {
            type Layer = $layer<C>;

            fn build_part(self, handles: &mut Handles) -> Result<Self::Layer, ConfigError> {
                let layer = self.build()?;
                handles.$field = Some(layer.handle());
                Ok(layer)
            }
        }
    )*};
}

stateful_part! {
    StaleIfErrorBuilder => StaleIfErrorLayer, stale_if_error;
    RetryBuilder => RetryLayer, retry;
    CircuitBreakerBuilder => CircuitBreakerLayer, breaker;
    ThrottleBuilder => ThrottleLayer, throttle;
    AdaptiveLimitBuilder => AdaptiveLimitLayer, limit;
}

/// A part that can take a classifier: what a preset's `classifier` method
/// gives to every part at once. The parts with a classifier get the new
/// one; the others (a deadline, a timeout, a part turned off) are
/// unchanged.
pub trait WithClassifier<C> {
    /// The part with `C` as its classifier.
    type Output;

    /// Replaces the part's classifier with `classifier`.
    fn with_classifier(self, classifier: C) -> Self::Output;
}

/// Parts with no classifier.
macro_rules! unclassified_part {
    ($($ty:ty),* $(,)?) => {$(
        impl<C> WithClassifier<C> for $ty {
            type Output = Self;

            fn with_classifier(self, _: C) -> Self {
                self
            }
        }
    )*};
}

unclassified_part!(Identity, TimeoutLayer, DeadlineBuilder);

/// Parts whose classifier is their one type parameter.
macro_rules! classified_part {
    ($($ty:ident),* $(,)?) => {$(
        impl<Old, C> WithClassifier<C> for $ty<Old> {
            type Output = $ty<C>;

            fn with_classifier(self, classifier: C) -> $ty<C> {
                self.classifier(classifier)
            }
        }
    )*};
}

classified_part!(
    ErrorResponseLayer,
    StaleIfErrorBuilder,
    RetryBuilder,
    CircuitBreakerBuilder,
    ThrottleBuilder,
    AdaptiveLimitBuilder,
);

/// The handles of a built preset's stateful parts; `None` for a part
/// turned off (or not in that preset).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Handles {
    /// The circuit breaker's.
    pub breaker: Option<BreakerHandle>,
    /// The retry layer's (its budget, its hedge delay).
    pub retry: Option<RetryHandle>,
    /// The client throttle's.
    pub throttle: Option<ThrottleHandle>,
    /// The stale-if-error store's.
    pub stale_if_error: Option<StaleIfErrorHandle>,
    /// The server's adaptive concurrency limit's.
    pub limit: Option<LimitHandle>,
}

impl Handles {
    /// Every part's snapshot now; with the `serde` feature it serializes,
    /// for a status route.
    pub fn snapshot(&self) -> ResilienceSnapshot {
        ResilienceSnapshot {
            breaker: self.breaker.as_ref().map(BreakerHandle::snapshot),
            retry: self.retry.as_ref().map(RetryHandle::snapshot),
            throttle: self.throttle.as_ref().map(ThrottleHandle::snapshot),
            stale_if_error: self.stale_if_error.as_ref().map(StaleIfErrorHandle::stats),
            limit: self.limit.as_ref().map(LimitHandle::snapshot),
        }
    }
}

/// A built preset's state at one moment, from [`Handles::snapshot`]; a
/// part turned off is `None` (`null` in JSON).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ResilienceSnapshot {
    /// The circuit breaker's.
    pub breaker: Option<circuit_breaker::BreakerSnapshot>,
    /// The retry layer's.
    pub retry: Option<retry::RetrySnapshot>,
    /// The client throttle's.
    pub throttle: Option<ThrottleSnapshot>,
    /// The stale-if-error store's.
    pub stale_if_error: Option<StaleIfErrorStats>,
    /// The adaptive concurrency limit's.
    pub limit: Option<LimitSnapshot>,
}

/// The old name of [`ResilienceSnapshot`].
#[deprecated(since = "0.1.0", note = "renamed `ResilienceSnapshot`")]
pub type Snapshot = ResilienceSnapshot;

/// Builds the client stack; from [`Resilience::client()`]. The type
/// parameters are the parts, each a builder or [`Identity`] (off).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ClientBuilder<
    E = ErrorResponseLayer,
    D = DeadlineBuilder,
    F = StaleIfErrorBuilder,
    R = RetryBuilder,
    B = CircuitBreakerBuilder,
    T = ThrottleBuilder,
    A = Identity,
> {
    error_response: E,
    deadline: D,
    stale_if_error: F,
    retry: R,
    breaker: B,
    throttle: T,
    timeout: A,
}

/// Replaces one part of a builder, keeping the others.
macro_rules! with_part {
    ($builder:ident { $($field:ident),* } $self:ident . $set:ident = $value:expr) => {
        $builder {
            $set: $value,
            $($field: $self.$field),*
        }
    };
}

impl<E, D, F, R, B, T, A> ClientBuilder<E, D, F, R, B, T, A> {
    /// How errors become responses (default [`ErrorResponseLayer::new()`]).
    pub fn error_response<C>(
        self,
        layer: ErrorResponseLayer<C>,
    ) -> ClientBuilder<ErrorResponseLayer<C>, D, F, R, B, T, A> {
        with_part!(ClientBuilder { deadline, stale_if_error, retry, breaker, throttle, timeout }
            self.error_response = layer)
    }

    /// No error responses: failures stay errors (`BoxError`), for code that
    /// downcasts them; an upstream's `502` passes through.
    pub fn without_error_response(self) -> ClientBuilder<Identity, D, F, R, B, T, A> {
        with_part!(ClientBuilder { deadline, stale_if_error, retry, breaker, throttle, timeout }
            self.error_response = Identity::new())
    }

    /// The total budget (default [`DeadlineLayer::client()`]: 15 s,
    /// written to `x-request-timeout-ms`). A proxy without
    /// [`Resilience::server()`] above it also reads its caller's budget
    /// with [`read_headers(true)`](DeadlineBuilder::read_headers); under
    /// the server stack, whose deadline reads it, the client's is bounded
    /// by that one's [`Deadline`](crate::deadline::Deadline).
    pub fn deadline(
        self,
        builder: DeadlineBuilder,
    ) -> ClientBuilder<E, DeadlineBuilder, F, R, B, T, A> {
        with_part!(ClientBuilder { error_response, stale_if_error, retry, breaker, throttle, timeout }
            self.deadline = builder)
    }

    /// No total deadline.
    pub fn without_deadline(self) -> ClientBuilder<E, Identity, F, R, B, T, A> {
        with_part!(ClientBuilder { error_response, stale_if_error, retry, breaker, throttle, timeout }
            self.deadline = Identity::new())
    }

    /// The stale-if-error store (default [`StaleIfErrorLayer::builder()`]).
    pub fn stale_if_error<C>(
        self,
        builder: StaleIfErrorBuilder<C>,
    ) -> ClientBuilder<E, D, StaleIfErrorBuilder<C>, R, B, T, A> {
        with_part!(ClientBuilder { error_response, deadline, retry, breaker, throttle, timeout }
            self.stale_if_error = builder)
    }

    /// No stale copies: nothing is stored.
    pub fn without_stale_if_error(self) -> ClientBuilder<E, D, Identity, R, B, T, A> {
        with_part!(ClientBuilder { error_response, deadline, retry, breaker, throttle, timeout }
            self.stale_if_error = Identity::new())
    }

    /// The retry layer (default [`RetryLayer::builder()`]).
    pub fn retry<C>(
        self,
        builder: RetryBuilder<C>,
    ) -> ClientBuilder<E, D, F, RetryBuilder<C>, B, T, A> {
        with_part!(ClientBuilder { error_response, deadline, stale_if_error, breaker, throttle, timeout }
            self.retry = builder)
    }

    /// No retries. The inner service then gets the request's own body
    /// type rather than a [`ReplayBody`](crate::retry::ReplayBody).
    pub fn without_retry(self) -> ClientBuilder<E, D, F, Identity, B, T, A> {
        with_part!(ClientBuilder { error_response, deadline, stale_if_error, breaker, throttle, timeout }
            self.retry = Identity::new())
    }

    /// The circuit breaker (default [`CircuitBreakerLayer::builder()`]
    /// named `"upstream"`; name it after the upstream it guards).
    pub fn circuit_breaker<C>(
        self,
        builder: CircuitBreakerBuilder<C>,
    ) -> ClientBuilder<E, D, F, R, CircuitBreakerBuilder<C>, T, A> {
        with_part!(ClientBuilder { error_response, deadline, stale_if_error, retry, throttle, timeout }
            self.breaker = builder)
    }

    /// No circuit breaker.
    pub fn without_circuit_breaker(self) -> ClientBuilder<E, D, F, R, Identity, T, A> {
        with_part!(ClientBuilder { error_response, deadline, stale_if_error, retry, throttle, timeout }
            self.breaker = Identity::new())
    }

    /// The client throttle (default [`ThrottleLayer::builder()`]).
    pub fn throttle<C>(
        self,
        builder: ThrottleBuilder<C>,
    ) -> ClientBuilder<E, D, F, R, B, ThrottleBuilder<C>, A> {
        with_part!(ClientBuilder { error_response, deadline, stale_if_error, retry, breaker, timeout }
            self.throttle = builder)
    }

    /// No client throttle.
    pub fn without_throttle(self) -> ClientBuilder<E, D, F, R, B, Identity, A> {
        with_part!(ClientBuilder { error_response, deadline, stale_if_error, retry, breaker, timeout }
            self.throttle = Identity::new())
    }

    /// A timeout for each attempt (off by default: the deadline bounds the
    /// whole request). Set it below the deadline so that a hung attempt
    /// leaves time for a retry.
    pub fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> ClientBuilder<E, D, F, R, B, T, TimeoutLayer> {
        with_part!(ClientBuilder { error_response, deadline, stale_if_error, retry, breaker, throttle }
            self.timeout = TimeoutLayer::new(timeout))
    }

    /// No attempt timeout (the default).
    pub fn without_attempt_timeout(self) -> ClientBuilder<E, D, F, R, B, T, Identity> {
        with_part!(ClientBuilder { error_response, deadline, stale_if_error, retry, breaker, throttle }
            self.timeout = Identity::new())
    }

    /// One classifier for every part that classifies (error responses,
    /// stale-if-error, retry, breaker, throttle), given once instead of to
    /// each builder. It replaces theirs, so call it after the parts you
    /// set with their own builders; a part set afterwards keeps the
    /// classifier its builder has.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_steady::ConfigError> {
    /// use tower_steady::classify::HttpClassifier;
    /// use tower_steady::Resilience;
    ///
    /// # let my_classifier = HttpClassifier::new();
    /// let layer = Resilience::client().classifier(my_classifier).build()?;
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn classifier<C>(
        self,
        classifier: C,
    ) -> ClientBuilder<E::Output, D, F::Output, R::Output, B::Output, T::Output, A>
    where
        C: Clone,
        E: WithClassifier<C>,
        F: WithClassifier<C>,
        R: WithClassifier<C>,
        B: WithClassifier<C>,
        T: WithClassifier<C>,
    {
        ClientBuilder {
            error_response: self.error_response.with_classifier(classifier.clone()),
            deadline: self.deadline,
            stale_if_error: self.stale_if_error.with_classifier(classifier.clone()),
            retry: self.retry.with_classifier(classifier.clone()),
            breaker: self.breaker.with_classifier(classifier.clone()),
            throttle: self.throttle.with_classifier(classifier),
            timeout: self.timeout,
        }
    }
}

impl<E, D, F, R, B, T, A> ClientBuilder<E, D, F, R, B, T, A>
where
    E: Part,
    D: Part,
    F: Part,
    R: Part,
    B: Part,
    T: Part,
    A: Part,
{
    /// Checks every part and builds the layer. The first invalid setting
    /// is the error, named by its layer and field (`retry.max_attempts`).
    // Seven type parameters, one per part, are what the lint counts.
    #[allow(clippy::type_complexity)]
    pub fn build(self) -> Result<BuiltClient<E, D, F, R, B, T, A>, ConfigError> {
        let mut handles = Handles::default();
        let error_response = self.error_response.build_part(&mut handles)?;
        let mut deadline = self.deadline.build_part(&mut handles)?;
        let stale_if_error = self.stale_if_error.build_part(&mut handles)?;
        let retry = self.retry.build_part(&mut handles)?;
        if handles.retry.is_some() {
            // Between the two only stale-if-error, which passes the
            // request on from its own `call`.
            deadline = D::above_retry(deadline);
        }
        Ok(ClientLayer {
            error_response,
            deadline,
            stale_if_error,
            retry,
            breaker: self.breaker.build_part(&mut handles)?,
            throttle: self.throttle.build_part(&mut handles)?,
            timeout: self.timeout.build_part(&mut handles)?,
            handles,
        })
    }
}

/// What a client builder with these parts builds.
type BuiltClient<E, D, F, R, B, T, A> = ClientLayer<
    <E as Part>::Layer,
    <D as Part>::Layer,
    <F as Part>::Layer,
    <R as Part>::Layer,
    <B as Part>::Layer,
    <T as Part>::Layer,
    <A as Part>::Layer,
>;

/// What a server builder with these parts builds.
type BuiltServer<E, D, L, A> =
    ServerLayer<<E as Part>::Layer, <D as Part>::Layer, <L as Part>::Layer, <A as Part>::Layer>;

/// The client stack as one [`Layer`]; from [`ClientBuilder::build`].
#[derive(Debug, Clone)]
pub struct ClientLayer<E, D, F, R, B, T, A> {
    error_response: E,
    deadline: D,
    stale_if_error: F,
    retry: R,
    breaker: B,
    throttle: T,
    timeout: A,
    handles: Handles,
}

impl<E, D, F, R, B, T, A> ClientLayer<E, D, F, R, B, T, A> {
    /// The handles of its stateful parts (shared with every service the
    /// layer makes).
    pub fn handles(&self) -> &Handles {
        &self.handles
    }
}

impl<S, E, D, F, R, B, T, A> Layer<S> for ClientLayer<E, D, F, R, B, T, A>
where
    A: Layer<S>,
    T: Layer<A::Service>,
    B: Layer<T::Service>,
    R: Layer<B::Service>,
    F: Layer<R::Service>,
    D: Layer<F::Service>,
    E: Layer<D::Service>,
{
    type Service = E::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let s = self.timeout.layer(inner);
        let s = self.throttle.layer(s);
        let s = self.breaker.layer(s);
        let s = self.retry.layer(s);
        let s = self.stale_if_error.layer(s);
        let s = self.deadline.layer(s);
        self.error_response.layer(s)
    }
}

/// Builds the server stack; from [`Resilience::server()`]. The type
/// parameters are the parts, each a builder or [`Identity`] (off).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ServerBuilder<
    E = ErrorResponseLayer,
    D = DeadlineBuilder,
    L = AdaptiveLimitBuilder,
    A = Identity,
> {
    error_response: E,
    deadline: D,
    limit: L,
    timeout: A,
}

impl<E, D, L, A> ServerBuilder<E, D, L, A> {
    /// How errors become responses (default [`ErrorResponseLayer::new()`]).
    pub fn error_response<C>(
        self,
        layer: ErrorResponseLayer<C>,
    ) -> ServerBuilder<ErrorResponseLayer<C>, D, L, A> {
        with_part!(ServerBuilder { deadline, limit, timeout } self.error_response = layer)
    }

    /// No error responses: failures stay errors (`BoxError`). An axum
    /// `Router` needs a layer that answers them, such as
    /// `HandleErrorLayer`, in its place.
    pub fn without_error_response(self) -> ServerBuilder<Identity, D, L, A> {
        with_part!(ServerBuilder { deadline, limit, timeout } self.error_response = Identity::new())
    }

    /// The request budget (default [`DeadlineLayer::server()`]: 15 s, or
    /// what the caller's `x-request-timeout-ms` or `grpc-timeout` leaves).
    pub fn deadline(self, builder: DeadlineBuilder) -> ServerBuilder<E, DeadlineBuilder, L, A> {
        with_part!(ServerBuilder { error_response, limit, timeout } self.deadline = builder)
    }

    /// No deadline.
    pub fn without_deadline(self) -> ServerBuilder<E, Identity, L, A> {
        with_part!(ServerBuilder { error_response, limit, timeout } self.deadline = Identity::new())
    }

    /// The concurrency limit (default [`AdaptiveLimitLayer::builder()`];
    /// [`fixed`](AdaptiveLimitBuilder::fixed) for a fixed one).
    pub fn limit<C>(
        self,
        builder: AdaptiveLimitBuilder<C>,
    ) -> ServerBuilder<E, D, AdaptiveLimitBuilder<C>, A> {
        with_part!(ServerBuilder { error_response, deadline, timeout } self.limit = builder)
    }

    /// No concurrency limit: nothing is shed.
    pub fn without_limit(self) -> ServerBuilder<E, D, Identity, A> {
        with_part!(ServerBuilder { error_response, deadline, timeout } self.limit = Identity::new())
    }

    /// A timeout for the handler alone (off by default: the deadline
    /// bounds every request): a [`TimeoutLayer::handler`], whose expiry is
    /// logged and answered as a handler timeout. Zero is a [`ConfigError`]
    /// at [`build`](Self::build).
    pub fn timeout(self, timeout: Duration) -> ServerBuilder<E, D, L, TimeoutLayer> {
        with_part!(ServerBuilder { error_response, deadline, limit } self.timeout = TimeoutLayer::handler(timeout))
    }

    /// No handler timeout (the default).
    pub fn without_timeout(self) -> ServerBuilder<E, D, L, Identity> {
        with_part!(ServerBuilder { error_response, deadline, limit } self.timeout = Identity::new())
    }

    /// One classifier for every part that classifies (error responses and
    /// the limit), given once. It replaces theirs, so call it after the
    /// parts you set with their own builders.
    pub fn classifier<C>(self, classifier: C) -> ServerBuilder<E::Output, D, L::Output, A>
    where
        C: Clone,
        E: WithClassifier<C>,
        L: WithClassifier<C>,
    {
        ServerBuilder {
            error_response: self.error_response.with_classifier(classifier.clone()),
            deadline: self.deadline,
            limit: self.limit.with_classifier(classifier),
            timeout: self.timeout,
        }
    }
}

impl<E: Part, D: Part, L: Part, A: Part> ServerBuilder<E, D, L, A> {
    /// Checks every part and builds the layer. The first invalid setting
    /// is the error, named by its layer and field.
    pub fn build(self) -> Result<BuiltServer<E, D, L, A>, ConfigError> {
        let mut handles = Handles::default();
        Ok(ServerLayer {
            error_response: self.error_response.build_part(&mut handles)?,
            deadline: self.deadline.build_part(&mut handles)?,
            limit: self.limit.build_part(&mut handles)?,
            timeout: self.timeout.build_part(&mut handles)?,
            handles,
        })
    }
}

/// The server stack as one [`Layer`]; from [`ServerBuilder::build`].
#[derive(Debug, Clone)]
pub struct ServerLayer<E, D, L, A> {
    error_response: E,
    deadline: D,
    limit: L,
    timeout: A,
    handles: Handles,
}

impl<E, D, L, A> ServerLayer<E, D, L, A> {
    /// The handles of its stateful parts (shared with every service the
    /// layer makes).
    pub fn handles(&self) -> &Handles {
        &self.handles
    }
}

impl<S, E, D, L, A> Layer<S> for ServerLayer<E, D, L, A>
where
    A: Layer<S>,
    L: Layer<A::Service>,
    D: Layer<L::Service>,
    E: Layer<D::Service>,
{
    type Service = E::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let s = self.timeout.layer(inner);
        let s = self.limit.layer(s);
        let s = self.deadline.layer(s);
        self.error_response.layer(s)
    }
}
