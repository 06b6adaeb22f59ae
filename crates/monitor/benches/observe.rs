//! Monitor benchmark (not a test): the wall time of one `Monitor::observe`
//! cycle over many nodes, with the tcp signal probing the nodes Nova reads
//! down (refused connects on 127.0.0.2), against novaha-sim in-process.
//!
//! Run: `cargo bench -p novaha-monitor --bench observe`
//! (env `BENCH_HOSTS` (default 1000), `BENCH_DOWN` (100), `BENCH_CYCLES`
//! (20) change the shape).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use novaha_core::Secret;
use novaha_monitor::{Monitor, MonitorSettings, Signal};
use novaha_openstack::config::AuthSection;
use novaha_openstack::{Env, NovaClient, OpenStackConfig, Session};
use novaha_sim::{Sim, SimConfig};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let hosts = env_usize("BENCH_HOSTS", 1000);
    let down = env_usize("BENCH_DOWN", 100).min(hosts);
    let cycles = env_usize("BENCH_CYCLES", 20).max(1);
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            hosts,
            instances_per_host: 0,
            service_down_time: Duration::from_millis(100),
            ..SimConfig::default()
        },
    )
    .await
    .expect("sim starts");
    let c = sim.credentials();
    let cfg = OpenStackConfig {
        auth: Some(AuthSection {
            auth_url: Some(c.auth_url),
            username: Some(c.username),
            password: Some(Secret::new(c.password)),
            project_name: Some(c.project_name),
            user_domain_name: Some(c.user_domain_name),
            project_domain_name: Some(c.project_domain_name),
            ..AuthSection::default()
        }),
        region_name: Some(c.region_name),
        ..OpenStackConfig::default()
    };
    let cloud = cfg.resolve(&Env::default()).expect("config");
    let nova = NovaClient::connect(Arc::new(Session::new(cloud).expect("session")))
        .await
        .expect("nova connects");
    let mut settings = MonitorSettings {
        signals: vec![Signal::Nova, Signal::Tcp],
        ..MonitorSettings::default()
    };
    settings.tcp.port = 9;
    settings.tcp.timeout = Duration::from_millis(500);
    for i in 1..=hosts {
        settings
            .tcp
            .addresses
            .insert(format!("compute-{i}"), "127.0.0.2".into());
    }
    let monitor = Monitor::new(settings, nova, None).expect("monitor");
    for i in 1..=down {
        sim.kill(&format!("compute-{i}")).expect("kill");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut times = Vec::with_capacity(cycles);
    let mut failing = 0;
    for _ in 0..cycles {
        let t0 = Instant::now();
        let o = monitor.observe().await;
        times.push(t0.elapsed());
        let m = o.nova.expect("a judgement");
        failing = m.values().filter(|s| s.all_failed()).count();
    }
    times.sort();
    assert_eq!(failing, down, "every killed host fails its cycle");
    println!(
        "observe: {hosts} hosts, {down} down (tcp probed), {cycles} cycles: \
         min {:?}, median {:?}, max {:?}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
