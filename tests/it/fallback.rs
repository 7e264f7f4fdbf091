//! Stale-if-error and fallback responses, against a scripted origin under
//! paused time.
#![cfg(feature = "fallback")]

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tokio::time::advance;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_steady::classify::FailureKind;
use tower_steady::fallback::{
    Failures, FallbackLayer, StaleIfError, StaleIfErrorBody, StaleIfErrorHandle, StaleIfErrorLayer,
    StaleIfErrorStats,
};

type Headers = &'static [(&'static str, &'static str)];

/// A response that says it may be stored (and is stale at once): without
/// any freshness information, a response is not stored unless `public`.
const FRESH: (&str, &str) = ("cache-control", "max-age=0");

/// What the origin answers next.
#[derive(Clone, Debug)]
enum Answer {
    Page {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
    },
    /// A page whose body echoes the request's `accept-encoding`.
    Echo(Vec<(&'static str, &'static str)>),
    Status(u16),
    Refused,
}

fn page(headers: &[(&'static str, &'static str)], body: &str) -> Answer {
    Answer::Page {
        status: 200,
        headers: headers.to_vec(),
        body: body.to_owned(),
    }
}

/// A scripted origin: answers what it was last told to, counts calls.
#[derive(Clone)]
struct Origin {
    next: Arc<Mutex<Answer>>,
    calls: Arc<AtomicUsize>,
}

type Svc = tower::util::BoxCloneService<Request<()>, Response<Full<Bytes>>, BoxError>;

