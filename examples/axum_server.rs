//! An axum app behind `Resilience::server()`, with a status route.
//!
//! ```text
//! cargo run --example axum_server --features serde              # a short tour, then exit
//! cargo run --example axum_server --features serde -- --serve   # serve 127.0.0.1:3000 until Ctrl-C
//! ```
//!
//! The app has a slow route (`/work`, 50 ms) behind an adaptive
//! concurrency limit and a deadline read from the caller's
//! `x-request-timeout-ms`, and a `/status` route, outside the limit, that
//! serves the stack's snapshots as JSON. The tour sends a burst larger than
//! the server takes, a request that arrives with no time left and one whose
//! budget is shorter than the work, and prints what came back.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::BoxError;
use tower_steady::load_shed::AdaptiveLimitLayer;
use tower_steady::Resilience;

const HELP: &str = "\
usage: axum_server [--serve] [--listen ADDR]

  (no flags)      start the server on a free loopback port, run a short tour, exit
  --serve         serve until Ctrl-C
  --listen ADDR   where to serve with --serve (default 127.0.0.1:3000)
  --help          this text";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut serve = false;
    let mut listen: SocketAddr = ([127, 0, 0, 1], 3000).into();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--serve" => serve = true,
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n\n{HELP}").into()),
        }
    }

    // A fixed limit of 8 makes shedding easy to see; the default is
    // adaptive (it finds the limit from the latency).
    let resilience = Resilience::server()
        .limit(AdaptiveLimitLayer::builder().fixed(8))
        .build()?;
    let handles = resilience.handles().clone();
    let app = Router::new()
        .route(
            "/work",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "done\n"
            }),
        )
        .layer(resilience)
        // Added after the layer: the status route is never shed.
        .route(
            "/status",
            get(move || {
                let body = serde_json::to_string_pretty(&handles.snapshot());
                async move {
                    let body = body.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
                    ([("content-type", "application/json")], body + "\n")
                }
            }),
        );

    let addr = if serve {
        listen
    } else {
        "127.0.0.1:0".parse()?
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if serve {
        println!("serving http://{addr}/work and http://{addr}/status; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let call = |path: &str, budget_ms: Option<u64>| {
        let mut request = Request::get(format!("http://{addr}{path}"));
        if let Some(ms) = budget_ms {
            request = request.header("x-request-timeout-ms", ms);
        }
        let request = request.body(Empty::new());
        let client = client.clone();
        async move {
            let response = client.request(request?).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, retry_after, body))
        }
    };

    println!("a burst of 24 concurrent requests to /work (the server takes 8 at a time):");
    let burst: Vec<_> = (0..24).map(|_| tokio::spawn(call("/work", None))).collect();
    let (mut ok, mut shed, mut retry_after) = (0, 0, None);
    for request in burst {
        let (status, after, _) = request.await??;
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                shed += 1;
                retry_after = after;
            }
            other => println!("  unexpected {other}"),
        }
    }
    println!(
        "  {ok} × 200, {shed} × 503 with Retry-After: {}",
        retry_after.as_deref().unwrap_or("-")
    );

    let (status, ..) = call("/work", Some(0)).await?;
    println!("a request that arrives with no time left: {status}");
    let (status, ..) = call("/work", Some(10)).await?;
    println!("a request with 10 ms left for 50 ms of work: {status}");

    let (_, _, body) = call("/status", None).await?;
    println!("/status:\n{}", String::from_utf8_lossy(&body));
    server.abort();
    Ok(())
}
