//! What may be stored and for how long: `Cache-Control`, `Vary`, `Age`,
//! `Expires`, read the way a shared cache must (RFC 9111), with RFC 5861's
//! `stale-if-error`.
//!
//! Everything here is pure and takes the headers as they came off the wire.
//! A header that cannot be read is never a reason to store: when in doubt,
//! the response is not stored, which costs at most a stale copy that could
//! have been served, never a private page served to the wrong client.

use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, Method, StatusCode};

/// Numbers in headers are capped here (ten years), so no arithmetic on them
/// can overflow and an absurd `max-age` means "a long time", not a panic.
const MAX_SECONDS: u64 = 10 * 365 * 24 * 60 * 60;

/// The request headers named by a stored response's `Vary`, at most this
/// many; a response that varies on more is not stored.
pub(crate) const MAX_VARY: usize = 8;

/// Up to this many names, [`request_is_cacheable`] walks a request's
/// header names instead of hashing the two it asks about.
const SCAN_LIMIT: usize = 16;

/// Whether a request may be answered from the store, and its responses
/// stored: `GET` or `HEAD`, not a range request, and not `no-store`.
///
/// Asked of every `GET`. Most carry a handful of headers and neither
/// `Range` nor `Cache-Control`; one walk over the names (a standard name
/// against another is one comparison) costs less than two hashed lookups
/// that find nothing.
pub(crate) fn request_is_cacheable(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    let (range, cache_control) = if headers.keys_len() <= SCAN_LIMIT {
        let (mut range, mut cache_control) = (false, false);
        for name in headers.keys() {
            range |= name == header::RANGE;
            cache_control |= name == header::CACHE_CONTROL;
        }
        (range, cache_control)
    } else {
        (
            headers.contains_key(header::RANGE),
            headers.contains_key(header::CACHE_CONTROL),
        )
    };
    if range {
        return false;
    }
    if !cache_control {
        return true;
    }
    match Directives::parse(headers) {
        Some(d) => !d.no_store,
        None => false,
    }
}

/// What the response's headers allow, once the response is known to be a
/// success of the inner service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Storable {
    /// Seconds the response is fresh for, from its own headers.
    pub(crate) fresh: u64,
    /// The response's `stale-if-error`, when it has one.
    pub(crate) stale_if_error: Option<u64>,
    /// The response's `Age` when it arrived.
    pub(crate) age: u64,
    /// The request headers it varies on, lower-case.
    pub(crate) vary: Vec<HeaderName>,
}

/// Why a response is not stored, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    NoStore,
    Private,
    MustRevalidate,
    SetCookie,
    Credentials,
    NoFreshness,
    VaryStar,
    VaryPrivate,
    Unreadable,
}

impl NotStored {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::MustRevalidate => "must-revalidate",
            NotStored::SetCookie => "set-cookie",
            NotStored::Credentials => "credentials",
            NotStored::NoFreshness => "no-freshness",
            NotStored::VaryStar => "vary-star",
            NotStored::VaryPrivate => "vary-private",
            NotStored::Unreadable => "unreadable-header",
        }
    }
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1,
/// "heuristically cacheable"), less `206` (this layer does not assemble
/// ranges) and `501` (a server error).
fn status_is_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414
    )
}

/// Whether a request carries credentials: `Cookie`, `Authorization` or
/// `Proxy-Authorization`. A response to such a request is presumed to be
/// that client's own.
pub(crate) fn request_is_credentialed(headers: &HeaderMap) -> bool {
    headers.contains_key(header::COOKIE)
        || headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key(header::PROXY_AUTHORIZATION)
}

