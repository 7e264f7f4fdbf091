//! The retry layer's decisions, apart from the machinery that carries them
//! out: whether a failed attempt is retried and after how long, and whether
//! a hedge is sent. Pure functions of what the response future knows, so
//! they are tested with plain `#[test]`s; the future reads the clock, the
//! budget and the response, and acts on what these return.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use super::backoff::Backoff;
use crate::classify::{grpc, FailureKind};
use crate::http::RetryAfter;

/// tokio's timer rounds a sleep up to its next millisecond: a wait ending
/// within one of the deadline could wake past it.
pub(crate) const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

/// What a retry decision depends on, besides the layer's settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failed {
    /// What went wrong.
    pub(crate) kind: FailureKind,
    /// The failure's retry safety allows a retry of this request (given
    /// whether it is idempotent).
    pub(crate) safe: bool,
    /// The failed attempt said which endpoint it went to, so a balancer
    /// below sends the retry to another one.
    pub(crate) elsewhere: bool,
    /// The attempt that failed: 1 for the first.
    pub(crate) attempt: u32,
    /// The request's body can be sent again.
    pub(crate) can_replay: bool,
    /// What the failed response's `Retry-After` asks for, on a `503` or a
    /// `429` that has one, or its `grpc-retry-pushback-ms`.
    pub(crate) retry_after: Option<Duration>,
    /// The failed response asked for no retry (a negative or malformed
    /// `grpc-retry-pushback-ms`).
    pub(crate) no_retry_asked: bool,
    /// The time left before the request's deadline, if it has one.
    pub(crate) time_left: Option<Duration>,
}

/// The settings a retry decision reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules<'a> {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: &'a Backoff,
    pub(crate) max_retry_after: Duration,
}

/// What to do about a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Retry after this wait, if the budget has a retry to give.
    Retry(Duration),
    /// Return the failure, for this reason (logged).
    Refuse(&'static str),
}

/// Whether to retry a failed attempt, and after how long. `jitter` draws
/// a uniform number in `[0, 1)` for the backoff, only when a backoff
/// applies (so a seeded generator's sequence depends only on the waits).
pub(crate) fn decide(failed: &Failed, rules: Rules<'_>, jitter: impl FnOnce() -> f64) -> Decision {
    use Decision::Refuse;
    if matches!(
        failed.kind,
        FailureKind::DeadlineExceeded | FailureKind::Rejected | FailureKind::Unsupported
    ) {
        return Refuse("a retry would fail the same way");
    }
    if !failed.safe {
        return Refuse("the upstream may have seen it and it is not idempotent");
    }
    if failed.attempt >= rules.max_attempts {
        return Refuse("no attempts left");
    }
    if !failed.can_replay {
        return Refuse("its body was longer than the replay limit");
    }
    if failed.no_retry_asked {
        return Refuse("the server asked for no retry");
    }
    // The first retry of a request that failed on one endpoint goes to
    // another at once (as HAProxy's redispatch and Envoy's `previous_hosts`
    // do): the wait is there for the endpoint that failed, and the retry
    // goes elsewhere. Later retries, and a retry that may go back to the
    // same place, back off. A `Retry-After` still counts, and the budget
    // bounds it all.
    let mut wait = if failed.attempt == 1 && failed.elsewhere {
        Duration::ZERO
    } else {
        rules.backoff.delay(failed.attempt, jitter())
    };
    if let Some(asked) = failed.retry_after {
        if asked > rules.max_retry_after {
            return Refuse("Retry-After asks for longer than allowed");
        }
        wait = wait.max(asked);
    }
    if let Some(left) = failed.time_left {
        if wait.saturating_add(TIMER_GRANULARITY) > left {
            return Refuse("the wait would pass the deadline");
        }
    }
    Decision::Retry(wait)
}

/// What a failed response asks of a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    Nothing,
    /// Wait at least this long.
    Wait(Duration),
    /// Do not retry.
    NoRetry,
}

/// What a failed response asks of a retry: the `Retry-After` of a `503` or
/// a `429` (other statuses' are not a request to wait), or the
/// `grpc-retry-pushback-ms` of a gRPC trailers-only answer, whose negative
/// or malformed value means no retry (gRFC A6).
pub(crate) fn asked(status: StatusCode, headers: &HeaderMap) -> Asked {
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        return match RetryAfter::from_headers(headers) {
            Some(asked) => Asked::Wait(asked.delay()),
            None => Asked::Nothing,
        };
    }
    if status == StatusCode::OK {
        if let Some(value) = headers.get(grpc::GRPC_RETRY_PUSHBACK_MS) {
            return match grpc::parse_pushback(value) {
                grpc::Pushback::Wait(wait) => Asked::Wait(wait),
                grpc::Pushback::DoNotRetry => Asked::NoRetry,
            };
        }
    }
    Asked::Nothing
}

