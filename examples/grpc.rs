//! gRPC with tonic: a server behind `Resilience::server()` that answers
//! one call in ten with `UNAVAILABLE`, called on loopback by a bare tonic
//! client and by one with `Resilience::client()` around its `Channel`.
//!
//! ```text
//! cargo run --example grpc --features tonic
//! ```
//!
//! The messages are prost structs written by hand and the service is what
//! tonic's code generator would write for one unary method, so the example
//! needs no `protoc`. It sends 500 calls through each client and prints
//! what came back, then ends.

use std::convert::Infallible;
use std::future::Future;
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
use tower::{BoxError, Layer};
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

const PATH: &str = "/demo.Pinger/Ping";
const CALLS: u32 = 500;

/// The service: every tenth call fails with `UNAVAILABLE`, the rest echo.
#[derive(Clone, Default)]
struct Pinger {
    calls: Arc<AtomicUsize>,
}

impl NamedService for Pinger {
    const NAME: &'static str = "demo.Pinger";
}

struct PingMethod(Pinger);

impl tonic::server::UnaryService<Ping> for PingMethod {
    type Response = Pong;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Pong>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Ping>) -> Self::Future {
        let n = self.0.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let ping = request.into_inner();
        Box::pin(async move {
            if n % 10 == 0 {
                Err(Status::unavailable("restarting"))
            } else {
                Ok(tonic::Response::new(Pong { n: ping.n }))
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

/// Sends `CALLS` pings through `service` and counts what came back.
async fn run<S>(name: &str, service: S) -> Result<(), BoxError>
where
    S: tonic::client::GrpcService<Body> + Clone,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    S::Error: Into<BoxError>,
{
    let (mut ok, mut unavailable, mut other) = (0, 0, 0);
    for n in 0..CALLS {
        let mut grpc = tonic::client::Grpc::new(service.clone());
        grpc.ready().await.map_err(Into::into)?;
        let answer = grpc
            .unary(
                tonic::Request::new(Ping { n }),
                PathAndQuery::from_static(PATH),
                ProstCodec::<Ping, Pong>::default(),
            )
            .await;
        match answer {
            Ok(pong) if pong.get_ref().n == n => ok += 1,
            Err(status) if status.code() == Code::Unavailable => unavailable += 1,
            _ => other += 1,
        }
    }
    println!("  {name:<10} {CALLS:>6} {ok:>6} {unavailable:>12} {other:>6}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        Server::builder()
            .layer(Resilience::server().build()?)
            .add_service(Pinger::default())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;

    println!("A tonic server on {addr} answers one call in ten with UNAVAILABLE.\n");
    println!(
        "  {:<10} {:>6} {:>6} {:>12} {:>6}",
        "client", "calls", "ok", "UNAVAILABLE", "other"
    );
    run("bare", channel.clone()).await?;
    // The retry layer resends each UNAVAILABLE (gRPC calls it safe to
    // retry), within its budget; TonicBody gives the channel its body type.
    let resilient = Resilience::client().build()?.layer(TonicBody::new(channel));
    run("resilient", resilient).await?;
    println!(
        "\nUNAVAILABLE is retried whatever the method; the server's own refusals (shed, \
         deadline) reach gRPC clients as UNAVAILABLE with grpc-retry-pushback-ms, or \
         DEADLINE_EXCEEDED."
    );
    server.abort();
    Ok(())
}
