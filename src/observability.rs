//! What the layers report: `tracing` events and, with the `metrics`
//! feature, counters, gauges and histograms through the [`metrics`] facade.
//!
//! # Metrics
//!
//! Off by default; turn on the `metrics` feature and install any `metrics`
//! recorder (`metrics-exporter-prometheus`, an OpenTelemetry bridge, ...).
//! Without a recorder every call is a no-op: with the feature on and no
//! recorder, the retry layer (the one that reports on every request)
//! measured 5–8% slower than without it (in the crate's benchmarks). Every name starts with
//! `tower_steady_`; labels take a bounded set of values (a failure kind, a
//! status, a state, a breaker's name), never a path or an address.
//! [`describe_metrics`] registers the descriptions and units below with the
//! installed recorder.
//!
//! | name | type | labels | when |
//! |---|---|---|---|
//! | `tower_steady_timeouts_total` | counter | | an attempt timed out ([`timeout`](crate::timeout)) |
//! | `tower_steady_deadline_exceeded_total` | counter | `when`: `arrival`, `in_flight` | a request's deadline passed ([`deadline`](crate::deadline)) |
//! | `tower_steady_requests_total` | counter | `retry`, `outcome`: `success` or a [failure kind](crate::classify::FailureKind::as_str) | a request left the retry layer, after its retries |
//! | `tower_steady_request_duration_seconds` | histogram | `retry`, `outcome` | the same, its whole time, retries and backoff included; only with [`record_durations`](crate::retry::RetryBuilder::record_durations) (a clock read per request) |
//! | `tower_steady_attempt_duration_seconds` | histogram | `retry`, `outcome` | an attempt ended (a retry or hedge is one too), its time; only with [`record_durations`](crate::retry::RetryBuilder::record_durations) |
//! | `tower_steady_retries_total` | counter | `retry`, `kind`: the failure retried | a retry was sent |
//! | `tower_steady_hedges_total` | counter | `retry` | a hedge was sent |
//! | `tower_steady_retry_budget_exhausted_total` | counter | `retry`, `for`: `retry`, `hedge` | the budget refused a retry or a hedge |
//! | `tower_steady_breaker_transitions_total` | counter | `breaker`, `to`: `open`, `half_open`, `closed`, `forced_open`, `forced_closed` | a circuit breaker changed state (every `to` at 0 from the breaker's build) |
//! | `tower_steady_breaker_state` | gauge | `breaker` | its state: 0 closed, 1 half-open, 2 open, 3 forced open, 4 forced closed; set when the breaker is built and on every change |
//! | `tower_steady_breaker_rejected_total` | counter | `breaker` | a request was failed fast |
//! | `tower_steady_shed_total` | counter | `layer`: `adaptive_limit` with `limit`, or `throttle` with `throttle` | a request was shed or throttled |
//! | `tower_steady_concurrency_limit` | gauge | `limit` | the adaptive limit (or the fixed one), when the layer is built and when it changes |
//! | `tower_steady_in_flight` | gauge | `limit` | requests the adaptive limit admitted and that have not finished, on every change |
//! | `tower_steady_upstream_ejections_total` | counter | `upstreams`, `reason`: `consecutive_failures`, `unreachable`, `success_rate`, `probe_failed`, `health_check` | an endpoint was ejected |
//! | `tower_steady_upstream_readmissions_total` | counter | `upstreams` | an ejected endpoint came back |
//! | `tower_steady_upstream_healthy_endpoints` | gauge | `upstreams` | endpoints taking requests, after each change |
//! | `tower_steady_upstream_endpoints` | gauge | `upstreams` | endpoints in the set, healthy or not, after each change |
//! | `tower_steady_stale_served_total` | counter | `store`, `kind`: the failure answered | a stale copy was served |
//! | `tower_steady_fallback_served_total` | counter | `kind` | a fallback response was served |
//! | `tower_steady_error_responses_total` | counter | `status`, `kind` | an error was turned into a response ([`ErrorResponseLayer`](crate::http::ErrorResponseLayer)) |
//!
//! Each stateful layer has a name, carried as a label: a breaker's
//! `breaker` ([`CircuitBreakerBuilder::name`](crate::circuit_breaker::CircuitBreakerBuilder::name),
//! default `"default"`), a retry layer's `retry`
//! ([`RetryBuilder::name`](crate::retry::RetryBuilder::name), default
//! `"upstream"`), a stale store's `store`
//! ([`StaleIfErrorBuilder::name`](crate::fallback::StaleIfErrorBuilder::name),
//! default `"upstream"`), an adaptive limit's `limit`
//! ([`AdaptiveLimitBuilder::name`](crate::load_shed::AdaptiveLimitBuilder::name),
//! default `"server"`), a throttle's `throttle`
//! ([`ThrottleBuilder::name`](crate::load_shed::ThrottleBuilder::name),
//! default `"upstream"`) and an endpoint set's `upstreams`
//! ([`UpstreamsBuilder::name`](crate::upstream::UpstreamsBuilder::name),
//! default `"upstreams"`). So two limits or two sets in one process export
//! two series rather than overwrite one; a name is 1 to 64 ASCII letters,
//! digits, `-`, `_`, `.` or `:` (a [`ConfigError`](crate::ConfigError)
//! otherwise), a bounded label value. Their series exist from the moment
//! the layer is built (gauges at their value, counters at 0), so a rate or
//! an alert has a series to read before the first event, and every
//! metric is described (its help text and unit) from then on: install the
//! recorder before building the layers. The stateless layers' series
//! (timeouts, deadlines, fallback pages, error responses) have no instance
//! label: they count for the process, and exist from the moment a layer
//! is built or makes a service (an `ErrorResponseLayer` one series per
//! failure kind, with the status it is answered with).
//!
//! Every metric is per process, as the layers' state is: a fleet is watched
//! by scraping each process and summing (see the README).
//!
//! # Tracing
//!
//! Each layer logs under its own target. State changes (a breaker opening,
//! an endpoint ejected, a budget exhausted) are `info` or `warn`;
//! per-request decisions are `debug`; bookkeeping is `trace`. Fields keep
//! one name and one form across layers:
//!
//! | field | meaning |
//! |---|---|
//! | `attempt` | the attempt's number, 1 for the first ([`Attempt`](crate::retry::Attempt)) |
//! | `kind` | a [failure kind](crate::classify::FailureKind::as_str), as text |
//! | `status` | an HTTP status, as a number |
//! | `reason` | why a decision was taken, as a fixed text |
//! | `breaker` | the circuit breaker's name |
//! | `endpoint` | an upstream endpoint's address |
//! | `upstream` | the host name an endpoint set is resolved from |
//! | `*_ms`, `*_us`, `*_secs` | a duration, in the unit its suffix names |
//!
//! The retry layer runs each attempt in a `debug` span named `attempt`
//! (target `tower_steady::retry`, fields `attempt` and `hedge`), entered
//! while the attempt is called and polled: what the layers below it log
//! (a timeout, an ejection, a breaker opening) carries the attempt's
//! number. A span nobody subscribes to costs a check and no allocation.
//!
//! | target | level | message | fields |
//! |---|---|---|---|
//! | `tower_steady::timeout` | debug | attempt timed out | |
//! | `tower_steady::deadline` | debug | request deadline exceeded | |
//! | `tower_steady::deadline` | debug | request arrived with no time left; not calling the service | |
//! | `tower_steady::deadline` | debug | ignoring malformed deadline header | `header`, `value` |
//! | `tower_steady::retry` | debug | retrying | `attempt`, `kind`, `wait_ms` |
//! | `tower_steady::retry` | debug | not retrying | `attempt`, `kind`, `reason` |
//! | `tower_steady::retry` | info | retry budget exhausted; returning the failure | `attempt`, `kind` |
//! | `tower_steady::retry` | debug | hedging | `attempt` |
//! | `tower_steady::retry` | info | retry budget exhausted; not hedging | |
//! | `tower_steady::circuit_breaker` | warn | circuit opened: failing fast | `breaker`, `reason`, `calls`, `failures`, `slow_calls`, `open_for_ms` |
//! | `tower_steady::circuit_breaker` | info | circuit half-open: probing the upstream | `breaker` |
//! | `tower_steady::circuit_breaker` | info | circuit closed: the upstream is back | `breaker` |
//! | `tower_steady::circuit_breaker` | info | circuit state set by hand | `breaker`, `state` |
//! | `tower_steady::circuit_breaker` | debug | call turned away | `breaker`, `retry_after_ms` |
//! | `tower_steady::load_shed` | debug | request shed | `in_flight`, `limit`, `criticality` |
//! | `tower_steady::load_shed` | debug | request throttled | `probability` |
//! | `tower_steady::load_shed` | debug | concurrency limit changed | `from`, `to`, `reason` |
//! | `tower_steady::upstream` | warn | endpoint ejected | `endpoint`, `reason`, `ejections`, `duration_ms`, `healthy` |
//! | `tower_steady::upstream` | warn | endpoint ejected: health checks fail | `endpoint`, `reason`, `fails`, `healthy` |
//! | `tower_steady::upstream` | info | endpoint re-admitted after a successful probe | `endpoint`, `slow_start_ms` |
//! | `tower_steady::upstream` | info | endpoint re-admitted: health checks pass | `endpoint`, `passes` |
//! | `tower_steady::upstream` | debug | no healthy upstream | `retry_after_ms` |
//! | `tower_steady::upstream` | info | address found in DNS / address gone from DNS | `upstream`, `endpoint` |
//! | `tower_steady::fallback` | debug | stale copy served | `uri`, `kind`, `status`, `age_secs` |
//! | `tower_steady::fallback` | debug | fallback response served | `kind`, `status` |
//! | `tower_steady::http` | debug (503, 504) or warn (others) | answering an error | `status`, `kind`, `cause` |
//! | `tower_steady::http` | debug | rewriting the upstream's 502 to 503 | `status`, `upstream_status` |
//! | `tower_steady::chaos` | debug | injecting a fault | `fault` |
//!
//! Messages are for people; match on the target, the level and the fields.

