//! Keystone v3 and Nova client for novaha.
//!
//! Not built yet: see its issue.
