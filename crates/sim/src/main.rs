//! `novaha-sim`: runs the Keystone + Nova simulator alone
//! (docs/simulator.md, "Running it") and prints the Keystone URL and the credentials it accepts.

use std::time::Duration;

use clap::Parser;
use novaha_sim::{Microversion, Sim, SimConfig};

/// Keystone v3 + Nova simulator for novaha's tests and demo.
#[derive(Debug, Parser)]
#[command(name = "novaha-sim", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Compute hosts compute-1..N.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Servers per compute host.
    #[arg(long, default_value_t = 4)]
    instances_per_host: usize,
    /// Spare HA hosts ha-1..K (disabled in Nova).
    #[arg(long, default_value_t = 1)]
    ha_nodes: usize,
    /// How long a killed host's service takes to read `down`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    service_down_time: Duration,
    /// How often a running nova-compute heartbeats (its `updated_at`
    /// advances in these steps); 0s: always now.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    report_interval: Duration,
    /// How long an evacuation takes to land.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    evacuate_delay: Duration,
    /// Lifetime of issued tokens.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// Highest Nova microversion (e.g. 2.52 for an old cloud).
    #[arg(long, default_value = "2.96", value_parser = parse_mv)]
    max_version: Microversion,
    /// Seed of the deterministic RNG.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn parse_mv(s: &str) -> Result<Microversion, String> {
    Microversion::parse(s).ok_or_else(|| format!("microversion {s:?} must look like 2.53"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let cfg = SimConfig {
        hosts: a.hosts,
        instances_per_host: a.instances_per_host,
        ha_nodes: a.ha_nodes,
        service_down_time: a.service_down_time,
        report_interval: a.report_interval,
        evacuate_delay: a.evacuate_delay,
        token_ttl: a.token_ttl,
        max_version: a.max_version,
        seed: a.seed,
        ..SimConfig::default()
    };
    let sim = match Sim::start(&a.listen, cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("novaha-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let c = sim.credentials();
    println!("OS_AUTH_URL={}", c.auth_url);
    println!("OS_USERNAME={}", c.username);
    println!("OS_PASSWORD={}", c.password);
    println!("OS_PROJECT_NAME={}", c.project_name);
    println!("OS_USER_DOMAIN_NAME={}", c.user_domain_name);
    println!("OS_PROJECT_DOMAIN_NAME={}", c.project_domain_name);
    println!("OS_REGION_NAME={}", c.region_name);
    println!("NOVAHA_SIM_URL={}", sim.base_url());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("novaha-sim: install SIGTERM handler: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
