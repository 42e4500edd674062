//! Time as an input. The pure core takes `now` as an argument; the components that run
//! (controller, provisioning server, simulator) read it from a [`Clock`], so tests and the demo
//! can run a multi-night rollout in a minute.
//!
//! A compressed clock exists only in binaries built with the `simulated-time` feature, which
//! release builds do not enable: production cannot switch it on by a flag or an environment
//! variable by mistake.

use chrono::{DateTime, Utc};

/// Where the running components read the current time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    System,
    /// Simulated time: `origin` at process start of the simulation, advancing `factor` times
    /// faster than real time.
    #[cfg(feature = "simulated-time")]
    Scaled {
        origin: DateTime<Utc>,
        real_origin: DateTime<Utc>,
        factor: u32,
    },
}

impl Clock {
    /// The current time on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        match *self {
            Clock::System => Utc::now(),
            #[cfg(feature = "simulated-time")]
            Clock::Scaled {
                origin,
                real_origin,
                factor,
            } => {
                let real = Utc::now() - real_origin;
                origin + real * factor as i32
            }
        }
    }

    /// A compressed clock starting at `origin` now, `factor` times faster than real time.
    #[cfg(feature = "simulated-time")]
    pub fn scaled(origin: DateTime<Utc>, real_origin: DateTime<Utc>, factor: u32) -> Self {
        Clock::Scaled {
            origin,
            real_origin,
            factor: factor.max(1),
        }
    }

    /// Converts a duration on this clock into real time (for sleeps and timeouts).
    pub fn to_real(&self, simulated: std::time::Duration) -> std::time::Duration {
        match *self {
            Clock::System => simulated,
            #[cfg(feature = "simulated-time")]
            Clock::Scaled { factor, .. } => simulated / factor,
        }
    }
}
