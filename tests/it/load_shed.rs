//! Load shedding: the adaptive limit converging on a simulated server, the
//! permit accounting, criticality, and the client throttle. All under
//! paused time.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_steady::classify::{Classify, FailureKind, HttpClassifier, RetrySafety};
use tower_steady::http::{ErrorResponseLayer, Retried};
use tower_steady::load_shed::{
    AdaptiveLimitLayer, Criticality, LimitHandle, Overloaded, ThrottleLayer,
};
use tower_steady::retry::RetryLayer;
use tower_steady::BoxError;

const MS: Duration = Duration::from_millis(1);

type BoxFut = Pin<Box<dyn Future<Output = Result<Response<()>, Infallible>> + Send>>;

/// A server that does `work` for each request while holding one of a
/// semaphore's permits: with more than `capacity` requests in flight, the
/// rest queue, and latency rises with the queue.
#[derive(Clone)]
struct Server {
    permits: Arc<Semaphore>,
    work: Duration,
}

impl Server {
    fn new(capacity: usize, work: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            work,
        }
    }

    fn service<B>(
        &self,
    ) -> impl Service<Request<B>, Response = Response<()>, Error = Infallible, Future = BoxFut> + Clone
    {
        let this = self.clone();
        service_fn(move |_req: Request<B>| {
            let this = this.clone();
            Box::pin(async move {
                let _permit = this.permits.acquire().await.unwrap();
                tokio::time::sleep(this.work).await;
                Ok::<_, Infallible>(Response::new(()))
            }) as BoxFut
        })
    }
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    shed: AtomicU64,
    timed_out: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Stats {
    fn take(&self) -> (u64, u64, Duration) {
        let accepted = self.accepted.swap(0, Ordering::Relaxed);
        let shed = self.shed.swap(0, Ordering::Relaxed);
        let sum = self.latency_sum_us.swap(0, Ordering::Relaxed);
        let mean = Duration::from_micros(sum / accepted.max(1));
        (accepted, shed, mean)
    }
}

