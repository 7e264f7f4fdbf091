use http::{header::HeaderName, Method, Request};

/// The `Idempotency-Key` request header: a request that carries it may be
/// repeated safely whatever its method (IETF draft
/// `draft-ietf-httpapi-idempotency-key-header`).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Whether `request` may be sent twice without a different effect from
/// sending it once.
///
/// True for the methods RFC 9110 §9.2.2 defines as idempotent (GET, HEAD,
/// OPTIONS, TRACE, PUT, DELETE) and for any request with an
/// [`Idempotency-Key`](IDEMPOTENCY_KEY) header. POST, PATCH, CONNECT and
/// extension methods are not, unless they carry the key.
///
/// ```
/// use http::{Method, Request};
/// use tower_steady::classify::is_idempotent;
///
/// let get = Request::get("/").body(()).unwrap();
/// assert!(is_idempotent(&get));
///
/// let post = Request::post("/orders").body(()).unwrap();
/// assert!(!is_idempotent(&post));
///
/// let keyed = Request::post("/orders")
///     .header("idempotency-key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
///     .body(())
///     .unwrap();
/// assert!(is_idempotent(&keyed));
/// ```
pub fn is_idempotent<B>(request: &Request<B>) -> bool {
    is_idempotent_method(request.method()) || request.headers().contains_key(IDEMPOTENCY_KEY)
}

fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str) -> Request<()> {
        Request::builder().method(method).body(()).unwrap()
    }

    #[test]
    fn safe_and_idempotent_methods_are_idempotent() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&request(m)), "{m}");
        }
    }

    #[test]
    fn other_methods_are_not_idempotent() {
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&request(m)), "{m}");
        }
    }

    #[test]
    fn an_idempotency_key_makes_any_method_idempotent() {
        let mut req = request("PATCH");
        req.headers_mut()
            .insert(IDEMPOTENCY_KEY, "k-1".parse().unwrap());
        assert!(is_idempotent(&req));
    }
}
