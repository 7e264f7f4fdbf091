//! The events documented in `tower_steady::observability` appear with their
//! target, level and fields, seen through a `tracing-subscriber` layer that
//! records every event and the spans around it (installed for the test's
//! thread only). Paused time throughout.

use crate::common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use tokio::time::advance;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_steady::deadline::DeadlineLayer;
use tower_steady::http::ErrorResponseLayer;
use tower_steady::retry::{Backoff, RetryLayer};
use tower_steady::timeout::TimeoutLayer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use common::{scripted, site, stale_copy_stored, status};

type Fields = BTreeMap<&'static str, String>;

/// One event as recorded: the message is the field `message`.
#[derive(Debug)]
struct Seen {
    target: String,
    level: Level,
    fields: Fields,
    /// The spans around it, outermost first: (name, fields).
    spans: Vec<(&'static str, Fields)>,
}

#[derive(Default)]
struct Visitor(Fields);

impl Visit for Visitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

/// Records every event, with the fields of the spans it happened in.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = Visitor::default();
        attrs.record(&mut visitor);
        ctx.span(id).unwrap().extensions_mut().insert(visitor);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = Visitor::default();
        event.record(&mut visitor);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let fields = span.extensions().get::<Visitor>().unwrap().0.clone();
                        (span.name(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Seen {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields: visitor.0,
            spans,
        });
    }
}

impl Capture {
    /// Installs a recording subscriber for this thread.
    fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        (capture, tracing::subscriber::set_default(subscriber))
    }

    /// The one event with this target, level and message whose fields
    /// include `fields` (each compared as text). Clears what was recorded.
    #[track_caller]
    fn expect(&self, target: &str, level: Level, message: &str, fields: &[(&str, &str)]) -> Seen {
        let mut seen = self.0.lock().unwrap();
        let found = seen.iter().position(|e| {
            e.target == target
                && e.level == level
                && e.fields.get("message").map(String::as_str) == Some(message)
                && fields
                    .iter()
                    .all(|(k, v)| e.fields.get(k).map(String::as_str) == Some(*v))
        });
        match found {
            Some(i) => {
                let event = seen.remove(i);
                seen.clear();
                event
            }
            None => panic!("no {level} {target:?} {message:?} with {fields:?} among {seen:#?}"),
        }
    }
}