/// `clients` closed-loop clients: each sends a request, and after a shed
/// one waits `backoff` before the next, until `stop`.
fn run_clients<S>(svc: S, clients: usize, backoff: Duration, stop: Instant, stats: Arc<Stats>)
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    for _ in 0..clients {
        let svc = svc.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            while Instant::now() < stop {
                let start = Instant::now();
                match svc.clone().oneshot(Request::new(())).await {
                    Ok(_) => {
                        stats.accepted.fetch_add(1, Ordering::Relaxed);
                        stats
                            .latency_sum_us
                            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.is::<Overloaded>() => {
                        stats.shed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(backoff).await;
                    }
                    Err(e) => {
                        assert!(e.is::<tower_steady::timeout::error::Elapsed>(), "{e}");
                        stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
}

/// Samples the limit every 100 ms for `length`, returning the samples.
async fn watch(handle: &LimitHandle, length: Duration) -> Vec<u32> {
    let mut samples = Vec::new();
    let end = Instant::now() + length;
    while Instant::now() < end {
        tokio::time::sleep(MS * 100).await;
        samples.push(handle.limit());
    }
    samples
}

/// One request every `every` until `stop`, each on its own task (an open
/// loop: arrivals do not wait for answers). Returns, per request, when it
/// was sent, how long it took, and whether it was served.
async fn paced<S>(svc: S, every: Duration, length: Duration) -> Vec<(Duration, Duration, bool)>
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let start = Instant::now();
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = start;
    while next < start + length {
        tokio::time::sleep_until(next).await;
        let (svc, results) = (svc.clone(), results.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let served = match svc.oneshot(Request::new(())).await {
                Ok(_) => true,
                Err(e) if e.is::<Overloaded>() => false,
                Err(e) => panic!("{e}"),
            };
            results
                .lock()
                .unwrap()
                .push((sent - start, sent.elapsed(), served));
        });
        next += every;
    }
    while tasks.join_next().await.is_some() {}
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|r| r.0);
    results
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort_unstable();
    latencies[(latencies.len() - 1) * 99 / 100]
}

/// A service whose latency does not depend on its load: 0.2 to 4.2 ms, as
/// a sub-millisecond handler on a saturated CPU looks.
fn jittery<B>(
) -> impl Service<Request<B>, Response = Response<()>, Error = Infallible, Future = BoxFut> + Clone
{
    let n = Arc::new(AtomicU64::new(0));
    service_fn(move |_req: Request<B>| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let us = 200 + (i * 7_919) % 4_000;
            tokio::time::sleep(Duration::from_micros(us)).await;
            Ok::<_, Infallible>(Response::new(()))
        }) as BoxFut
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_busy_service_without_a_queue_is_never_shed() {
    let layer = AdaptiveLimitLayer::builder().seed(5).build().unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(jittery());
    let stats = Arc::new(Stats::default());
    // 64 callers as fast as they can, for 10 s.
    run_clients(
        svc,
        64,
        MS,
        Instant::now() + Duration::from_secs(10),
        stats.clone(),
    );
    let limits = watch(&handle, Duration::from_secs(10)).await;
    let (accepted, shed, _) = stats.take();
    println!(
        "accepted {accepted}, shed {shed}, limits {:?}",
        &limits[..5]
    );
    assert!(accepted > 100_000, "{accepted}");
    assert_eq!(shed, 0);
    assert!(
        limits.iter().all(|&l| l == 1000),
        "it starts open and stays open"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stall_sheds_nothing_after_it() {
    // 32 closed-loop callers of a 1 ms service. From 2.05 s to 3.55 s the
    // service (or the upstream it waits on) stalls: whatever would have
    // completed then completes at 3.55 s (in the middle of a window).
    // Afterwards nothing is queued,
    // and nothing is to be shed: not the stall's window, whose rate is
    // a handful of completions over a second, nor the next one, which
    // holds the stall's late completions beside fresh requests.
    let start = Instant::now();
    let (stall, resume) = (start + MS * 2050, start + MS * 3550);
    let service = service_fn(move |_req: Request<()>| {
        Box::pin(async move {
            let done = Instant::now() + MS;
            let done = if done >= stall && done < resume {
                resume
            } else {
                done
            };
            tokio::time::sleep_until(done).await;
            Ok::<_, Infallible>(Response::new(()))
        }) as BoxFut
    });
    let layer = AdaptiveLimitLayer::builder().seed(5).build().unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(service);
    let stats = Arc::new(Stats::default());
    run_clients(svc, 32, MS, start + MS * 6000, stats.clone());
    let limits = watch(&handle, MS * 6000).await;
    let (accepted, shed, _) = stats.take();
    assert!(accepted > 100_000, "{accepted}");
    assert_eq!(shed, 0, "limits every 100 ms: {limits:?}");
    assert!(limits.iter().all(|&l| l >= 32), "{limits:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_burst_is_queued_not_shed() {
    // Eight places of 20 ms; 48 requests at once, against a limit that
    // starts open and against one set at twice the capacity.
    for initial in [None, Some(16)] {
        let mut builder = AdaptiveLimitLayer::builder().seed(5);
        if let Some(initial) = initial {
            builder = builder.initial_limit(initial);
        }
        let layer = builder.build().unwrap();
        let handle = layer.handle();
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service(Server::new(8, MS * 20).service());
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..48 {
            set.spawn(svc.clone().oneshot(Request::new(())));
        }
        tokio::task::yield_now().await;
        if initial.is_some() {
            assert_eq!(handle.waiting(), 32, "over the limit: waiting, not shed");
        }
        let mut served = 0;
        while let Some(result) = set.join_next().await {
            result.unwrap().unwrap();
            served += 1;
        }
        assert_eq!(served, 48, "{initial:?}");
        assert_eq!(handle.snapshot().rejected, 0);
    }
}

/// A limit that cannot move (its bounds are equal), two places of 50 ms,
/// and a request every 5 ms: the waits grow from the first requests on.
/// Nothing is shed until waits have stayed above the target for an
/// interval; once the queue stands, a request waits at most the target.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_standing_queue_is_shed_within_one_interval() {
    let layer = AdaptiveLimitLayer::builder()
        .min_limit(2)
        .max_limit(2)
        .seed(5)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(Server::new(2, MS * 50).service());
    let results = paced(svc, MS * 5, Duration::from_secs(2)).await;
    // The queue forms at 10 ms (the third request waits). Nothing is shed
    // before it has waited an interval.
    let first_shed = results
        .iter()
        .filter(|r| !r.2)
        .map(|r| r.0 + r.1)
        .min()
        .expect("some were shed");
    println!("first shed answered at {first_shed:?}");
    assert!(first_shed >= MS * 100, "{first_shed:?}");
    assert!(first_shed <= MS * 10 + MS * 100 + MS * 50, "{first_shed:?}");
    // Once it stands, a request sent is admitted or shed within the
    // target (plus the 50 ms of work when admitted).
    println!(
        "{:?}",
        results
            .iter()
            .filter(|r| r.0 >= MS * 300)
            .take(30)
            .collect::<Vec<_>>()
    );
    for (sent, took, served) in results.iter().filter(|r| r.0 >= MS * 300) {
        let bound = if *served { MS * 55 } else { MS * 5 };
        assert!(
            took <= &bound,
            "sent at {sent:?}: {took:?} (served {served})"
        );
    }
}

/// A paced load at three times what the server can do (8 places of 20 ms:
/// 400 a second): the limit comes down to what the server delivers, the
/// server is kept busy, what is admitted is answered fast, and the rest is
/// refused at once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_overload_is_shed_fast_and_the_capacity_kept_busy() {
    let layer = AdaptiveLimitLayer::builder().seed(5).build().unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(Server::new(8, MS * 20).service());
    let results = paced(svc, Duration::from_micros(833), Duration::from_secs(10)).await;
    let served: Vec<Duration> = results.iter().filter(|r| r.2).map(|r| r.1).collect();
    let shed: Vec<Duration> = results.iter().filter(|r| !r.2).map(|r| r.1).collect();
    let (served_p99, shed_p99) = (p99(served.clone()), p99(shed.clone()));
    println!(
        "sent {}, served {} (p99 {served_p99:?}), shed {} (p99 {shed_p99:?}), limit {}",
        results.len(),
        served.len(),
        shed.len(),
        handle.limit()
    );
    // At least 90% of the 4 000 the server can do in 10 s.
    assert!(served.len() >= 3_600, "{}", served.len());
    assert!(served_p99 <= MS * 250, "{served_p99:?}");
    assert!(shed_p99 < MS * 10, "{shed_p99:?}");
    assert!(handle.limit() < 100, "{}", handle.limit());
}

/// After an overload the load falls to half the capacity: within an
/// interval of the queue draining, nothing is shed any more.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shedding_stops_within_one_interval_after_the_queue_drains() {
    let layer = AdaptiveLimitLayer::builder().seed(5).build().unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(Server::new(8, MS * 20).service());
    let overload = paced(
        svc.clone(),
        Duration::from_micros(833),
        Duration::from_secs(3),
    )
    .await;
    assert!(overload.iter().any(|r| !r.2));
    // 200 a second: half of what the server can do.
    let calm = paced(svc, MS * 5, Duration::from_secs(3)).await;
    let shed_late: Vec<_> = calm.iter().filter(|r| !r.2 && r.0 >= MS * 100).collect();
    println!(
        "after the overload: {} shed, the last sent at {:?}",
        calm.iter().filter(|r| !r.2).count(),
        calm.iter().rev().find(|r| !r.2).map(|r| r.0)
    );
    assert!(shed_late.is_empty(), "{shed_late:?}");
    assert_eq!(handle.waiting(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiting_request_leaves_the_queue_when_its_caller_leaves() {
    let layer = AdaptiveLimitLayer::builder()
        .min_limit(1)
        .max_limit(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(Server::new(1, MS * 10).service());
    let first = svc.ready().await.unwrap().call(Request::new(()));
    let mut second = tokio_test::task::spawn(svc.ready().await.unwrap().call(Request::new(())));
    assert!(second.poll().is_pending());
    assert_eq!((handle.in_flight(), handle.waiting()), (1, 1));
    drop(second);
    assert_eq!(handle.waiting(), 0);
    let third = svc.ready().await.unwrap().call(Request::new(()));
    first.await.unwrap();
    // The place went to the third, which waited for it.
    third.await.unwrap();
    assert_eq!((handle.in_flight(), handle.snapshot().rejected), (0, 0));
}

// ---- permits ------------------------------------------------------------

mod permits {
    use super::*;
    use proptest::prelude::*;
    use tokio::sync::oneshot;
    use tokio_test::task::{spawn, Spawn};

    type Senders = Arc<Mutex<Vec<oneshot::Sender<bool>>>>;

    /// An inner service whose every call waits for the test to say
    /// "succeed" (`true`) or "fail" (`false`).
    type ControlledFuture = Pin<Box<dyn Future<Output = Result<Response<()>, BoxError>> + Send>>;

    fn controlled(
        senders: Senders,
    ) -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = BoxError,
        Future = ControlledFuture,
    > + Clone {
        service_fn(move |_req: Request<()>| {
            let (tx, rx) = oneshot::channel();
            senders.lock().unwrap().push(tx);
            Box::pin(async move {
                match rx.await {
                    Ok(true) => Ok(Response::new(())),
                    _ => Err::<Response<()>, BoxError>("failed".into()),
                }
            }) as ControlledFuture
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Call { sheddable: bool },
        Succeed(usize),
        Fail(usize),
        Drop(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<bool>().prop_map(|sheddable| Op::Call { sheddable }),
            2 => any::<usize>().prop_map(Op::Succeed),
            1 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Drop),
            1 => (0u64..20).prop_map(Op::Advance),
        ]
    }

    fn check(adaptive: bool, initial: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let builder = AdaptiveLimitLayer::builder().seed(3);
            let layer = if adaptive {
                // Windows of 1 ms and one sample, so the limit moves a lot.
                builder
                    .initial_limit(initial)
                    .max_limit(8)
                    .min_window(MS)
                    .max_window(MS * 2)
                    .window_samples(1)
                    .probe_interval(MS * 30)
                    .build()
            } else {
                builder.fixed(initial).build()
            }
            .unwrap();
            let handle = layer.handle();
            let senders = Senders::default();
            let mut svc = ServiceBuilder::new()
                .layer(layer)
                .service(controlled(senders.clone()));
            let mut live: Vec<(Spawn<_>, oneshot::Sender<bool>)> = Vec::new();
            // Calls over an adaptive limit that wait for a place.
            let mut waiting: Vec<Spawn<_>> = Vec::new();

            for op in ops {
                match op {
                    Op::Call { sheddable } => {
                        let mut request = Request::new(());
                        if sheddable {
                            request.extensions_mut().insert(Criticality::Sheddable);
                        }
                        let limit = handle.limit();
                        let before = handle.in_flight();
                        let mut fut = spawn(svc.ready().await.unwrap().call(request));
                        match senders.lock().unwrap().pop() {
                            Some(tx) => {
                                // Admitted: only below the limit.
                                prop_assert!(before < limit, "admitted at {before}/{limit}");
                                prop_assert!(handle.in_flight() <= limit);
                                live.push((fut, tx));
                            }
                            None => match fut.poll() {
                                std::task::Poll::Ready(Err(e)) => {
                                    prop_assert!(e.is::<Overloaded>())
                                }
                                std::task::Poll::Pending => {
                                    // Only a critical call over an adaptive
                                    // limit waits.
                                    prop_assert!(adaptive && !sheddable);
                                    waiting.push(fut);
                                }
                                other => {
                                    panic!("a call over the limit waits or is shed: {other:?}")
                                }
                            },
                        }
                    }
                    Op::Succeed(i) | Op::Fail(i) if !live.is_empty() => {
                        let (mut fut, tx) = live.remove(i % live.len());
                        let ok = matches!(op, Op::Succeed(_));
                        tx.send(ok).unwrap();
                        match fut.poll() {
                            std::task::Poll::Ready(result) => prop_assert_eq!(result.is_ok(), ok),
                            std::task::Poll::Pending => panic!("the answer was sent"),
                        }
                    }
                    Op::Drop(i) if !live.is_empty() => {
                        drop(live.remove(i % live.len()));
                    }
                    Op::Advance(ms) => tokio::time::advance(MS * ms as u32).await,
                    _ => {}
                }
                // Waiting calls given a place call the inner service; those
                // whose wait ran out are shed.
                let mut still = Vec::new();
                for mut fut in waiting.drain(..) {
                    match fut.poll() {
                        std::task::Poll::Pending => match senders.lock().unwrap().pop() {
                            Some(tx) => live.push((fut, tx)),
                            None => still.push(fut),
                        },
                        std::task::Poll::Ready(Err(e)) => prop_assert!(e.is::<Overloaded>()),
                        other => panic!("a waiting call is admitted or shed: {other:?}"),
                    }
                }
                waiting = still;
                prop_assert_eq!(handle.in_flight() as usize, live.len());
                prop_assert_eq!(handle.waiting() as usize, waiting.len());
            }
            drop(waiting);
            prop_assert_eq!(handle.waiting(), 0);
            drop(live);
            prop_assert_eq!(handle.in_flight(), 0);
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn a_fixed_limit_is_never_exceeded_and_every_place_comes_back(
            limit in 1u32..6,
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            check(false, limit, ops)?;
        }

        #[test]
        fn an_adaptive_limit_is_never_exceeded_and_every_place_comes_back(
            initial in 1u32..8,
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            check(true, initial, ops)?;
        }
    }
}

// ---- behaviour ----------------------------------------------------------

fn empty() -> Request<Empty<Bytes>> {
    Request::new(Empty::new())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sheddable_requests_are_shed_first() {
    let layer = AdaptiveLimitLayer::builder()
        .fixed(10)
        .sheddable_ratio(0.8)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(Server::new(100, MS).service());
    let sheddable = || {
        Request::builder()
            .header("x-criticality", "sheddable")
            .body(())
            .unwrap()
    };

    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(svc.ready().await.unwrap().call(sheddable()));
    }
    // Eight in flight of ten: no room left for sheddable requests ...
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(sheddable())
        .await
        .unwrap_err();
    assert!(err.is::<Overloaded>());
    // ... but two places for critical ones.
    held.push(svc.ready().await.unwrap().call(Request::new(())));
    held.push(svc.ready().await.unwrap().call(Request::new(())));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<Overloaded>());

    let snapshot = handle.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.limit), (10, 10));
    assert_eq!((snapshot.rejected, snapshot.rejected_sheddable), (2, 1));
    for fut in held {
        fut.await.unwrap();
    }
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_shed_request_is_a_503_with_retry_after() {
    let layer = AdaptiveLimitLayer::builder()
        .fixed(1)
        .retry_after(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(layer)
        .service(Server::new(1, MS * 10).service());
    let first = svc.ready().await.unwrap().call(Request::new(()));
    let shed = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "3");
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn overloaded_is_rejected_not_sent_with_its_hint() {
    let classifier = HttpClassifier::new();
    let err = Overloaded::new(Duration::from_secs(1));
    let outcome = classifier.classify_error(&err);
    assert_eq!(outcome.kind(), Some(FailureKind::Rejected));
    assert_eq!(outcome.safety(), Some(RetrySafety::NotSent));
    assert_eq!(classifier.retry_after(&err), Some(Duration::from_secs(1)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_shed_request_is_never_retried() {
    let limit = AdaptiveLimitLayer::builder().fixed(1).build().unwrap();
    let handle = limit.handle();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(limit)
        .service(Server::new(1, MS).service());

    // Hold the only place with a request through the same limit.
    let first = svc.ready().await.unwrap().call(empty());
    let err = svc.ready().await.unwrap().call(empty()).await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");
    // One refusal: the retry layer did not try again.
    assert_eq!(handle.snapshot().rejected, 1);
    first.await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_fixed_limit_never_moves() {
    let layer = AdaptiveLimitLayer::builder().fixed(4).build().unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(Server::new(1, MS * 50).service());
    let stats = Arc::new(Stats::default());
    run_clients(
        svc,
        8,
        MS * 10,
        Instant::now() + Duration::from_secs(10),
        stats.clone(),
    );
    let limits = watch(&handle, Duration::from_secs(10)).await;
    assert!(limits.iter().all(|&l| l == 4), "{limits:?}");
    let (accepted, shed, _) = stats.take();
    assert!(accepted > 0 && shed > 0, "{accepted} {shed}");
    assert_eq!(handle.snapshot().no_load, None);
}

/// A server forwarding through a retrying client: the time its responses
/// spent in the retry layer's backoff ([`Retried`]) is not latency, so it
/// does not read as a queue.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retrys_backoff_is_not_counted_as_latency() {
    for marked in [true, false] {
        let layer = AdaptiveLimitLayer::builder()
            .probe_interval(Duration::from_secs(3600))
            .seed(1)
            .build()
            .unwrap();
        let handle = layer.handle();
        // 1 ms of work after 40 ms of backoff.
        let svc = ServiceBuilder::new().layer(layer).service(service_fn(
            move |_: Request<()>| async move {
                tokio::time::sleep(MS * 41).await;
                let mut response = Response::new(());
                if marked {
                    response.extensions_mut().insert(Retried::new(2, MS * 40));
                }
                Ok::<_, Infallible>(response)
            },
        ));
        // One window: at least 100 ms and 10 latencies.
        for _ in 0..10 {
            svc.clone().oneshot(Request::new(())).await.unwrap();
        }
        let expected = if marked { MS } else { MS * 41 };
        assert_eq!(handle.snapshot().no_load, Some(expected), "marked {marked}");
    }
}

/// Failures are an upstream's trouble, not a queue in this server, and a
/// response standing in for one (a stale copy) took the time the stack
/// spent on the failing upstream: neither is a latency, so an outage that
/// makes every answer slow (timeouts, retries backing off before a stale
/// copy) leaves the limit where it was.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failures_and_substitutes_leave_the_limit_alone() {
    use tower_steady::http::Substituted;
    for substitute in [false, true] {
        let layer = AdaptiveLimitLayer::builder()
            .probe_interval(Duration::from_secs(3600))
            .seed(1)
            .build()
            .unwrap();
        let handle = layer.handle();
        let calls = Arc::new(AtomicU64::new(0));
        // 1 ms while healthy (the first 200 calls), then 2 s for each
        // answer: a timeout error, or a stale copy marked as such.
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(move |_: Request<()>| {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    if n < 200 {
                        tokio::time::sleep(MS).await;
                        return Ok(Response::new(()));
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if substitute {
                        let mut response = Response::new(());
                        response
                            .extensions_mut()
                            .insert(Substituted::new(FailureKind::Connect));
                        Ok(response)
                    } else {
                        Err::<Response<()>, BoxError>(Box::new(
                            tower_steady::timeout::error::Elapsed::new(),
                        ))
                    }
                }
            }));
        let stats = Arc::new(Stats::default());
        run_clients(
            svc,
            50,
            MS * 10,
            Instant::now() + Duration::from_secs(20),
            stats.clone(),
        );
        let limits = watch(&handle, Duration::from_secs(20)).await;
        assert!(
            limits.iter().all(|&l| l == 1000),
            "substitute {substitute}: {limits:?}"
        );
        assert_eq!(handle.snapshot().rejected, 0);
    }
}

#[test]
fn bad_limit_settings_name_their_field() {
    let field = |b: tower_steady::load_shed::AdaptiveLimitBuilder| b.build().unwrap_err().field();
    assert_eq!(
        field(AdaptiveLimitLayer::builder().fixed(0)),
        "load_shed.fixed"
    );
    assert_eq!(
        field(AdaptiveLimitLayer::builder().min_limit(0)),
        "load_shed.min_limit"
    );
    assert_eq!(
        field(AdaptiveLimitLayer::builder().min_limit(10).max_limit(5)),
        "load_shed.max_limit"
    );
    assert_eq!(
        field(AdaptiveLimitLayer::builder().initial_limit(2000)),
        "load_shed.initial_limit"
    );
    assert_eq!(
        field(AdaptiveLimitLayer::builder().target(Duration::ZERO)),
        "load_shed.target"
    );
    assert_eq!(
        field(
            AdaptiveLimitLayer::builder()
                .target(MS * 10)
                .interval(MS * 5)
        ),
        "load_shed.interval"
    );
    for tolerance in [0.9, f64::NAN, f64::INFINITY] {
        assert_eq!(
            field(AdaptiveLimitLayer::builder().tolerance(tolerance)),
            "load_shed.tolerance"
        );
    }
    assert_eq!(
        field(AdaptiveLimitLayer::builder().probe_interval(Duration::ZERO)),
        "load_shed.probe_interval"
    );
    assert_eq!(
        field(AdaptiveLimitLayer::builder().min_window(Duration::ZERO)),
        "load_shed.min_window"
    );
    assert_eq!(
        field(AdaptiveLimitLayer::builder().max_window(MS)),
        "load_shed.max_window"
    );
    assert_eq!(
        field(AdaptiveLimitLayer::builder().window_samples(0)),
        "load_shed.window_samples"
    );
    assert_eq!(
        field(AdaptiveLimitLayer::builder().sheddable_ratio(1.5)),
        "load_shed.sheddable_ratio"
    );

    let field = |b: tower_steady::load_shed::ThrottleBuilder| b.build().unwrap_err().field();
    assert_eq!(field(ThrottleLayer::builder().k(0.5)), "throttle.k");
    assert_eq!(
        field(ThrottleLayer::builder().k(f64::INFINITY)),
        "throttle.k"
    );
    assert_eq!(
        field(ThrottleLayer::builder().max_probability(0.0)),
        "throttle.max_probability"
    );
    assert_eq!(
        field(ThrottleLayer::builder().bucket(Duration::ZERO)),
        "throttle.bucket"
    );
    assert_eq!(
        field(ThrottleLayer::builder().window(Duration::from_millis(1500))),
        "throttle.window"
    );
    assert_eq!(
        field(ThrottleLayer::builder().window(Duration::from_secs(2000))),
        "throttle.window"
    );
}

// ---- throttle -----------------------------------------------------------

/// An upstream that accepts at most `per_second` requests in each second
/// and answers `503` to the rest; `sent` counts what reached it.
#[derive(Clone)]
struct Limited {
    per_second: Arc<AtomicU64>,
    second: Arc<Mutex<(u64, u64)>>,
    sent: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    start: Instant,
}

impl Limited {
    fn new(per_second: u64) -> Self {
        Self {
            per_second: Arc::new(AtomicU64::new(per_second)),
            second: Arc::default(),
            sent: Arc::default(),
            accepted: Arc::default(),
            start: Instant::now(),
        }
    }

    fn service<B>(
        &self,
    ) -> impl Service<Request<B>, Response = Response<()>, Error = Infallible, Future = BoxFut> + Clone
    {
        let this = self.clone();
        service_fn(move |_req: Request<B>| {
            this.sent.fetch_add(1, Ordering::Relaxed);
            let now = this.start.elapsed().as_secs();
            let mut second = this.second.lock().unwrap();
            if second.0 != now {
                *second = (now, 0);
            }
            let mut response = Response::new(());
            if second.1 < this.per_second.load(Ordering::Relaxed) {
                second.1 += 1;
                this.accepted.fetch_add(1, Ordering::Relaxed);
            } else {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Box::pin(async move { Ok::<_, Infallible>(response) }) as BoxFut
        })
    }

    fn take(&self) -> (u64, u64) {
        (
            self.sent.swap(0, Ordering::Relaxed),
            self.accepted.swap(0, Ordering::Relaxed),
        )
    }
}

/// Offers `per_second` requests a second for `length`; returns how many
/// the throttle refused.
async fn offer<S>(svc: &S, per_second: u32, length: Duration) -> u64
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
{
    let mut refused = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    for _ in 0..per_second as u64 * length.as_secs() {
        tick.tick().await;
        if let Err(e) = svc.clone().oneshot(Request::new(())).await {
            assert!(e.is::<Overloaded>(), "{e}");
            refused += 1;
        }
    }
    refused
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn throttles_to_about_k_times_what_the_upstream_accepts() {
    let upstream = Limited::new(10);
    let throttle = ThrottleLayer::builder().seed(9).build().unwrap();
    let handle = throttle.handle();
    let svc = ServiceBuilder::new()
        .layer(throttle)
        .service(upstream.service());

    // 100 a second against an upstream that takes 10: one window to fill ...
    offer(&svc, 100, Duration::from_secs(60)).await;
    upstream.take();
    // ... then steady state: the client sends about K = 2 times what is
    // accepted and refuses the rest itself.
    let refused = offer(&svc, 100, Duration::from_secs(60)).await;
    let (sent, accepted) = upstream.take();
    let snapshot = handle.snapshot();
    println!(
        "offered 6000, refused locally {refused}, sent {sent}, accepted {accepted}, p = {:.3}",
        snapshot.probability
    );
    assert_eq!(refused + sent, 6000);
    assert_eq!(accepted, 600);
    let ratio = sent as f64 / accepted as f64;
    assert!(
        (1.7..=2.3).contains(&ratio),
        "sent {ratio:.2} times the accepts"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stops_throttling_once_the_upstream_recovers() {
    let upstream = Limited::new(0);
    let throttle = ThrottleLayer::builder().seed(2).build().unwrap();
    let handle = throttle.handle();
    let svc = ServiceBuilder::new()
        .layer(throttle)
        .service(upstream.service());

    offer(&svc, 50, Duration::from_secs(30)).await;
    assert_eq!(handle.snapshot().probability, 0.9, "capped");

    // Back. The refusals stay in the window, and each refusal counts as
    // a request the upstream did not accept, so the throttle lets go over
    // a few windows: what is sent is accepted, so the window's p falls
    // toward 2p - 1 as old counts leave it (0.9 → 0.8 → 0.6 → 0.2 → 0),
    // and the client sends more each time.
    upstream.per_second.store(u64::MAX, Ordering::Relaxed);
    let mut refused = Vec::new();
    for _ in 0..6 {
        refused.push(offer(&svc, 50, Duration::from_secs(60)).await);
    }
    println!("refused per window after recovery (of 3000): {refused:?}");
    assert!(refused.windows(2).all(|w| w[1] <= w[0]), "{refused:?}");
    // Observed with this seed: [2514, 861, 0, 0, 0, 0].
    assert!(refused[3..].iter().all(|&r| r == 0), "{refused:?}");
    assert_eq!(handle.snapshot().probability, 0.0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refuses_nothing_at_low_rates() {
    let upstream = Limited::new(0);
    let throttle = ThrottleLayer::new();
    let svc = ServiceBuilder::new()
        .layer(throttle)
        .service(upstream.service());
    // One request every two seconds, all refused by the upstream: 30 in the
    // window, under the 60 it takes to throttle.
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    for _ in 0..100 {
        tick.tick().await;
        let response = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_call_counts_neither_way() {
    let throttle = ThrottleLayer::new();
    let handle = throttle.handle();
    let mut svc = ServiceBuilder::new()
        .layer(throttle)
        .service(Server::new(1, MS).service());
    let fut = svc.ready().await.unwrap().call(Request::new(()));
    drop(fut);
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.requests, snapshot.accepts), (1, 1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_throttled_request_is_not_sent_and_never_retried() {
    let upstream = Limited::new(0);
    let throttle = ThrottleLayer::builder()
        .min_requests(1)
        .max_probability(1.0)
        .seed(4)
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .backoff(tower_steady::retry::Backoff::none())
                .build()
                .unwrap(),
        )
        .layer(throttle)
        .service(upstream.service());
    let mut throttled = 0;
    for _ in 0..50 {
        let before = (
            upstream.sent.load(Ordering::Relaxed),
            handle.snapshot().rejected,
        );
        match svc.clone().oneshot(empty()).await {
            Ok(response) => assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE),
            Err(e) => {
                assert!(e.is::<Overloaded>(), "{e}");
                throttled += 1;
                // Nothing was retried after the refusal: it was the last
                // attempt, and it did not reach the upstream.
                let after = (
                    upstream.sent.load(Ordering::Relaxed),
                    handle.snapshot().rejected,
                );
                assert_eq!(after.1, before.1 + 1);
                assert!(after.0 - before.0 <= 2);
            }
        }
    }
    assert!(throttled > 25, "{throttled}");
}