//! # Handles and snapshots
//!
//! Every stateful layer hands out a handle, shared with every clone of its
//! service; the handle's snapshot is the layer's state at one moment,
//! taken with atomic loads (the stale-if-error store's size with its lock).
//!
//! | layer | handle | snapshot |
//! |---|---|---|
//! | circuit breaker | [`BreakerHandle`](crate::circuit_breaker::BreakerHandle) | [`BreakerSnapshot`](crate::circuit_breaker::BreakerSnapshot): `state`, `calls`, `failures`, `slow_calls`, `consecutive_failures`, `open_remaining_ms` |
//! | retry | [`RetryHandle`](crate::retry::RetryHandle) | [`RetrySnapshot`](crate::retry::RetrySnapshot): `retries_available`, `hedge_delay_ms` |
//! | adaptive limit | [`LimitHandle`](crate::load_shed::LimitHandle) | [`LimitSnapshot`](crate::load_shed::LimitSnapshot): `limit`, `in_flight`, `rejected`, `rejected_sheddable`, `no_load_ms` |
//! | throttle | [`ThrottleHandle`](crate::load_shed::ThrottleHandle) | [`ThrottleSnapshot`](crate::load_shed::ThrottleSnapshot): `requests`, `accepts`, `probability`, `rejected` |
//! | upstreams | [`UpstreamsHandle`](crate::upstream::UpstreamsHandle) | a list of [`EndpointSnapshot`](crate::upstream::EndpointSnapshot): `addr`, `state`, `in_flight`, `latency_ms`, `success_rate`, `ejections`, `ejected_for_ms`, `checks_failing` |
//! | stale-if-error | [`StaleIfErrorHandle`](crate::fallback::StaleIfErrorHandle) | [`StaleIfErrorStats`](crate::fallback::StaleIfErrorStats): `entries`, `bytes`, `stored`, `hits`, `misses`, `stale_served` |
//!
//! With the `serde` feature (off by default) the snapshots, and the
//! breaker's and endpoints' states, implement `serde::Serialize` with the
//! field names above: states as snake_case text (`"half_open"`,
//! `"slow_start"`), durations as milliseconds in a float (`"latency_ms":
//! 12.5`), an address as `"10.0.0.7:8080"`, nothing known as `null`. A
//! status route serves them as they are:
//!
//! ```
//! # #[cfg(all(feature = "serde", feature = "circuit-breaker", feature = "load-shed"))]
//! # fn main() {
//! use axum::routing::get;
//! use axum::Router;
//! use tower_steady::circuit_breaker::CircuitBreakerLayer;
//! use tower_steady::load_shed::AdaptiveLimitLayer;
//!
//! let breaker = CircuitBreakerLayer::builder().name("search").build().unwrap();
//! let limit = AdaptiveLimitLayer::new();
//! let (b, l) = (breaker.handle(), limit.handle());
//! let status = move || async move {
//!     let body = serde_json::json!({
//!         "breakers": { b.name(): b.snapshot() },
//!         "limit": l.snapshot(),
//!     });
//!     ([("content-type", "application/json")], body.to_string())
//! };
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         tower::ServiceBuilder::new()
//!             .layer(tower_steady::http::ErrorResponseLayer::new())
//!             .layer(breaker)
//!             .layer(limit),
//!     )
//!     // Added after the layers: the status route is never shed.
//!     .route("/status", get(status));
//! # let _ = app;
//! # }
//! # #[cfg(not(all(feature = "serde", feature = "circuit-breaker", feature = "load-shed")))]
//! # fn main() {}
//! ```
//!
//! Serialization only: a snapshot describes a moment, it is not restored.

