//! Classification of real errors from real hyper clients on loopback, and of
//! error chains as other layers and libraries build them.

use crate::common;

use std::io;

use axum::{http::StatusCode, routing::get, Router};
use common::{bounded, client, PausedServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_steady::classify::{Classify, FailureKind, HttpClassifier, Outcome, RetrySafety};
use tower_steady::BoxError;

fn classify(err: &BoxError) -> Outcome {
    HttpClassifier::new().classify_error(&**err)
}

/// A loopback address nothing listens on: bound, then released.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test]
async fn a_refused_connection_is_not_sent() {
    let url = format!("http://{}/", closed_port());
    let err = bounded(client().request(common::get(&url)))
        .await
        .unwrap_err();
    let err: BoxError = Box::new(err);
    assert_eq!(
        classify(&err),
        Outcome::failure(FailureKind::Connect, RetrySafety::NotSent)
    );
}

/// An upstream that reads the whole request and then closes the connection
/// without answering: the request was sent.
#[tokio::test]
async fn a_connection_closed_after_the_request_was_read_may_have_been_sent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_request_head(&mut socket).await;
        socket.shutdown().await.unwrap();
    });

    let err = bounded(client().request(common::get(&format!("http://{addr}/"))))
        .await
        .unwrap_err();
    upstream.await.unwrap();
    let err: BoxError = Box::new(err);
    assert_eq!(
        classify(&err),
        Outcome::failure(FailureKind::Reset, RetrySafety::MaybeSent),
        "{err:?}"
    );
}

/// The same, but the upstream resets the connection (RST) instead of closing
/// it cleanly.
#[tokio::test]
async fn a_connection_reset_after_the_request_was_read_may_have_been_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = std::thread::spawn(move || {
        use std::io::Read;
        let (mut socket, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
        // A zero linger makes close() send RST instead of FIN.
        let socket = socket2::SockRef::from(&socket);
        socket.set_linger(Some(std::time::Duration::ZERO)).unwrap();
    });

    let err = bounded(client().request(common::get(&format!("http://{addr}/"))))
        .await
        .unwrap_err();
    upstream.join().unwrap();
    let err: BoxError = Box::new(err);
    let outcome = classify(&err);
    assert_eq!(outcome.kind(), Some(FailureKind::Reset), "{err:?}");
    assert_eq!(outcome.safety(), Some(RetrySafety::MaybeSent));
}

#[tokio::test]
async fn a_real_upstream_502_is_a_bad_gateway_that_was_sent() {
    let upstream = PausedServer::start(Router::new().route(
        "/",
        get(|| async { (StatusCode::BAD_GATEWAY, "nginx says no") }),
    ));
    let res = bounded(client().request(common::get(&upstream.url("/"))))
        .await
        .unwrap();
    assert_eq!(
        HttpClassifier::new().classify_response(&res),
        Outcome::failure(FailureKind::BadGateway, RetrySafety::MaybeSent)
    );
}

async fn read_request_head(socket: &mut tokio::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "client closed before sending its request");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn statuses() {
    let c = HttpClassifier::new();
    let kind = |s: u16| c.classify_status(StatusCode::from_u16(s).unwrap()).kind();
    assert_eq!(kind(200), None);
    assert_eq!(kind(204), None);
    assert_eq!(kind(304), None);
    assert_eq!(kind(400), None);
    assert_eq!(kind(404), None);
    assert_eq!(kind(409), None);
    assert_eq!(kind(408), Some(FailureKind::Timeout));
    assert_eq!(kind(429), Some(FailureKind::TooManyRequests));
    assert_eq!(kind(500), Some(FailureKind::ServerError));
    assert_eq!(kind(501), Some(FailureKind::ServerError));
    assert_eq!(kind(502), Some(FailureKind::BadGateway));
    assert_eq!(kind(503), Some(FailureKind::Unavailable));
    assert_eq!(kind(504), Some(FailureKind::GatewayTimeout));
    assert_eq!(kind(599), Some(FailureKind::ServerError));
    for s in [408, 429, 500, 502, 503, 504] {
        let outcome = c.classify_status(StatusCode::from_u16(s).unwrap());
        assert_eq!(outcome.safety(), Some(RetrySafety::MaybeSent), "{s}");
    }
}

