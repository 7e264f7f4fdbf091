//! Tests of the replay body: every attempt sends exactly the original bytes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use proptest::prelude::*;

use super::body::{Replay, ReplayBody};
use super::error::BodyNotReplayable;
use crate::BoxError;

/// A body that yields its frames one by one, `Pending` once before each
/// when `stutter` is set, and records that it was dropped.
struct TestBody {
    frames: VecDeque<Frame<Bytes>>,
    stutter: bool,
    ready: bool,
    fail_after: Option<usize>,
    dropped: Arc<AtomicBool>,
}

impl TestBody {
    fn new(chunks: &[&[u8]], trailers: bool) -> Self {
        let mut frames: VecDeque<_> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::copy_from_slice(c)))
            .collect();
        if trailers {
            frames.push_back(Frame::trailers(trailers_map()));
        }
        Self {
            frames,
            stutter: false,
            ready: false,
            fail_after: None,
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }
}

fn trailers_map() -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("x-checksum", HeaderValue::from_static("abc"));
    map
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.fail_after == Some(0) {
            return Poll::Ready(Some(Err("body broke".into())));
        }
        if self.stutter && !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        if let Some(n) = self.fail_after.as_mut() {
            *n -= 1;
        }
        Poll::Ready(self.frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let len: usize = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(Bytes::len))
            .sum();
        SizeHint::with_exact(len as u64)
    }
}

impl Drop for TestBody {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker::default());
    (counter.clone(), Waker::from(counter))
}

/// What a body sent: its data, and its trailers.
#[derive(Debug, Default, PartialEq)]
struct Sent {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
}

/// Polls `body` for up to `frames` frames (all of them with `usize::MAX`),
/// going through `Pending`s the body wakes itself from.
fn read(body: &mut ReplayBody<TestBody>, frames: usize, sent: &mut Sent) -> Result<bool, BoxError> {
    let (_, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut got = 0;
    let mut pendings = 0;
    while got < frames {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Ok(true),
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(Some(Ok(frame))) => {
                got += 1;
                pendings = 0;
                match frame.into_data() {
                    Ok(data) => sent.data.extend_from_slice(&data),
                    Err(frame) => sent.trailers = frame.into_trailers().ok(),
                }
            }
            Poll::Pending => {
                pendings += 1;
                assert!(pendings < 3, "the body does not wake itself here");
            }
        }
    }
    Ok(false)
}

fn read_all(body: &mut ReplayBody<TestBody>) -> Sent {
    let mut sent = Sent::default();
    assert!(read(body, usize::MAX, &mut sent).unwrap());
    assert!(body.is_end_stream());
    sent
}

fn expected(chunks: &[&[u8]], trailers: bool) -> Sent {
    Sent {
        data: chunks.concat(),
        trailers: trailers.then(trailers_map),
    }
}

const CHUNKS: &[&[u8]] = &[b"alpha ", b"beta ", b"gamma ", b"delta"];

#[test]
fn an_empty_body_needs_no_buffer() {
    let (mut first, replay) = ReplayBody::first(TestBody::new(&[], false), 64);
    assert!(matches!(replay, Replay::Empty));
    assert!(first.is_end_stream());
    assert_eq!(read_all(&mut first), Sent::default());
    let again = replay.replay();
    assert!(again.is_end_stream());
    assert_eq!(again.size_hint().exact(), Some(0));
    assert!(replay.can_replay() && replay.can_hedge());
}

#[test]
fn a_replay_and_a_body_are_one_pointer_and_a_body_keeps_no_hint_of_its_own() {
    // Every layer below the retry and hyper move each attempt's request
    // several times on its way out, and the retry's future holds the
    // `Replay`: both are one pointer, whatever the original body, and the
    // size hint lives with the shared body.
    type Boxed = Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Unpin>;
    assert_eq!(
        std::mem::size_of::<Replay<Boxed>>(),
        std::mem::size_of::<usize>()
    );
    assert_eq!(
        std::mem::size_of::<ReplayBody<Boxed>>(),
        std::mem::size_of::<usize>()
    );
    // So an attempt's request is no larger than one with hyper's body.
    #[cfg(feature = "hyper")]
    assert!(
        std::mem::size_of::<http::Request<ReplayBody<hyper::body::Incoming>>>()
            <= std::mem::size_of::<http::Request<hyper::body::Incoming>>()
    );
    // What is left of the hint follows what this attempt has sent.
    let (mut first, replay) = ReplayBody::first(TestBody::new(CHUNKS, false), 1024);
    let mut sent = Sent::default();
    read(&mut first, 2, &mut sent).unwrap();
    assert_eq!(first.size_hint().exact(), Some(22 - 11));
    let again = replay.replay();
    assert_eq!(again.size_hint().exact(), Some(22));
}

