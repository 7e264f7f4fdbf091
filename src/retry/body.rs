//! Request bodies that can be sent again.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::error::BodyNotReplayable;
use crate::BoxError;

/// A request body that the retry layer can send again.
///
/// The first attempt streams the original body; as it does, `ReplayBody`
/// keeps each chunk (a reference-counted [`Bytes`], not a copy when the
/// body's chunks already are `Bytes`) and the trailers, up to a cap. A retry
/// gets a `ReplayBody` that sends the kept chunks again and then, if the
/// first attempt stopped before the end, reads on from the original body
/// where it left off. Every attempt sends exactly the original bytes, with
/// no duplicates and no gaps, and callers need no `Clone` body.
///
/// * A body with nothing in it costs nothing: no buffer, no allocation.
/// * A body longer than the cap (64 KiB by default) is sent once and not
///   kept: once a chunk past the cap has been sent, the request cannot be
///   retried, and the retry layer returns the failure as it is.
/// * Only one attempt reads the original body at a time. A retry that
///   starts while an earlier attempt still holds it (its connection is
///   still writing it) waits for it to finish or to be dropped.
/// * The original body must be [`Unpin`] (hyper's `Incoming`, axum's
///   `Body`, `Full` and every boxed body are); turn a body that is not
///   into one with `http_body_util::BodyExt::boxed`.
///
/// The data type is [`Bytes`] and the error type [`BoxError`].
pub struct ReplayBody<B> {
    inner: Inner<B>,
}

enum Inner<B> {
    /// The original body was empty: every attempt sends an empty body.
    Empty,
    /// Boxed, so that a `ReplayBody` is one pointer: every layer below the
    /// retry, and hyper, move each attempt's request several times, and a
    /// request with the original body inline (88 bytes with hyper's
    /// `Incoming`) takes a longer copy each time than one with a pointer.
    /// A request with a body then makes one more allocation, beside the
    /// shared body's; one without makes none.
    Tee(Box<Tee<B>>),
}

struct Tee<B> {
    shared: Arc<Shared<B>>,
    /// The original body and what has been read of it, while this attempt
    /// is the one reading it.
    owned: Option<Partial<B>>,
    /// Chunks of the kept body this attempt has sent.
    pos: usize,
    /// Bytes this attempt has sent, for its size hint.
    sent: u64,
    trailers_sent: bool,
    done: bool,
}

/// What every attempt of one request shares.
pub(crate) struct Shared<B> {
    cap: usize,
    /// The original body's size hint, for every attempt's.
    hint: SizeHint,
    /// The whole body, once an attempt has read it to its end under the cap.
    complete: OnceLock<Complete>,
    /// A chunk was sent and not kept (over the cap) or the body failed:
    /// the body cannot be sent again.
    lost: AtomicBool,
    /// An attempt is waiting in `slot` for the original body.
    waiting: AtomicBool,
    slot: Mutex<Slot<B>>,
}

struct Complete {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

struct Partial<B> {
    body: B,
    chunks: Vec<Bytes>,
    len: usize,
}

struct Slot<B> {
    rest: Option<Partial<B>>,
    waker: Option<Waker>,
}

impl<B: Body> ReplayBody<B> {
    /// The first attempt's body, and what later attempts replay from.
    pub(crate) fn first(body: B, cap: usize) -> (Self, Replay<B>) {
        if body.is_end_stream() {
            return (
                Self {
                    inner: Inner::Empty,
                },
                Replay::Empty,
            );
        }
        let shared = Arc::new(Shared {
            cap,
            hint: body.size_hint(),
            complete: OnceLock::new(),
            lost: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                rest: None,
                waker: None,
            }),
        });
        let first = Self {
            inner: Inner::Tee(Box::new(Tee {
                shared: shared.clone(),
                owned: Some(Partial {
                    body,
                    chunks: Vec::new(),
                    len: 0,
                }),
                pos: 0,
                sent: 0,
                trailers_sent: false,
                done: false,
            })),
        };
        (first, Replay::Shared(shared))
    }
}

/// Makes the bodies of later attempts.
///
/// One pointer: the size hint lives in [`Shared`] (an empty body's is
/// exactly zero), so that a request's body and the retry's future stay
/// small; hyper moves a request several times on its way out.
pub(crate) enum Replay<B> {
    Empty,
    Shared(Arc<Shared<B>>),
}

impl<B> Replay<B> {
    /// Whether a retry could send the body again.
    pub(crate) fn can_replay(&self) -> bool {
        match self {
            Replay::Empty => true,
            Replay::Shared(shared) => !shared.lost.load(Ordering::Acquire),
        }
    }

    /// Whether a hedge could send the body now, while an earlier attempt
    /// is still running: only once the whole body is kept.
    pub(crate) fn can_hedge(&self) -> bool {
        match self {
            Replay::Empty => true,
            Replay::Shared(shared) => shared.complete.get().is_some(),
        }
    }

