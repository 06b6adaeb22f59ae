//! `[fence]`: owned by the fence stage. The section is
//! [`novaha_fence::settings::FenceSettings`] embedded as is (the default
//! driver, `allow_noop`, the confirmation deadline and one sub-table per
//! driver, `[fence.ipmi]` etc., since a node may override the driver in
//! `config/bmc/driver`); its keys are documented in docs/fencing.md. The
//! daemon validates it by building the registry, exactly as `run` will.

use super::Problems;

pub use novaha_fence::settings::FenceSettings as FenceConfig;

/// Checks the section the way the daemon will use it: `noop` without
/// `allow_noop = true`, a zero poll interval, an unusable TLS setting...
pub fn validate(cfg: &FenceConfig, problems: &mut Problems) {
    if let Err(e) = novaha_fence::FenceRegistry::new(cfg) {
        problems.push("fence", e.to_string());
    }
    if cfg.credentials_dir.is_some() && cfg.credentials_prefix.is_some() {
        problems.push(
            "fence.credentials_prefix",
            "set credentials_dir or credentials_prefix, not both",
        );
    }
    if let Some(dir) = &cfg.credentials_dir
        && !dir.is_dir()
    {
        problems.push(
            "fence.credentials_dir",
            format!("{} is not a readable directory", dir.display()),
        );
    }
    if cfg.confirm_timeout.is_zero() {
        problems.push("fence.confirm_timeout", "must be above zero");
    }
}
