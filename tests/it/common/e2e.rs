//! The end-to-end harness: real hyper servers and clients on loopback,
//! paused time held while a call is on the wire, load drivers.

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

/// A server on `127.0.0.1:0`, run on its own thread by a current-thread
/// runtime with **paused time**: its timers (timeouts, deadlines, injected
/// latency) fire as soon as the server has nothing else to do, so a test
/// that waits for a 10 s timeout takes no time and cannot flake on a slow
/// machine. The server stops when the value is dropped.
pub struct PausedServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PausedServer {
    pub fn start(app: Router) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::start_on(std_listener, app)
    }

    /// Serves `app` on a listener the test bound itself (to reuse a port).
    /// Dropping the server closes the listener and every connection.
    pub fn start_on(std_listener: std::net::TcpListener, app: Router) -> Self {
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                tokio::select! {
                    res = axum::serve(listener, app) => res.unwrap(),
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for PausedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub type TestClient = Client<HttpConnector, Empty<Bytes>>;

/// A plain hyper-util client, no pooling surprises: one connection per
/// request is not needed, but idle connections must not outlive the test.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

pub fn get(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url).body(Empty::new()).unwrap()
}

/// Status, headers and body of a response, read to the end.
pub async fn read(
    res: http::Response<hyper::body::Incoming>,
) -> (http::StatusCode, http::HeaderMap, String) {
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// A bound that stops a test that would otherwise hang on a bug. It asserts
/// nothing about speed: a healthy run finishes in milliseconds.
pub async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(60), fut)
        .await
        .expect("test did not finish within its bound")
}

/// While the value lives, the paused clock of the current-thread runtime
/// it was made on does not auto-advance: a blocking task (which tokio
/// counts as work in flight; see `tokio::time::pause`, "Preventing
/// auto-advance") waits until the value is dropped. `tokio::time::advance`
/// still moves the clock.
pub struct ClockHold(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

pub fn hold_clock() -> ClockHold {
    let (hold, released) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        // Returns when the sender is dropped.
        let _ = released.recv();
    });
    ClockHold(hold)
}

/// The client side of one upstream as the end-to-end tests dial it: counts
/// its calls and, unless made with [`Dialer::without_hold`], holds the
/// paused clock (see [`hold_clock`]) while a call is in flight.
///
/// This is what lets a client with timers of its own (deadlines, attempt
/// timeouts, backoff) run under paused time against real sockets: virtual
/// time moves only when every call still in flight is one that will never
/// be answered (a hung upstream's), or when the test advances it. So a
/// 15 s deadline cannot fire while an answer is on its way over loopback,
/// and a 1 s attempt timeout on a hung upstream fires without waiting a
/// second of wall-clock time.
#[derive(Clone)]
pub struct Dialer<S> {
    inner: S,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    hold: bool,
}

impl<S> Dialer<S> {
    pub fn new(inner: S, calls: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        Self {
            inner,
            calls,
            hold: true,
        }
    }

    /// For an upstream that hangs: its calls do not hold the clock.
    pub fn without_hold(inner: S, calls: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        Self {
            inner,
            calls,
            hold: false,
        }
    }
}

impl<S, R> tower::Service<R> for Dialer<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hold = self.hold.then(hold_clock);
        let call = self.inner.call(request);
        Box::pin(async move {
            let out = call.await;
            drop(hold);
            out
        })
    }
}

/// What a load saw: statuses (a transport error counts as status 0), how
/// many answers carried `Retry-After`, and each request's latency in the
/// runtime's (virtual) time.
#[derive(Debug, Default)]
pub struct Tally {
    pub statuses: std::collections::BTreeMap<u16, usize>,
    pub retry_after: usize,
    pub latencies: Vec<std::time::Duration>,
}

impl Tally {
    pub fn only(status: u16, n: usize) -> std::collections::BTreeMap<u16, usize> {
        std::collections::BTreeMap::from([(status, n)])
    }

    pub fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// The latency at quantile `q` (0.0 to 1.0).
    pub fn quantile(&self, q: f64) -> std::time::Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        sorted
            .get(((sorted.len().saturating_sub(1)) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    }

    pub fn absorb(&mut self, other: Tally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_insert(0) += n;
        }
        self.retry_after += other.retry_after;
        self.latencies.extend(other.latencies);
    }
}

/// Sends `total` GETs for `uri` from `concurrency` tasks, reading each
/// body to the end.
pub async fn drive<S, B>(service: S, uri: &'static str, total: usize, concurrency: usize) -> Tally
where
    S: tower::Service<http::Request<Empty<Bytes>>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (service, sent) = (service.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let start = tokio::time::Instant::now();
                let status = match service.clone().oneshot(get(uri)).await {
                    Ok(response) => {
                        tally.retry_after +=
                            usize::from(response.headers().contains_key(http::header::RETRY_AFTER));
                        let status = response.status().as_u16();
                        response.into_body().collect().await.unwrap();
                        status
                    }
                    Err(error) => {
                        eprintln!("request failed: {error:?}");
                        0
                    }
                };
                tally.latencies.push(start.elapsed());
                *tally.statuses.entry(status).or_insert(0) += 1;
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        tally.absorb(worker.await.unwrap());
    }
    tally
}

/// What a [`Upstream`] does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 (`/cached`: with `Cache-Control: public, max-age=1`).
    Ok = 0,
    /// 502 Bad Gateway.
    BadGateway = 1,
    /// Never answers.
    Hang = 2,
}

/// One upstream: an axum app on loopback counting the requests it gets
/// and answering as its [`Mode`] says. It can be stopped (listener and
/// connections closed: new connections are refused) and started again on
/// the same port.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: std::sync::Arc<tokio::sync::watch::Sender<u32>>,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    server: Option<PausedServer>,
}

impl Upstream {
    pub fn start() -> Self {
        let mut this = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            hits: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
            mode: std::sync::Arc::default(),
            server: None,
        };
        this.restart();
        this
    }

    pub fn restart(&mut self) {
        use axum::response::IntoResponse;
        // SO_REUSEADDR so the port can be bound again right after a stop.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.bind(&self.addr.into()).unwrap();
        socket.listen(128).unwrap();
        let listener: std::net::TcpListener = socket.into();
        self.addr = listener.local_addr().unwrap();

        let (hits, mode) = (self.hits.clone(), self.mode.clone());
        let answer = move |cached: bool| {
            let (hits, mode) = (hits.clone(), mode.clone());
            async move {
                hits.send_modify(|n| *n += 1);
                match mode.load(std::sync::atomic::Ordering::SeqCst) {
                    0 if cached => (
                        [(http::header::CACHE_CONTROL, "public, max-age=1")],
                        "cached",
                    )
                        .into_response(),
                    0 => "hello".into_response(),
                    1 => http::StatusCode::BAD_GATEWAY.into_response(),
                    _ => std::future::pending().await,
                }
            }
        };
        let cached = answer.clone();
        let app = Router::new()
            .route("/", axum::routing::get(move || answer(false)))
            .route("/cached", axum::routing::get(move || cached(true)));
        self.server = Some(PausedServer::start_on(listener, app));
    }

    pub fn stop(&mut self) {
        self.server = None;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode
            .store(mode as u8, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn hits(&self) -> u32 {
        *self.hits.borrow()
    }

    /// Waits until the upstream has had `n` requests in all.
    pub async fn wait_for_hits(&self, n: u32) {
        self.hits
            .subscribe()
            .wait_for(|hits| *hits >= n)
            .await
            .unwrap();
    }
}
