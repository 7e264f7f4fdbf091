//! End to end on loopback: a hyper-util client behind `RetryLayer` calls a
//! real hyper (axum) upstream on `127.0.0.1:0`.
//!
//! The upstream fails the first attempts of each request with a 502 and
//! then answers 200 with what it received (length and checksum), so the
//! tests see that a retry turns the 502 into a 200 and that a body of any
//! size, streamed, reaches the attempt that succeeds intact.
//!
//! The backoff is off (`Backoff::none()`): its waits are tested under
//! paused time in `tests/it/retry.rs`, and here they would only be real sleeps.

use crate::common;

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{to_bytes, Body};
use axum::{http::StatusCode, routing::any, Router};
use bytes::Bytes;
use common::{bounded, PausedServer};
use http::Request;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_steady::retry::{Attempt, Backoff, Endpoint, EndpointError, ReplayBody, RetryLayer};
use tower_steady::BoxError;

/// An upstream that answers 502 to the first `fail_first` requests it
/// reads, then 200 with `<length> <checksum>` of the body it received.
#[derive(Clone)]
struct Upstream {
    fail_first: usize,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    fn start(fail_first: usize) -> (Self, PausedServer) {
        let this = Self {
            fail_first,
            hits: Arc::default(),
        };
        let app_state = this.clone();
        let app = Router::new().route(
            "/{*path}",
            any(move |body: Body| {
                let this = app_state.clone();
                async move {
                    // Read the whole body first, as a real upstream would
                    // before failing.
                    let bytes = to_bytes(body, usize::MAX).await.unwrap();
                    let n = this.hits.fetch_add(1, Ordering::SeqCst);
                    if n < this.fail_first {
                        return (
                            StatusCode::BAD_GATEWAY,
                            "upstream of upstream down".to_owned(),
                        );
                    }
                    (StatusCode::OK, summary(&bytes))
                }
            }),
        );
        let server = PausedServer::start(app);
        (this, server)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn summary(bytes: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    hasher.write(bytes);
    format!("{} {:x}", bytes.len(), hasher.finish())
}

/// A body streamed in chunks of 16 KiB, yielding to the runtime between
/// chunks as a body arriving from the network would.
struct Streamed {
    chunks: VecDeque<Bytes>,
    yielded: bool,
}

impl Streamed {
    fn new(data: &Bytes) -> Self {
        let chunks = data.chunks(16 * 1024).map(|c| data.slice_ref(c)).collect();
        Self {
            chunks,
            yielded: false,
        }
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }
}

fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

type RetryClient = Client<HttpConnector, ReplayBody<Streamed>>;

fn hyper_client() -> RetryClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

fn retry_layer() -> tower_steady::retry::RetryBuilder {
    RetryLayer::builder().backoff(Backoff::none()).seed(3)
}

async fn send(layer: &RetryLayer, method: &str, url: &str, body: Bytes) -> (StatusCode, String) {
    let svc = layer.layer(hyper_client());
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Streamed::new(&body))
        .unwrap();
    let response = bounded(svc.oneshot(request)).await.unwrap();
    let status = response.status();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(text.to_vec()).unwrap())
}

#[tokio::test]
async fn a_get_failing_twice_with_502_reaches_the_client_as_200() {
    let (upstream, server) = Upstream::start(2);
    let layer = retry_layer().build().unwrap();
    let (status, text) = send(&layer, "GET", &server.url("/items/1"), Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, summary(b""));
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn bodies_of_every_size_arrive_intact_on_the_attempt_that_succeeds() {
    for len in [0, 1024, 64 * 1024, 1024 * 1024] {
        let (upstream, server) = Upstream::start(1);
        // The default keeps 64 KiB; a 1 MiB body needs a larger limit.
        let layer = retry_layer().replay_limit(2 * 1024 * 1024).build().unwrap();
        let body = payload(len);
        let (status, text) = send(&layer, "PUT", &server.url("/blobs/1"), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{len} bytes");
        assert_eq!(text, summary(&body), "{len} bytes");
        assert_eq!(upstream.hits(), 2, "{len} bytes");
    }
}

#[tokio::test]
async fn a_body_over_the_replay_limit_is_sent_once_and_its_502_returned() {
    let (upstream, server) = Upstream::start(1);
    let layer = retry_layer().build().unwrap();
    let (status, _) = send(&layer, "PUT", &server.url("/blobs/1"), payload(1024 * 1024)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_post_is_not_retried_once_it_was_sent() {
    let (upstream, server) = Upstream::start(1);
    let layer = retry_layer().build().unwrap();
    let (status, _) = send(&layer, "POST", &server.url("/orders"), payload(100)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.hits(), 1);
}

/// What a two-endpoint "balancer" saw: the attempts, by number, and the
/// endpoints each had already tried.
type Log = Arc<Mutex<Vec<(u32, Vec<Endpoint>)>>>;

/// Sends the first attempt to `refused` (nothing listens there) and later
/// ones to `live`, reporting the endpoint as a balancer would.
fn two_endpoints(
    refused: SocketAddr,
    live: SocketAddr,
    log: Log,
) -> impl Service<
    Request<ReplayBody<Streamed>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = BoxError,
    Future = impl std::future::Future<
        Output = Result<http::Response<hyper::body::Incoming>, BoxError>,
    > + Send,
> + Clone {
    let client = hyper_client();
    service_fn(move |mut req: Request<ReplayBody<Streamed>>| {
        let attempt = Attempt::of_or_first(&req);
        log.lock()
            .unwrap()
            .push((attempt.number(), attempt.tried().to_vec()));
        let target = if attempt.number() == 1 { refused } else { live };
        let uri = format!("http://{target}{}", req.uri().path());
        *req.uri_mut() = uri.parse().unwrap();
        let call = client.request(req);
        async move {
            match call.await {
                Ok(mut response) => {
                    response.extensions_mut().insert(Endpoint::new(target));
                    Ok(response)
                }
                Err(e) => Err(EndpointError::new(Endpoint::new(target), e).into()),
            }
        }
    })
}

fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
    // Dropped here: connecting to it is refused.
}

#[tokio::test]
async fn a_post_is_retried_after_a_refused_connection_on_another_endpoint() {
    // A refused connection never read the body, so even a body over the
    // replay limit (1 MiB against the default 64 KiB) is sent again whole.
    for len in [10 * 1024, 1024 * 1024] {
        let (upstream, server) = Upstream::start(0);
        let refused = closed_port();
        let log = Log::default();
        let svc =
            retry_layer()
                .build()
                .unwrap()
                .layer(two_endpoints(refused, server.addr, log.clone()));
        let body = payload(len);
        let request = Request::post("http://upstream/orders")
            .body(Streamed::new(&body))
            .unwrap();
        let response = bounded(svc.oneshot(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{len} bytes");
        let text = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, summary(&body), "{len} bytes");
        assert_eq!(upstream.hits(), 1);
        assert_eq!(
            *log.lock().unwrap(),
            [(1, vec![]), (2, vec![Endpoint::new(refused)])]
        );
    }
}
