//! The responses this crate writes: short, generic, and the same for every
//! cause that maps to a status.

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

use crate::http::ResponseBody;

/// How an answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    /// `application/problem+json`: the request's `Accept` asks for JSON.
    Json,
    /// A gRPC trailers-only response: the request is gRPC.
    Grpc,
}

/// What a request says of the answer it wants, kept from its arrival (the
/// request is handed on) until an answer is written, which most requests
/// never need.
///
/// A request with one `Accept` value keeps that value (a reference count,
/// or nothing for a static one) and is read only for an answer: scanning
/// a browser's list of media types for `json` on every request would cost
/// more than the rest of the layer. A short value that does not mention
/// `json` (a client's `*/*`, `text/html`) is read at once instead: one
/// scan of a few bytes costs less than the two atomic operations of
/// keeping it and letting it go.
#[derive(Clone, Debug)]
pub(crate) enum Asked {
    /// Known when the request arrived: gRPC, no `Accept`, one short
    /// `Accept` value without `json` in it, or several `Accept` values
    /// (read at once rather than copied).
    Known(Format),
    /// The request's one `Accept` value.
    Accept(HeaderValue),
}

impl Asked {
    /// What `request` asks for: gRPC for a gRPC call (a `POST` that says
    /// so), else its `Accept`.
    pub(crate) fn of<B>(request: &http::Request<B>) -> Self {
        if crate::classify::grpc::is_grpc_request(request) {
            return Asked::Known(Format::Grpc);
        }
        match accept_values(request.headers()) {
            (None, _) => Asked::Known(Format::Text),
            (Some(value), false)
                if value.len() <= SHORT_ACCEPT && !mentions_json(value.as_bytes()) =>
            {
                Asked::Known(Format::Text)
            }
            (Some(value), false) => Asked::Accept(value.clone()),
            (Some(_), true) => Asked::Known(if wants_json(request.headers()) {
                Format::Json
            } else {
                Format::Text
            }),
        }
    }

    /// The format of an answer: JSON for an `Accept` that asks for it.
    pub(crate) fn format(&self) -> Format {
        match self {
            Asked::Known(format) => *format,
            Asked::Accept(value) if value_wants_json(value) => Format::Json,
            Asked::Accept(_) => Format::Text,
        }
    }
}

/// Up to this many bytes, an `Accept` value without `json` in it is read
/// when the request arrives rather than kept (see [`Asked`]).
const SHORT_ACCEPT: usize = 32;

/// Up to this many values, [`accept_values`] looks at each header instead of
/// hashing the name.
const SCAN_LIMIT: usize = 8;

/// The first `Accept` value, and whether there is another. Asked of every
/// request by each error-response layer: most requests carry a handful of
/// headers, and comparing a standard name with each (one comparison of two
/// small numbers) costs less than hashing it and probing the map.
fn accept_values(headers: &HeaderMap) -> (Option<&HeaderValue>, bool) {
    if headers.len() > SCAN_LIMIT {
        let mut values = headers.get_all(ACCEPT).iter();
        return (values.next(), values.next().is_some());
    }
    let mut all = headers.iter();
    match all.find(|(name, _)| *name == ACCEPT) {
        Some((_, first)) => (Some(first), all.any(|(name, _)| name == ACCEPT)),
        None => (None, false),
    }
}

/// A gRPC trailers-only answer: HTTP 200, `grpc-status` `code`, a short
/// `message`, and `grpc-retry-pushback-ms` when the caller should wait
/// (where an HTTP answer would carry `Retry-After`).
pub(crate) fn grpc_response<B>(
    code: u32,
    message: &'static str,
    pushback_ms: Option<u64>,
) -> Response<ResponseBody<B>> {
    use crate::classify::grpc::{GRPC_MESSAGE, GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS};
    let mut response = Response::new(ResponseBody::full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    headers.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
    if let Some(ms) = pushback_ms {
        headers.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ms));
    }
    response
}

/// Whether the request's `Accept` asks for JSON: a media range of
/// `application/json`, `application/problem+json` or any `+json` type, not
/// refused with `q=0`. `*/*` alone gets plain text.
///
/// A value that does not even contain `json`, as most do not, is passed
/// over after one scan of its bytes.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(value_wants_json)
}

/// Whether one `Accept` value asks for JSON (see [`wants_json`]).
fn value_wants_json(value: &HeaderValue) -> bool {
    mentions_json(value.as_bytes()) && value.to_str().is_ok_and(accepts_json)
}

