//! `[evacuate]`: owned by the evacuate stage. The section is
//! [`novaha_evacuate::EvacuateSettings`] embedded as is (`target` and
//! `concurrency` are fixed keys; the opt-out/opt-in metadata keys, the
//! landing timeout and the poll interval are the stage's); the daemon
//! reports every problem its [`Validate`](novaha_core::validate::Validate)
//! finds, under `evacuate`.

pub use novaha_core::recovery::TargetPolicy as EvacuateTarget;
pub use novaha_evacuate::EvacuateSettings as EvacuateConfig;