#[test]
fn a_body_read_to_the_end_is_replayed_with_its_trailers() {
    let (mut first, replay) = ReplayBody::first(TestBody::new(CHUNKS, true), 1024);
    assert_eq!(first.size_hint().exact(), Some(22));
    assert!(!replay.can_hedge());
    assert_eq!(read_all(&mut first), expected(CHUNKS, true));
    assert!(replay.can_hedge());
    for _ in 0..3 {
        let mut again = replay.replay();
        assert_eq!(again.size_hint().exact(), Some(22));
        assert_eq!(read_all(&mut again), expected(CHUNKS, true));
        assert_eq!(again.size_hint().exact(), Some(0));
    }
}

#[test]
fn a_retry_after_a_partial_read_sends_every_byte_once() {
    let (mut first, replay) = ReplayBody::first(TestBody::new(CHUNKS, true), 1024);
    let mut sent = Sent::default();
    assert!(!read(&mut first, 2, &mut sent).unwrap());
    assert_eq!(sent.data, b"alpha beta ");
    drop(first);
    // The second attempt replays two chunks, then reads on.
    let mut second = replay.replay();
    assert_eq!(read_all(&mut second), expected(CHUNKS, true));
    let mut third = replay.replay();
    assert_eq!(read_all(&mut third), expected(CHUNKS, true));
}

#[test]
fn a_retry_waits_for_the_attempt_still_holding_the_body() {
    let mut body = TestBody::new(CHUNKS, false);
    body.stutter = true;
    let (mut first, replay) = ReplayBody::first(body, 1024);
    let mut sent = Sent::default();
    assert!(!read(&mut first, 1, &mut sent).unwrap());

    let (wakes, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut second = replay.replay();
    assert!(Pin::new(&mut second).poll_frame(&mut cx).is_pending());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);

    // The first attempt gives the body up mid-stream: the retry is woken.
    drop(first);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(read_all(&mut second), expected(CHUNKS, false));
}

#[test]
fn a_waiting_retry_is_woken_when_the_first_attempt_finishes_the_body() {
    let (mut first, replay) = ReplayBody::first(TestBody::new(CHUNKS, true), 1024);
    let (wakes, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut second = replay.replay();
    assert!(Pin::new(&mut second).poll_frame(&mut cx).is_pending());
    assert_eq!(read_all(&mut first), expected(CHUNKS, true));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(read_all(&mut second), expected(CHUNKS, true));
}

#[test]
fn a_body_over_the_limit_is_sent_once_and_not_kept() {
    let body = TestBody::new(CHUNKS, false);
    let dropped = body.dropped.clone();
    let (mut first, replay) = ReplayBody::first(body, 10);
    assert!(replay.can_replay());
    // The whole body still goes out on the first attempt.
    assert_eq!(read_all(&mut first), expected(CHUNKS, false));
    assert!(!replay.can_replay());
    assert!(!replay.can_hedge());
    drop(first);
    assert!(dropped.load(Ordering::SeqCst));
    let mut second = replay.replay();
    let err = read(&mut second, usize::MAX, &mut Sent::default()).unwrap_err();
    assert!(err.is::<BodyNotReplayable>());
}

#[test]
fn a_body_exactly_at_the_limit_is_kept() {
    let (mut first, replay) = ReplayBody::first(TestBody::new(CHUNKS, false), 22);
    read_all(&mut first);
    assert!(replay.can_replay());
    assert_eq!(read_all(&mut replay.replay()), expected(CHUNKS, false));
}

#[test]
fn a_failing_body_cannot_be_replayed() {
    let mut body = TestBody::new(CHUNKS, false);
    body.fail_after = Some(1);
    let (mut first, replay) = ReplayBody::first(body, 1024);
    let err = read(&mut first, usize::MAX, &mut Sent::default()).unwrap_err();
    assert_eq!(err.to_string(), "body broke");
    assert!(!replay.can_replay());
}

#[test]
fn the_original_body_is_dropped_with_the_last_attempt() {
    let body = TestBody::new(CHUNKS, false);
    let dropped = body.dropped.clone();
    let (mut first, replay) = ReplayBody::first(body, 1024);
    read(&mut first, 1, &mut Sent::default()).unwrap();
    drop(first);
    // Left in the slot for a retry that never comes.
    assert!(!dropped.load(Ordering::SeqCst));
    drop(replay);
    assert!(dropped.load(Ordering::SeqCst));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// However the body is chunked and wherever each attempt stops, every
    /// attempt that reads to the end sends exactly the original bytes.
    #[test]
    fn every_attempt_sends_exactly_the_original_bytes(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..12),
        trailers in any::<bool>(),
        stutter in any::<bool>(),
        stops in proptest::collection::vec(0usize..16, 0..4),
    ) {
        let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let mut body = TestBody::new(&slices, trailers);
        body.stutter = stutter;
        let (mut current, replay) = ReplayBody::first(body, 1 << 20);
        let want = expected(&slices, trailers);
        for stop in stops {
            let mut sent = Sent::default();
            let ended = read(&mut current, stop, &mut sent).unwrap();
            // What an attempt sent is always a prefix of the original.
            prop_assert!(want.data.starts_with(&sent.data));
            if ended {
                prop_assert_eq!(&sent.data, &want.data);
            }
            current = replay.replay();
        }
        prop_assert_eq!(read_all(&mut current), want);
    }
}
