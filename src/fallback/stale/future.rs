//! Response future of [`StaleIfError`](crate::fallback::StaleIfError).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::body::{Pending, StaleIfErrorBody};
use super::policy;
use super::store::{vary_values, Entry};
use super::{headers_for_storage, Captured, Ctx, Keep};
use crate::classify::Classify;
use crate::fallback::TARGET;
use crate::BoxError;

pin_project! {
    /// Response future of [`StaleIfError`](crate::fallback::StaleIfError).
    pub struct StaleIfErrorFuture<F, C> {
        #[pin]
        inner: F,
        // `None` for a request that is never stored nor answered from the
        // store (not GET or HEAD, a range, `no-store`).
        ctx: Option<Ctx>,
        classifier: C,
    }
}

impl<F, C> StaleIfErrorFuture<F, C> {
    pub(crate) fn new(inner: F, ctx: Option<Ctx>, classifier: C) -> Self {
        Self {
            inner,
            ctx,
            classifier,
        }
    }
}

impl<F, C, B, E> Future for StaleIfErrorFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<StaleIfErrorBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // A response and an error each take their own arm, matched on the
        // `Poll` itself (`ready!` would move the value out first), so that
        // the response is moved once, into the answer.
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(response)) => {
                let Some(ctx) = this.ctx.take() else {
                    return Poll::Ready(Ok(response.map(StaleIfErrorBody::live)));
                };
                let failures = ctx.shared.settings.failures;
                let kind = this.classifier.classify_response(&response).kind();
                Poll::Ready(Ok(match kind {
                    // Nothing to store (the key was stored lately): passed
                    // on where it lies.
                    None if !matches!(ctx.keep, Keep::Capture(_)) => {
                        response.map(StaleIfErrorBody::live)
                    }
                    None => on_success(ctx, response),
                    Some(kind) if failures.contains(kind) => match ctx.shared.serve(&ctx, kind) {
                        Some(stale) => stale,
                        None => response.map(StaleIfErrorBody::live),
                    },
                    Some(_) => response.map(StaleIfErrorBody::live),
                }))
            }
            Poll::Ready(Err(error)) => {
                let error: BoxError = error.into();
                let Some(ctx) = this.ctx.take() else {
                    return Poll::Ready(Err(error));
                };
                let failures = ctx.shared.settings.failures;
                let kind = this.classifier.classify_error(&*error).kind();
                Poll::Ready(match kind {
                    Some(kind) if failures.contains(kind) => {
                        ctx.shared.serve(&ctx, kind).ok_or(error)
                    }
                    _ => Err(error),
                })
            }
        }
    }
}

/// A success: stored when the request kept its headers, the response may be
/// stored, and the key (or variant) was not stored within the refresh
/// interval. Otherwise passed on as it is.
fn on_success<B: http_body::Body>(
    ctx: Ctx,
    response: Response<B>,
) -> Response<StaleIfErrorBody<B>> {
    let Ctx { shared, id, keep } = ctx;
    let Keep::Capture(captured) = keep else {
        return response.map(StaleIfErrorBody::live);
    };
    let Captured {
        uri,
        headers: request,
        credentialed,
    } = *captured;
    let now = Instant::now();
    let storable = match policy::storable(response.status(), response.headers(), credentialed) {
        Ok(storable) => storable,
        Err(why) => {
            tracing::trace!(target: TARGET, %uri, why = why.as_str(), "response not stored");
            // The decision counts as this key's store for the refresh
            // interval: the next requests for a page that cannot be stored
            // (`no-store`, `private`, ...) skip copying their headers. Not
            // so for a refusal that is about this request's credentials:
            // the next request without any may store the shared page.
            if why != policy::NotStored::Credentials {
                shared.gate.claim(id.hash, false, now);
            }
            return response.map(StaleIfErrorBody::live);
        }
    };
    let vary = vary_values(&storable.vary, &request);
    let claimed = if vary.is_empty() {
        shared.gate.claim(id.hash, false, now)
    } else {
        // Requests for this key keep their headers from now on; each
        // variant is claimed on its own.
        shared.gate.mark_varies(id.hash, now);
        shared.gate.claim(shared.variant_hash(id, &vary), true, now)
    };
    if !claimed {
        return response.map(StaleIfErrorBody::live);
    }
    let (parts, body) = response.into_parts();
    let headers = headers_for_storage(&parts.headers);
    let entry = Entry {
        id,
        uri: uri.to_string().into_boxed_str(),
        vary,
        status: parts.status,
        headers,
        body: Bytes::new(),
        stored_at: now,
        age: storable.age,
        fresh: storable.fresh,
        stale_if_error: storable.stale_if_error,
    };
    let limit = shared.settings.max_entry_bytes.saturating_sub(entry.size());
    let hint = body.size_hint().lower();
    if hint > limit as u64 {
        tracing::debug!(target: TARGET, uri = %entry.uri, limit, "response not stored: body over the per-entry limit");
        return Response::from_parts(parts, StaleIfErrorBody::live(body));
    }
    if body.is_end_stream() {
        shared.store(entry);
        return Response::from_parts(parts, StaleIfErrorBody::live(body));
    }
    let pending = Box::new(Pending {
        shared: Arc::clone(&shared),
        entry,
        buf: Vec::with_capacity(hint as usize),
        limit,
    });
    Response::from_parts(parts, StaleIfErrorBody::tee(body, pending))
}

impl<F, C> fmt::Debug for StaleIfErrorFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleIfErrorFuture")
            .field("cacheable", &self.ctx.is_some())
            .finish()
    }
}
