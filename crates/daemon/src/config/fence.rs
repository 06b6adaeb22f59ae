//! `[fence]`: owned by the fence stage. The section is
//! [`novaha_fence::settings::FenceSettings`] embedded as is (the default
//! driver, `allow_noop`, the confirmation deadline and one sub-table per
//! driver, `[fence.ipmi]` etc., since a node may override the driver in
//! `config/bmc/driver`); its keys are documented in docs/fencing.md. Its
//! [`Validate`](novaha_core::validate::Validate) builds the registry,
//! exactly as `run` will.

pub use novaha_fence::settings::FenceSettings as FenceConfig;