/// Whether `name` can name a layer's instance in logs and metric labels:
/// 1 to 64 ASCII letters, digits, `-`, `_`, `.` or `:`. Every stateful
/// layer's builder checks its name with it.
#[allow(dead_code)] // used by whichever stateful layers are compiled
pub(crate) fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// One series of one named instance of a layer (a gauge or a counter with
/// its labels), its key built once when the layer is built, so that the
/// request path neither formats nor allocates a label. Without the
/// `metrics` feature it is empty and does nothing.
#[derive(Debug, Clone)]
#[allow(dead_code)] // used by whichever stateful layers are compiled
pub(crate) struct Series {
    #[cfg(feature = "metrics")]
    key: metrics::Key,
}

#[allow(dead_code, unused_variables)]
impl Series {
    /// The series of `metric` with `labels`.
    pub(crate) fn new(metric: &'static str, labels: &[(&'static str, &str)]) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            key: metrics::Key::from_parts(
                metric,
                labels
                    .iter()
                    .map(|(k, v)| metrics::Label::new(*k, v.to_string()))
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// Sets it, as a gauge.
    #[inline]
    pub(crate) fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| r.register_gauge(&self.key, &SERIES_METADATA).set(value));
    }

    /// Adds `n`, as a counter (0 makes it exist).
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| r.register_counter(&self.key, &SERIES_METADATA).increment(n));
    }
}