/// Whether `bytes` contain `json` in any case.
///
/// Eight bytes at a time: a word with no `j` or `J` in it (the usual
/// case: `*/*`, a browser's list of HTML and XML types) is passed over
/// with a few arithmetic steps; a word that may hold one has each of its
/// places checked. Fewer bytes than `json` has (`*/*`, what most clients
/// send) need no look at all.
fn mentions_json(bytes: &[u8]) -> bool {
    if bytes.len() < 4 {
        return false;
    }
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const CASE: u64 = u64::from_ne_bytes([0x20; 8]);
    const JS: u64 = u64::from_ne_bytes([b'j'; 8]);
    let json_at = |i: usize| {
        bytes[i..]
            .get(..4)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"json"))
    };
    let mut start = 0;
    for word in bytes.chunks_exact(8) {
        let word = u64::from_ne_bytes(word.try_into().expect("8 bytes"));
        // A zero byte where the word has `j` or `J` (`| 0x20` maps `J`
        // onto `j`); the test flags every zero byte, and perhaps a byte
        // above one, never misses one: the places are then checked.
        let x = (word | CASE) ^ JS;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 && (start..start + 8).any(json_at) {
            return true;
        }
        start += 8;
    }
    (start..bytes.len()).any(json_at)
}

/// Whether one `Accept` value names a JSON media range not refused with
/// `q=0`.
fn accepts_json(value: &str) -> bool {
    value.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let json = media.eq_ignore_ascii_case("application/json")
            || (media.len() > 5
                && media
                    .get(media.len() - 5..)
                    .is_some_and(|s| s.eq_ignore_ascii_case("+json")));
        json && !parts.any(|param| is_q_zero(param.trim()))
    })
}

fn is_q_zero(param: &str) -> bool {
    param.get(..2).is_some_and(|k| k.eq_ignore_ascii_case("q="))
        && param[2..].parse::<f32>().is_ok_and(|q| q == 0.0)
}

struct Page {
    text: &'static str,
    json: &'static str,
}

fn page(status: StatusCode) -> Page {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => Page {
            text: "Service unavailable. Please retry after the time given in Retry-After.\n",
            json: r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"The service cannot handle the request right now. Retry after the time given in Retry-After."}"#,
        },
        StatusCode::GATEWAY_TIMEOUT => Page {
            text: "Gateway timeout. The request could not be completed in time.\n",
            json: r#"{"type":"about:blank","title":"Gateway Timeout","status":504,"detail":"The request could not be completed in time."}"#,
        },
        StatusCode::BAD_GATEWAY => Page {
            text: "Bad gateway. The upstream service sent an invalid response.\n",
            json: r#"{"type":"about:blank","title":"Bad Gateway","status":502,"detail":"The upstream service sent an invalid response."}"#,
        },
        StatusCode::NOT_IMPLEMENTED => Page {
            text: "Not implemented. This request cannot be forwarded.\n",
            json: r#"{"type":"about:blank","title":"Not Implemented","status":501,"detail":"This request cannot be forwarded."}"#,
        },
        _ => Page {
            text: "Internal server error.\n",
            json: r#"{"type":"about:blank","title":"Internal Server Error","status":500}"#,
        },
    }
}