fn attempt_of(event: &Seen) -> Option<&str> {
    event
        .spans
        .iter()
        .rev()
        .find(|(name, _)| *name == "attempt")
        .and_then(|(_, fields)| fields.get("attempt"))
        .map(String::as_str)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_attempt_runs_in_a_span_with_its_number() {
    let (capture, _guard) = Capture::install();
    // The first attempt hangs until the timeout; the second is answered,
    // and the inner service logs while it handles it.
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = service_fn(move |_: Request<_>| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "app", "handling");
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(status(200))
        }
    });
    let svc = RetryLayer::builder()
        .backoff(Backoff::none())
        .build()
        .unwrap()
        .layer(TimeoutLayer::new(Duration::from_secs(1)).layer(inner));
    let response = svc.oneshot(site()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let events: Vec<Seen> = std::mem::take(&mut *capture.0.lock().unwrap());
    let find = |target: &str, message: &str| {
        events
            .iter()
            .filter(|e| e.target == target && e.fields["message"] == message)
            .collect::<Vec<_>>()
    };
    let handled = find("app", "handling");
    assert_eq!(
        handled.iter().map(|e| attempt_of(e)).collect::<Vec<_>>(),
        [Some("1"), Some("2")]
    );
    let timed_out = find("tower_steady::timeout", "attempt timed out");
    assert_eq!(timed_out.len(), 1);
    assert_eq!(timed_out[0].level, Level::DEBUG);
    assert_eq!(attempt_of(timed_out[0]), Some("1"));
    assert_eq!(timed_out[0].spans[0].1["hedge"], "false");
    // The decision names the attempt it is about.
    let retrying = find("tower_steady::retry", "retrying");
    assert_eq!(retrying.len(), 1);
    assert_eq!(retrying[0].level, Level::DEBUG);
    assert_eq!(retrying[0].fields["attempt"], "1");
    assert_eq!(retrying[0].fields["kind"], "timeout");
    assert_eq!(retrying[0].fields["wait_ms"], "0");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_refusals_and_an_exhausted_budget_are_logged() {
    let (capture, _guard) = Capture::install();
    let post = Request::post("http://site.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let retry = RetryLayer::builder().build().unwrap();
    // A 502 to a POST may have been seen by the upstream: not retried.
    let svc = retry.layer(service_fn(|_: Request<_>| async {
        Err::<Response<Full<Bytes>>, BoxError>(
            io::Error::from(io::ErrorKind::ConnectionReset).into(),
        )
    }));
    assert!(svc.oneshot(post).await.is_err());
    capture.expect(
        "tower_steady::retry",
        Level::DEBUG,
        "not retrying",
        &[
            ("attempt", "1"),
            ("kind", "reset"),
            (
                "reason",
                "the upstream may have seen it and it is not idempotent",
            ),
        ],
    );

    common::retry_refused_by_the_budget().await;
    capture.expect(
        "tower_steady::retry",
        Level::INFO,
        "retry budget exhausted; returning the failure",
        &[("attempt", "1"), ("kind", "unavailable")],
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn breaker_changes_are_logged_with_its_name() {
    let (capture, _guard) = Capture::install();
    let (handle, mut svc) = common::breaker_over_503s("search");
    common::fail_twenty(&mut svc).await;
    let opened = capture.expect(
        "tower_steady::circuit_breaker",
        Level::WARN,
        "circuit opened: failing fast",
        &[
            ("breaker", "search"),
            ("reason", "failure_ratio"),
            ("calls", "20"),
            ("failures", "20"),
        ],
    );
    assert!(opened.fields.contains_key("open_for_ms"), "{opened:?}");

    let turned_away = ServiceExt::<Request<Empty<Bytes>>>::ready(&mut svc)
        .await
        .unwrap()
        .call(site())
        .await;
    assert!(turned_away.is_err());
    let seen = capture.expect(
        "tower_steady::circuit_breaker",
        Level::DEBUG,
        "call turned away",
        &[("breaker", "search")],
    );
    assert!(seen.fields.contains_key("retry_after_ms"), "{seen:?}");

    handle.force_closed();
    capture.expect(
        "tower_steady::circuit_breaker",
        Level::INFO,
        "circuit state set by hand",
        &[("breaker", "search"), ("state", "ForcedClosed")],
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ejection_and_readmission_are_logged_with_the_endpoint() {
    let (capture, _guard) = Capture::install();
    let (broken, mut svc) = common::one_broken_of_three();
    for _ in 0..100 {
        let _ = svc.ready().await.unwrap().call(site()).await;
    }
    capture.expect(
        "tower_steady::upstream",
        Level::WARN,
        "endpoint ejected",
        &[
            ("endpoint", "127.0.0.1:1"),
            ("reason", "consecutive_failures"),
            ("ejections", "1"),
            ("healthy", "2"),
        ],
    );

    broken.store(false, Ordering::Relaxed);
    advance(Duration::from_secs(31)).await;
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(site()).await;
    }
    capture.expect(
        "tower_steady::upstream",
        Level::INFO,
        "endpoint re-admitted after a successful probe",
        &[("endpoint", "127.0.0.1:1")],
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shedding_deadlines_and_error_answers_are_logged() {
    let (capture, _guard) = Capture::install();
    common::shed_one().await;
    let slow = common::slow();
    capture.expect(
        "tower_steady::load_shed",
        Level::DEBUG,
        "request shed",
        &[("in_flight", "1"), ("limit", "1")],
    );

    let expired = Request::get("/")
        .header("x-request-timeout-ms", "0")
        .body(Empty::new())
        .unwrap();
    let deadline = DeadlineLayer::server().build().unwrap();
    assert!(deadline.layer(slow).oneshot(expired).await.is_err());
    capture.expect(
        "tower_steady::deadline",
        Level::DEBUG,
        "request arrived with no time left; not calling the service",
        &[],
    );

    let refused = service_fn(|_: Request<Empty<Bytes>>| async {
        Err::<Response<Full<Bytes>>, BoxError>(
            io::Error::from(io::ErrorKind::ConnectionRefused).into(),
        )
    });
    let answered = ErrorResponseLayer::new()
        .layer(refused)
        .oneshot(site())
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::SERVICE_UNAVAILABLE);
    capture.expect(
        "tower_steady::http",
        Level::DEBUG,
        "answering an error",
        &[("status", "503"), ("kind", "connect")],
    );
    let rewritten = ErrorResponseLayer::new()
        .layer(scripted(&[502]))
        .oneshot(site())
        .await
        .unwrap();
    assert_eq!(rewritten.status(), StatusCode::SERVICE_UNAVAILABLE);
    capture.expect(
        "tower_steady::http",
        Level::DEBUG,
        "rewriting the upstream's 502 to 503",
        &[("status", "503"), ("upstream_status", "502")],
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stale_copy_served_is_logged_with_kind_status_and_age() {
    let (capture, _guard) = Capture::install();
    let stale = stale_copy_stored().await;
    advance(Duration::from_secs(7)).await;
    assert_eq!(
        stale.oneshot(site()).await.unwrap().status(),
        StatusCode::OK
    );
    capture.expect(
        "tower_steady::fallback",
        Level::DEBUG,
        "stale copy served",
        &[
            ("uri", "http://site.test/"),
            ("kind", "bad_gateway"),
            ("status", "200"),
            ("age_secs", "7"),
        ],
    );
}
