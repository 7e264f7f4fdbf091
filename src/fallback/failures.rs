use std::fmt;

use crate::classify::FailureKind;

/// A set of [`FailureKind`]s: the failures a fallback answers.
///
/// The default holds every failure that means the upstream gave no valid
/// answer: an error of any kind, and the gateway statuses `502`, `503` and
/// `504`. It leaves out the answers an upstream meant to give: `429` and the
/// other `5xx` statuses, which pass through.
///
/// ```
/// use tower_steady::classify::FailureKind;
/// use tower_steady::fallback::Failures;
///
/// let f = Failures::default().with(FailureKind::ServerError);
/// assert!(f.contains(FailureKind::ServerError));
/// assert!(f.contains(FailureKind::Connect));
/// assert!(!Failures::none().contains(FailureKind::Connect));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Failures(u16);

const ALL: [FailureKind; 13] = FailureKind::ALL;

const fn bit(kind: FailureKind) -> u16 {
    1 << match kind {
        FailureKind::BadGateway => 0,
        FailureKind::Unavailable => 1,
        FailureKind::GatewayTimeout => 2,
        FailureKind::TooManyRequests => 3,
        FailureKind::ServerError => 4,
        FailureKind::Timeout => 5,
        FailureKind::DeadlineExceeded => 6,
        FailureKind::Connect => 7,
        FailureKind::Reset => 8,
        FailureKind::Rejected => 9,
        FailureKind::Protocol => 10,
        FailureKind::Other => 11,
        FailureKind::Unsupported => 12,
    }
}

impl Failures {
    /// No failure.
    pub const fn none() -> Self {
        Failures(0)
    }

    /// Every failure, including `429` and every `5xx`.
    pub const fn all() -> Self {
        Failures((1 << ALL.len()) - 1)
    }

    /// This set and `kind`.
    pub const fn with(self, kind: FailureKind) -> Self {
        Failures(self.0 | bit(kind))
    }

    /// This set without `kind`.
    pub const fn without(self, kind: FailureKind) -> Self {
        Failures(self.0 & !bit(kind))
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: FailureKind) -> bool {
        self.0 & bit(kind) != 0
    }
}

impl Default for Failures {
    fn default() -> Self {
        Failures::all()
            .without(FailureKind::TooManyRequests)
            .without(FailureKind::ServerError)
            .without(FailureKind::Unsupported)
    }
}

impl fmt::Debug for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(
                ALL.iter()
                    .filter(|k| self.contains(**k))
                    .map(|k| k.as_str()),
            )
            .finish()
    }
}