/// Decides whether a successful response may be stored, and reads what the
/// store needs from it. `credentialed` is whether the request carried
/// `Cookie`, `Authorization` or `Proxy-Authorization`
/// ([`request_is_credentialed`]).
pub(crate) fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    credentialed: bool,
) -> Result<Storable, NotStored> {
    if !status_is_cacheable(status) {
        return Err(NotStored::Status);
    }
    let d = Directives::parse(headers).ok_or(NotStored::Unreadable)?;
    if d.no_store {
        return Err(NotStored::NoStore);
    }
    if d.private {
        return Err(NotStored::Private);
    }
    // `no-cache` and `must-revalidate` forbid using the response without
    // asking the origin, which is exactly what an outage prevents (RFC 9111
    // §5.2.2.2: "MUST generate an error response"). `s-maxage` carries
    // `proxy-revalidate`'s meaning for a shared cache (§5.2.2.10), unless
    // the origin also allowed `stale-if-error` explicitly.
    if d.no_cache || d.must_revalidate || (d.s_maxage.is_some() && d.stale_if_error.is_none()) {
        return Err(NotStored::MustRevalidate);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    // A response to a request with credentials (a cookie counts: most
    // handlers read one without saying `Vary: Cookie`) is someone's own,
    // unless the origin said it is shareable (RFC 9111 §3.5): `public`, or
    // `s-maxage`, which speaks to shared caches only.
    if credentialed && !d.public && d.s_maxage.is_none() {
        return Err(NotStored::Credentials);
    }
    // A response that says nothing of caching (the default of most
    // frameworks and hand-written handlers) may be anybody's page: it is
    // stored only when it says `public`.
    let vary = vary(headers)?;
    let has_expires = headers.contains_key(header::EXPIRES);
    if d.s_maxage.is_none() && d.max_age.is_none() && !has_expires && !d.public {
        return Err(NotStored::NoFreshness);
    }
    let fresh = match d.s_maxage.or(d.max_age) {
        Some(secs) => secs,
        None => expires_minus_date(headers),
    };
    Ok(Storable {
        fresh,
        stale_if_error: d.stale_if_error,
        age: age(headers),
        vary,
    })
}

/// The request headers named by `Vary`, lower-case, or why the response
/// cannot be stored: `Vary: *` matches no later request, and a response
/// that varies on `Cookie`, `Authorization` or `Proxy-Authorization` is a
/// per-client page.
fn vary(headers: &HeaderMap) -> Result<Vec<HeaderName>, NotStored> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().map_err(|_| NotStored::Unreadable)?;
        for name in value.split(',') {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name == "*" {
                return Err(NotStored::VaryStar);
            }
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| NotStored::Unreadable)?;
            if name == header::COOKIE
                || name == header::AUTHORIZATION
                || name == header::PROXY_AUTHORIZATION
            {
                return Err(NotStored::VaryPrivate);
            }
            if !names.contains(&name) {
                if names.len() == MAX_VARY {
                    return Err(NotStored::Unreadable);
                }
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// `Age` in seconds; absent or malformed is 0 (RFC 9111 §5.1).
fn age(headers: &HeaderMap) -> u64 {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| seconds(v.trim()))
        .unwrap_or(0)
}

/// Freshness from `Expires` − `Date`; 0 when either is missing or
/// malformed (an invalid `Expires` means "already expired", §5.3).
fn expires_minus_date(headers: &HeaderMap) -> u64 {
    let date = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (date(header::EXPIRES), date(header::DATE)) {
        (Some(expires), Some(date)) => expires
            .duration_since(date)
            .map_or(0, |d| d.as_secs().min(MAX_SECONDS)),
        _ => 0,
    }
}

/// A delta-seconds value: digits only, capped.
fn seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for a u64 is still a valid (huge) number.
    Some(s.parse::<u64>().unwrap_or(MAX_SECONDS).min(MAX_SECONDS))
}

/// The `Cache-Control` directives this layer reads. Unknown directives are
/// ignored, as RFC 9111 §5.2.3 requires.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

impl Directives {
    /// Every `Cache-Control` field of `headers`; `None` when one cannot be
    /// read (not visible ASCII, an unclosed quote).
    pub(crate) fn parse(headers: &HeaderMap) -> Option<Self> {
        let mut d = Directives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let value = value.to_str().ok()?;
            for (name, arg) in DirectiveIter::new(value) {
                let (name, arg) = (name?, arg);
                if name.eq_ignore_ascii_case("no-store") {
                    d.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    // `no-cache="field"` only forbids reusing those fields
                    // without revalidation; taken as a whole, to be safe.
                    d.no_cache = true;
                } else if name.eq_ignore_ascii_case("private") {
                    d.private = true;
                } else if name.eq_ignore_ascii_case("public") {
                    d.public = true;
                } else if name.eq_ignore_ascii_case("must-revalidate")
                    || name.eq_ignore_ascii_case("proxy-revalidate")
                {
                    d.must_revalidate = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    // A malformed max-age makes the response stale (§4.2.1);
                    // the smallest value wins when repeated.
                    let secs = arg.and_then(seconds).unwrap_or(0);
                    d.max_age = Some(d.max_age.map_or(secs, |m| m.min(secs)));
                } else if name.eq_ignore_ascii_case("s-maxage") {
                    let secs = arg.and_then(seconds).unwrap_or(0);
                    d.s_maxage = Some(d.s_maxage.map_or(secs, |m| m.min(secs)));
                } else if name.eq_ignore_ascii_case("stale-if-error") {
                    // A malformed stale-if-error is ignored (the layer's
                    // own limit applies).
                    if let Some(secs) = arg.and_then(seconds) {
                        d.stale_if_error = Some(d.stale_if_error.map_or(secs, |m| m.min(secs)));
                    }
                }
            }
        }
        Some(d)
    }
}

