//! End to end on loopback: a hyper-util client behind `RetryLayer` +
//! `Upstreams` balances over three real hyper (axum) upstreams on
//! `127.0.0.1`, while one of them is shut down and restarted on the same
//! port, another starts answering 502 to everything, and the set changes.
//!
//! The client runs under paused time: ejections last 30 s of *virtual*
//! time, ended by `advance`, never by waiting. (Each upstream is a
//! `PausedServer` on a thread and runtime of its own.) The client stack has no
//! timer of its own while a request waits on a socket (no timeouts, no
//! health checks, no pool timers), so paused time cannot fire anything
//! early; the retry layer's backoff is off. Every load is a fixed number of
//! requests.
#![cfg(feature = "upstream")]

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{drive, Feed, Mode, Tally, Upstream};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::time::advance;
use tower::discover::Change;
use tower::Layer;
use tower_steady::retry::{Backoff, ReplayBody, RetryLayer};
use tower_steady::upstream::{Dns, EndpointState, SetAuthority, Upstreams, UpstreamsHandle};

type HttpClient = Client<HttpConnector, ReplayBody<Empty<Bytes>>>;

fn client() -> HttpClient {
    // No idle connections: a stopped upstream is seen at the next connect.
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

fn state(handle: &UpstreamsHandle, upstream: &Upstream) -> Option<EndpointState> {
    handle.endpoint(upstream.addr).map(|e| e.state)
}

fn all_ok(total: usize) -> BTreeMap<u16, usize> {
    Tally::only(200, total)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn replicas_that_stop_or_fail_are_routed_around_and_brought_back() {
    let mut upstreams: Vec<Upstream> = (0..3).map(|_| Upstream::start()).collect();
    let client = client();
    let make = |addr| SetAuthority::new(addr, client.clone());
    let (feed, changes) = mpsc::unbounded_channel();
    for upstream in &upstreams {
        feed.send(Change::Insert(upstream.addr, make(upstream.addr)))
            .unwrap();
    }
    let balancer = Upstreams::builder()
        .seed(11)
        .build_discover(Feed(changes))
        .unwrap();
    let handle = balancer.handle();
    let retry = RetryLayer::builder()
        .backoff(Backoff::none())
        .seed(5)
        .build()
        .unwrap();
    let service = retry.layer(balancer);

    // All three up: the load is spread.
    assert_eq!(
        drive(service.clone(), "/", 300, 6).await.statuses,
        all_ok(300)
    );
    for upstream in &upstreams {
        assert!(upstream.hits() > 50, "{}", upstream.hits());
    }

    // One is shut down: its connections are refused. Every request is
    // retried elsewhere and succeeds; after five refusals in a row it is
    // ejected and gets nothing more.
    upstreams[1].stop();
    assert_eq!(
        drive(service.clone(), "/", 300, 6).await.statuses,
        all_ok(300)
    );
    assert_eq!(state(&handle, &upstreams[1]), Some(EndpointState::Ejected));
    assert_eq!(handle.endpoint(upstreams[1].addr).unwrap().ejections, 1);

    // Restarted on the same port. When its ejection is over, one request
    // probes it, and it is back in slow start...
    upstreams[1].restart();
    let before = upstreams[1].hits();
    advance(Duration::from_secs(31)).await;
    assert_eq!(
        drive(service.clone(), "/", 300, 6).await.statuses,
        all_ok(300)
    );
    assert!(upstreams[1].hits() > before, "the probe reached it");
    assert_eq!(
        state(&handle, &upstreams[1]),
        Some(EndpointState::SlowStart)
    );
    // ...and once the slow start is over it takes its full share.
    advance(Duration::from_secs(30)).await;
    let before = upstreams[1].hits();
    assert_eq!(
        drive(service.clone(), "/", 300, 6).await.statuses,
        all_ok(300)
    );
    assert_eq!(state(&handle, &upstreams[1]), Some(EndpointState::Healthy));
    let share = upstreams[1].hits() - before;
    assert!(share > 60, "restarted upstream took {share} of 300");

    // Another starts answering 502 to everything: the clients never see a
    // 502 (each is retried on another replica), and it is ejected.
    upstreams[2].set_mode(Mode::BadGateway);
    assert_eq!(
        drive(service.clone(), "/", 300, 6).await.statuses,
        all_ok(300)
    );
    assert_eq!(state(&handle, &upstreams[2]), Some(EndpointState::Ejected));
    let before = upstreams[2].hits();
    assert_eq!(
        drive(service.clone(), "/", 300, 6).await.statuses,
        all_ok(300)
    );
    assert_eq!(
        upstreams[2].hits(),
        before,
        "an ejected upstream gets nothing"
    );

    // The set changes, as a DNS answer would: the failing replica is
    // replaced by a new one, which starts taking requests.
    let fresh = Upstream::start();
    feed.send(Change::Remove(upstreams[2].addr)).unwrap();
    feed.send(Change::Insert(fresh.addr, make(fresh.addr)))
        .unwrap();
    tokio::task::yield_now().await;
    assert_eq!(state(&handle, &upstreams[2]), None);
    assert_eq!(state(&handle, &fresh), Some(EndpointState::SlowStart));
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        drive(service.clone(), "/", 300, 6).await.statuses,
        all_ok(300)
    );
    assert!(
        fresh.hits() > 60,
        "new replica took {} of 300",
        fresh.hits()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dns_name_is_resolved_and_balanced_over() {
    let upstream = Upstream::start();
    let client = client();
    // An address literal resolves without a DNS server; the lookup path is
    // the same.
    let dns = Dns::new(upstream.addr.to_string(), move |addr| {
        SetAuthority::new(addr, client.clone())
    })
    .resolve()
    .await
    .unwrap();
    let balancer = Upstreams::builder().build_discover(dns).unwrap();
    assert_eq!(balancer.addrs(), [upstream.addr]);
    let service = RetryLayer::new().layer(balancer);
    assert_eq!(
        drive(service.clone(), "/", 20, 2).await.statuses,
        all_ok(20)
    );
    assert_eq!(upstream.hits(), 20);
}

/// A `CONNECT` through `Upstreams` + `SetAuthority` is refused with a clear
/// `501` and reaches no replica (its target would be lost, or tunnelled to
/// wherever the caller named); `OPTIONS *` reaches the replica as
/// `OPTIONS *`; neither harms the replica's health.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn connect_is_refused_and_options_asterisk_passes_unchanged() {
    use std::sync::{Arc, Mutex};
    use tower::{Service, ServiceExt};
    use tower_steady::http::ErrorResponseLayer;

    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = {
        let seen = seen.clone();
        axum::Router::new().fallback(move |req: axum::extract::Request| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(format!("{} {}", req.method(), req.uri()));
                "ok"
            }
        })
    };
    let server = common::PausedServer::start(app);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let balancer = Upstreams::builder()
        .build([server.addr], |addr| {
            SetAuthority::new(addr, client.clone())
        })
        .unwrap();
    let handle = balancer.handle();
    let mut service = ErrorResponseLayer::new().layer(balancer);

    let request = |method: http::Method, uri: &str| {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "site.test")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    for _ in 0..10 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request(http::Method::CONNECT, "example.com:443"))
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::NOT_IMPLEMENTED);
    }
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request(http::Method::OPTIONS, "*"))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), ["OPTIONS *"]);
    assert_eq!(
        handle.endpoint(server.addr).map(|e| e.state),
        Some(EndpointState::Healthy)
    );
}
