//! End to end on loopback: a real hyper (axum) upstream on `127.0.0.1`
//! serves a page, then answers 502, then is shut down (connections
//! refused); a hyper-util client behind `ErrorResponseLayer` +
//! `StaleIfErrorLayer` gets the stale page with its `Age`, never a 502, and
//! once the copy is older than the layer's limit, the honest 503 +
//! `Retry-After`.
//!
//! The client runs under paused time: the copy's age is *virtual* time,
//! moved on by `advance`. The client stack has no timer of its own while a
//! request waits on a socket, so paused time cannot fire anything early.
//! The upstream is a `PausedServer` on a thread and runtime of its own.
#![cfg(feature = "fallback")]

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{http::StatusCode, routing::get, Router};
use common::{client, PausedServer};
use http::HeaderMap;
use http_body_util::BodyExt;
use tokio::time::advance;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_steady::fallback::StaleIfErrorLayer;
use tower_steady::http::ErrorResponseLayer;

const MAX_STALE: Duration = Duration::from_secs(60);

/// The upstream: `/` and `/news` pages, or 502 for everything when told.
fn upstream(bad_gateway: Arc<AtomicBool>, hits: Arc<AtomicU32>) -> PausedServer {
    let page = move |body: &'static str| {
        let (bad_gateway, hits) = (bad_gateway.clone(), hits.clone());
        move || async move {
            hits.fetch_add(1, Ordering::Relaxed);
            if bad_gateway.load(Ordering::Relaxed) {
                return (StatusCode::BAD_GATEWAY, HeaderMap::new(), "upstream broken");
            }
            let mut headers = HeaderMap::new();
            headers.insert("cache-control", "max-age=5".parse().unwrap());
            headers.insert("content-type", "text/html".parse().unwrap());
            (StatusCode::OK, headers, body)
        }
    };
    let app = Router::new()
        .route("/", get(page("<h1>home</h1>")))
        .route("/news", get(page("<h1>news</h1>")));
    PausedServer::start(app)
}

#[derive(Debug)]
struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// `n` GETs of `url` through `svc`, each read to its end.
async fn gets<S, B>(svc: &mut S, url: &str, n: usize) -> Vec<Seen>
where
    S: Service<http::Request<http_body_util::Empty<bytes::Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(common::get(url))
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(Into::into).unwrap().to_bytes();
        seen.push(Seen {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        });
    }
    seen
}

fn assert_stale(seen: &[Seen], body: &str, age: u64) {
    for s in seen {
        assert_eq!(s.status, StatusCode::OK, "{s:?}");
        assert_eq!(s.body, body);
        assert_eq!(s.headers["age"], age.to_string().as_str());
        assert!(s.headers.contains_key("cache-status"), "{s:?}");
    }
}

fn assert_honest_503(seen: &[Seen]) {
    for s in seen {
        assert_eq!(s.status, StatusCode::SERVICE_UNAVAILABLE, "{s:?}");
        assert!(s.headers.contains_key("retry-after"), "{s:?}");
        assert!(!s.body.contains("home") && !s.body.contains("news"));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_down_upstream_is_answered_with_the_stale_page_then_an_honest_503() {
    let bad_gateway = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU32::new(0));
    let server = upstream(bad_gateway.clone(), hits.clone());
    let (home, news) = (server.url("/"), server.url("/news"));

    let stale = StaleIfErrorLayer::builder()
        .max_stale(MAX_STALE)
        .build()
        .unwrap();
    let handle = stale.handle();
    let mut svc = ErrorResponseLayer::new().layer(stale.layer(client()));

    // Up: pages pass through, and are stored.
    for s in gets(&mut svc, &home, 10)
        .await
        .iter()
        .chain(&gets(&mut svc, &news, 10).await)
    {
        assert_eq!(s.status, StatusCode::OK);
        assert!(!s.headers.contains_key("cache-status"));
    }
    assert_eq!(handle.stats().entries, 2);

    // The upstream answers 502: the client gets the stored pages.
    bad_gateway.store(true, Ordering::Relaxed);
    advance(Duration::from_secs(20)).await;
    assert_stale(&gets(&mut svc, &home, 20).await, "<h1>home</h1>", 20);
    assert_stale(&gets(&mut svc, &news, 20).await, "<h1>news</h1>", 20);

    // Past freshness (5 s) + max_stale (60 s): the upstream's 502 is
    // rewritten to 503 + Retry-After, never passed on.
    advance(Duration::from_secs(46)).await;
    assert_honest_503(&gets(&mut svc, &home, 10).await);

    // Back up: a fresh copy is stored; then the upstream goes away.
    bad_gateway.store(false, Ordering::Relaxed);
    assert_eq!(gets(&mut svc, &home, 1).await[0].status, StatusCode::OK);
    assert_eq!(gets(&mut svc, &news, 1).await[0].status, StatusCode::OK);
    let before = hits.load(Ordering::Relaxed);
    drop(server);
    advance(Duration::from_secs(30)).await;
    assert_stale(&gets(&mut svc, &home, 20).await, "<h1>home</h1>", 30);
    assert_stale(&gets(&mut svc, &news, 20).await, "<h1>news</h1>", 30);

    advance(Duration::from_secs(36)).await;
    assert_honest_503(&gets(&mut svc, &home, 10).await);
    assert_honest_503(&gets(&mut svc, &news, 10).await);

    let stats = handle.stats();
    assert_eq!(
        hits.load(Ordering::Relaxed),
        before,
        "refused: nothing reached the upstream"
    );
    assert_eq!(stats.stale_served, 80);
    assert_eq!(stats.entries, 0, "copies too old to serve are dropped");
}

/// An upstream whose pages name the user who asked (by cookie, token or
/// `Host`), as an app's pages do: `/me` with no caching headers at all (a
/// framework's default), `/max-age` fresh for a minute but not `public`,
/// `/public` explicitly shareable.
fn per_user_upstream() -> PausedServer {
    let page = |cache_control: Option<&'static str>| {
        move |headers: HeaderMap| async move {
            let who = ["cookie", "authorization", "host"]
                .iter()
                .filter_map(|h| headers.get(*h))
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join(" & ");
            let mut out = HeaderMap::new();
            if let Some(cc) = cache_control {
                out.insert("cache-control", cc.parse().unwrap());
            }
            (StatusCode::OK, out, format!("page for [{who}]"))
        }
    };
    let app = Router::new()
        .route("/me", get(page(None)))
        .route("/max-age", get(page(Some("max-age=60"))))
        .route("/public", get(page(Some("public, max-age=60"))));
    PausedServer::start(app)
}

