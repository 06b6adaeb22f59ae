//! `[evacuate]`: owned by the evacuate stage. The section is
//! [`novaha_evacuate::EvacuateSettings`] embedded as is (`target` and
//! `concurrency` are fixed keys; the opt-out/opt-in metadata keys, the
//! landing timeout and the poll interval are the stage's); the daemon
//! reports every problem its `validate` finds.

use super::Problems;

pub use novaha_core::recovery::TargetPolicy as EvacuateTarget;
pub use novaha_evacuate::EvacuateSettings as EvacuateConfig;

/// Records every problem of the section.
pub fn validate(cfg: &EvacuateConfig, problems: &mut Problems) {
    for e in cfg.validate() {
        let novaha_evacuate::SettingsError::Invalid { key, problem } = e;
        problems.push(format!("evacuate.{key}"), problem);
    }
}
