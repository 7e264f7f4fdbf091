//! Allocations on the success path, counted.
//!
//! DESIGN asks for no allocation on a request's success path. Most layers
//! make none; the deadline must (its `Deadline` goes into the request's
//! extension map, its header into the header map, and a header-less,
//! extension-less request has neither map yet). These counts pin that down,
//! so that a change which adds an allocation per request fails here rather
//! than showing up, maybe, as noise in a benchmark.
//!
//! Counted per thread, on a current-thread runtime, for one request after a
//! few that warm up what is made once (windows, lazily built state).
//!
//! The same allocator counts the bytes held, so the stale-if-error store's
//! byte budget is checked against what the process really keeps.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service, ServiceExt};
use tower_steady::circuit_breaker::CircuitBreakerLayer;
use tower_steady::deadline::DeadlineLayer;
use tower_steady::http::ErrorResponseLayer;
use tower_steady::load_shed::{AdaptiveLimitLayer, ThrottleLayer};
use tower_steady::retry::RetryLayer;
use tower_steady::timeout::TimeoutLayer;
use tower_steady::Resilience;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated on this thread less the bytes freed on it.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

// SAFETY: every call is handed to the system allocator unchanged; the
// count is a thread-local cell with a const initializer (no lazy setup,
// no destructor), which cannot allocate or fail.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        let _ = LIVE.try_with(|n| n.set(n.get() + layout.size() as i64));
        // SAFETY: the caller's guarantees about `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|n| n.set(n.get() - layout.size() as i64));
        // SAFETY: `ptr` came from `System.alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn live_bytes() -> i64 {
    LIVE.with(Cell::get)
}

type Body = Empty<Bytes>;

/// An upstream answering `200 OK` with an empty body at once, whatever
/// the request's body type (the retry layer's is its `ReplayBody`).
#[derive(Clone, Copy)]
struct Ok200;

impl<B> Service<Request<B>> for Ok200 {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        std::future::ready(Ok(Response::new(Body::new())))
    }
}

fn ok() -> Ok200 {
    Ok200
}

/// The allocations of one `GET /` (no headers, no extensions, empty body)
/// through `poll_ready`, `call` and the response future, response dropped.
async fn one_request<S, B>(mut svc: S) -> u64
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..3 {
        svc.ready().await.unwrap();
        drop(svc.call(Request::new(Body::new())).await.unwrap());
    }
    let request = Request::new(Body::new());
    let before = allocations();
    svc.ready().await.unwrap();
    let response = svc.call(request).await.unwrap();
    drop(response);
    allocations() - before
}

/// The extension map (the map, its table, the boxed value): 3; the header
/// map (its indices and its entries): 2.
const EXTENSION_MAP: u64 = 3;
const HEADER_MAP: u64 = 2;

/// Asserts that one request through `svc` makes `expected` allocations.
async fn expect<S, B>(name: &str, svc: S, expected: u64)
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let made = one_request(svc).await;
    println!("{name}: {made}");
    assert_eq!(made, expected, "{name}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_success_path_allocates_only_the_deadlines_maps() {
    let second = Duration::from_secs(1);

    // Each layer alone.
    expect("timeout", TimeoutLayer::new(second).layer(ok()), 0).await;
    expect("retry", RetryLayer::new().layer(ok()), 0).await;
    expect("breaker", CircuitBreakerLayer::new().layer(ok()), 0).await;
    expect("throttle", ThrottleLayer::new().layer(ok()), 0).await;
    expect("adaptive limit", AdaptiveLimitLayer::new().layer(ok()), 0).await;
    expect("error response", ErrorResponseLayer::new().layer(ok()), 0).await;
    let server_deadline = DeadlineLayer::server().build().unwrap();
    expect(
        "deadline (server)",
        server_deadline.layer(ok()),
        EXTENSION_MAP,
    )
    .await;
    let client_deadline = DeadlineLayer::client().build().unwrap();
    let both_maps = EXTENSION_MAP + HEADER_MAP;
    expect("deadline (client)", client_deadline.layer(ok()), both_maps).await;

    // The presets: nothing beyond the deadline's maps. Retry keeps the
    // request's head without them (they are all it holds), so nothing is
    // copied.
    let client = Resilience::client().build().unwrap();
    expect("client preset", client.layer(ok()), both_maps).await;
    let client = Resilience::client().without_deadline().build().unwrap();
    expect("client preset without deadline", client.layer(ok()), 0).await;
    let server = Resilience::server().build().unwrap();
    expect("server preset", server.layer(ok()), EXTENSION_MAP).await;
}

/// A request that already has headers and extensions (the usual request a
/// proxy forwards) gets the deadline's entries without new maps; the retry
/// layer's copy of its head then allocates what copying those maps takes.
#[tokio::test(flavor = "current_thread")]
async fn a_request_with_maps_pays_no_map_for_the_deadline() {
    let mut svc = DeadlineLayer::client().build().unwrap().layer(ok());
    for _ in 0..3 {
        ServiceExt::<Request<Body>>::ready(&mut svc).await.unwrap();
        drop(svc.call(Request::new(Body::new())).await.unwrap());
    }
    let mut request = Request::new(Body::new());
    request
        .headers_mut()
        .insert("accept", "*/*".parse().unwrap());
    request.extensions_mut().insert(7u8);
    let before = allocations();
    ServiceExt::<Request<Body>>::ready(&mut svc).await.unwrap();
    drop(svc.call(request).await.unwrap());
    // The boxed `Deadline` in the existing extension map; the header map
    // has room, and the header's value is made once, with the layer.
    assert_eq!(allocations() - before, 1);
}