    /// The body of another attempt.
    pub(crate) fn replay(&self) -> ReplayBody<B> {
        match self {
            Replay::Empty => ReplayBody {
                inner: Inner::Empty,
            },
            Replay::Shared(shared) => ReplayBody {
                inner: Inner::Tee(Box::new(Tee {
                    shared: shared.clone(),
                    owned: None,
                    pos: 0,
                    sent: 0,
                    trailers_sent: false,
                    done: false,
                })),
            },
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let tee = match &mut self.get_mut().inner {
            Inner::Empty => return Poll::Ready(None),
            Inner::Tee(tee) => tee,
        };
        let polled = tee.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                tee.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Tee(tee) => tee.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Tee(tee) => {
                let (original, sent) = (&tee.shared.hint, tee.sent);
                let mut hint = SizeHint::new();
                if let Some(upper) = original.upper() {
                    hint.set_upper(upper.saturating_sub(sent));
                }
                hint.set_lower(original.lower().saturating_sub(sent));
                hint
            }
        }
    }
}

impl<B> Tee<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            let Some(partial) = self.owned.as_mut() else {
                // Not reading the original body: replay the kept one, or
                // take the original over from the attempt that had it.
                if let Some(complete) = self.shared.complete.get() {
                    return Poll::Ready(replay_complete(
                        complete,
                        &mut self.pos,
                        &mut self.trailers_sent,
                        &mut self.done,
                    ));
                }
                match self.take_over(cx) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => return Poll::Pending,
                }
            };
            // First what earlier attempts read, then on from the original.
            if let Some(chunk) = partial.chunks.get(self.pos) {
                self.pos += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
            let frame = match Pin::new(&mut partial.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finish(None);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    // The original body is broken: nothing can send it again.
                    self.owned = None;
                    self.done = true;
                    self.shared.lose();
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    if !self.shared.lost.load(Ordering::Acquire) {
                        if partial.len + chunk.len() <= self.shared.cap {
                            partial.len += chunk.len();
                            partial.chunks.push(chunk.clone());
                            self.pos += 1;
                        } else {
                            // Past the cap: send on without keeping.
                            partial.chunks = Vec::new();
                            self.pos = 0;
                            self.shared.lose();
                        }
                    }
                    if partial.body.is_end_stream() {
                        self.finish(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        self.finish(Some(trailers.clone()));
                        self.trailers_sent = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    // A kind of frame this crate does not know: not sent,
                    // so that every attempt sends the same.
                    Err(_) => continue,
                },
            }
        }
    }

    /// The original body has been read to its end by this attempt: publish
    /// the kept body for every later attempt.
    fn finish(&mut self, trailers: Option<HeaderMap>) {
        self.done = true;
        let Some(partial) = self.owned.take() else {
            return;
        };
        if self.shared.lost.load(Ordering::Acquire) {
            return;
        }
        let _ = self.shared.complete.set(Complete {
            chunks: partial.chunks,
            trailers,
        });
        self.shared.wake_waiter();
    }

    /// Takes the original body from the slot where the previous reader left
    /// it, or waits for it.
    fn take_over(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let shared = &*self.shared;
        if shared.lost.load(Ordering::Acquire) {
            self.done = true;
            return Poll::Ready(Err(BodyNotReplayable::new().into()));
        }
        {
            let mut slot = shared.lock();
            if let Some(rest) = slot.rest.take() {
                self.owned = Some(rest);
                self.pos = 0;
                return Poll::Ready(Ok(()));
            }
            slot.waker = Some(cx.waker().clone());
        }
        // Whoever publishes the complete body or loses it after this store
        // sees `waiting` and wakes us; whoever did before it is seen here.
        shared.waiting.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if shared.complete.get().is_some() || shared.lost.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        if let Some(partial) = &self.owned {
            return self.pos >= partial.chunks.len() && partial.body.is_end_stream();
        }
        match self.shared.complete.get() {
            Some(complete) => {
                self.pos >= complete.chunks.len()
                    && (complete.trailers.is_none() || self.trailers_sent)
            }
            None => false,
        }
    }
}

/// The next frame of a kept body, for an attempt that has sent `pos`
/// chunks of it.
fn replay_complete(
    complete: &Complete,
    pos: &mut usize,
    trailers_sent: &mut bool,
    done: &mut bool,
) -> Option<Result<Frame<Bytes>, BoxError>> {
    if let Some(chunk) = complete.chunks.get(*pos) {
        *pos += 1;
        return Some(Ok(Frame::data(chunk.clone())));
    }
    if let (Some(trailers), false) = (&complete.trailers, *trailers_sent) {
        *trailers_sent = true;
        return Some(Ok(Frame::trailers(trailers.clone())));
    }
    *done = true;
    None
}

impl<B> Shared<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<B>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.wake_waiter();
    }

    fn wake_waiter(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            let waker = self.lock().waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl<B> Drop for Tee<B> {
    fn drop(&mut self) {
        let Some(partial) = self.owned.take() else {
            return;
        };
        // Stopped before the end: leave the original body for the next
        // attempt, unless nobody could ever take it.
        if Arc::strong_count(&self.shared) == 1 || self.shared.lost.load(Ordering::Acquire) {
            return;
        }
        let waker = {
            let mut slot = self.shared.lock();
            slot.rest = Some(partial);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, sent) = match &self.inner {
            Inner::Empty => ("empty", 0),
            Inner::Tee(tee) if tee.owned.is_some() => ("reading", tee.sent),
            Inner::Tee(tee) => ("replaying", tee.sent),
        };
        f.debug_struct("ReplayBody")
            .field("kind", &kind)
            .field("sent", &sent)
            .finish()
    }
}
