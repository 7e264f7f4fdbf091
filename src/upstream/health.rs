//! The set-level ejection policy: the transitions of endpoints' health
//! (eject, probe, re-admit, success-rate outliers), taken under the
//! registry's lock. Each endpoint's own state is in `endpoint.rs`.
//!
//! The request path reads states, counts and estimates with plain atomic
//! loads and records outcomes with atomic adds. Every transition of an
//! endpoint's state happens under [`Registry`]'s mutex: transitions are
//! rare (an ejection, a probe, a re-admission, a change of the set) and
//! each needs a consistent view of the whole set (the ejection cap, the
//! healthy count, the next probe).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::endpoint::{millis, Health, Outcomes, Verdict, EJECTED, HEALTHY, PROBING, SLOW_START};
use super::handle::{EndpointSnapshot, EndpointState};
use crate::observability::Series;
use crate::rng::Rng;

pub(crate) const TARGET: &str = "tower_steady::upstream";

/// Settings, validated by the builder.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) consecutive_failures: u32,
    pub(crate) interval: Duration,
    pub(crate) base_ejection: Duration,
    /// The first ejection's length for an endpoint that refuses
    /// connections (a restart): it is probed back this soon.
    pub(crate) unreachable_ejection: Duration,
    pub(crate) max_ejection: Duration,
    pub(crate) ejection_jitter: f64,
    pub(crate) max_ejected_ratio: f64,
    pub(crate) panic_threshold: f64,
    pub(crate) success_rate_min_requests: u32,
    pub(crate) success_rate_min_endpoints: usize,
    pub(crate) success_rate_stdev_factor: f64,
    pub(crate) slow_start: Duration,
    pub(crate) slow_start_min_weight: f64,
    pub(crate) default_rtt: Duration,
    pub(crate) decay: Duration,
    pub(crate) checks: Option<CheckSettings>,
    /// The set's name: the `upstreams` label of its metrics.
    pub(crate) name: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckSettings {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
}

/// The set's health: every endpoint's [`Health`], and what is derived from
/// the whole set.
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) config: Config,
    epoch: Instant,
    pub(crate) rng: Rng,
    endpoints: Mutex<Vec<Arc<Health>>>,
    /// Endpoints that take requests, recounted on every transition.
    healthy: AtomicUsize,
    /// When the earliest ejection ends (nanoseconds since the epoch), or
    /// `u64::MAX`: one load per request tells whether a probe is due.
    next_probe: AtomicU64,
    /// When the success rates are next compared.
    next_evaluation: AtomicU64,
    evaluating: Mutex<()>,
    metrics: SetMetrics,
}

/// The series of one named set (label `upstreams`).
#[derive(Debug)]
struct SetMetrics {
    healthy: Series,
    endpoints: Series,
    readmissions: Series,
    /// By reason: consecutive failures, unreachable, success rate, probe
    /// failed, health check.
    ejections: [Series; 5],
}

impl SetMetrics {
    /// The set's series, each made to exist at zero.
    fn new(name: &str) -> Self {
        let set = [("upstreams", name)];
        let ejection = |reason: &'static str| {
            Series::new(
                "tower_steady_upstream_ejections_total",
                &[("upstreams", name), ("reason", reason)],
            )
        };
        let metrics = Self {
            healthy: Series::new("tower_steady_upstream_healthy_endpoints", &set),
            endpoints: Series::new("tower_steady_upstream_endpoints", &set),
            readmissions: Series::new("tower_steady_upstream_readmissions_total", &set),
            ejections: [
                ejection(Reason::ConsecutiveFailures.as_str()),
                ejection(Reason::Unreachable.as_str()),
                ejection(Reason::SuccessRate.as_str()),
                ejection(Reason::ProbeFailed.as_str()),
                ejection(HEALTH_CHECK),
            ],
        };
        crate::observability::emit::described();
        metrics.healthy.set(0.0);
        metrics.endpoints.set(0.0);
        metrics.readmissions.add(0);
        for series in &metrics.ejections {
            series.add(0);
        }
        metrics
    }

    fn ejected(&self, reason: Reason) {
        self.ejections[reason as usize].add(1);
    }
}

