//! The `noop` driver: for tests and dry runs only. It powers nothing off and
//! reports Off, so a recovery behind it evacuates a node that may still be
//! running: the registry builds it only with `allow_noop = true`, and every
//! use logs a WARN saying so.

use async_trait::async_trait;
use chrono::Utc;
use novaha_core::PowerState;
use novaha_core::drivers::fence::{FenceError, FenceTarget, Fenced, Fencer};

/// The test-only fencer. Only [`crate::FenceRegistry`] builds it, and only
/// when `allow_noop = true`.
#[derive(Debug)]
pub struct NoopFencer {
    _private: (),
}

impl NoopFencer {
    /// Built by the registry after checking `allow_noop`.
    pub(crate) fn new() -> Self {
        Self { _private: () }
    }
}

#[async_trait]
impl Fencer for NoopFencer {
    fn driver(&self) -> &'static str {
        "noop"
    }

    async fn fence(&self, target: &FenceTarget) -> Result<Fenced, FenceError> {
        tracing::warn!(
            node = %target.node,
            driver = "noop",
            "noop fencer: TEST ONLY, nothing was powered off; reporting off"
        );
        Fenced::from_observation(target.node.clone(), "noop", PowerState::Off, Utc::now())
            .ok_or_else(|| FenceError::NotConfirmed {
                node: target.node.clone(),
                last: PowerState::Unknown,
            })
    }

    async fn power_state(&self, target: &FenceTarget) -> Result<PowerState, FenceError> {
        tracing::warn!(
            node = %target.node,
            driver = "noop",
            "noop fencer: TEST ONLY, power was not read; reporting off"
        );
        Ok(PowerState::Off)
    }

    async fn unfence(&self, target: &FenceTarget) -> Result<(), FenceError> {
        tracing::warn!(
            node = %target.node,
            driver = "noop",
            "noop fencer: TEST ONLY, nothing was powered on"
        );
        Ok(())
    }
}
