//! End to end on loopback with tonic: a real tonic server (a hand-written
//! unary service over prost messages, no `protoc`) and a tonic client on
//! `127.0.0.1:0`, with `Resilience::client()` around the client's
//! `Channel` and `Resilience::server()` around the server.
#![cfg(all(feature = "tonic", feature = "preset"))]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::Layer;
use tower_steady::load_shed::AdaptiveLimitLayer;
use tower_steady::tonic::TonicBody;
use tower_steady::Resilience;

#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(uint32, tag = "1")]
    n: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Pong {
    #[prost(uint32, tag = "1")]
    n: u32,
}

const PATH: &str = "/test.Pinger/Ping";

/// How the test server answers.
#[derive(Clone)]
enum Behaviour {
    /// Every `n`th call `UNAVAILABLE`, the rest echo.
    UnavailableEvery(usize),
    /// Every call waits until the test releases it, then echoes.
    Held(Arc<tokio::sync::Notify>),
}

/// The server: what tonic's code generator would write for one unary
/// method, by hand.
#[derive(Clone)]
struct Pinger {
    behaviour: Behaviour,
    calls: Arc<AtomicUsize>,
    /// Notified as each call starts.
    started: Arc<tokio::sync::Notify>,
}

impl Pinger {
    fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            calls: Arc::default(),
            started: Arc::default(),
        }
    }
}

impl NamedService for Pinger {
    const NAME: &'static str = "test.Pinger";
}

struct PingMethod(Pinger);

impl tonic::server::UnaryService<Ping> for PingMethod {
    type Response = Pong;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Pong>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Ping>) -> Self::Future {
        let n = self.0.calls.fetch_add(1, Ordering::Relaxed) + 1;
        self.0.started.notify_one();
        let behaviour = self.0.behaviour.clone();
        let ping = request.into_inner();
        Box::pin(async move {
            match behaviour {
                Behaviour::UnavailableEvery(every) if n % every == 0 => {
                    Err(Status::unavailable("try again"))
                }
                Behaviour::Held(release) => {
                    release.notified().await;
                    Ok(tonic::Response::new(Pong { n: ping.n }))
                }
                _ => Ok(tonic::Response::new(Pong { n: ping.n })),
            }
        })
    }
}

impl tower::Service<http::Request<Body>> for Pinger {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = PingMethod(self.clone());
        Box::pin(async move {
            if request.uri().path() != PATH {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Pong, Ping>::default());
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// Serves `pinger` behind `Resilience::server()` (with `limit`) on
/// loopback; the address.
async fn serve(pinger: Pinger, limit: Option<u32>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = match limit {
        Some(n) => Resilience::server().limit(AdaptiveLimitLayer::builder().fixed(n)),
        None => Resilience::server().limit(AdaptiveLimitLayer::builder()),
    };
    let layer = server.build().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(pinger)
            .serve_with_incoming(incoming),
    );
    addr
}

/// A tonic client with `Resilience::client()` around its channel to `addr`.
fn client(
    addr: SocketAddr,
) -> impl Fn(u32) -> Pin<Box<dyn Future<Output = Result<u32, Status>> + Send>> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let layer = Resilience::client()
        .circuit_breaker(
            tower_steady::circuit_breaker::CircuitBreakerLayer::builder().name("pinger"),
        )
        .build()
        .unwrap();
    let service = layer.layer(TonicBody::new(channel));
    move |n| {
        let mut grpc = tonic::client::Grpc::new(service.clone());
        Box::pin(async move {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let response = grpc
                .unary(
                    tonic::Request::new(Ping { n }),
                    PathAndQuery::from_static(PATH),
                    ProstCodec::<Ping, Pong>::default(),
                )
                .await?;
            Ok(response.into_inner().n)
        })
    }
}

#[tokio::test]
async fn a_server_answering_unavailable_to_one_call_in_twenty_never_reaches_the_client() {
    let pinger = Pinger::new(Behaviour::UnavailableEvery(20));
    let calls = pinger.calls.clone();
    let addr = serve(pinger, None).await;
    let call = client(addr);
    for n in 0..200 {
        assert_eq!(call(n).await.unwrap(), n, "call {n}");
    }
    // Every twentieth answer was UNAVAILABLE and was retried.
    assert!(
        calls.load(Ordering::Relaxed) >= 210,
        "{}",
        calls.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn an_overloaded_server_answers_unavailable_with_pushback() {
    // A limit of one; the first call is held, the second is shed.
    let release = Arc::new(tokio::sync::Notify::new());
    let pinger = Pinger::new(Behaviour::Held(release.clone()));
    let started = pinger.started.clone();
    let addr = serve(pinger, Some(1)).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let unary = |channel: Channel| async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        grpc.unary(
            tonic::Request::new(Ping { n: 1 }),
            PathAndQuery::from_static(PATH),
            ProstCodec::<Ping, Pong>::default(),
        )
        .await
    };
    let first = tokio::spawn(unary(channel.clone()));
    // Once the first holds the place, the next is shed at once.
    started.notified().await;
    let status = unary(channel.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "1000"
    );
    release.notify_one();
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test]
async fn an_expired_deadline_is_deadline_exceeded_at_once() {
    // A call whose budget is spent on arrival is answered without running
    // the handler. (The budget goes in `x-request-timeout-ms`: a tonic
    // client acts on a `grpc-timeout` itself, before sending.)
    let pinger = Pinger::new(Behaviour::Held(Arc::default()));
    let calls = pinger.calls.clone();
    let addr = serve(pinger, None).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(Ping { n: 1 });
    request
        .metadata_mut()
        .insert("x-request-timeout-ms", "0".parse().unwrap());
    let status = grpc
        .unary(
            request,
            PathAndQuery::from_static(PATH),
            ProstCodec::<Ping, Pong>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 0, "the handler never ran");
}

#[tokio::test]
async fn the_breaker_opens_on_a_dead_grpc_upstream() {
    // Nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let call = client(dead);
    let mut open = None;
    for n in 0..100 {
        let status = call(n).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let proxy_status = status
            .metadata()
            .get("proxy-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        if proxy_status.contains("circuit open") {
            open = Some(n);
            break;
        }
    }
    let opened_after = open.expect("the breaker opened");
    assert!(opened_after < 60, "opened after {opened_after} calls");
}
