//! Benchmark: the capacity computations of one leader cycle over 1,000
//! compute hosts (plus 10 spares, 5 zones): `failures_tolerated`, and the
//! placement of 200 pending instances on a spare (`place`). Run with
//! `cargo bench -p novaha-core --bench capacity`; the figures are in
//! docs/benchmarks.md. The budget is 10 ms of CPU per cycle.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use novaha_core::capacity::{
    Candidate, HostLoad, Resources, Room, Targets, by_priority, failures_tolerated, place,
};

/// A deterministic pseudo-random sequence (splitmix64).
fn rng(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn res(seed: &mut u64, vcpus: u64, mem: u64, disk: u64) -> Resources {
    Resources {
        vcpus: rng(seed) % vcpus,
        memory_mb: rng(seed) % mem,
        disk_gb: rng(seed) % disk,
    }
}

fn cloud(hosts: usize, spares: usize) -> Vec<HostLoad> {
    let mut seed = 42;
    let max_unit = Resources {
        vcpus: 1024,
        memory_mb: 1 << 20,
        disk_gb: 4000,
    };
    let mut out = Vec::new();
    for i in 0..hosts + spares {
        let spare = i >= hosts;
        let free = res(&mut seed, 512, 262_144, 2000);
        let load = if spare {
            Resources::ZERO
        } else {
            res(&mut seed, 512, 262_144, 2000)
        };
        out.push(HostLoad {
            name: format!("h{i}"),
            zone: format!("az{}", i % 5),
            spare,
            available: rng(&mut seed) % 10 != 0,
            room: Room { free, max_unit },
            load,
        });
    }
    out
}

fn main() {
    let loads = cloud(1000, 10);
    let targets = Targets {
        spares: true,
        scheduler: true,
    };
    let runs = 200u32;
    // Warm up, then measure the process's CPU time as well as wall time.
    black_box(failures_tolerated(&loads, targets));
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    for _ in 0..runs {
        black_box(failures_tolerated(black_box(&loads), targets));
    }
    let wall = t.elapsed().as_secs_f64() / f64::from(runs);
    let cpu = (cpu_seconds() - cpu0) / f64::from(runs);
    println!(
        "failures_tolerated, 1000 hosts + 10 spares, 5 zones: {:.3} ms wall, {:.3} ms cpu per cycle",
        wall * 1e3,
        cpu * 1e3
    );
    assert!(cpu < 0.010, "over the 10 ms budget: {cpu}");

    let mut seed = 7;
    let mut candidates: Vec<Candidate> = (0..200)
        .map(|i| Candidate {
            id: format!("i{i}"),
            resources: Some(res(&mut seed, 16, 32_768, 200)),
            priority: (rng(&mut seed) % 5) as i64,
        })
        .collect();
    let room = Room {
        free: Resources {
            vcpus: 512,
            memory_mb: 1 << 20,
            disk_gb: 4000,
        },
        max_unit: Resources {
            vcpus: 64,
            memory_mb: 1 << 20,
            disk_gb: 4000,
        },
    };
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    for _ in 0..runs {
        let mut c = candidates.clone();
        by_priority(&mut c);
        black_box(place(Some(room), "ha-1", true, black_box(&c)));
    }
    let wall = t.elapsed().as_secs_f64() / f64::from(runs);
    let cpu = (cpu_seconds() - cpu0) / f64::from(runs);
    println!(
        "order + place 200 pending instances on a spare: {:.3} ms wall, {:.3} ms cpu",
        wall * 1e3,
        cpu * 1e3
    );
    candidates.clear();
}

/// User + system CPU time of this process, from /proc/self/stat (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // The kernel's USER_HZ is 100 on every Linux novaha runs on.
    ticks / 100.0
}
