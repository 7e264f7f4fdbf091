use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::{Chaos, Fault, Shared};
use crate::rng::Rng;
use crate::ConfigError;

/// Injects faults into the service it wraps. See the [module docs](super).
///
/// Every service this layer makes, and every clone of them, shares one
/// random number generator, so a seeded layer injects the same faults into
/// the same calls on every run (given the same order of calls).
#[derive(Debug, Clone)]
pub struct ChaosLayer {
    shared: Arc<Shared>,
}

impl ChaosLayer {
    /// A builder with no faults configured.
    pub fn builder() -> ChaosBuilder {
        ChaosBuilder::default()
    }
}

impl<S> Layer<S> for ChaosLayer {
    type Service = Chaos<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::new(inner, self.shared.clone())
    }
}

/// Builds a [`ChaosLayer`], checking its configuration.
#[derive(Debug, Clone, Default)]
#[must_use = "call `build()` to get the layer"]
pub struct ChaosBuilder {
    seed: Option<u64>,
    faults: Vec<(Fault, f64)>,
    latency: Option<(f64, Duration, Duration)>,
}

impl ChaosBuilder {
    /// Seeds the random number generator, for runs that repeat exactly.
    /// Unseeded, every process draws differently.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Injects `fault` into a fraction `rate` (0 to 1) of calls.
    ///
    /// Faults exclude each other: one random draw per call picks at most
    /// one, so each happens at exactly its own rate and the rates must add up
    /// to at most 1.
    pub fn fault(mut self, fault: Fault, rate: f64) -> Self {
        self.faults.push((fault, rate));
        self
    }

    /// Delays a fraction `rate` of calls by `delay`, before they are passed
    /// on or failed. Latency is drawn independently of the faults.
    pub fn latency(self, rate: f64, delay: Duration) -> Self {
        self.latency_between(rate, delay, delay)
    }

    /// Delays a fraction `rate` of calls by a uniformly drawn time between
    /// `min` and `max`.
    pub fn latency_between(mut self, rate: f64, min: Duration, max: Duration) -> Self {
        self.latency = Some((rate, min, max));
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<ChaosLayer, ConfigError> {
        let mut cumulative = 0.0;
        let mut faults = Vec::with_capacity(self.faults.len());
        for (fault, rate) in self.faults {
            check_rate(rate)?;
            if let Fault::Status(status) = fault {
                if !(status.is_client_error() || status.is_server_error()) {
                    return Err(ConfigError::new(
                        "chaos.status",
                        "must be an error status (4xx or 5xx)",
                    ));
                }
            }
            cumulative += rate;
            faults.push((fault, cumulative));
        }
        // A little slack for rates like 0.1 + 0.2 + 0.7 that add up to 1 in
        // decimal but not quite in binary.
        if cumulative > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "chaos.rate",
                "fault rates must add up to at most 1",
            ));
        }
        if let Some((rate, min, max)) = self.latency {
            check_rate(rate)?;
            if min > max {
                return Err(ConfigError::new(
                    "chaos.latency",
                    "the minimum must not exceed the maximum",
                ));
            }
        }
        let rng = self.seed.map_or_else(Rng::from_entropy, Rng::from_seed);
        Ok(ChaosLayer {
            shared: Arc::new(Shared {
                rng,
                faults: faults.into_boxed_slice(),
                latency: self.latency,
            }),
        })
    }
}

fn check_rate(rate: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(ConfigError::new("chaos.rate", "must be between 0 and 1"))
    }
}