impl Series {
    /// Records `value`, as a histogram.
    #[inline]
    #[allow(dead_code, unused_variables)]
    pub(crate) fn record(&self, value: f64) {
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| {
            r.register_histogram(&self.key, &SERIES_METADATA)
                .record(value)
        });
    }
}

/// The outcome labels of the retry layer's series, in the order of
/// [`outcome_index`].
#[allow(dead_code)]
const OUTCOMES: [&str; 14] = [
    "success",
    "bad_gateway",
    "unavailable",
    "gateway_timeout",
    "too_many_requests",
    "server_error",
    "timeout",
    "deadline_exceeded",
    "connect",
    "reset",
    "rejected",
    "protocol",
    "other",
    "unsupported",
];

/// The place of an outcome (`None`: success) in [`OUTCOMES`].
#[allow(dead_code)]
fn outcome_index(kind: Option<crate::classify::FailureKind>) -> usize {
    use crate::classify::FailureKind::*;
    match kind {
        None => 0,
        Some(BadGateway) => 1,
        Some(Unavailable) => 2,
        Some(GatewayTimeout) => 3,
        Some(TooManyRequests) => 4,
        Some(ServerError) => 5,
        Some(Timeout) => 6,
        Some(DeadlineExceeded) => 7,
        Some(Connect) => 8,
        Some(Reset) => 9,
        Some(Rejected) => 10,
        Some(Protocol) => 11,
        Some(Other) => 12,
        Some(Unsupported) => 13,
    }
}