/// Why a hedge due now is not sent, or `None` to send it (if the service is
/// ready and the budget has one to give).
pub(crate) fn hedge_refusal(
    attempts: u32,
    max_attempts: u32,
    can_hedge: bool,
    expired: bool,
) -> Option<&'static str> {
    if attempts >= max_attempts {
        Some("no attempts left")
    } else if !can_hedge {
        Some("its body is still being sent")
    } else if expired {
        Some("no time left")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const MS: Duration = Duration::from_millis(1);

    fn failed(kind: FailureKind) -> Failed {
        Failed {
            kind,
            safe: true,
            elsewhere: false,
            attempt: 1,
            can_replay: true,
            retry_after: None,
            no_retry_asked: false,
            time_left: None,
        }
    }

    /// `decide` with every jitter draw at the middle of its range.
    fn decide_half(failed: &Failed, rules: Rules<'_>) -> Decision {
        decide(failed, rules, || 0.5)
    }

    fn rules(backoff: &Backoff) -> Rules<'_> {
        Rules {
            max_attempts: 3,
            backoff,
            max_retry_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn what_would_fail_again_is_not_retried() {
        let backoff = Backoff::default();
        for kind in [
            FailureKind::DeadlineExceeded,
            FailureKind::Rejected,
            FailureKind::Unsupported,
        ] {
            assert_eq!(
                decide_half(&failed(kind), rules(&backoff)),
                Decision::Refuse("a retry would fail the same way"),
                "{kind:?}"
            );
        }
        for kind in [
            FailureKind::BadGateway,
            FailureKind::Unavailable,
            FailureKind::Connect,
            FailureKind::Reset,
            FailureKind::Timeout,
        ] {
            assert!(
                matches!(
                    decide_half(&failed(kind), rules(&backoff)),
                    Decision::Retry(_)
                ),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn unsafe_spent_or_unreplayable_requests_are_not_retried() {
        let backoff = Backoff::default();
        let unsafe_ = Failed {
            safe: false,
            ..failed(FailureKind::Unavailable)
        };
        assert!(matches!(
            decide_half(&unsafe_, rules(&backoff)),
            Decision::Refuse(_)
        ));
        let last = Failed {
            attempt: 3,
            ..failed(FailureKind::Unavailable)
        };
        assert_eq!(
            decide_half(&last, rules(&backoff)),
            Decision::Refuse("no attempts left")
        );
        let long_body = Failed {
            can_replay: false,
            ..failed(FailureKind::Unavailable)
        };
        assert!(matches!(
            decide_half(&long_body, rules(&backoff)),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn the_first_retry_elsewhere_goes_at_once_later_ones_back_off() {
        let backoff = Backoff::exponential(Duration::from_millis(25), Duration::from_millis(250));
        let elsewhere = Failed {
            elsewhere: true,
            ..failed(FailureKind::Connect)
        };
        assert_eq!(
            decide_half(&elsewhere, rules(&backoff)),
            Decision::Retry(Duration::ZERO)
        );
        let same_place = failed(FailureKind::Connect);
        let Decision::Retry(wait) = decide_half(&same_place, rules(&backoff)) else {
            panic!("not retried");
        };
        assert_eq!(wait, backoff.delay(1, 0.5));
        assert!(wait > Duration::ZERO);
        let second = Failed {
            attempt: 2,
            ..elsewhere
        };
        assert_eq!(
            decide_half(&second, rules(&backoff)),
            Decision::Retry(backoff.delay(2, 0.5))
        );
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_its_cap() {
        let backoff = Backoff::none();
        let asked = Failed {
            retry_after: Some(Duration::from_secs(2)),
            ..failed(FailureKind::Unavailable)
        };
        assert_eq!(
            decide_half(&asked, rules(&backoff)),
            Decision::Retry(Duration::from_secs(2))
        );
        let too_long = Failed {
            retry_after: Some(Duration::from_secs(11)),
            ..asked
        };
        assert_eq!(
            decide_half(&too_long, rules(&backoff)),
            Decision::Refuse("Retry-After asks for longer than allowed")
        );
    }

    #[test]
    fn a_wait_that_would_pass_the_deadline_is_refused() {
        let backoff = Backoff::none();
        let wait = |left: Duration, asked: Duration| {
            let f = Failed {
                retry_after: Some(asked),
                time_left: Some(left),
                ..failed(FailureKind::Unavailable)
            };
            decide_half(&f, rules(&backoff))
        };
        assert_eq!(wait(100 * MS, 98 * MS), Decision::Retry(98 * MS));
        // One timer tick of margin: 99 ms + 1 ms does not fit in 99.5 ms.
        assert!(matches!(
            wait(99 * MS + MS / 2, 99 * MS),
            Decision::Refuse(_)
        ));
        assert!(matches!(
            wait(Duration::ZERO, Duration::ZERO),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn only_a_503_or_a_429_asks_for_a_wait() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("3"));
        let three = Asked::Wait(Duration::from_secs(3));
        assert_eq!(asked(StatusCode::SERVICE_UNAVAILABLE, &headers), three);
        assert_eq!(asked(StatusCode::TOO_MANY_REQUESTS, &headers), three);
        assert_eq!(asked(StatusCode::BAD_GATEWAY, &headers), Asked::Nothing);
        assert_eq!(
            asked(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()),
            Asked::Nothing
        );
    }

    #[test]
    fn a_grpc_pushback_asks_for_a_wait_or_for_no_retry() {
        let pushback = |v: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-status", HeaderValue::from_static("14"));
            headers.insert("grpc-retry-pushback-ms", HeaderValue::from_static(v));
            asked(StatusCode::OK, &headers)
        };
        assert_eq!(pushback("40"), Asked::Wait(40 * MS));
        assert_eq!(pushback("-1"), Asked::NoRetry);
        assert_eq!(pushback("soon"), Asked::NoRetry);
        let refused = Failed {
            no_retry_asked: true,
            ..failed(FailureKind::Unavailable)
        };
        assert_eq!(
            decide_half(&refused, rules(&Backoff::none())),
            Decision::Refuse("the server asked for no retry")
        );
    }

    #[test]
    fn a_hedge_needs_an_attempt_left_a_sent_body_and_time() {
        assert_eq!(hedge_refusal(1, 3, true, false), None);
        assert_eq!(hedge_refusal(3, 3, true, false), Some("no attempts left"));
        assert_eq!(
            hedge_refusal(1, 3, false, false),
            Some("its body is still being sent")
        );
        assert_eq!(hedge_refusal(1, 3, true, true), Some("no time left"));
    }
}