impl Origin {
    fn new(answer: Answer) -> Self {
        Self {
            next: Arc::new(Mutex::new(answer)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn set(&self, answer: Answer) {
        *self.next.lock().unwrap() = answer;
    }

    fn service(&self) -> Svc {
        let origin = self.clone();
        tower::util::BoxCloneService::new(service_fn(move |req: Request<()>| {
            origin.calls.fetch_add(1, Ordering::Relaxed);
            let answer = origin.next.lock().unwrap().clone();
            async move {
                let (status, headers, body) = match answer {
                    Answer::Page {
                        status,
                        headers,
                        body,
                    } => (status, headers, body),
                    Answer::Echo(headers) => {
                        let enc = req.headers().get("accept-encoding");
                        let body =
                            enc.map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
                        (200, headers, body)
                    }
                    Answer::Status(status) => {
                        (status, Vec::new(), "upstream error page".to_owned())
                    }
                    Answer::Refused => {
                        return Err(
                            io::Error::new(io::ErrorKind::ConnectionRefused, "refused").into()
                        );
                    }
                };
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                for (k, v) in headers {
                    response.headers_mut().append(k, v.parse().unwrap());
                }
                Ok::<_, BoxError>(response)
            }
        }))
    }
}

/// The answer a client sees: status, headers, whole body.
#[derive(Debug)]
struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn age(&self) -> Option<u64> {
        self.headers
            .get("age")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }

    fn is_stale(&self) -> bool {
        self.headers.contains_key("cache-status")
    }
}

async fn call<S, B>(svc: &mut S, request: Request<()>) -> Result<Seen, BoxError>
where
    S: Service<Request<()>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let response = svc.ready().await?.call(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(Into::into)?.to_bytes();
    Ok(Seen {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    })
}

/// A call that must succeed (with whatever status).
async fn ok<S, B>(svc: &mut S, request: Request<()>) -> Seen
where
    S: Service<Request<()>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    call(svc, request).await.unwrap()
}

fn get(path: &str, headers: &[(&'static str, &'static str)]) -> Request<()> {
    let mut request = Request::get(format!("http://site.test{path}"))
        .body(())
        .unwrap();
    for (k, v) in headers {
        request.headers_mut().append(*k, v.parse().unwrap());
    }
    request
}

/// A layer that stores every success (no refresh interval) and serves copies
/// up to a minute past their freshness.
fn layer() -> StaleIfErrorLayer {
    StaleIfErrorLayer::builder()
        .refresh(Duration::ZERO)
        .max_stale(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Stores `answer` for `path` (requested with `headers`), then turns the
/// origin to `failure`.
async fn stored_then<S, B>(
    svc: &mut S,
    origin: &Origin,
    path: &str,
    headers: &[(&'static str, &'static str)],
    failure: Answer,
) -> Seen
where
    S: Service<Request<()>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let first = call(svc, get(path, headers)).await.unwrap();
    assert!(!first.is_stale());
    origin.set(failure);
    first
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_502_is_answered_with_the_last_good_copy_its_age_and_a_marker() {
    let origin = Origin::new(page(
        &[
            ("cache-control", "max-age=5"),
            ("content-type", "text/html"),
        ],
        "home",
    ));
    let layer = layer();
    let handle = layer.handle();
    let mut svc = layer.layer(origin.service());
    stored_then(&mut svc, &origin, "/", &[], Answer::Status(502)).await;

    advance(Duration::from_secs(7)).await;
    let seen = ok(&mut svc, get("/", &[])).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body, "home");
    assert_eq!(seen.age(), Some(7));
    assert_eq!(seen.headers["content-type"], "text/html");
    assert_eq!(
        seen.headers["cache-status"],
        "tower-steady; fwd=stale; detail=stale-if-error"
    );

    // A refused connection (an error, not a response) too.
    origin.set(Answer::Refused);
    let seen = ok(&mut svc, get("/", &[])).await;
    assert_eq!((seen.status, seen.body.as_str()), (StatusCode::OK, "home"));

    assert_eq!(
        origin.calls.load(Ordering::Relaxed),
        3,
        "every request went to the origin first"
    );
    let stats = handle.stats();
    assert_eq!(
        (
            stats.entries,
            stats.stored,
            stats.hits,
            stats.misses,
            stats.stale_served
        ),
        (1, 1, 2, 0, 2)
    );
    assert!(stats.bytes > 4);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_failure_passes_on_once_the_copy_is_older_than_max_stale() {
    let origin = Origin::new(page(&[("cache-control", "max-age=10")], "home"));
    let layer = layer();
    let handle = layer.handle();
    let mut svc = layer.layer(origin.service());
    stored_then(&mut svc, &origin, "/", &[], Answer::Status(503)).await;

    // Fresh for 10 s, then 60 s of max_stale.
    advance(Duration::from_secs(70)).await;
    let seen = ok(&mut svc, get("/", &[])).await;
    assert_eq!((seen.status, seen.age()), (StatusCode::OK, Some(70)));
    advance(Duration::from_secs(1)).await;
    let seen = ok(&mut svc, get("/", &[])).await;
    assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.body, "upstream error page");
    assert!(!seen.is_stale());
    // The copy too old to serve was dropped: the next failure is a miss.
    let seen = ok(&mut svc, get("/", &[])).await;
    assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE);
    let stats = handle.stats();
    assert_eq!(
        (stats.entries, stats.hits, stats.misses, stats.stale_served),
        (0, 2, 1, 1)
    );

    origin.set(Answer::Refused);
    let err = call(&mut svc, get("/", &[])).await.unwrap_err();
    assert!(err.downcast_ref::<io::Error>().is_some(), "{err}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_response_stale_if_error_overrides_max_stale_both_ways() {
    for (cc, last_ok) in [
        ("max-age=10, stale-if-error=20", 30),
        ("max-age=0, stale-if-error=600", 600),
        ("public", 60),
    ] {
        let origin = Origin::new(page(&[("cache-control", cc)], "home"));
        let mut svc = layer().layer(origin.service());
        stored_then(&mut svc, &origin, "/", &[], Answer::Status(504)).await;
        advance(Duration::from_secs(last_ok)).await;
        let seen = ok(&mut svc, get("/", &[])).await;
        assert_eq!(
            (seen.status, seen.age()),
            (StatusCode::OK, Some(last_ok)),
            "{cc}"
        );
        advance(Duration::from_secs(1)).await;
        let seen = ok(&mut svc, get("/", &[])).await;
        assert_eq!(seen.status, StatusCode::GATEWAY_TIMEOUT, "{cc}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_age_a_response_arrived_with_counts() {
    let origin = Origin::new(page(
        &[("cache-control", "max-age=30"), ("age", "25")],
        "home",
    ));
    let mut svc = layer().layer(origin.service());
    stored_then(&mut svc, &origin, "/", &[], Answer::Status(502)).await;
    advance(Duration::from_secs(65)).await;
    let seen = ok(&mut svc, get("/", &[])).await;
    assert_eq!((seen.status, seen.age()), (StatusCode::OK, Some(90)));
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        ok(&mut svc, get("/", &[])).await.status,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn private_responses_are_never_served_to_another_request() {
    let cases: &[(&str, Headers, Answer)] = &[
        (
            "authorization",
            &[("authorization", "Bearer alice")],
            page(&[("cache-control", "max-age=60")], "alice's page"),
        ),
        (
            "vary: cookie",
            &[("cookie", "id=alice")],
            page(&[("vary", "Cookie")], "alice's page"),
        ),
        (
            "vary: authorization",
            &[("authorization", "Bearer alice")],
            page(
                &[
                    ("vary", "accept, authorization"),
                    ("cache-control", "public"),
                ],
                "alice's page",
            ),
        ),
        (
            "private",
            &[],
            page(&[("cache-control", "private, max-age=60")], "alice's page"),
        ),
        (
            "no-store",
            &[],
            page(&[("cache-control", "no-store")], "alice's page"),
        ),
        (
            "set-cookie",
            &[],
            page(
                &[
                    ("set-cookie", "id=alice"),
                    ("cache-control", "public, max-age=60"),
                ],
                "alice's page",
            ),
        ),
        ("vary: *", &[], page(&[("vary", "*")], "alice's page")),
    ];
    for (name, alice, answer) in cases {
        let origin = Origin::new(answer.clone());
        let layer = layer();
        let handle = layer.handle();
        let mut svc = layer.layer(origin.service());
        let first = stored_then(&mut svc, &origin, "/me", alice, Answer::Status(502)).await;
        assert_eq!(first.body, "alice's page");
        assert_eq!(handle.stats().entries, 0, "{name}: nothing stored");
        for who in [
            &[("cookie", "id=bob")][..],
            &[("authorization", "Bearer bob")],
            &[],
            alice,
        ] {
            let seen = ok(&mut svc, get("/me", who)).await;
            assert_eq!(seen.status, StatusCode::BAD_GATEWAY, "{name}: {who:?}");
            assert_ne!(seen.body, "alice's page", "{name}");
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_public_response_to_a_credentialed_request_is_shared() {
    let origin = Origin::new(page(&[("cache-control", "public, max-age=60")], "news"));
    let mut svc = layer().layer(origin.service());
    stored_then(
        &mut svc,
        &origin,
        "/news",
        &[("authorization", "Bearer alice")],
        Answer::Status(502),
    )
    .await;
    let seen = ok(&mut svc, get("/news", &[])).await;
    assert_eq!((seen.status, seen.body.as_str()), (StatusCode::OK, "news"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn vary_keeps_variants_apart() {
    let origin = Origin::new(Answer::Echo(vec![FRESH, ("vary", "Accept-Encoding")]));
    let layer = layer();
    let handle = layer.handle();
    let mut svc = layer.layer(origin.service());
    for enc in ["gzip", "br"] {
        let seen = ok(&mut svc, get("/", &[("accept-encoding", enc)])).await;
        assert_eq!(seen.body, enc);
    }
    assert_eq!(handle.stats().entries, 2);
    origin.set(Answer::Refused);
    for enc in ["br", "gzip"] {
        let seen = ok(&mut svc, get("/", &[("accept-encoding", enc)])).await;
        assert_eq!((seen.status, seen.body.as_str()), (StatusCode::OK, enc));
        assert!(seen.is_stale());
    }
    // A variant never stored, and a request without the header, get the
    // failure.
    assert!(call(&mut svc, get("/", &[("accept-encoding", "identity")]))
        .await
        .is_err());
    assert!(call(&mut svc, get("/", &[])).await.is_err());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn host_method_and_uri_make_the_key() {
    let origin = Origin::new(page(&[FRESH], "a"));
    let mut svc = layer().layer(origin.service());
    // Origin-form requests, as a server sees them: the Host tells sites
    // apart.
    let on = |host: &'static str, method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(())
            .unwrap()
    };
    ok(&mut svc, on("a.test", "GET", "/x")).await;
    origin.set(page(&[FRESH], "b"));
    ok(&mut svc, on("b.test", "GET", "/x")).await;
    ok(&mut svc, on("a.test", "GET", "/x?q=1")).await;
    origin.set(Answer::Status(502));
    // HEAD was never stored; neither is POST ever answered from the store.
    let expected = [
        ("a.test", "GET", "/x", "a"),
        ("b.test", "GET", "/x", "b"),
        ("a.test", "GET", "/x?q=1", "b"),
        ("a.test", "HEAD", "/x", "upstream error page"),
        ("a.test", "POST", "/x", "upstream error page"),
    ];
    for (host, method, path, body) in expected {
        let seen = ok(&mut svc, on(host, method, path)).await;
        assert_eq!(seen.body, body, "{method} {host}{path}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn only_the_chosen_failures_are_answered() {
    let origin = Origin::new(page(&[FRESH], "home"));
    let mut default = layer().layer(origin.service());
    let mut all = StaleIfErrorLayer::builder()
        .refresh(Duration::ZERO)
        .failures(Failures::all())
        .build()
        .unwrap()
        .layer(origin.service());
    ok(&mut default, get("/", &[])).await;
    ok(&mut all, get("/", &[])).await;
    for status in [500, 429] {
        origin.set(Answer::Status(status));
        assert_eq!(
            ok(&mut default, get("/", &[])).await.status.as_u16(),
            status
        );
        assert_eq!(ok(&mut all, get("/", &[])).await.status, StatusCode::OK);
    }
    // A 404 is an answer, and is stored as the latest copy.
    origin.set(Answer::Page {
        status: 404,
        headers: vec![FRESH],
        body: "gone".into(),
    });
    assert_eq!(
        ok(&mut default, get("/", &[])).await.status,
        StatusCode::NOT_FOUND
    );
    origin.set(Answer::Status(502));
    let seen = ok(&mut default, get("/", &[])).await;
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (StatusCode::NOT_FOUND, "gone")
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_popular_key_is_stored_once_per_refresh_interval() {
    let origin = Origin::new(page(&[FRESH], "v1"));
    let layer = StaleIfErrorLayer::builder()
        .refresh(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(origin.service());
    ok(&mut svc, get("/", &[])).await;
    origin.set(page(&[FRESH], "v2"));
    for _ in 0..100 {
        ok(&mut svc, get("/", &[])).await;
        advance(Duration::from_millis(5)).await;
    }
    assert_eq!(handle.stats().stored, 1, "within the second: stored once");
    advance(Duration::from_millis(500)).await;
    ok(&mut svc, get("/", &[])).await;
    assert_eq!(handle.stats().stored, 2);
    origin.set(Answer::Status(502));
    advance(Duration::from_secs(3)).await;
    let seen = ok(&mut svc, get("/", &[])).await;
    assert_eq!((seen.body.as_str(), seen.age()), ("v2", Some(3)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_varying_key_keeps_finding_its_variants_between_stores() {
    let origin = Origin::new(Answer::Echo(vec![FRESH, ("vary", "accept-encoding")]));
    let layer = StaleIfErrorLayer::builder()
        .refresh(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(origin.service());
    for enc in ["gzip", "br", "gzip", "br"] {
        ok(&mut svc, get("/", &[("accept-encoding", enc)])).await;
    }
    assert_eq!(handle.stats().stored, 2, "each variant once");
    origin.set(Answer::Status(502));
    for enc in ["gzip", "br"] {
        let seen = ok(&mut svc, get("/", &[("accept-encoding", enc)])).await;
        assert_eq!((seen.status, seen.body.as_str()), (StatusCode::OK, enc));
    }
}

fn big_origin(len: usize) -> Origin {
    Origin::new(Answer::Page {
        status: 200,
        headers: vec![FRESH],
        body: "x".repeat(len),
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_over_the_entry_limit_streams_through_and_is_not_stored() {
    let layer = StaleIfErrorLayer::builder()
        .refresh(Duration::ZERO)
        .max_entry_bytes(4096)
        .build()
        .unwrap();
    let handle = layer.handle();
    let origin = big_origin(5000);
    let mut svc = layer.layer(origin.service());
    let seen = ok(&mut svc, get("/big", &[])).await;
    assert_eq!(seen.body.len(), 5000);
    origin.set(page(&[FRESH], "small"));
    ok(&mut svc, get("/small", &[])).await;
    let stats = handle.stats();
    assert_eq!((stats.entries, stats.stored), (1, 1));
    assert!(stats.bytes <= 4096);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_byte_budget_evicts_the_least_recently_used() {
    let layer = StaleIfErrorLayer::builder()
        .refresh(Duration::ZERO)
        .max_bytes(12_000)
        .max_entry_bytes(5_000)
        .build()
        .unwrap();
    let handle = layer.handle();
    let origin = big_origin(3000);
    let mut svc = layer.layer(origin.service());
    for path in ["/a", "/b", "/c", "/d"] {
        ok(&mut svc, get(path, &[])).await;
        let StaleIfErrorStats { bytes, .. } = handle.stats();
        assert!(bytes <= 12_000, "{bytes}");
    }
    assert_eq!(handle.stats().entries, 3);
    origin.set(Answer::Status(502));
    assert_eq!(
        ok(&mut svc, get("/a", &[])).await.status,
        StatusCode::BAD_GATEWAY
    );
    for path in ["/b", "/c", "/d"] {
        assert_eq!(
            ok(&mut svc, get(path, &[])).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
}

type Chunks = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// A body fed by the test, frame by frame.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}

/// An origin whose first response has a body fed by the test; after that
/// it refuses connections.
fn streaming_origin() -> (
    impl Service<Request<()>, Response = Response<ChannelBody>, Error = BoxError> + Clone,
    Chunks,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let svc = service_fn(move |_: Request<()>| {
        let rx = rx.lock().unwrap().take();
        async move {
            match rx {
                Some(rx) => Ok(Response::builder()
                    .header(FRESH.0, FRESH.1)
                    .body(ChannelBody(rx))
                    .unwrap()),
                None => Err(BoxError::from(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "down",
                ))),
            }
        }
    });
    (svc, tx)
}

/// A layer over a streaming origin, and the response to a first `GET` of
/// `path`, its body still open: the handle, the service, the sender that
/// feeds the body, and the body.
async fn streaming_get(
    path: &str,
) -> (
    StaleIfErrorHandle,
    StaleIfError<
        impl Service<Request<()>, Response = Response<ChannelBody>, Error = BoxError> + Clone,
    >,
    Chunks,
    StaleIfErrorBody<ChannelBody>,
) {
    let layer = layer();
    let handle = layer.handle();
    let (origin, tx) = streaming_origin();
    let mut svc = layer.layer(origin);
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(get(path, &[]))
        .await
        .unwrap();
    (handle, svc, tx, response.into_body())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn storing_hands_each_frame_on_as_it_arrives() {
    let (handle, mut svc, tx, mut body) = streaming_get("/live").await;
    for chunk in ["one ", "two ", "three"] {
        tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.unwrap();
        // The frame reaches the client before the next one exists.
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), chunk);
        assert_eq!(handle.stats().entries, 0, "stored only at the end");
    }
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(handle.stats().entries, 1);
    let seen = ok(&mut svc, get("/live", &[])).await;
    assert_eq!(seen.body, "one two three");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_that_fails_or_is_dropped_is_not_stored() {
    for fail in [true, false] {
        let (handle, mut svc, tx, mut body) = streaming_get("/").await;
        tx.send(Ok(Frame::data(Bytes::from("half")))).await.unwrap();
        body.frame().await.unwrap().unwrap();
        if fail {
            tx.send(Err("reset mid-body".into())).await.unwrap();
            assert!(body.frame().await.unwrap().is_err());
        }
        drop(body);
        drop(tx);
        assert_eq!(handle.stats().entries, 0, "fail: {fail}");
        assert!(call(&mut svc, get("/", &[])).await.is_err());
    }
}

fn maintenance() -> Response<&'static str> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("retry-after", "30")
        .header("content-type", "text/html")
        .body("<h1>Back soon</h1>")
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_fallback_answers_the_chosen_failures_below_the_stale_copy() {
    let origin = Origin::new(page(&[FRESH], "home"));
    let fallback = FallbackLayer::builder(maintenance()).build().unwrap();
    let mut svc = fallback.layer(layer().layer(origin.service()));

    ok(&mut svc, get("/", &[])).await;
    origin.set(Answer::Refused);
    // A stored copy wins.
    assert_eq!(ok(&mut svc, get("/", &[])).await.body, "home");
    // No copy: the maintenance page.
    let seen = ok(&mut svc, get("/other", &[])).await;
    assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.headers["retry-after"], "30");
    assert_eq!(seen.body, "<h1>Back soon</h1>");
    origin.set(Answer::Status(502));
    assert_eq!(
        ok(&mut svc, get("/other", &[])).await.body,
        "<h1>Back soon</h1>"
    );
    // An answer the origin meant (500) passes through.
    origin.set(Answer::Status(500));
    let seen = ok(&mut svc, get("/other", &[])).await;
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "upstream error page")
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_fallback_answers_only_its_failures() {
    let origin = Origin::new(Answer::Refused);
    let only_connect = Failures::none().with(FailureKind::Connect);
    let mut svc = FallbackLayer::builder(maintenance())
        .failures(only_connect)
        .build()
        .unwrap()
        .layer(origin.service());
    assert_eq!(
        ok(&mut svc, get("/", &[])).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    origin.set(Answer::Status(504));
    let seen = ok(&mut svc, get("/", &[])).await;
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "upstream error page")
    );
}

#[test]
fn bad_configuration_names_the_field() {
    let field = |r: Result<StaleIfErrorLayer, tower_steady::ConfigError>| r.unwrap_err().field();
    assert_eq!(
        field(StaleIfErrorLayer::builder().max_bytes(0).build()),
        "stale_if_error.max_bytes"
    );
    assert_eq!(
        field(StaleIfErrorLayer::builder().max_entry_bytes(256).build()),
        "stale_if_error.max_entry_bytes"
    );
    assert_eq!(
        field(
            StaleIfErrorLayer::builder()
                .max_bytes(1000)
                .max_entry_bytes(2000)
                .build()
        ),
        "stale_if_error.max_entry_bytes"
    );
    assert_eq!(
        field(
            StaleIfErrorLayer::builder()
                .failures(Failures::none())
                .build()
        ),
        "stale_if_error.failures"
    );
    let status = |s: u16| {
        let r = Response::builder().status(s).body("").unwrap();
        FallbackLayer::builder(r)
            .build()
            .map(|_| ())
            .unwrap_err()
            .field()
    };
    assert_eq!(status(502), "fallback.status");
    assert_eq!(status(101), "fallback.status");
    let r = FallbackLayer::builder(maintenance())
        .failures(Failures::none())
        .build();
    assert_eq!(r.map(|_| ()).unwrap_err().field(), "fallback.failures");
}

/// Who asks: each user's own credentials (or none).
const USERS: &[(&str, Headers)] = &[
    ("anonymous", &[]),
    ("alice's cookie", &[("cookie", "session=alice")]),
    ("bob's cookie", &[("cookie", "session=bob")]),
    ("alice's token", &[("authorization", "Bearer alice")]),
    ("bob's token", &[("authorization", "Bearer bob")]),
    (
        "alice via a proxy",
        &[("proxy-authorization", "Basic YWxpY2U6eA==")],
    ),
    (
        "alice's cookie and token",
        &[
            ("cookie", "session=alice"),
            ("authorization", "Bearer alice"),
        ],
    ),
];

/// What the origin may answer, and whether it says the page is shareable
/// (`public` or `s-maxage`): only then may one user's copy reach another.
const RESPONSES: &[(Headers, bool)] = &[
    (&[], false),
    (&[("cache-control", "max-age=60")], false),
    (
        &[("cache-control", "max-age=60, stale-if-error=600")],
        false,
    ),
    (
        &[
            ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
        ],
        false,
    ),
    (&[("cache-control", "private, max-age=60")], false),
    (&[("cache-control", "public, private, max-age=60")], false),
    (&[("cache-control", "no-store")], false),
    (&[("cache-control", "public, no-store")], false),
    (
        &[
            ("cache-control", "max-age=60"),
            ("set-cookie", "session=new"),
        ],
        false,
    ),
    (
        &[
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "session=new"),
        ],
        false,
    ),
    (
        &[("cache-control", "max-age=60"), ("vary", "Cookie")],
        false,
    ),
    (
        &[("cache-control", "public, max-age=60"), ("vary", "Cookie")],
        false,
    ),
    (
        &[
            ("cache-control", "public, max-age=60"),
            ("vary", "accept, Authorization"),
        ],
        false,
    ),
    (
        &[
            ("cache-control", "public, max-age=60"),
            ("vary", "Proxy-Authorization"),
        ],
        false,
    ),
    (
        &[("cache-control", "public, max-age=60"), ("vary", "*")],
        false,
    ),
    (&[("cache-control", "max-age=60"), ("vary", "*")], false),
    (&[("cache-control", "public")], true),
    (&[("cache-control", "public, max-age=60")], true),
    (
        &[("cache-control", "s-maxage=60, stale-if-error=600")],
        true,
    ),
];

/// Every user warms the store with their own page under every response
/// shape, the origin fails, and every other user asks: a page made for a
/// user with credentials reaches another only when the origin said it is
/// shareable, and a page stored for one `Host` never answers another.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_user_ever_gets_another_users_page() {
    let mut cross_user = Vec::new();
    let mut shared_served = 0;
    for (response, shareable) in RESPONSES {
        for (owner, owner_headers) in USERS {
            let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let origin = {
                let down = down.clone();
                service_fn(move |req: Request<()>| {
                    let down = down.load(Ordering::Relaxed);
                    // The page names whoever asked, as a per-user page does.
                    let who = ["cookie", "authorization", "proxy-authorization", "host"]
                        .iter()
                        .filter_map(|h| req.headers().get(*h))
                        .map(|v| v.to_str().unwrap().to_owned())
                        .collect::<Vec<_>>()
                        .join(" & ");
                    async move {
                        if down {
                            return Err::<Response<Full<Bytes>>, BoxError>(
                                io::Error::new(io::ErrorKind::ConnectionRefused, "down").into(),
                            );
                        }
                        let mut res =
                            Response::new(Full::new(Bytes::from(format!("page for [{who}]"))));
                        for (k, v) in *response {
                            res.headers_mut().append(*k, v.parse().unwrap());
                        }
                        Ok(res)
                    }
                })
            };
            let mut svc = layer().layer(origin);
            let on = |host: &'static str, headers: Headers| {
                let mut r = get("/me", headers);
                r.headers_mut().insert("host", host.parse().unwrap());
                r
            };
            let first = ok(&mut svc, on("a.test", owner_headers)).await;
            down.store(true, Ordering::Relaxed);
            for (asker, asker_headers) in USERS {
                for host in ["a.test", "b.test"] {
                    let seen = call(&mut svc, on(host, asker_headers)).await;
                    let Ok(seen) = seen else { continue };
                    assert_eq!(seen.body, first.body, "only the stored copy can answer");
                    // An anonymous page carries nobody's data: serving it
                    // to a signed-in user during an outage leaks nothing.
                    let owned = !owner_headers.is_empty();
                    if host != "a.test" || (owned && !shareable && owner != asker) {
                        cross_user.push(format!(
                            "{response:?}: {owner}'s page served to {asker} at {host}"
                        ));
                    }
                    if *shareable && asker != owner {
                        shared_served += 1;
                    }
                }
            }
        }
    }
    assert!(
        cross_user.is_empty(),
        "{} cross-user responses:\n{}",
        cross_user.len(),
        cross_user.join("\n")
    );
    // The shareable pages are still served to everyone on their host.
    let shareable = RESPONSES.iter().filter(|(_, s)| *s).count();
    assert_eq!(shared_served, shareable * USERS.len() * (USERS.len() - 1));
}
