//! tower-steady's metrics served to Prometheus.
//!
//! ```text
//! cargo run --example metrics --features metrics              # run a short load, print /metrics, exit
//! cargo run --example metrics --features metrics -- --page | promtool check metrics
//! cargo run --example metrics --features metrics -- --serve   # keep serving http://127.0.0.1:9000/metrics
//! ```
//!
//! An upstream on loopback (an axum app behind an adaptive concurrency
//! limit) is called by a client stack (retry, circuit breaker, timeout)
//! through a fault injector that turns 10% of calls into 502s and 3% into
//! refused connections. `metrics-exporter-prometheus` is installed as the
//! recorder and its text is served on `/metrics` by a second axum app.
//!
//! Without `--serve` the example sends 300 requests, fetches its own
//! `/metrics` once, prints the `tower_steady_` lines and exits (with
//! `--page`, the whole page as the exporter serves it, `# HELP` and
//! `# TYPE` lines included, for `promtool check metrics`). With
//! `--serve [--listen ADDR]` it keeps a light load running and serves
//! `/metrics` (default `127.0.0.1:9000`) until Ctrl-C, for a Prometheus
//! to scrape; `README.md` has alert rules for these metrics.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_steady::chaos::{ChaosLayer, Fault};
use tower_steady::circuit_breaker::CircuitBreakerLayer;
use tower_steady::http::ErrorResponseLayer;
use tower_steady::load_shed::AdaptiveLimitLayer;
use tower_steady::retry::{ReplayBody, RetryLayer};
use tower_steady::timeout::TimeoutLayer;

const HELP: &str = "\
usage: metrics [--serve] [--listen ADDR] [--page]

  (no flags)      send 300 requests, print the tower_steady_ lines of /metrics, exit
  --page          the same, but print the whole /metrics page
  --serve         keep a light load running and serve /metrics until Ctrl-C
  --listen ADDR   where to serve /metrics with --serve (default 127.0.0.1:9000)
  --help          this text";

struct Args {
    serve: bool,
    page: bool,
    listen: SocketAddr,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        serve: false,
        page: false,
        listen: ([127, 0, 0, 1], 9000).into(),
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--serve" => args.serve = true,
            "--page" => args.page = true,
            "--listen" => {
                let addr = given.next().ok_or("--listen needs an address")?;
                args.listen = addr.parse().map_err(|e| format!("--listen {addr}: {e}"))?;
            }
            "--help" | "-h" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{HELP}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = args()?;
    // Histograms with buckets rather than the exporter's default summaries:
    // buckets add up across a fleet, quantiles do not.
    let prometheus: PrometheusHandle = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()?;
    tower_steady::observability::describe_metrics();

    // The upstream: sheds past its capacity, answers errors honestly.
    let upstream = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                "ok"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(AdaptiveLimitLayer::builder().name("upstream_app").build()?),
        );
    let upstream_addr = serve(upstream, "127.0.0.1:0".parse()?).await?;

    // The client: faults injected below the resilience layers.
    let hyper = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Empty<Bytes>>>();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::builder().record_durations(true).build()?)
        .layer(CircuitBreakerLayer::builder().name("upstream").build()?)
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(
            ChaosLayer::builder()
                .seed(7)
                .fault(Fault::Status(StatusCode::BAD_GATEWAY), 0.10)
                .fault(Fault::ConnectionRefused, 0.03)
                .build()?,
        )
        // The injector answers its 502s with an empty body of the
        // client's body type: a boxed body has one.
        .map_response(|r: http::Response<Incoming>| r.map(BodyExt::boxed))
        .service(hyper);
    let url = format!("http://{upstream_addr}/");
    let send = move || {
        let request = Request::get(url.as_str()).body(Empty::<Bytes>::new());
        let client = client.clone();
        async move {
            let response = client.oneshot(request?).await?;
            response.into_body().collect().await?;
            Ok::<_, BoxError>(())
        }
    };

    let metrics_app = Router::new().route(
        "/metrics",
        get(move || {
            let text = prometheus.render();
            async move { text }
        }),
    );

    if args.serve {
        let addr = serve(metrics_app, args.listen).await?;
        println!("serving http://{addr}/metrics; Ctrl-C to stop");
        let load = tokio::spawn(async move {
            loop {
                let _ = send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        tokio::signal::ctrl_c().await?;
        load.abort();
        return Ok(());
    }

    let (mut ok, mut failed) = (0, 0);
    for _ in 0..300 {
        match send().await {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    if !args.page {
        println!("300 requests: {ok} answered, {failed} failed after retries\n");
    }
    let addr = serve(metrics_app, "127.0.0.1:0".parse()?).await?;
    let plain = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let page = plain
        .get(format!("http://{addr}/metrics").parse()?)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    for line in String::from_utf8_lossy(&page).lines() {
        if args.page || line.starts_with("tower_steady_") {
            println!("{line}");
        }
    }
    Ok(())
}

/// Serves `app` on `addr` in the background; returns the bound address.
async fn serve(app: Router, addr: SocketAddr) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("server on {addr}: {e}");
        }
    });
    Ok(addr)
}
