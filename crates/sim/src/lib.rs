//! novaha-sim: a Keystone v3 + Nova simulator.
//!
//! Not built yet: see its issue.
