//! novaha-chaos: the deterministic fault simulator.
//!
//! It runs the daemon's real leader cycle and recovery runner
//! (`novaha::leader::LeaderCycle`, two controllers racing for the lock)
//! against in-process peers behind the same traits as the real clients
//! (Consul's store, Nova, the BMCs, the monitor), under tokio's paused
//! clock, with every fault drawn from one `u64` seed, and checks the safety
//! rules of docs/safety.md after every step and at the end. A run is
//! deterministic: the same seed gives the same run, so a violation replays
//! with `novaha-chaos --first-seed S --seeds 1`.
//!
//! It must never be linked into the production binary, and never talk to
//! a real peer.

pub mod fakes;
pub mod schedule;
pub mod sim;
pub mod world;

use schedule::Schedule;

/// What a campaign found for one seed.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The seed.
    pub seed: u64,
    /// The shrunk schedule that still violates.
    pub schedule: Schedule,
    /// Its violations.
    pub violations: Vec<String>,
}

/// Runs the schedule of `seed`; `None` when it keeps every invariant,
/// else the violations with the schedule shrunk (faults removed one at a
/// time while the run still violates).
pub fn check_seed(seed: u64) -> Option<Finding> {
    let schedule = Schedule::generate(seed);
    let outcome = sim::run(&schedule);
    if outcome.violations.is_empty() {
        return None;
    }
    let (schedule, violations) = shrink(schedule, outcome.violations);
    Some(Finding {
        seed,
        schedule,
        violations,
    })
}

/// Removes faults one at a time as long as the run still violates.
pub fn shrink(mut schedule: Schedule, mut violations: Vec<String>) -> (Schedule, Vec<String>) {
    let mut i = 0;
    while i < schedule.steps.len() {
        let smaller = schedule.without(i);
        let o = sim::run(&smaller);
        if o.violations.is_empty() {
            i += 1;
        } else {
            schedule = smaller;
            violations = o.violations;
        }
    }
    (schedule, violations)
}
