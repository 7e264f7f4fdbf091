//! Calls one of the benchmarks' stacks N times in a row from one task, for
//! `benches/calls.sh` to count the instructions per call under callgrind:
//! a measure that does not move with the machine's load, beside
//! criterion's times, which do.
//!
//! ```text
//! calls STACK N [pending] [empty]
//! ```
//!
//! `STACK` is one of the names `calls --list` prints: the client and
//! server stacks of the `stack` benchmark and the retry layers of the
//! `retry` benchmark, built by the same functions; or one of
//! `calls --list-parts`: the client preset with one part taken out, so
//! that the difference to `tower_steady_client` is what that part costs.
//! Requests are `Shape::Proxied` unless `empty`; the inner service
//! answers at once unless `pending` (one `Pending` first). The size of
//! the stack's response future is printed to standard error beside the
//! time taken: every layer moves the future of the layers below it at
//! least once.

use std::time::Duration;

use http::{Request, Response};
use tower::{Layer, Service};
use tower_steady::deadline::DeadlineLayer;
use tower_steady::Resilience;
use tower_steady_benches::stacks::{like_tower, tower_client, tower_retry, tower_server, TIMEOUT};
use tower_steady_benches::{single_runtime, single_task, HttpInner, Inner, NoBody, Shape};

const STACKS: [&str; 10] = [
    "none",
    "tower_builtin",
    "tower_steady_like_tower",
    "tower_steady_client",
    "tower_steady_client_attempt_timeout",
    "server_none",
    "server_tower_builtin",
    "tower_steady_server",
    "retry_tower",
    "retry_tower_steady",
];

/// The client preset less one part (`calls --list-parts`).
const PARTS: [&str; 5] = [
    "client_without_deadline_header",
    "client_without_deadline",
    "client_without_circuit_breaker",
    "client_without_throttle",
    "client_retry_only",
];

thread_local! {
    static FUTURE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Calls `svc` `n` times ([`single_task`]), noting its future's size.
async fn run<S, RB>(svc: S, n: u64, shape: Shape) -> Duration
where
    S: Service<Request<NoBody>, Response = Response<RB>>,
    S::Error: std::fmt::Debug,
{
    FUTURE.set(std::mem::size_of::<S::Future>());
    single_task::<_, NoBody, RB>(svc, n, shape).await
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        println!("{}", STACKS.join("\n"));
        return;
    }
    if args.first().map(String::as_str) == Some("--list-parts") {
        println!("{}", PARTS.join("\n"));
        return;
    }
    let (Some(stack), Some(Ok(n))) = (args.first(), args.get(1).map(|n| n.parse::<u64>())) else {
        eprintln!("usage: calls STACK N [pending] [empty]; calls --list; calls --list-parts");
        std::process::exit(2);
    };
    let pending_once = args.iter().any(|a| a == "pending");
    let shape = if args.iter().any(|a| a == "empty") {
        Shape::Empty
    } else {
        Shape::Proxied
    };
    let inner = Inner { pending_once };
    let http = HttpInner { pending_once };
    let client = || {
        Resilience::client()
            .without_stale_if_error()
            .without_error_response()
    };
    // A client preset's builder, built and laid over `inner`, then run
    // (a macro: each builder with parts taken out is a type of its own).
    macro_rules! preset {
        ($builder:expr) => {
            run($builder.build().unwrap().layer(inner), n, shape).await
        };
    }
    let rt = single_runtime();
    let took: Duration = rt.block_on(async {
        match stack.as_str() {
            "none" => run(inner, n, shape).await,
            "tower_builtin" => run(tower_client(inner), n, shape).await,
            "tower_steady_like_tower" => run(like_tower(inner), n, shape).await,
            "tower_steady_client" => preset!(client()),
            "tower_steady_client_attempt_timeout" => preset!(client().attempt_timeout(TIMEOUT)),
            "client_without_deadline_header" => {
                preset!(client().deadline(DeadlineLayer::client().write_header(false)))
            }
            "client_without_deadline" => preset!(client().without_deadline()),
            "client_without_circuit_breaker" => preset!(client().without_circuit_breaker()),
            "client_without_throttle" => preset!(client().without_throttle()),
            "client_retry_only" => preset!(client()
                .without_deadline()
                .without_circuit_breaker()
                .without_throttle()),
            "server_none" => run(http, n, shape).await,
            "server_tower_builtin" => run(tower_server(http), n, shape).await,
            "tower_steady_server" => {
                let svc = Resilience::server()
                    .timeout(TIMEOUT)
                    .build()
                    .unwrap()
                    .layer(http);
                run(svc, n, shape).await
            }
            "retry_tower" => run(tower_retry().layer(inner), n, shape).await,
            "retry_tower_steady" => {
                let svc = tower_steady::retry::RetryLayer::new().layer(inner);
                run(svc, n, shape).await
            }
            other => {
                eprintln!("unknown stack {other:?}; calls --list");
                std::process::exit(2);
            }
        }
    });
    let not_ok = tower_steady_benches::take_not_ok(stack);
    eprintln!("{n} calls in {took:?}, a future of {} bytes", FUTURE.get());
    if not_ok != 0 {
        std::process::exit(1);
    }
}