/// The series of one named retry layer (label `retry`), built with it:
/// one per outcome for the requests, their durations and the attempts',
/// one per failure kind for the retries. Empty without the `metrics`
/// feature.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct RetryMetrics {
    #[cfg(feature = "metrics")]
    requests: Vec<Series>,
    #[cfg(feature = "metrics")]
    durations: Vec<Series>,
    #[cfg(feature = "metrics")]
    attempts: Vec<Series>,
    #[cfg(feature = "metrics")]
    retries: Vec<Series>,
    #[cfg(feature = "metrics")]
    hedges: Series,
    #[cfg(feature = "metrics")]
    exhausted: [Series; 2],
}

#[allow(dead_code, unused_variables)]
impl RetryMetrics {
    /// The layer's series; the counters made to exist at zero.
    pub(crate) fn new(name: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let by = |metric: &'static str, label: &'static str| -> Vec<Series> {
                OUTCOMES
                    .iter()
                    .map(|outcome| Series::new(metric, &[("retry", name), (label, outcome)]))
                    .collect()
            };
            emit::described();
            let metrics = Self {
                requests: by("tower_steady_requests_total", "outcome"),
                durations: by("tower_steady_request_duration_seconds", "outcome"),
                attempts: by("tower_steady_attempt_duration_seconds", "outcome"),
                // Only failures are retried: index 0 (success) is unused.
                retries: by("tower_steady_retries_total", "kind"),
                hedges: Series::new("tower_steady_hedges_total", &[("retry", name)]),
                exhausted: ["retry", "hedge"].map(|for_| {
                    Series::new(
                        "tower_steady_retry_budget_exhausted_total",
                        &[("retry", name), ("for", for_)],
                    )
                }),
            };
            for series in metrics.requests.iter().chain(&metrics.retries[1..]) {
                series.add(0);
            }
            metrics.hedges.add(0);
            for series in &metrics.exhausted {
                series.add(0);
            }
            metrics
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// A request left the layer, after its retries.
    #[inline]
    pub(crate) fn request(
        &self,
        kind: Option<crate::classify::FailureKind>,
        elapsed: Option<std::time::Duration>,
    ) {
        #[cfg(feature = "metrics")]
        {
            let i = outcome_index(kind);
            self.requests[i].add(1);
            if let Some(elapsed) = elapsed {
                self.durations[i].record(elapsed.as_secs_f64());
            }
        }
    }

    /// An attempt ended.
    pub(crate) fn attempt(
        &self,
        kind: Option<crate::classify::FailureKind>,
        elapsed: std::time::Duration,
    ) {
        #[cfg(feature = "metrics")]
        self.attempts[outcome_index(kind)].record(elapsed.as_secs_f64());
    }

    /// A retry of a failure of `kind` was sent.
    pub(crate) fn retry(&self, kind: crate::classify::FailureKind) {
        #[cfg(feature = "metrics")]
        self.retries[outcome_index(Some(kind))].add(1);
    }

    /// A hedge was sent.
    pub(crate) fn hedge(&self) {
        #[cfg(feature = "metrics")]
        self.hedges.add(1);
    }

    /// The budget refused a retry (`hedge`: a hedge).
    pub(crate) fn budget_exhausted(&self, hedge: bool) {
        #[cfg(feature = "metrics")]
        self.exhausted[usize::from(hedge)].add(1);
    }
}

#[cfg(feature = "metrics")]
static SERIES_METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new("tower_steady", metrics::Level::INFO, Some(module_path!()));

#[cfg(feature = "metrics")]
pub use self::enabled::describe_metrics;

#[cfg(feature = "metrics")]
mod enabled {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