/// The client preset on a request that already has a header and an
/// extension: the retry's copy of its head (the header map's two
/// allocations, the extension map's three with its one value) and the
/// boxed `Deadline`, written into the first attempt once the copy is made.
/// The copy holds neither the `Deadline` (one more boxed value to clone)
/// nor its header (the deadline layer above handed both over).
#[tokio::test(flavor = "current_thread")]
async fn the_client_preset_copies_a_head_without_its_deadline() {
    let client = Resilience::client().without_stale_if_error();
    let mut svc = client.build().unwrap().layer(ok());
    let request = || {
        let mut request = Request::new(Body::new());
        request
            .headers_mut()
            .insert("accept", http::HeaderValue::from_static("*/*"));
        request.extensions_mut().insert(7u8);
        request
    };
    for _ in 0..3 {
        ServiceExt::<Request<Body>>::ready(&mut svc).await.unwrap();
        drop(svc.call(request()).await.unwrap());
    }
    let request = request();
    let before = allocations();
    ServiceExt::<Request<Body>>::ready(&mut svc).await.unwrap();
    drop(svc.call(request).await.unwrap());
    assert_eq!(allocations() - before, HEADER_MAP + EXTENSION_MAP + 1);
}

/// A proxy's client deadline behind its server deadline: the request
/// arrives with a `Deadline` (the server's) and a budget left that is not
/// the client's whole timeout, so the header's value is made for it. The
/// client's `Deadline` takes the server's place in the map, and the value,
/// the same figure as the last request's on this thread, is the kept one:
/// nothing is allocated.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deadline_behind_a_deadline_allocates_nothing() {
    let second = Duration::from_secs(1);
    let server = DeadlineLayer::server()
        .timeout(10 * second)
        .build()
        .unwrap();
    let client = DeadlineLayer::client().build().unwrap();
    // The server's deadline with headers to write into, outside the count.
    let arrive = || {
        let mut request = Request::new(Body::new());
        request
            .headers_mut()
            .insert("accept", "*/*".parse().unwrap());
        request
    };
    let mut outer = server.layer(tower::service_fn(|request: Request<Body>| async move {
        Ok::<_, Infallible>(request)
    }));
    let mut svc = client.layer(ok());
    for _ in 0..3 {
        let request = outer.ready().await.unwrap().call(arrive()).await.unwrap();
        ServiceExt::<Request<Body>>::ready(&mut svc).await.unwrap();
        drop(svc.call(request).await.unwrap());
    }
    let request = outer.ready().await.unwrap().call(arrive()).await.unwrap();
    let before = allocations();
    ServiceExt::<Request<Body>>::ready(&mut svc).await.unwrap();
    drop(svc.call(request).await.unwrap());
    assert_eq!(allocations() - before, 0);
}

/// The stale-if-error store keeps what its budget says and no more: many
/// distinct pages of 10 to 100 kB, streamed in chunks (no length known in
/// advance) over a real hyper connection on loopback, fill a 4 MiB store;
/// the bytes still held once every connection is gone are within 1.1× of
/// what the store counts, which is within its cap. (A copy that kept a
/// grown buffer's spare room, or header values that are slices of a
/// connection's read buffer, would hold far more than it counts.)
#[cfg(feature = "fallback")]
#[tokio::test(flavor = "current_thread")]
async fn the_stale_store_holds_what_it_counts() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower_steady::fallback::StaleIfErrorLayer;

    const CAP: usize = 4 << 20;
    const PAGES: usize = 1_500;

    // The upstream: page `/p/N` is 10 to 100 kB, sent in 16 KiB chunks.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let n: usize = req
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    let len = 10_000 + (n * 7_919) % 90_000;
                    let body = Chunked { left: len };
                    let response = Response::builder()
                        .header("cache-control", "max-age=60")
                        .header("content-type", "text/html")
                        .header("x-page", n)
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let stale = StaleIfErrorLayer::builder().max_bytes(CAP).build().unwrap();
    let handle = stale.handle();
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Empty<Bytes>>();
    let mut svc = stale.layer(client);
    // What the process holds from here on is the store's (and whatever the
    // runtime and the connections still hold, which drains below).
    let before = live_bytes();
    for n in 0..PAGES {
        let request = Request::get(format!("http://{addr}/p/{n}"))
            .body(Empty::new())
            .unwrap();
        let response = svc.ready().await.unwrap().call(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.len() >= 10_000);
    }
    drop(svc);
    server.abort();
    let _ = server.await;
    // Let the connections' tasks see their sockets close and end.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let held = (live_bytes() - before) as f64;
    let stats = handle.stats();
    println!(
        "held {held} bytes for {} entries counted as {} bytes (cap {CAP})",
        stats.entries, stats.bytes
    );
    assert!(stats.stored as usize >= PAGES / 2, "{stats:?}");
    assert!(stats.bytes <= CAP, "{stats:?}");
    assert!(
        held <= 1.1 * stats.bytes as f64,
        "held {held} bytes, counted {}",
        stats.bytes
    );
}

/// A body of `left` bytes in chunks of 16 KiB, with no length known in
/// advance (sent chunked).
#[cfg(feature = "fallback")]
struct Chunked {
    left: usize,
}

#[cfg(feature = "fallback")]
impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(16 << 10);
        self.left -= n;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}
