use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::store::Entry;
use super::Shared;
use crate::http::ResponseBody;

pin_project! {
    /// The body of a response from [`StaleIfError`](crate::fallback::StaleIfError):
    /// the inner service's own, streamed as it comes (and copied on the side
    /// when the response is being stored), or a stored copy.
    ///
    /// Storing never holds a frame back or changes one: each frame is
    /// handed on as soon as the inner body yields it, after its bytes are
    /// copied. The copy is stored when the body ends; a body that fails, is
    /// dropped before its end, carries trailers, or grows past the
    /// per-entry limit is not stored, and the rest of it streams on
    /// untouched.
    pub struct StaleIfErrorBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // The inner service's body as it is, or a stored copy.
        Plain { #[pin] body: ResponseBody<B> },
        Tee { #[pin] body: B, pending: Option<Box<Pending>> },
    }
}

/// A response being stored: everything but its body, and the body so far.
pub(crate) struct Pending {
    pub(crate) shared: Arc<Shared>,
    pub(crate) entry: Entry,
    pub(crate) buf: Vec<u8>,
    /// The most body bytes the entry can hold.
    pub(crate) limit: usize,
}

impl Pending {
    fn commit(self: Box<Self>) {
        let Pending {
            shared,
            mut entry,
            mut buf,
            ..
        } = *self;
        // A buffer grown frame by frame has spare room (up to half of it);
        // the store keeps exactly the body, which is what its budget counts.
        buf.shrink_to_fit();
        entry.body = Bytes::from(buf);
        shared.store(entry);
    }
}

impl<B> StaleIfErrorBody<B> {
    pub(crate) fn live(body: B) -> Self {
        Self {
            kind: Kind::Plain {
                body: ResponseBody::inner(body),
            },
        }
    }

    pub(crate) fn tee(body: B, pending: Box<Pending>) -> Self {
        Self {
            kind: Kind::Tee {
                body,
                pending: Some(pending),
            },
        }
    }

    pub(crate) fn stored(data: Bytes) -> Self {
        Self {
            kind: Kind::Plain {
                body: ResponseBody::full(data),
            },
        }
    }
}

impl<B> Body for StaleIfErrorBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Plain { body } => body.poll_frame(cx),
            KindProj::Tee { mut body, pending } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => {
                        if let Some(p) = pending.as_mut() {
                            match frame.data_ref() {
                                Some(data) if p.buf.len() + data.len() <= p.limit => {
                                    p.buf.extend_from_slice(data);
                                }
                                Some(_) => {
                                    tracing::debug!(
                                        target: super::TARGET,
                                        limit = p.limit,
                                        "response not stored: body over the per-entry limit"
                                    );
                                    *pending = None;
                                }
                                // Trailers are not stored; neither is the
                                // response, which would be incomplete.
                                None => *pending = None,
                            }
                        }
                        // Some servers stop polling once the body says it
                        // has ended, so the end is seen here too.
                        if body.is_end_stream() {
                            if let Some(p) = pending.take() {
                                p.commit();
                            }
                        }
                    }
                    Some(Err(_)) => *pending = None,
                    None => {
                        if let Some(p) = pending.take() {
                            p.commit();
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { body } => body.is_end_stream(),
            Kind::Tee { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { body } => body.size_hint(),
            Kind::Tee { body, .. } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for StaleIfErrorBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Tee { .. } => "being stored",
        };
        f.debug_struct("StaleIfErrorBody")
            .field("kind", &kind)
            .finish()
    }
}
