use std::net::SocketAddr;
use std::task::{Context, Poll};

use http::uri::{Authority, Scheme, Uri};
use http::{Method, Request};
use tower_service::Service;

use super::future::SetAuthorityFuture;
use crate::BoxError;

/// Points every request at one endpoint: sets the request URI's authority
/// to the endpoint's address (and its scheme to `http` when it has none),
/// keeping the path, the query and every header (`Host` included). It is
/// how an [`Upstreams`](super::Upstreams) maker turns one shared
/// hyper-util client into a service per endpoint.
///
/// An asterisk-form `OPTIONS *` stays `OPTIONS *`. A `CONNECT`, or any
/// other request whose target is an authority (`host:port`), is refused
/// with [`UnsupportedTarget`](super::UnsupportedTarget), sent nowhere:
/// pointing it at the endpoint would lose the target, and passing it on
/// would let the client open a tunnel to wherever the caller named.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower_steady::upstream::{SetAuthority, Upstreams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
/// let addrs = ["10.0.0.1:8080".parse()?, "10.0.0.2:8080".parse()?];
/// let upstreams = Upstreams::builder()
///     .build(addrs, |addr| SetAuthority::new(addr, client.clone()))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SetAuthority<S> {
    inner: S,
    authority: Authority,
}

impl<S> SetAuthority<S> {
    /// Sends every request through `inner` to `addr`.
    pub fn new(addr: SocketAddr, inner: S) -> Self {
        let authority =
            Authority::try_from(addr.to_string()).expect("a socket address is a valid authority");
        Self { inner, authority }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for SetAuthority<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = SetAuthorityFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let uri = request.uri();
        // `CONNECT host:port` (or any authority-form target): the target is
        // the authority itself, which this service exists to replace.
        if request.method() == Method::CONNECT
            || (uri.authority().is_some() && uri.scheme().is_none())
        {
            tracing::debug!(target: "tower_steady::upstream", method = %request.method(), %uri, "request target cannot be sent to an endpoint");
            return SetAuthorityFuture::refused();
        }
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        if parts.scheme.is_none() {
            parts.scheme = Some(Scheme::HTTP);
        }
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.authority = Some(self.authority.clone());
        // Scheme, authority and path are all set (an asterisk-form `*`
        // stays the path, and goes on the wire as `OPTIONS *`), so this
        // cannot fail.
        *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
        SetAuthorityFuture::called(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[derive(Clone)]
    struct Echo;

    impl Service<Request<()>> for Echo {
        type Response = Uri;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Uri, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<()>) -> Self::Future {
            std::future::ready(Ok(request.uri().clone()))
        }
    }

    fn through(uri: &str) -> Uri {
        call(Method::GET, uri).unwrap()
    }

    #[test]
    fn an_origin_form_request_gets_scheme_and_authority() {
        assert_eq!(through("/a/b?c=d"), "http://127.0.0.1:9000/a/b?c=d");
    }

    fn call(method: Method, uri: &str) -> Result<Uri, BoxError> {
        let mut service = SetAuthority::new("127.0.0.1:9000".parse().unwrap(), Echo);
        let request = Request::builder().method(method).uri(uri).body(()).unwrap();
        tokio_test::block_on(service.call(request))
    }

    #[test]
    fn options_asterisk_stays_asterisk() {
        let uri = call(Method::OPTIONS, "*").unwrap();
        assert_eq!(uri.path(), "*");
        assert_eq!(uri.authority().unwrap(), "127.0.0.1:9000");
    }

    #[test]
    fn connect_and_authority_form_targets_are_refused() {
        for (method, uri) in [
            (Method::CONNECT, "example.com:443"),
            (Method::CONNECT, "http://example.com/"),
            (Method::GET, "example.com:443"),
        ] {
            let err = call(method.clone(), uri).unwrap_err();
            assert!(
                err.is::<crate::upstream::UnsupportedTarget>(),
                "{method} {uri}: {err}"
            );
        }
    }

    #[test]
    fn an_absolute_request_keeps_its_scheme_and_path() {
        assert_eq!(
            through("https://api.example:443/x?y"),
            "https://127.0.0.1:9000/x?y"
        );
    }
}
