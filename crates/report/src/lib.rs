//! novaha-report: what the operator reads, rendered from state that was
//! already read and parsed: the `status` document and table, the incident
//! list and timeline, the dry-run plan, and the leader's cycle record with
//! `run --once`'s summary.
//!
//! Pure: no I/O, no clock (the time is an argument). The daemon reads the
//! tree, calls these, and prints. Keeping the views here keeps the daemon
//! to wiring, and lets every view be tested from a literal tree.

pub mod cycle;
pub mod incidents;
pub mod plan;
pub mod status;
mod table;

pub use cycle::{CycleReport, Outcome, once_summary};
pub use plan::{Plan, PlannedInstance};

/// A `--json` document as the commands print it: indented, every object's
/// keys in alphabetical order (serde_json's map is sorted), whatever the
/// order of its struct's fields, so a document flattening another prints
/// the way it always did.
pub fn json_text<T: serde::Serialize>(doc: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&serde_json::to_value(doc)?)
}