    /// Registers the description and unit of every metric in the
    /// [table](super#metrics) with the installed recorder. Every layer
    /// does it when it is built; call it yourself only if the recorder is
    /// installed after the layers are built.
    pub fn describe_metrics() {
        describe_counter!("tower_steady_timeouts_total", "Attempts that timed out.");
        describe_counter!(
            "tower_steady_deadline_exceeded_total",
            "Requests whose deadline passed, on arrival or in flight."
        );
        describe_counter!(
            "tower_steady_requests_total",
            "Requests that left the retry layer, by final outcome."
        );
        describe_histogram!(
            "tower_steady_request_duration_seconds",
            Unit::Seconds,
            "Time from a request entering the retry layer to its final outcome."
        );
        describe_histogram!(
            "tower_steady_attempt_duration_seconds",
            Unit::Seconds,
            "Time of one attempt (the first, a retry or a hedge), by its outcome."
        );
        describe_counter!(
            "tower_steady_retries_total",
            "Retries sent, by the failure retried."
        );
        describe_counter!("tower_steady_hedges_total", "Hedged requests sent.");
        describe_counter!(
            "tower_steady_retry_budget_exhausted_total",
            "Retries or hedges the retry budget refused."
        );
        describe_counter!(
            "tower_steady_breaker_transitions_total",
            "Circuit breaker state changes, by breaker and new state."
        );
        describe_gauge!(
            "tower_steady_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open, 3 forced open, 4 forced closed."
        );
        describe_counter!(
            "tower_steady_breaker_rejected_total",
            "Requests failed fast by an open circuit breaker."
        );
        describe_counter!(
            "tower_steady_shed_total",
            "Requests shed or throttled, by layer."
        );
        describe_gauge!(
            "tower_steady_concurrency_limit",
            "The adaptive concurrency limit."
        );
        describe_gauge!(
            "tower_steady_in_flight",
            "Requests the adaptive limit admitted that have not finished."
        );
        describe_gauge!(
            "tower_steady_upstream_endpoints",
            "Endpoints in the set, healthy or not."
        );
        describe_counter!(
            "tower_steady_upstream_ejections_total",
            "Endpoints ejected, by reason."
        );
        describe_counter!(
            "tower_steady_upstream_readmissions_total",
            "Ejected endpoints taken back."
        );
        describe_gauge!(
            "tower_steady_upstream_healthy_endpoints",
            "Endpoints taking requests."
        );
        describe_counter!(
            "tower_steady_stale_served_total",
            "Stale copies served after a failure, by failure kind."
        );
        describe_counter!(
            "tower_steady_fallback_served_total",
            "Fallback responses served, by failure kind."
        );
        describe_counter!(
            "tower_steady_error_responses_total",
            "Errors turned into responses, by status and failure kind."
        );
    }
}

/// The calls the layers make. Each is a no-op without the `metrics` feature,
/// and costs a load of the global recorder with it and no recorder.
#[allow(dead_code, unused_variables)]
pub(crate) mod emit {
    #[cfg(feature = "metrics")]
    use metrics::{counter, gauge};

    /// A layer was built: every metric's description is registered with the
    /// installed recorder (again; recorders keep the last), so that a
    /// scrape describes what it shows without the app calling
    /// [`describe_metrics`](super::describe_metrics) itself.
    pub(crate) fn described() {
        #[cfg(feature = "metrics")]
        super::describe_metrics();
    }

    /// A timeout layer made a service: its counter exists from now on.
    pub(crate) fn timeout_built() {
        #[cfg(feature = "metrics")]
        {
            described();
            counter!("tower_steady_timeouts_total").increment(0);
        }
    }

    /// A deadline layer was built.
    pub(crate) fn deadline_built() {
        #[cfg(feature = "metrics")]
        {
            described();
            for when in ["arrival", "in_flight"] {
                counter!("tower_steady_deadline_exceeded_total", "when" => when).increment(0);
            }
        }
    }

    /// A fallback layer was built: one series per failure kind it may
    /// answer.
    pub(crate) fn fallback_built() {
        #[cfg(feature = "metrics")]
        {
            described();
            for kind in &super::OUTCOMES[1..] {
                counter!("tower_steady_fallback_served_total", "kind" => *kind).increment(0);
            }
        }
    }

