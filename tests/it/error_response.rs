//! Behaviour of `ErrorResponseLayer`: every error becomes an honest answer.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_steady::classify::{Classify, HttpClassifier, Outcome};
use tower_steady::http::{ErrorResponseLayer, ResponseBody};
use tower_steady::BoxError;

type Answer = (StatusCode, http::HeaderMap, String);

async fn read(res: Response<ResponseBody<Full<Bytes>>>) -> Answer {
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// The answer of `layer` to a request (with `accept`) whose service fails
/// with `err`.
async fn answer_error<C>(
    layer: ErrorResponseLayer<C>,
    accept: Option<&str>,
    err: BoxError,
) -> Answer
where
    C: Classify + Clone,
{
    let err = Mutex::new(Some(err));
    let failing = service_fn(move |_req: Request<()>| {
        let err = err.lock().unwrap().take().expect("called once");
        std::future::ready(Err::<Response<Full<Bytes>>, _>(err))
    });
    let mut req = Request::new(());
    if let Some(accept) = accept {
        req.headers_mut()
            .insert(header::ACCEPT, accept.parse().unwrap());
    }
    read(layer.layer(failing).oneshot(req).await.unwrap()).await
}

async fn answer(err: BoxError) -> Answer {
    answer_error(ErrorResponseLayer::new(), None, err).await
}

fn io_error(kind: io::ErrorKind, msg: &str) -> BoxError {
    Box::new(io::Error::new(kind, msg.to_owned()))
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_503_with_retry_after() {
    let (status, headers, body) = answer(io_error(
        io::ErrorKind::ConnectionRefused,
        "connect to 10.1.2.3:8080 refused",
    ))
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(body.starts_with("Service unavailable."), "{body}");
    assert!(
        !body.contains("10.1.2.3"),
        "the body must not leak the error: {body}"
    );
}

#[tokio::test]
async fn a_reset_connection_is_a_503() {
    let (status, headers, _) = answer(io_error(io::ErrorKind::ConnectionReset, "reset")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn a_timeout_is_a_504_without_retry_after() {
    let (status, headers, body) =
        answer(Box::new(tower_steady::timeout::error::Elapsed::new())).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(!headers.contains_key(header::RETRY_AFTER));
    assert!(body.starts_with("Gateway timeout."), "{body}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_exceeded_deadline_is_a_504() {
    use tower_steady::deadline::DeadlineLayer;
    let svc = tower::ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .layer(DeadlineLayer::server().build().unwrap())
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"late"))))
        }));
    let req = Request::get("/")
        .header("x-request-timeout-ms", "0")
        .body(())
        .unwrap();
    let (status, _, _) = read(svc.oneshot(req).await.unwrap()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn an_unknown_error_is_a_500_and_its_text_stays_private() {
    let (status, headers, body) = answer("db password rejected for user admin".into()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!headers.contains_key(header::RETRY_AFTER));
    assert!(!body.contains("admin"), "{body}");
}

#[cfg(feature = "hyper")]
#[tokio::test]
async fn only_a_malformed_upstream_response_is_a_502() {
    // A real hyper parse error: a client reading garbage from a "server".
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"this is not http\r\n\r\n").await.unwrap();
    });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let err = sender
        .send_request(Request::new(http_body_util::Empty::new()))
        .await
        .unwrap_err();
    assert!(err.is_parse(), "{err:?}");
    let (status, _, body) = answer(Box::new(err)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.starts_with("Bad gateway."), "{body}");
}

