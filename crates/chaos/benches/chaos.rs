//! Throughput of the fault simulator: schedules per second on one core.
//! `cargo bench -p novaha-chaos --bench chaos` (BENCH_SEEDS, default 200).

use std::time::Instant;

fn main() {
    let seeds: u64 = std::env::var("BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let started = Instant::now();
    let mut violations = 0;
    for seed in 0..seeds {
        if !novaha_chaos::sim::run(&novaha_chaos::schedule::Schedule::generate(seed))
            .violations
            .is_empty()
        {
            violations += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "chaos: {seeds} schedules in {secs:.2} s = {:.1} schedules/s ({violations} violating)",
        seeds as f64 / secs
    );
}
