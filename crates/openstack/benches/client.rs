//! Client benchmark (not a test): list 20,000 servers on 1,000 hosts
//! through novaha-openstack from novaha-sim, and report wall time and the
//! client's peak memory.
//!
//! Run: `cargo bench -p novaha-openstack --bench client`
//! (env `BENCH_HOSTS`, `BENCH_PER_HOST`, `BENCH_CONCURRENCY` change the shape).
//!
//! The parent process runs the sim; the client runs in a child process (this
//! same binary, `NOVAHA_BENCH_ROLE=client`) so that its peak RSS (VmHWM) is
//! the client's alone. Credentials reach the child through `OS_*`
//! environment variables, never its command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use novaha_openstack::{Env, NovaClient, OpenStackConfig, Session};
use novaha_sim::{Sim, SimConfig};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set size of this process in KiB (`VmHWM`).
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn client(concurrency: usize) {
    let baseline = vm_hwm_kib();
    let t0 = Instant::now();
    let cloud = OpenStackConfig::default()
        .resolve(&Env::from_process())
        .expect("bench cloud from OS_*");
    let session = Arc::new(Session::new(cloud).expect("session"));
    let nova = NovaClient::connect(session).await.expect("nova connects");
    let services = nova.compute_services().await.expect("services");
    let hosts: Vec<String> = services.into_iter().map(|s| s.host).collect();
    let t_services = t0.elapsed();

    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for host in hosts.clone() {
        let nova = nova.clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            nova.servers_on_host(&host).await.expect("list servers")
        });
    }
    let mut total = 0usize;
    let mut ids = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let servers = r.expect("task");
        total += servers.len();
        ids.extend(servers.into_iter().map(|s| s.id));
    }
    let wall = t0.elapsed();
    println!(
        "{{\"hosts\": {}, \"servers\": {}, \"unique\": {}, \"concurrency\": {}, \
         \"services_ms\": {}, \"wall_ms\": {}, \"per_host_ms\": {:.2}, \
         \"baseline_hwm_kib\": {}, \"peak_hwm_kib\": {}}}",
        hosts.len(),
        total,
        ids.len(),
        concurrency,
        t_services.as_millis(),
        wall.as_millis(),
        wall.as_secs_f64() * 1000.0 / hosts.len().max(1) as f64,
        baseline,
        vm_hwm_kib()
    );
}

async fn parent() {
    let hosts = env_usize("BENCH_HOSTS", 1000);
    let per_host = env_usize("BENCH_PER_HOST", 20);
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            hosts,
            instances_per_host: per_host,
            ha_nodes: 0,
            ..SimConfig::default()
        },
    )
    .await
    .expect("sim starts");
    let c = sim.credentials();
    eprintln!(
        "sim: {hosts} hosts x {per_host} servers at {} (sim process peak so far {} KiB)",
        sim.base_url(),
        vm_hwm_kib()
    );
    let exe = std::env::current_exe().expect("own path");
    let levels: Vec<usize> = match std::env::var("BENCH_CONCURRENCY") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 8],
    };
    for concurrency in levels {
        for run in 1..=3 {
            let out = tokio::process::Command::new(&exe)
                .env("NOVAHA_BENCH_ROLE", "client")
                .env("NOVAHA_BENCH_CONCURRENCY", concurrency.to_string())
                .env("OS_AUTH_URL", &c.auth_url)
                .env("OS_USERNAME", &c.username)
                .env("OS_PASSWORD", &c.password)
                .env("OS_PROJECT_NAME", &c.project_name)
                .env("OS_USER_DOMAIN_NAME", &c.user_domain_name)
                .env("OS_PROJECT_DOMAIN_NAME", &c.project_domain_name)
                .env("OS_REGION_NAME", &c.region_name)
                .env_remove("OS_CLOUD")
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(600), out)
                .await
                .expect("client finished in time")
                .expect("client ran");
            assert!(
                out.status.success(),
                "client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            print!("run {run}: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
    sim.shutdown().await;
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if std::env::var("NOVAHA_BENCH_ROLE").as_deref() == Ok("client") {
        rt.block_on(client(env_usize("NOVAHA_BENCH_CONCURRENCY", 1)));
    } else {
        rt.block_on(parent());
    }
}