#[tokio::test]
async fn json_is_answered_as_problem_details_when_accepted() {
    let err = io_error(io::ErrorKind::ConnectionRefused, "refused");
    let (status, headers, body) =
        answer_error(ErrorResponseLayer::new(), Some("application/json"), err).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(body.contains(r#""status":503"#), "{body}");
    assert!(body.contains(r#""title":"Service Unavailable""#), "{body}");
}

#[tokio::test]
async fn the_default_retry_after_is_configurable_and_whole_seconds() {
    let err = io_error(io::ErrorKind::ConnectionRefused, "refused");
    let layer = ErrorResponseLayer::new().retry_after(Duration::from_millis(2500));
    let (_, headers, _) = answer_error(layer, None, err).await;
    assert_eq!(headers[header::RETRY_AFTER], "3");

    let err = io_error(io::ErrorKind::ConnectionRefused, "refused");
    let layer = ErrorResponseLayer::new().retry_after(Duration::ZERO);
    let (_, headers, _) = answer_error(layer, None, err).await;
    assert_eq!(headers[header::RETRY_AFTER], "1");
}

/// A classifier that knows a hint for its own error type.
#[derive(Clone, Debug)]
struct Hinting;

#[derive(Debug)]
struct Maintenance;

impl std::fmt::Display for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("maintenance")
    }
}

impl std::error::Error for Maintenance {}

impl Classify for Hinting {
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        HttpClassifier::new().classify_response(response)
    }

    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Outcome {
        if error.is::<Maintenance>() {
            return Outcome::failure(
                tower_steady::classify::FailureKind::Rejected,
                tower_steady::classify::RetrySafety::NotSent,
            );
        }
        HttpClassifier::new().classify_error(error)
    }

    fn retry_after(&self, error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
        error
            .is::<Maintenance>()
            .then_some(Duration::from_secs(120))
    }
}

#[tokio::test]
async fn an_errors_own_retry_after_hint_is_used() {
    let layer = ErrorResponseLayer::new().classifier(Hinting);
    let (status, headers, _) = answer_error(layer, None, Box::new(Maintenance)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "120");
}

fn upstream(
    status: StatusCode,
) -> impl tower::Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: Request<()>| async move {
        let mut res = Response::new(Full::new(Bytes::from_static(
            b"<h1>upstream 10.0.0.9 failed</h1>",
        )));
        *res.status_mut() = status;
        res.headers_mut()
            .insert("x-upstream", "kept".parse().unwrap());
        Ok::<_, BoxError>(res)
    })
}

#[tokio::test]
async fn an_upstream_502_becomes_a_503_with_retry_after() {
    let svc = ErrorResponseLayer::new().layer(upstream(StatusCode::BAD_GATEWAY));
    let (status, headers, body) = read(svc.oneshot(Request::new(())).await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(!body.contains("10.0.0.9"), "{body}");
}

#[tokio::test]
async fn an_upstream_502_can_be_passed_through() {
    let svc = ErrorResponseLayer::new()
        .rewrite_bad_gateway(false)
        .layer(upstream(StatusCode::BAD_GATEWAY));
    let (status, headers, body) = read(svc.oneshot(Request::new(())).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-upstream"], "kept");
    assert!(body.contains("upstream"));
}

#[tokio::test]
async fn other_responses_pass_through_untouched() {
    for status in [
        StatusCode::OK,
        StatusCode::NOT_FOUND,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT,
    ] {
        let svc = ErrorResponseLayer::new().layer(upstream(status));
        let (got, headers, body) = read(svc.oneshot(Request::new(())).await.unwrap()).await;
        assert_eq!(got, status);
        assert_eq!(headers["x-upstream"], "kept");
        assert_eq!(body, "<h1>upstream 10.0.0.9 failed</h1>");
    }
}

#[tokio::test]
async fn an_error_from_poll_ready_is_answered_by_the_next_call() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<Full<Bytes>>>();
    let mut svc = ErrorResponseLayer::new().layer(mock);
    handle.send_error(io::Error::from(io::ErrorKind::ConnectionRefused));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// The client gets a generic body; the operator gets the real cause.
#[tokio::test]
async fn the_real_cause_is_logged() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (status, _, body) = answer(io_error(
        io::ErrorKind::ConnectionRefused,
        "connect to 10.1.2.3:8080 refused",
    ))
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.contains("10.1.2.3"));
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("tower_steady::http"), "{log}");
    assert!(log.contains("connect to 10.1.2.3:8080 refused"), "{log}");
    assert!(log.contains("status=503"), "{log}");
}

use tower::Service as _;
