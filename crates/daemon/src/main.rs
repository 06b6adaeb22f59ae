//! novaha: the daemon binary. Not built yet: see the foundation issue.

fn main() {}