#[test]
fn io_error_kinds() {
    use io::ErrorKind::*;
    let of = |kind: io::ErrorKind| classify(&(Box::new(io::Error::from(kind)) as BoxError));
    for k in [
        ConnectionRefused,
        HostUnreachable,
        NetworkUnreachable,
        AddrNotAvailable,
        NotConnected,
    ] {
        assert_eq!(
            of(k),
            Outcome::failure(FailureKind::Connect, RetrySafety::NotSent),
            "{k:?}"
        );
    }
    for k in [
        ConnectionReset,
        ConnectionAborted,
        BrokenPipe,
        UnexpectedEof,
    ] {
        assert_eq!(
            of(k),
            Outcome::failure(FailureKind::Reset, RetrySafety::MaybeSent),
            "{k:?}"
        );
    }
    assert_eq!(
        of(TimedOut),
        Outcome::failure(FailureKind::Timeout, RetrySafety::MaybeSent)
    );
    assert_eq!(
        of(PermissionDenied),
        Outcome::failure(FailureKind::Other, RetrySafety::MaybeSent)
    );
}

/// An error type of some other library that wraps the real cause.
#[derive(Debug)]
struct Wrapper(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Wrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream call failed")
    }
}

impl std::error::Error for Wrapper {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[test]
fn the_whole_source_chain_is_walked() {
    let deep: BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(io::Error::from(
        io::ErrorKind::ConnectionRefused,
    ))))));
    assert_eq!(classify(&deep).kind(), Some(FailureKind::Connect));
}

#[test]
fn an_io_error_wrapping_a_known_error_is_looked_through() {
    // `io::Error::source()` skips the error it wraps; classification must not.
    let inner = io::Error::from(io::ErrorKind::ConnectionReset);
    let outer: BoxError = Box::new(io::Error::other(Wrapper(Box::new(inner))));
    assert_eq!(classify(&outer).kind(), Some(FailureKind::Reset));
}

#[test]
fn this_crates_errors_are_recognised_anywhere_in_the_chain() {
    let elapsed: BoxError = Box::new(Wrapper(Box::new(
        tower_steady::timeout::error::Elapsed::new(),
    )));
    assert_eq!(
        classify(&elapsed),
        Outcome::failure(FailureKind::Timeout, RetrySafety::MaybeSent)
    );
}

#[test]
fn unknown_errors_are_other_and_maybe_sent() {
    let err: BoxError = "something odd".into();
    assert_eq!(
        classify(&err),
        Outcome::failure(FailureKind::Other, RetrySafety::MaybeSent)
    );
}

#[test]
fn retry_safety_depends_on_idempotency_only_when_maybe_sent() {
    let not_sent = Outcome::failure(FailureKind::Connect, RetrySafety::NotSent);
    let maybe_sent = Outcome::failure(FailureKind::BadGateway, RetrySafety::MaybeSent);
    assert!(not_sent.is_retry_safe(false));
    assert!(not_sent.is_retry_safe(true));
    assert!(!maybe_sent.is_retry_safe(false));
    assert!(maybe_sent.is_retry_safe(true));
    assert!(!Outcome::Success.is_retry_safe(true));
}

/// A classifier with only `classify_response` of its own: the provided
/// `classify_head`, against which `HttpClassifier`'s own is checked.
struct Plain(HttpClassifier);

impl Classify for Plain {
    fn classify_response<B>(&self, response: &http::Response<B>) -> Outcome {
        self.0.classify_response(response)
    }

    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Outcome {
        self.0.classify_error(error)
    }
}

#[test]
fn one_look_at_a_head_agrees_with_the_provided_two() {
    let heads: &[(u16, &[(&str, &str)])] = &[
        (200, &[]),
        (
            200,
            &[("content-type", "text/html"), ("content-length", "12")],
        ),
        (200, &[("content-type", "application/grpc")]),
        (200, &[("content-type", "application/grpc+proto")]),
        (
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "0")],
        ),
        (
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "14")],
        ),
        (
            200,
            &[("content-type", "application/grpc"), ("grpc-status", "3")],
        ),
        (
            200,
            &[
                ("content-type", "application/grpc"),
                ("grpc-status", "nonsense"),
            ],
        ),
        (200, &[("content-type", "application/grpcx")]),
        (200, &[("grpc-status", "14")]),
        (204, &[("content-type", "application/grpc")]),
        (404, &[("content-type", "application/grpc")]),
        (503, &[("content-type", "application/grpc")]),
        (502, &[]),
        (429, &[("retry-after", "3")]),
    ];
    let (one, two) = (HttpClassifier::new(), Plain(HttpClassifier::new()));
    let mut watched = 0;
    for &(status, headers) in heads {
        let mut response = http::Response::builder().status(status);
        for &(name, value) in headers {
            response = response.header(name, value);
        }
        let response = response.body(()).unwrap();
        let head = one.classify_head(&response);
        assert_eq!(head, two.classify_head(&response), "{status} {headers:?}");
        assert_eq!(
            head.0,
            one.classify_response(&response),
            "{status} {headers:?}"
        );
        watched += usize::from(head.1);
    }
    // 200 gRPC without a status (twice), and the 204 and 404 gRPC answers.
    assert_eq!(watched, 4);
}
