//! End to end on loopback: an axum app behind `ErrorResponseLayer`,
//! `TimeoutLayer` and `ChaosLayer`, served by hyper on `127.0.0.1:0` and
//! called by a hyper-util client. Whatever the injected fault, the client
//! receives an honest 503 or 504 with the right headers and body, never a
//! 502.
//!
//! The server runs under paused time (see `common::PausedServer`), so hangs
//! and slow handlers reach their timeout at once and deterministically.
//! The tests' own runtime, the client's, is left unpaused on purpose: it
//! only waits on real loopback sockets, and its one timer is `bounded`'s
//! 60 s safety net, which a passing test never reaches; nothing here
//! sleeps or measures the wall clock.

use crate::common;

use std::time::Duration;

use axum::{http::StatusCode, routing::get, Router};
use common::{bounded, client, read, PausedServer};
use http::header;
use tower::ServiceBuilder;
use tower_steady::chaos::{ChaosLayer, Fault};
use tower_steady::http::ErrorResponseLayer;
use tower_steady::timeout::TimeoutLayer;

fn app(chaos: ChaosLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/slow",
            get(|| async {
                // Paused time on the server: this reaches the 2 s timeout at
                // once, without waiting on the wall clock.
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(TimeoutLayer::new(Duration::from_secs(2)))
                .layer(chaos),
        )
}

fn only(fault: Fault) -> ChaosLayer {
    ChaosLayer::builder().fault(fault, 1.0).build().unwrap()
}

fn no_faults() -> ChaosLayer {
    ChaosLayer::builder().build().unwrap()
}

async fn fetch(
    server: &PausedServer,
    path: &str,
    accept: Option<&str>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = common::get(&server.url(path));
    if let Some(accept) = accept {
        req.headers_mut()
            .insert(header::ACCEPT, accept.parse().unwrap());
    }
    read(bounded(client().request(req)).await.unwrap()).await
}

#[tokio::test]
async fn healthy_requests_pass_untouched() {
    let server = PausedServer::start(app(no_faults()));
    let (status, _, body) = fetch(&server, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello");
}

#[tokio::test]
async fn an_injected_502_reaches_the_client_as_503_with_retry_after() {
    let server = PausedServer::start(app(only(Fault::Status(StatusCode::BAD_GATEWAY))));
    let (status, headers, body) = fetch(&server, "/", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert!(body.starts_with("Service unavailable."), "{body}");
}

#[tokio::test]
async fn a_refused_connection_becomes_503_and_leaks_nothing() {
    let server = PausedServer::start(app(only(Fault::ConnectionRefused)));
    let (status, headers, body) = fetch(&server, "/", Some("application/json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(body.contains(r#""status":503"#), "{body}");
    assert!(!body.contains("injected"), "{body}");
}

#[tokio::test]
async fn a_hanging_handler_becomes_504() {
    let server = PausedServer::start(app(only(Fault::Hang)));
    let (status, headers, body) = fetch(&server, "/", None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(!headers.contains_key(header::RETRY_AFTER));
    assert!(body.starts_with("Gateway timeout."), "{body}");
}

#[tokio::test]
async fn a_slow_handler_becomes_504() {
    let server = PausedServer::start(app(no_faults()));
    let (status, _, _) = fetch(&server, "/slow", None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

/// A bounded mix of every fault, seeded: the client sees 200, 503 and 504,
/// each for the right cause, and not one 502.
#[tokio::test]
async fn a_mix_of_faults_never_yields_a_502() {
    let chaos = ChaosLayer::builder()
        .seed(2026)
        .fault(Fault::Status(StatusCode::BAD_GATEWAY), 0.25)
        .fault(Fault::ConnectionRefused, 0.1)
        .fault(Fault::ConnectionReset, 0.1)
        .fault(Fault::Hang, 0.1)
        .latency_between(0.3, Duration::from_millis(10), Duration::from_secs(5))
        .build()
        .unwrap();
    let server = PausedServer::start(app(chaos));
    let client = client();

    let (mut ok, mut unavailable, mut timeout) = (0, 0, 0);
    for _ in 0..200 {
        let res = bounded(client.request(common::get(&server.url("/"))))
            .await
            .unwrap();
        let (status, headers, _) = read(res).await;
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(headers[header::RETRY_AFTER], "1");
                unavailable += 1;
            }
            StatusCode::GATEWAY_TIMEOUT => timeout += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok + unavailable + timeout, 200);
    // Seeded, so these are exact for this seed; the bounds only say each
    // kind of answer really happened.
    assert!(ok > 50, "{ok}");
    assert!(unavailable > 50, "{unavailable}");
    assert!(timeout > 10, "{timeout}");
}
