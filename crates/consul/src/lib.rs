//! Consul client for novaha: leader election, the state store, guarded transactions.
//!
//! Not built yet: see its issue.
