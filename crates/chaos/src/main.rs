//! `novaha-chaos --seeds N [--first-seed S]`: runs N fault schedules over
//! the daemon's real leader cycle and recovery runner and prints, as its
//! last line, `N schedules, V violations` (exit 1 when V > 0). Each
//! violation prints its seed and the shrunk schedule; replay one with
//! `--first-seed S --seeds 1`.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

/// The deterministic fault simulator.
#[derive(Parser, Debug)]
#[command(name = "novaha-chaos", version, about)]
struct Args {
    /// How many schedules to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed (schedules run seeds S, S+1, ...).
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Print each schedule as it runs.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let mut violations = 0u64;
    for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
        if args.verbose {
            print!("{}", novaha_chaos::schedule::Schedule::generate(seed));
        }
        if let Some(f) = novaha_chaos::check_seed(seed) {
            violations += 1;
            println!("VIOLATION seed {seed} (replay: novaha-chaos --first-seed {seed} --seeds 1)");
            for v in &f.violations {
                println!("  {v}");
            }
            println!("shrunk schedule:");
            print!("{}", f.schedule);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{:.1} s, {:.1} schedules/s",
        secs,
        args.seeds as f64 / secs.max(1e-9)
    );
    println!("{} schedules, {violations} violations", args.seeds);
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
