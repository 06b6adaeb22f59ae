//! novaha evacuate driver: nova.
//!
//! Not built yet: see its issue.
