//! The presets around tonic (feature `tonic`): a `Channel` below
//! `Resilience::client()`, a tonic server behind `Resilience::server()`.
//!
//! A tonic client is generic over any service of `http` requests with a
//! `tonic::body::Body`, and so is a tonic server's stack, so the presets
//! fit as they are but for one thing: the retry layer hands the service
//! below it a [`ReplayBody`](crate::retry::ReplayBody) (the body it can
//! send again), and a tonic `Channel` takes only tonic's own body type.
//! [`TonicBody`] is that adapter: it boxes whatever body it is given into
//! a `tonic::body::Body`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tonic::transport::Channel;
//! use tower::Layer;
//! use tower_steady::tonic::TonicBody;
//! use tower_steady::Resilience;
//!
//! let channel = Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let service = Resilience::client().build()?.layer(TonicBody::new(channel));
//! // Any generated client takes it: `GreeterClient::new(service)`, or
//! // `tonic::client::Grpc::new(service)` by hand.
//! let grpc = tonic::client::Grpc::new(service);
//! # let _ = grpc;
//! # Ok(())
//! # }
//! ```
//!
//! On the server side nothing is needed: `Resilience::server()` is a
//! layer of tonic's server, and its answers to gRPC calls are in gRPC's
//! terms (see [`ErrorResponseLayer`](crate::http::ErrorResponseLayer)):
//!
//! ```no_run
//! # async fn run(service: impl tonic::server::NamedService
//! #     + tower_service::Service<http::Request<tonic::body::Body>,
//! #         Response = http::Response<tonic::body::Body>, Error = std::convert::Infallible,
//! #         Future: Send + 'static> + Clone + Send + Sync + 'static)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use tower_steady::Resilience;
//!
//! tonic::transport::Server::builder()
//!     .layer(Resilience::server().build()?)
//!     .add_service(service)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;

/// A service that takes requests of any body type and calls `S` with the
/// body boxed into a `tonic::body::Body`: what a tonic `Channel` needs
/// below the retry layer. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TonicBody<S> {
    inner: S,
}

impl<S> TonicBody<S> {
    /// Wraps `inner` (a `tonic::transport::Channel`, say).
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The layer that wraps services in a `TonicBody`.
    pub const fn layer() -> TonicBodyLayer {
        TonicBodyLayer { _priv: () }
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for TonicBody<S>
where
    S: Service<Request<::tonic::body::Body>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.inner.call(request.map(::tonic::body::Body::new))
    }
}

/// Wraps services in [`TonicBody`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TonicBodyLayer {
    _priv: (),
}

impl<S> Layer<S> for TonicBodyLayer {
    type Service = TonicBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TonicBody::new(inner)
    }
}