const HEALTH_CHECK: &str = "health_check";
const HEALTH_CHECK_INDEX: usize = 4;

/// Why an endpoint was ejected (in the order of `SetMetrics::ejections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    ConsecutiveFailures = 0,
    Unreachable = 1,
    SuccessRate = 2,
    ProbeFailed = 3,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::Unreachable => "unreachable",
            Reason::SuccessRate => "success_rate",
            Reason::ProbeFailed => "probe_failed",
        }
    }
}

impl Registry {
    pub(crate) fn new(config: Config, rng: Rng) -> Self {
        let config_name = config.name.clone();
        let epoch = Instant::now();
        let first_evaluation = config.interval.as_nanos() as u64;
        Self {
            config,
            epoch,
            rng,
            endpoints: Mutex::new(Vec::new()),
            healthy: AtomicUsize::new(0),
            next_probe: AtomicU64::new(u64::MAX),
            next_evaluation: AtomicU64::new(first_evaluation),
            evaluating: Mutex::new(()),
            metrics: SetMetrics::new(&config_name),
        }
    }

    /// Nanoseconds from the epoch to `now`.
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Health>>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn healthy(&self) -> usize {
        self.healthy.load(Ordering::Acquire)
    }

    pub(crate) fn next_probe(&self) -> u64 {
        self.next_probe.load(Ordering::Acquire)
    }

    /// A new endpoint's health. Endpoints of the first set start healthy;
    /// endpoints added later start in slow start.
    pub(crate) fn health(&self, addr: SocketAddr, now: Instant, added: bool) -> Arc<Health> {
        let state = if added && !self.config.slow_start.is_zero() {
            SLOW_START
        } else {
            HEALTHY
        };
        Arc::new(Health::new(addr, state, self.nanos(now)))
    }

    /// Replaces the set. Endpoints that left it are marked removed.
    pub(crate) fn replace(&self, set: Vec<Arc<Health>>) {
        let mut endpoints = self.lock();
        for old in endpoints.iter() {
            if !set.iter().any(|new| Arc::ptr_eq(old, new)) {
                old.removed.store(true, Ordering::Relaxed);
            }
        }
        *endpoints = set;
        self.recount(&endpoints);
    }