fn request(
    url: &str,
    headers: &[(&str, &str)],
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut r = common::get(url);
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        r.headers_mut().insert(name, v.parse().unwrap());
    }
    r
}

async fn body_of<S, B>(
    svc: &mut S,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> (StatusCode, String)
where
    S: Service<http::Request<http_body_util::Empty<bytes::Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    let response = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_users_page_is_never_served_to_another_user_or_host_when_the_upstream_is_down() {
    let server = per_user_upstream();
    let host = server.addr.to_string();
    let stale = StaleIfErrorLayer::builder()
        .refresh(Duration::ZERO)
        .build()
        .unwrap();
    let handle = stale.handle();
    let mut svc = ErrorResponseLayer::new().layer(stale.layer(client()));

    let alice: &[(&str, &str)] = &[("cookie", "session=alice")];
    let alice_token: &[(&str, &str)] = &[("authorization", "Bearer alice")];
    // User A warms the store: with a cookie, with a token, and (absolute
    // URI naming the address) for the virtual host a.test.
    let mut warmed = Vec::new();
    for (path, who) in [
        ("/me", alice),
        ("/max-age", alice),
        ("/me", alice_token),
        ("/max-age", alice_token),
        ("/public", alice),
    ] {
        let (status, body) = body_of(&mut svc, request(&server.url(path), who)).await;
        assert_eq!(status, StatusCode::OK);
        warmed.push(body);
    }
    let (_, tenant_a) = body_of(
        &mut svc,
        request(&server.url("/max-age"), &[("host", "a.test")]),
    )
    .await;
    assert_eq!(tenant_a, "page for [a.test]");
    assert_eq!(
        handle.stats().entries,
        2,
        "the public page, and tenant a's anonymous one"
    );

    drop(server);
    advance(Duration::from_secs(10)).await;

    // Other users (another cookie, another token, none) never get A's page.
    for path in ["/me", "/max-age"] {
        for who in [
            &[("cookie", "session=bob")][..],
            &[("authorization", "Bearer bob")],
            &[],
            alice,
            alice_token,
        ] {
            let (status, body) =
                body_of(&mut svc, request(&format!("http://{host}{path}"), who)).await;
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{path} {who:?}: {body}"
            );
            assert!(!body.contains("alice"), "{path} {who:?}: {body}");
        }
    }
    // Another tenant behind the same address never gets tenant a's page.
    let (status, body) = body_of(
        &mut svc,
        request(&format!("http://{host}/max-age"), &[("host", "b.test")]),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body) = body_of(
        &mut svc,
        request(&format!("http://{host}/max-age"), &[("host", "a.test")]),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "page for [a.test]")
    );

    // A page the upstream called public is still served stale, to anyone.
    for who in [&[("cookie", "session=bob")][..], &[]] {
        let (status, body) =
            body_of(&mut svc, request(&format!("http://{host}/public"), who)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, warmed[4].as_str())
        );
    }
}
