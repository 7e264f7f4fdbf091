//! End to end on loopback: every answer `ErrorResponseLayer` makes says why
//! in an RFC 9209 `Proxy-Status` header, read by a hyper-util client from
//! an axum server (paused time) whose routes each fail one way, through the
//! crate's real layers: a refused connection, a reset, an upstream that
//! answers what is not HTTP, an open breaker, an empty endpoint set, a shed
//! request, an attempt timeout, a handler timeout, an expired deadline, a
//! tunnel asked of an endpoint, an unknown error and an upstream's `502`.
#![cfg(all(feature = "preset", feature = "upstream", feature = "chaos"))]

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use common::{bounded, client, read, PausedServer};
use http::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
use tower_steady::chaos::{ChaosLayer, Fault};
use tower_steady::circuit_breaker::CircuitBreakerLayer;
use tower_steady::deadline::DeadlineLayer;
use tower_steady::http::ErrorResponseLayer;
use tower_steady::load_shed::AdaptiveLimitLayer;
use tower_steady::timeout::TimeoutLayer;
use tower_steady::upstream::{SetAuthority, Upstreams};
use tower_steady::Resilience;

/// A handler that never answers.
async fn hang() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

/// A loopback server on a thread of its own that answers every connection
/// with bytes that are not an HTTP response, then closes it.
fn garbage_upstream() -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"this is not http\r\n\r\n");
        }
    });
    addr
}

/// A port on loopback that nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn ok(
) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::from("ok"))) })
}

fn app(
    entered: std::sync::Arc<tokio::sync::Notify>,
) -> (Router, tower_steady::circuit_breaker::BreakerHandle) {
    let errors = ErrorResponseLayer::new().proxy_name("edge-1");

    // A hyper-util client sent to a closed port.
    let closed = closed_port();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let refused = ServiceBuilder::new()
        .map_request(move |mut request: Request<Body>| {
            *request.uri_mut() = format!("http://{closed}/").parse().unwrap();
            request
        })
        .service(client);

    // An upstream that answers what is not HTTP, through a hyper-util
    // client.
    let garbage = garbage_upstream();
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let malformed = ServiceBuilder::new()
        .map_request(move |mut request: Request<Body>| {
            *request.uri_mut() = format!("http://{garbage}/").parse().unwrap();
            request
        })
        .service(client);

    let breaker = CircuitBreakerLayer::builder()
        .name("payments")
        .build()
        .unwrap();
    let handle = breaker.handle();

    let empty = Upstreams::builder()
        .build(Vec::<SocketAddr>::new(), |_| ok())
        .unwrap();

    let limit = AdaptiveLimitLayer::builder().fixed(1).build().unwrap();

    let router = Router::new()
        .route_service("/refused", errors.layer(refused))
        .route_service("/open", errors.layer(breaker.layer(ok())))
        .route_service("/none", errors.layer(empty))
        .route_service(
            "/attempt",
            errors.layer(TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(
                |_: Request<Body>| async {
                    std::future::pending::<()>().await;
                    Ok::<_, Infallible>(Response::new(Body::empty()))
                },
            ))),
        )
        .route_service(
            "/upstream-502",
            errors.layer(
                ChaosLayer::builder()
                    .fault(Fault::Status(StatusCode::BAD_GATEWAY), 1.0)
                    .build()
                    .unwrap()
                    .layer(ok()),
            ),
        )
        .route(
            "/deadline",
            get(hang).layer(
                ServiceBuilder::new()
                    .layer(errors.clone())
                    .layer(DeadlineLayer::server().build().unwrap()),
            ),
        )
        .route(
            "/handler",
            get(hang).layer(
                Resilience::server()
                    .error_response(errors.clone())
                    .without_limit()
                    .timeout(Duration::from_secs(1))
                    .build()
                    .unwrap(),
            ),
        )
        .route_service(
            "/reset",
            errors.layer(
                ChaosLayer::builder()
                    .fault(Fault::ConnectionReset, 1.0)
                    .build()
                    .unwrap()
                    .layer(ok()),
            ),
        )
        .route_service("/malformed", errors.layer(malformed))
        .route_service(
            "/internal",
            errors.layer(service_fn(|_: Request<Body>| async {
                Err::<Response<Body>, _>(std::fmt::Error)
            })),
        )
        .route_service("/tunnel", errors.layer(SetAuthority::new(closed, ok())))
        .route(
            "/shed",
            get(move || {
                entered.notify_one();
                hang()
            })
            .layer(ServiceBuilder::new().layer(errors).layer(limit)),
        );
    (router, handle)
}