/// Splits one `Cache-Control` value into `(name, argument)` pairs, with
/// quoted-string arguments unquoted (commas inside quotes do not split).
/// A name of `None` means the value could not be read.
struct DirectiveIter<'a> {
    rest: &'a str,
    failed: bool,
}

impl<'a> DirectiveIter<'a> {
    fn new(value: &'a str) -> Self {
        Self {
            rest: value,
            failed: false,
        }
    }
}

impl<'a> Iterator for DirectiveIter<'a> {
    type Item = (Option<&'a str>, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
            if self.rest.is_empty() {
                return None;
            }
            let end = self.rest.find([',', '=']).unwrap_or(self.rest.len());
            let name = self.rest[..end].trim();
            let after = &self.rest[end..];
            if let Some(arg) = after.strip_prefix('=') {
                let arg = arg.trim_start();
                if let Some(quoted) = arg.strip_prefix('"') {
                    // A quoted string: up to the next unescaped quote.
                    let mut escaped = false;
                    let close = quoted.char_indices().find(|&(_, c)| {
                        let found = c == '"' && !escaped;
                        escaped = c == '\\' && !escaped;
                        found
                    });
                    let Some((close, _)) = close else {
                        self.failed = true;
                        return Some((None, None));
                    };
                    self.rest = &quoted[close + 1..];
                    return Some((Some(name), Some(&quoted[..close])));
                }
                let end = arg.find(',').unwrap_or(arg.len());
                self.rest = &arg[end..];
                return Some((Some(name), Some(arg[..end].trim())));
            }
            self.rest = after;
            if !name.is_empty() {
                return Some((Some(name), None));
            }
        }
    }
}

