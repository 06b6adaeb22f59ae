//! `novaha-demo`: a whole novaha failover on this machine (see the
//! library's documentation and docs/demo.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use novaha_demo::run::{self, DemoOptions};

/// The local demonstration, no config needed: a real Consul, the
/// simulator, two `novaha run` daemons, one compute host killed and
/// recovered, narrated.
#[derive(Debug, Parser)]
#[command(name = "novaha-demo", version)]
struct Args {
    /// Leave everything running at the end (until Ctrl-C) to explore the
    /// Consul UI and try `novaha status`, `novaha node reset`, ...
    #[arg(long)]
    keep: bool,
    /// The `novaha` binary the daemons run (default: `novaha` next to this
    /// executable).
    #[arg(long, env = "NOVAHA_BIN", value_name = "PATH")]
    novaha: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let novaha = match run::find_novaha(args.novaha) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("novaha-demo: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    run::main(DemoOptions {
        keep: args.keep,
        novaha,
    })
}