    /// An error response layer made a service: one series per status and
    /// failure kind it may answer with (`pairs`).
    pub(crate) fn error_responses_built(pairs: &[(&'static str, &'static str)]) {
        #[cfg(feature = "metrics")]
        {
            described();
            for (status, kind) in pairs {
                counter!("tower_steady_error_responses_total", "status" => *status, "kind" => *kind)
                    .increment(0);
            }
        }
    }

    pub(crate) fn timeout() {
        #[cfg(feature = "metrics")]
        counter!("tower_steady_timeouts_total").increment(1);
    }

    pub(crate) fn deadline_exceeded(when: &'static str) {
        #[cfg(feature = "metrics")]
        counter!("tower_steady_deadline_exceeded_total", "when" => when).increment(1);
    }

    /// `state`: 0 closed, 1 half-open, 2 open, 3 forced open, 4 forced
    /// closed.
    pub(crate) fn breaker_transition(breaker: &std::sync::Arc<str>, to: &'static str, state: u8) {
        #[cfg(feature = "metrics")]
        {
            counter!("tower_steady_breaker_transitions_total", "breaker" => breaker.clone(), "to" => to)
                .increment(1);
            breaker_state(breaker, state);
        }
    }

    /// A breaker was built: its state gauge (closed) and its counters (0)
    /// exist from now on.
    pub(crate) fn breaker_built(breaker: &std::sync::Arc<str>) {
        #[cfg(feature = "metrics")]
        {
            described();
            breaker_state(breaker, 0);
            counter!("tower_steady_breaker_rejected_total", "breaker" => breaker.clone())
                .increment(0);
            for to in [
                "open",
                "half_open",
                "closed",
                "forced_open",
                "forced_closed",
            ] {
                counter!("tower_steady_breaker_transitions_total", "breaker" => breaker.clone(), "to" => to)
                    .increment(0);
            }
        }
    }

    pub(crate) fn breaker_state(breaker: &std::sync::Arc<str>, state: u8) {
        #[cfg(feature = "metrics")]
        gauge!("tower_steady_breaker_state", "breaker" => breaker.clone()).set(f64::from(state));
    }

    pub(crate) fn breaker_rejected(breaker: &std::sync::Arc<str>) {
        #[cfg(feature = "metrics")]
        counter!("tower_steady_breaker_rejected_total", "breaker" => breaker.clone()).increment(1);
    }

    /// A stale copy was served after a failure (a cold path: the label is
    /// built here).
    pub(crate) fn stale_served(store: &std::sync::Arc<str>, kind: &'static str) {
        #[cfg(feature = "metrics")]
        counter!("tower_steady_stale_served_total", "store" => store.clone(), "kind" => kind)
            .increment(1);
    }

    /// A stale store was built: its series exist at zero, one per failure
    /// kind it may answer.
    pub(crate) fn stale_store_built(store: &std::sync::Arc<str>) {
        #[cfg(feature = "metrics")]
        {
            described();
            for kind in &super::OUTCOMES[1..] {
                counter!("tower_steady_stale_served_total", "store" => store.clone(), "kind" => *kind)
                    .increment(0);
            }
        }
    }

    pub(crate) fn fallback_served(kind: &'static str) {
        #[cfg(feature = "metrics")]
        counter!("tower_steady_fallback_served_total", "kind" => kind).increment(1);
    }

    pub(crate) fn error_response(status: &'static str, kind: &'static str) {
        #[cfg(feature = "metrics")]
        counter!("tower_steady_error_responses_total", "status" => status, "kind" => kind)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_labels_are_the_failure_kinds_names() {
        assert_eq!(OUTCOMES[outcome_index(None)], "success");
        for kind in crate::classify::FailureKind::ALL {
            assert_eq!(OUTCOMES[outcome_index(Some(kind))], kind.as_str());
        }
        assert_eq!(OUTCOMES.len(), crate::classify::FailureKind::ALL.len() + 1);
    }
}