/// The seconds a stored response may still be served after a failure,
/// given its age now: it is usable while `age ≤ fresh + allowance`, where
/// the allowance is its own `stale-if-error` when it has one, else
/// `max_stale`.
pub(crate) fn usable_for(
    fresh: u64,
    stale_if_error: Option<u64>,
    max_stale: Duration,
    age: Duration,
) -> Option<Duration> {
    let allowance = stale_if_error.map_or(max_stale, Duration::from_secs);
    let limit = Duration::from_secs(fresh).saturating_add(allowance);
    limit.checked_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn cc(v: &str) -> Directives {
        Directives::parse(&headers(&[("cache-control", v)])).unwrap()
    }

    #[test]
    fn reads_directives_case_insensitively_with_quotes_and_spaces() {
        let d =
            cc(r#"Public, MAX-AGE=60 , stale-if-error = 300, private="set-cookie, x", no-cache"#);
        assert!(d.public && d.private && d.no_cache);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.stale_if_error, Some(300));
        assert!(!d.no_store);
        let d = cc(r#"community="no-store, private", max-age=5"#);
        assert!(
            !d.no_store && !d.private,
            "quoted commas do not split: {d:?}"
        );
        assert_eq!(d.max_age, Some(5));
    }

    #[test]
    fn malformed_numbers_are_capped_or_ignored() {
        assert_eq!(cc("max-age=abc").max_age, Some(0));
        assert_eq!(cc("max-age=-5").max_age, Some(0));
        assert_eq!(
            cc("max-age=99999999999999999999999").max_age,
            Some(MAX_SECONDS)
        );
        assert_eq!(cc("stale-if-error=soon").stale_if_error, None);
        assert_eq!(
            cc("stale-if-error=10, stale-if-error=5").stale_if_error,
            Some(5)
        );
        assert_eq!(cc("max-age").max_age, Some(0));
    }

    #[test]
    fn an_unclosed_quote_makes_the_header_unreadable() {
        assert_eq!(
            Directives::parse(&headers(&[("cache-control", r#"private="a, max-age=5"#)])),
            None
        );
        let ok = headers(&[("cache-control", "max-age=5")]);
        assert_eq!(storable(StatusCode::OK, &ok, false).unwrap().fresh, 5);
        let bad = headers(&[("cache-control", r#"max-age=5, x="open"#)]);
        assert_eq!(
            storable(StatusCode::OK, &bad, false),
            Err(NotStored::Unreadable)
        );
    }

    #[test]
    fn private_and_per_client_responses_are_not_stored() {
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, NotStored);
        let cases: &[Case<'_>] = &[
            (&[("cache-control", "no-store")], false, NotStored::NoStore),
            (
                &[("cache-control", "private, max-age=60")],
                false,
                NotStored::Private,
            ),
            (
                &[("cache-control", "public, private")],
                false,
                NotStored::Private,
            ),
            (
                &[("cache-control", "no-cache")],
                false,
                NotStored::MustRevalidate,
            ),
            (
                &[("cache-control", "max-age=5, must-revalidate")],
                false,
                NotStored::MustRevalidate,
            ),
            (
                &[("cache-control", "proxy-revalidate")],
                false,
                NotStored::MustRevalidate,
            ),
            (
                &[("cache-control", "s-maxage=60")],
                false,
                NotStored::MustRevalidate,
            ),
            (&[("set-cookie", "id=1")], false, NotStored::SetCookie),
            (
                &[("cache-control", "public"), ("set-cookie", "id=1")],
                false,
                NotStored::SetCookie,
            ),
            (
                &[("cache-control", "max-age=60")],
                true,
                NotStored::Credentials,
            ),
            (&[], true, NotStored::Credentials),
            (&[], false, NotStored::NoFreshness),
            (
                &[("cache-control", "stale-if-error=60")],
                false,
                NotStored::NoFreshness,
            ),
            (&[("vary", "accept, *")], false, NotStored::VaryStar),
            (&[("vary", "Cookie")], false, NotStored::VaryPrivate),
            (
                &[("cache-control", "public"), ("vary", "proxy-authorization")],
                true,
                NotStored::VaryPrivate,
            ),
            (
                &[("vary", "accept-encoding"), ("vary", "authorization")],
                false,
                NotStored::VaryPrivate,
            ),
            (&[("vary", "bad name")], false, NotStored::Unreadable),
        ];
        for (pairs, credentialed, why) in cases {
            let got = storable(StatusCode::OK, &headers(pairs), *credentialed);
            assert_eq!(got, Err(*why), "{pairs:?}");
        }
    }

    #[test]
    fn public_responses_to_credentialed_requests_are_stored() {
        let h = headers(&[("cache-control", "public, max-age=10")]);
        assert_eq!(storable(StatusCode::OK, &h, true).unwrap().fresh, 10);
        // `s-maxage` speaks to shared caches: shareable too.
        let h = headers(&[("cache-control", "s-maxage=10, stale-if-error=60")]);
        assert_eq!(storable(StatusCode::OK, &h, true).unwrap().fresh, 10);
        // `public` alone: stored, with no freshness (usable for the
        // allowance only).
        let h = headers(&[("cache-control", "public")]);
        assert_eq!(storable(StatusCode::OK, &h, true).unwrap().fresh, 0);
        assert_eq!(storable(StatusCode::OK, &h, false).unwrap().fresh, 0);
        let h = headers(&[(
            "cache-control",
            "s-maxage=20, max-age=10, stale-if-error=60",
        )]);
        let s = storable(StatusCode::OK, &h, false).unwrap();
        assert_eq!((s.fresh, s.stale_if_error), (20, Some(60)));
    }

    #[test]
    fn only_heuristically_cacheable_statuses_are_stored() {
        let h = headers(&[("cache-control", "max-age=5")]);
        for ok in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414] {
            assert!(
                storable(StatusCode::from_u16(ok).unwrap(), &h, false).is_ok(),
                "{ok}"
            );
        }
        for no in [201, 206, 302, 304, 400, 401, 403, 500, 501, 502, 503] {
            assert_eq!(
                storable(StatusCode::from_u16(no).unwrap(), &h, false),
                Err(NotStored::Status),
                "{no}"
            );
        }
    }

    #[test]
    fn credentials_are_a_cookie_or_either_authorization() {
        assert!(!request_is_credentialed(&HeaderMap::new()));
        for name in ["cookie", "authorization", "proxy-authorization"] {
            assert!(request_is_credentialed(&headers(&[(name, "x")])), "{name}");
        }
        assert!(!request_is_credentialed(&headers(&[("x-cookie", "x")])));
    }

    #[test]
    fn vary_names_are_collected_lower_case_once_each() {
        let h = headers(&[
            ("cache-control", "max-age=5"),
            ("vary", "Accept-Encoding, accept"),
            ("vary", "ACCEPT-ENCODING,,"),
        ]);
        let s = storable(StatusCode::OK, &h, false).unwrap();
        assert_eq!(s.vary, vec![header::ACCEPT_ENCODING, header::ACCEPT]);
        let many = (0..=MAX_VARY)
            .map(|i| format!("x-h{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let h = headers(&[("cache-control", "max-age=5"), ("vary", &many)]);
        assert_eq!(
            storable(StatusCode::OK, &h, false),
            Err(NotStored::Unreadable)
        );
    }

    #[test]
    fn freshness_comes_from_max_age_else_expires_minus_date() {
        let h = headers(&[
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
            ("age", "7"),
        ]);
        let s = storable(StatusCode::OK, &h, false).unwrap();
        assert_eq!((s.fresh, s.age), (60, 7));
        let h = headers(&[
            ("expires", "0"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("age", "x"),
        ]);
        let s = storable(StatusCode::OK, &h, false).unwrap();
        assert_eq!((s.fresh, s.age), (0, 0));
    }

    #[test]
    fn requests_other_than_plain_get_and_head_are_not_cacheable() {
        assert!(request_is_cacheable(&Method::GET, &HeaderMap::new()));
        assert!(request_is_cacheable(&Method::HEAD, &HeaderMap::new()));
        assert!(!request_is_cacheable(&Method::POST, &HeaderMap::new()));
        assert!(!request_is_cacheable(
            &Method::GET,
            &headers(&[("range", "bytes=0-1")])
        ));
        assert!(!request_is_cacheable(
            &Method::GET,
            &headers(&[("cache-control", "no-store")])
        ));
        assert!(!request_is_cacheable(
            &Method::GET,
            &headers(&[("cache-control", "x=\"open")])
        ));
    }

    #[test]
    fn a_request_is_read_the_same_with_few_headers_and_with_many() {
        // Few: the names are walked. Many (over `SCAN_LIMIT`): looked up.
        for extra in [1, SCAN_LIMIT + 4] {
            let names: Vec<String> = (0..extra).map(|i| format!("x-extra-{i}")).collect();
            let with = |pairs: &[(&str, &str)]| {
                let mut all: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
                all.extend_from_slice(pairs);
                headers(&all)
            };
            let case = format!("{extra} other headers");
            assert!(request_is_cacheable(&Method::GET, &with(&[])), "{case}");
            assert!(
                request_is_cacheable(&Method::GET, &with(&[("cache-control", "max-age=0")])),
                "{case}"
            );
            assert!(
                !request_is_cacheable(&Method::GET, &with(&[("range", "bytes=0-1")])),
                "{case}"
            );
            assert!(
                !request_is_cacheable(&Method::GET, &with(&[("cache-control", "no-store")])),
                "{case}"
            );
            assert!(
                !request_is_cacheable(
                    &Method::GET,
                    &with(&[
                        ("cache-control", "max-age=5"),
                        ("cache-control", "no-store")
                    ])
                ),
                "{case}"
            );
        }
    }

    #[test]
    fn a_copy_is_usable_until_fresh_plus_its_allowance() {
        let max = Duration::from_secs(30);
        let at = Duration::from_secs;
        assert_eq!(usable_for(10, None, max, at(25)), Some(at(15)));
        assert_eq!(usable_for(10, None, max, at(40)), Some(at(0)));
        assert_eq!(usable_for(10, None, max, at(41)), None);
        assert_eq!(usable_for(0, Some(5), max, at(5)), Some(at(0)));
        assert_eq!(usable_for(0, Some(5), max, at(6)), None);
        assert!(usable_for(MAX_SECONDS, Some(MAX_SECONDS), Duration::MAX, at(1)).is_some());
    }
}
