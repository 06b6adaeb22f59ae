//! novaha monitor drivers: nova, consul health checks, tcp.
//!
//! Not built yet: see its issue.