async fn fetch(
    server: &PausedServer,
    path: &str,
    timeout_ms: Option<&str>,
) -> (StatusCode, String) {
    let mut request = common::get(&server.url(path));
    if let Some(ms) = timeout_ms {
        request
            .headers_mut()
            .insert("x-request-timeout-ms", ms.parse().unwrap());
    }
    let (status, headers, _) = read(bounded(client().request(request)).await.unwrap()).await;
    let proxy_status = headers
        .get("proxy-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, proxy_status)
}

/// A `CONNECT` for `path`'s route, written by hand (a client would dial
/// the target itself): the status and the `Proxy-Status` of the answer.
async fn connect(server: &PausedServer, path: &str) -> (StatusCode, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = bounded(tokio::net::TcpStream::connect(server.addr))
        .await
        .unwrap();
    // axum routes on the path: an origin-form target, sent as CONNECT.
    let request = format!("CONNECT {path} HTTP/1.1\r\nhost: example.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = bounded(stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed before the head");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let proxy_status = head
        .lines()
        .find_map(|line| line.strip_prefix("proxy-status: "))
        .unwrap_or_default()
        .to_owned();
    (StatusCode::from_u16(status).unwrap(), proxy_status)
}

#[tokio::test]
async fn every_answer_the_stack_makes_says_why() {
    let entered = std::sync::Arc::new(tokio::sync::Notify::new());
    let (app, breaker) = app(entered.clone());
    breaker.force_open();
    let server = PausedServer::start(app);
    let expect = |status: u16, error: &str, details: &str| {
        (
            StatusCode::from_u16(status).unwrap(),
            format!("edge-1; error={error}; details=\"{details}\""),
        )
    };

    assert_eq!(
        fetch(&server, "/refused", None).await,
        expect(503, "connection_refused", "connection refused")
    );
    assert_eq!(
        fetch(&server, "/open", None).await,
        expect(503, "destination_unavailable", "circuit open")
    );
    assert_eq!(
        fetch(&server, "/none", None).await,
        expect(503, "destination_unavailable", "no healthy upstream")
    );
    assert_eq!(
        fetch(&server, "/attempt", None).await,
        expect(504, "http_response_timeout", "attempt timeout")
    );
    assert_eq!(
        fetch(&server, "/handler", None).await,
        expect(504, "http_response_timeout", "handler timeout")
    );
    assert_eq!(
        fetch(&server, "/deadline", Some("50")).await,
        expect(504, "http_response_timeout", "deadline exceeded")
    );
    assert_eq!(
        fetch(&server, "/upstream-502", None).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "edge-1; received-status=502; details=\"upstream answered 502\"".to_owned()
        )
    );

    assert_eq!(
        fetch(&server, "/reset", None).await,
        expect(503, "connection_terminated", "connection closed")
    );
    assert_eq!(
        fetch(&server, "/malformed", None).await,
        expect(502, "http_protocol_error", "malformed response")
    );
    assert_eq!(
        fetch(&server, "/internal", None).await,
        expect(500, "proxy_internal_error", "internal error")
    );
    assert_eq!(
        connect(&server, "/tunnel").await,
        expect(501, "proxy_internal_response", "unsupported target")
    );

    // The limit holds one request; once the first is in its handler (which
    // never ends), the next is shed.
    let url = server.url("/shed");
    let holder = tokio::spawn(async move {
        let _ = client().request(common::get(&url)).await;
    });
    bounded(entered.notified()).await;
    assert_eq!(
        fetch(&server, "/shed", None).await,
        expect(503, "proxy_internal_response", "overloaded")
    );
    holder.abort();
}

#[tokio::test]
async fn a_healthy_answer_carries_no_proxy_status_and_it_can_be_turned_off() {
    let plain = ErrorResponseLayer::new().without_proxy_status();
    let chaos = ChaosLayer::builder()
        .fault(Fault::ConnectionRefused, 1.0)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route_service("/quiet", plain.layer(chaos.layer(ok())))
        .layer(ErrorResponseLayer::new());
    let server = PausedServer::start(app);
    assert_eq!(
        fetch(&server, "/", None).await,
        (StatusCode::OK, String::new())
    );
    assert_eq!(
        fetch(&server, "/quiet", None).await,
        (StatusCode::SERVICE_UNAVAILABLE, String::new())
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn in_process_callers_read_the_cause_from_the_response() {
    use tower_steady::classify::FailureKind;
    use tower_steady::http::ProxyStatus;

    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    breaker.handle().force_open();
    let svc = ErrorResponseLayer::new().layer(breaker.layer(ok()));
    let response = svc.oneshot(Request::new(Body::empty())).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let cause = ProxyStatus::of(&response).expect("made by the stack");
    assert_eq!(cause.error(), Some("destination_unavailable"));
    assert_eq!(cause.details(), "circuit open");
    assert_eq!(cause.kind(), FailureKind::Rejected);
    assert_eq!(cause.received_status(), None);
}