    /// Recomputes what is derived from the whole set. Called with the lock
    /// held, after every transition.
    fn recount(&self, endpoints: &[Arc<Health>]) {
        let healthy = endpoints.iter().filter(|h| h.is_healthy()).count();
        let next_probe = endpoints
            .iter()
            .filter(|h| h.state() == EJECTED && !h.check_down.load(Ordering::Relaxed))
            .map(|h| h.until.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        self.healthy.store(healthy, Ordering::Release);
        self.next_probe.store(next_probe, Ordering::Release);
        self.metrics.healthy.set(healthy as f64);
        self.metrics.endpoints.set(endpoints.len() as f64);
    }

    /// How long a caller should wait when no endpoint can take a request.
    pub(crate) fn retry_after(&self, now: u64) -> Duration {
        let next_probe = self.next_probe();
        if next_probe != u64::MAX {
            return Duration::from_nanos(next_probe.saturating_sub(now));
        }
        match self.config.checks {
            Some(checks) => checks.interval,
            None => Duration::from_secs(1),
        }
    }

    /// Records what a request to `health` came to.
    /// `probe` says whether it was the probe of an ejected endpoint.
    /// `now` is the registry's clock ([`nanos`](Self::nanos)).
    pub(crate) fn record(
        &self,
        health: &Health,
        verdict: Verdict,
        rtt: Duration,
        now: u64,
        probe: bool,
    ) {
        if probe {
            if verdict != Verdict::Ignore {
                health.ewma.observe(rtt, millis(now), self.config.decay);
            }
            return self.probe_result(health, verdict, now);
        }
        if verdict == Verdict::Ignore {
            return;
        }
        health.ewma.observe(rtt, millis(now), self.config.decay);
        health.outcomes.fetch_add(
            Outcomes::one(verdict == Verdict::Success),
            Ordering::Relaxed,
        );
        match verdict {
            Verdict::Success => {
                if health.consecutive.load(Ordering::Relaxed) != 0 {
                    health.consecutive.store(0, Ordering::Relaxed);
                }
            }
            Verdict::Failure => health.consecutive.store(0, Ordering::Relaxed),
            Verdict::GatewayFailure | Verdict::Unreachable => {
                let unreachable = verdict == Verdict::Unreachable;
                health.unreachable.store(unreachable, Ordering::Relaxed);
                let run = health.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if run >= self.config.consecutive_failures {
                    let reason = if unreachable {
                        Reason::Unreachable
                    } else {
                        Reason::ConsecutiveFailures
                    };
                    self.eject(health, now, reason);
                }
            }
            Verdict::Ignore => {}
        }
        if now >= self.next_evaluation.load(Ordering::Relaxed) {
            self.evaluate(now);
        }
    }

    /// Ejects `health` unless it is already out or the cap is reached.
    fn eject(&self, health: &Health, now: u64, reason: Reason) {
        let endpoints = self.lock();
        if !matches!(health.state(), HEALTHY | SLOW_START) {
            return;
        }
        let ejected = endpoints
            .iter()
            .filter(|h| h.is_passively_ejected())
            .count();
        // The last endpoint taking requests is not ejected for answers it
        // gave (gateway statuses, resets, timeouts, a low success rate):
        // with nothing to send to instead, the set would answer every
        // request with `NoHealthyUpstream` for the whole ejection, while
        // the endpoint, five failures in a row or not, may answer most of
        // them well (at 5% of 502s, five in a row come once in about three
        // million requests: every few minutes at 20 000 a second). Whether
        // a lone upstream fails too often is for the circuit breaker above
        // to judge, over its window. One that refuses connections is not
        // there at all, and is ejected.
        if reason != Reason::Unreachable
            && endpoints
                .iter()
                .filter(|h| !std::ptr::eq(Arc::as_ptr(h), health) && h.is_healthy())
                .count()
                == 0
        {
            health.consecutive.store(0, Ordering::Relaxed);
            tracing::debug!(
                target: TARGET,
                endpoint = %health.addr,
                reason = reason.as_str(),
                "ejection skipped: the last endpoint taking requests"
            );
            return;
        }
        let cap = ((endpoints.len() as f64 * self.config.max_ejected_ratio) as usize).max(1);
        if ejected >= cap {
            health.consecutive.store(0, Ordering::Relaxed);
            tracing::debug!(
                target: TARGET,
                endpoint = %health.addr,
                reason = reason.as_str(),
                ejected,
                cap,
                "ejection skipped: too many endpoints already ejected"
            );
            return;
        }
        // The multiplier falls by one for each interval spent healthy
        // since the last re-admission (Envoy's decay), then grows by one.
        let healthy_for = now.saturating_sub(health.since.load(Ordering::Relaxed));
        let intervals = healthy_for / (self.config.interval.as_nanos() as u64).max(1);
        let decayed =
            u64::from(health.multiplier.load(Ordering::Relaxed)).saturating_sub(intervals);
        let multiplier = (decayed + 1) as u32;
        self.eject_for(&endpoints, health, now, multiplier, reason);
    }

    fn eject_for(
        &self,
        endpoints: &[Arc<Health>],
        health: &Health,
        now: u64,
        multiplier: u32,
        reason: Reason,
    ) {
        let base = if health.unreachable.load(Ordering::Relaxed) {
            self.config.unreachable_ejection
        } else {
            self.config.base_ejection
        };
        let duration = self.ejection_duration(base, multiplier);
        health.multiplier.store(multiplier, Ordering::Relaxed);
        health.ejections.fetch_add(1, Ordering::Relaxed);
        health.consecutive.store(0, Ordering::Relaxed);
        health.until.store(
            now.saturating_add(duration.as_nanos() as u64),
            Ordering::Relaxed,
        );
        health.state.store(EJECTED, Ordering::Release);
        self.recount(endpoints);
        tracing::warn!(
            target: TARGET,
            endpoint = %health.addr,
            reason = reason.as_str(),
            ejections = health.ejections.load(Ordering::Relaxed),
            duration_ms = duration.as_millis() as u64,
            healthy = self.healthy(),
            "endpoint ejected"
        );
        self.metrics.ejected(reason);
    }

    /// `base × multiplier`, capped, then shortened by up to `jitter` of
    /// itself so that endpoints ejected together are not probed together.
    /// `base` is the base ejection, or the unreachable one for an endpoint
    /// that refuses connections.
    fn ejection_duration(&self, base: Duration, multiplier: u32) -> Duration {
        let full = base
            .saturating_mul(multiplier)
            .min(self.config.max_ejection);
        if self.config.ejection_jitter == 0.0 {
            return full;
        }
        full.mul_f64(1.0 - self.config.ejection_jitter * self.rng.next_f64())
    }

    /// Takes the endpoint whose ejection ended first out of the ejected
    /// ones, to send it one probe request.
    pub(crate) fn start_probe(&self, now: u64) -> Option<Arc<Health>> {
        let endpoints = self.lock();
        let due = endpoints
            .iter()
            .filter(|h| h.state() == EJECTED && !h.check_down.load(Ordering::Relaxed))
            .filter(|h| h.until.load(Ordering::Relaxed) <= now)
            .min_by_key(|h| h.until.load(Ordering::Relaxed))?
            .clone();
        due.state.store(PROBING, Ordering::Release);
        self.recount(&endpoints);
        tracing::debug!(target: TARGET, endpoint = %due.addr, "probing ejected endpoint");
        Some(due)
    }

    /// The probe sent to `health` came back.
    fn probe_result(&self, health: &Health, verdict: Verdict, now: u64) {
        let endpoints = self.lock();
        if health.state() != PROBING {
            return;
        }
        match verdict {
            Verdict::Success => {
                self.readmit(&endpoints, health, now);
                tracing::info!(
                    target: TARGET,
                    endpoint = %health.addr,
                    slow_start_ms = self.config.slow_start.as_millis() as u64,
                    "endpoint re-admitted after a successful probe"
                );
                self.metrics.readmissions.add(1);
            }
            Verdict::Failure | Verdict::GatewayFailure | Verdict::Unreachable => {
                // Still refusing: the short ejection again, a step longer;
                // any other failure, the long one.
                health
                    .unreachable
                    .store(verdict == Verdict::Unreachable, Ordering::Relaxed);
                let multiplier = health.multiplier.load(Ordering::Relaxed).saturating_add(1);
                self.eject_for(&endpoints, health, now, multiplier, Reason::ProbeFailed);
            }
            Verdict::Ignore => {
                // Nothing learned: the next request probes again.
                health.until.store(now, Ordering::Relaxed);
                health.state.store(EJECTED, Ordering::Release);
                self.recount(&endpoints);
            }
        }
    }

    /// The probe sent to `health` was dropped before it came back.
    pub(crate) fn abandon_probe(&self, health: &Health, now: u64) {
        self.probe_result(health, Verdict::Ignore, now);
    }

    fn readmit(&self, endpoints: &[Arc<Health>], health: &Health, now: u64) {
        health.consecutive.store(0, Ordering::Relaxed);
        health.since.store(now, Ordering::Relaxed);
        let state = if self.config.slow_start.is_zero() {
            HEALTHY
        } else {
            SLOW_START
        };
        health.state.store(state, Ordering::Release);
        self.recount(endpoints);
    }

    /// An active health check of `health` passed or failed.
    pub(crate) fn check_result(&self, health: &Health, passed: bool, now: Instant) {
        let Some(checks) = self.config.checks else {
            return;
        };
        let now = self.nanos(now);
        let endpoints = self.lock();
        if passed {
            health.fails.store(0, Ordering::Relaxed);
            let passes = health.passes.fetch_add(1, Ordering::Relaxed) + 1;
            if passes < checks.rise {
                return;
            }
            let was_down = health.check_down.swap(false, Ordering::Relaxed);
            // Passing checks also end a passive ejection, as Envoy's
            // `successful_active_health_check_uneject_host` does.
            let was_ejected = health.is_passively_ejected();
            if was_down || was_ejected {
                self.readmit(&endpoints, health, now);
                tracing::info!(
                    target: TARGET,
                    endpoint = %health.addr,
                    passes,
                    "endpoint re-admitted: health checks pass"
                );
                self.metrics.readmissions.add(1);
            }
        } else {
            health.passes.store(0, Ordering::Relaxed);
            let fails = health.fails.fetch_add(1, Ordering::Relaxed) + 1;
            if fails >= checks.fall && !health.check_down.swap(true, Ordering::Relaxed) {
                self.recount(&endpoints);
                tracing::warn!(
                    target: TARGET,
                    endpoint = %health.addr,
                    reason = "health_check",
                    fails,
                    healthy = self.healthy(),
                    "endpoint ejected: health checks fail"
                );
                self.metrics.ejections[HEALTH_CHECK_INDEX].add(1);
            }
        }
    }

    /// Compares the endpoints' success rates over the interval that just
    /// ended and ejects the outliers (Envoy's success-rate outlier
    /// detection).
    fn evaluate(&self, now: u64) {
        let Ok(_evaluating) = self.evaluating.try_lock() else {
            return;
        };
        let due = self.next_evaluation.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let interval = self.config.interval.as_nanos() as u64;
        self.next_evaluation
            .store(now.saturating_add(interval), Ordering::Relaxed);
        // Counts older than one interval (no traffic came to close it in
        // time) are dropped rather than compared.
        let stale = now >= due.saturating_add(interval);
        let endpoints = self.lock().clone();
        let mut rates = Vec::new();
        for health in &endpoints {
            let (requests, successes) = Outcomes::read(health.outcomes.swap(0, Ordering::Relaxed));
            health.last_requests.store(requests, Ordering::Relaxed);
            health.last_successes.store(successes, Ordering::Relaxed);
            if !stale && health.is_healthy() && requests >= self.config.success_rate_min_requests {
                rates.push((health, f64::from(successes) / f64::from(requests)));
            }
        }
        if rates.len() < self.config.success_rate_min_endpoints.max(1) {
            return;
        }
        let n = rates.len() as f64;
        let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
        let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
        let threshold = mean - self.config.success_rate_stdev_factor * variance.sqrt();
        for (health, rate) in rates {
            if rate < threshold {
                tracing::debug!(
                    target: TARGET,
                    endpoint = %health.addr,
                    success_rate = rate,
                    mean,
                    threshold,
                    "success-rate outlier"
                );
                self.eject(health, now, Reason::SuccessRate);
            }
        }
    }

    /// Every endpoint's state now.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<EndpointSnapshot> {
        let now = self.nanos(now);
        let endpoints = self.lock().clone();
        endpoints
            .iter()
            .map(|h| {
                let check_down = h.check_down.load(Ordering::Relaxed);
                let state = match h.state() {
                    _ if check_down => EndpointState::Ejected,
                    EJECTED => EndpointState::Ejected,
                    PROBING => EndpointState::Probing,
                    SLOW_START if h.weight(now, &self.config) < 1.0 => EndpointState::SlowStart,
                    _ => EndpointState::Healthy,
                };
                let (requests, successes) = match h.last_requests.load(Ordering::Relaxed) {
                    0 => Outcomes::read(h.outcomes.load(Ordering::Relaxed)),
                    last => (last, h.last_successes.load(Ordering::Relaxed)),
                };
                let until = h.until.load(Ordering::Relaxed);
                EndpointSnapshot {
                    addr: h.addr,
                    state,
                    in_flight: h.in_flight.load(Ordering::Relaxed),
                    latency: Duration::from_secs_f64(
                        h.ewma.estimate_us(millis(now), self.config.decay) / 1e6,
                    ),
                    success_rate: (requests > 0)
                        .then(|| f64::from(successes) / f64::from(requests)),
                    ejections: h.ejections.load(Ordering::Relaxed),
                    ejected_for: (h.state() == EJECTED && until > now)
                        .then(|| Duration::from_nanos(until - now)),
                    checks_failing: check_down,
                }
            })
            .collect()
    }
}