/// The response for `status`; `retry_after_secs` is sent with a `503` only.
pub(crate) fn response<B>(
    status: StatusCode,
    retry_after_secs: u64,
    json: bool,
) -> Response<ResponseBody<B>> {
    let page = page(status);
    let (body, content_type) = if json {
        (page.json, "application/problem+json")
    } else {
        (page.text, "text/plain; charset=utf-8")
    };
    let mut response = Response::new(ResponseBody::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
        wants_json(&h)
    }

    #[test]
    fn what_a_request_asks_is_read_as_when_it_arrived() {
        // The format read at answer time from the kept `Accept` value is
        // the one the whole request's headers give.
        let request = |method: http::Method, headers: &[(&str, &str)]| {
            let mut request = http::Request::new(());
            *request.method_mut() = method;
            for (name, value) in headers {
                request.headers_mut().append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            request
        };
        let eager = |r: &http::Request<()>| {
            if crate::classify::grpc::is_grpc_request(r) {
                Format::Grpc
            } else if wants_json(r.headers()) {
                Format::Json
            } else {
                Format::Text
            }
        };
        let get = http::Method::GET;
        let cases = [
            (request(get.clone(), &[]), Format::Text, true),
            (
                request(get.clone(), &[("accept", "*/*")]),
                Format::Text,
                true,
            ),
            (
                request(get.clone(), &[("accept", "text/html, text/plain;q=0.5")]),
                Format::Text,
                true,
            ),
            (
                request(get.clone(), &[("accept", "application/problem+JSON")]),
                Format::Json,
                false,
            ),
            (
                request(get.clone(), &[("accept", "application/json;q=0")]),
                Format::Text,
                false,
            ),
            (
                request(get.clone(), &[("accept", "application/json")]),
                Format::Json,
                false,
            ),
            (
                request(
                    get.clone(),
                    &[("accept", "text/html,application/xml;q=0.9,*/*;q=0.8")],
                ),
                Format::Text,
                false,
            ),
            (
                request(
                    get.clone(),
                    &[("accept", "text/html"), ("accept", "application/json")],
                ),
                Format::Json,
                true,
            ),
            (
                request(
                    get.clone(),
                    &[("accept", "text/html"), ("accept", "text/plain")],
                ),
                Format::Text,
                true,
            ),
            (
                request(
                    http::Method::POST,
                    &[
                        ("content-type", "application/grpc"),
                        ("accept", "application/json"),
                    ],
                ),
                Format::Grpc,
                true,
            ),
            (
                request(
                    get,
                    &[
                        ("content-type", "application/grpc"),
                        ("accept", "application/json"),
                    ],
                ),
                Format::Json,
                false,
            ),
        ];
        for (request, format, known) in cases {
            let asked = Asked::of(&request);
            assert_eq!(asked.format(), format, "{request:?}");
            assert_eq!(asked.format(), eager(&request), "{request:?}");
            assert_eq!(matches!(asked, Asked::Known(_)), known, "{request:?}");
        }
    }

    #[test]
    fn the_accept_values_are_found_by_the_scan_as_by_a_lookup() {
        // Every place among other headers, once, twice, or not at all, in
        // maps under and over the scan's limit.
        let others = [
            http::header::HOST,
            http::header::USER_AGENT,
            http::header::ACCEPT_ENCODING,
            http::header::COOKIE,
            http::HeaderName::from_static("x-request-id"),
        ];
        for size in [0, 1, 3, SCAN_LIMIT - 1, SCAN_LIMIT, SCAN_LIMIT + 3] {
            for accepts in 0..3 {
                for at in 0..=size {
                    // The other headers, with the `Accept` values before
                    // the one at `at` (or after them all).
                    let mut names: Vec<_> = (0..size)
                        .map(|i| others[i % others.len()].clone())
                        .collect();
                    names.splice(at..at, std::iter::repeat_n(ACCEPT, accepts));
                    let mut h = HeaderMap::new();
                    for (i, name) in names.into_iter().enumerate() {
                        h.append(name, HeaderValue::from(i));
                    }
                    let mut values = h.get_all(ACCEPT).iter();
                    let expected = (values.next(), values.next().is_some());
                    assert_eq!(accept_values(&h), expected, "{size} {accepts} {at}");
                }
            }
        }
    }

    #[test]
    fn json_is_found_wherever_it_is() {
        // Against the plain byte-by-byte scan: every length around the
        // word size, `json` in any case at every place, cut off at the
        // end, near misses (`jso`, bytes whose `| 0x20` is `j`).
        let plain = |bytes: &[u8]| {
            (0..bytes.len()).any(|i| {
                bytes[i..]
                    .get(..4)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"json"))
            })
        };
        let rng = crate::rng::Rng::from_seed(7);
        let next = || rng.next_u64();
        let alphabet = b"jJsSoOnN*/;,=+ \x4a\xeaabc\x00\x80";
        for len in 0..40 {
            for _ in 0..200 {
                let mut bytes: Vec<u8> = (0..len)
                    .map(|_| alphabet[next() as usize % alphabet.len()])
                    .collect();
                assert_eq!(mentions_json(&bytes), plain(&bytes), "{bytes:?}");
                if len >= 4 {
                    let at = next() as usize % (len - 3);
                    let word: &[u8; 4] = [b"json", b"JSON", b"jSoN"][next() as usize % 3];
                    bytes[at..at + 4].copy_from_slice(word);
                    assert!(mentions_json(&bytes), "{bytes:?}");
                    bytes[at + 3] = b'x';
                    assert_eq!(mentions_json(&bytes), plain(&bytes), "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn json_is_chosen_only_when_asked_for() {
        assert!(accept("application/json"));
        assert!(accept("application/problem+json"));
        assert!(accept("text/html, application/JSON;q=0.9"));
        assert!(accept("application/vnd.api+json"));
        assert!(!accept("*/*"));
        assert!(!accept("text/html"));
        assert!(!accept("application/json;q=0"));
        assert!(!accept("json"));
        assert!(accept("text/html, Application/Problem+JSON"));
        assert!(!accept("text/html, application/xml;q=0.9, */*;q=0.8"));
        assert!(!accept("application/jso"));
        assert!(!wants_json(&HeaderMap::new()));
        let mut two = HeaderMap::new();
        two.append(ACCEPT, HeaderValue::from_static("text/html"));
        two.append(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(wants_json(&two));
    }

    #[test]
    fn every_json_page_is_valid_problem_json() {
        for status in [500, 502, 503, 504] {
            let page = page(StatusCode::from_u16(status).unwrap());
            assert!(page.json.starts_with('{') && page.json.ends_with('}'));
            assert!(page.json.contains(&format!("\"status\":{status}")));
        }
    }
}
