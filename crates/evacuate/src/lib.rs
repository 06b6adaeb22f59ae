//! novaha-evacuate: the `nova` evacuate driver.
//!
//! It owns the Nova side of a recovery behind core's [`Evacuator`] trait:
//! listing a fenced node's instances (all tenants, every page), sending one
//! evacuate per instance (to a claimed HA node or via the scheduler),
//! reading back where each stands (server host/status/task state plus the
//! evacuation migration record), forcing the failed node's service down,
//! enabling the HA node's service, starting instances that landed SHUTOFF
//! (microversion >= 2.95) and the Nova half of the administrator's reset.
//! [`EvacuateSettings`] is the `[evacuate]` section.
//!
//! It must never send a call twice on its own (no retries of mutating
//! calls: the runner and the recovery record decide), never evacuate
//! without the [`Fenced`] evidence the trait demands, never decide anything
//! (opt-out, batching, timeouts are the recovery decision's job) and never
//! panic on what Nova answers. Every method is safe to call concurrently:
//! the runner bounds concurrency with the decision's batch size.
//!
//! [`Evacuator`]: novaha_core::drivers::Evacuator
//! [`Fenced`]: novaha_core::drivers::Fenced

pub mod capacity;
mod nova;
mod settings;

pub use nova::{NovaEvacuator, progress_of};
pub use settings::EvacuateSettings;
