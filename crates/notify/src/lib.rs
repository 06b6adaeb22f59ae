//! novaha notify drivers: email, webhook, log.
//!
//! Not built yet: see its issue.
