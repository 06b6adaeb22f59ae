//! Benchmark: how fast the sim serves a 1,000-host x 20-server cloud
//! (os-services, servers by host, every page of servers/detail), the
//! workload the client benchmark puts on it. Run with
//! `cargo bench -p novaha-sim`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use novaha_sim::{Sim, SimConfig};
use serde_json::{Value, json};

fn report(what: &str, n: usize, total: Duration) {
    println!(
        "{what:<40} {n:>5} runs  mean {:>9.3} ms",
        total.as_secs_f64() * 1e3 / n as f64
    );
}

#[tokio::main]
async fn main() {
    let t = Instant::now();
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            hosts: 1000,
            instances_per_host: 20,
            ha_nodes: 10,
            ..SimConfig::default()
        },
    )
    .await
    .expect("start sim");
    println!(
        "seed 1000 hosts x 20 servers: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let http = reqwest::Client::new();
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": "admin"}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
    let r = http
        .post(format!("{}/auth/tokens", sim.keystone_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let token = r.headers()["x-subject-token"].to_str().unwrap().to_owned();
    let get = |url: String| {
        let http = http.clone();
        let token = token.clone();
        async move {
            http.get(url)
                .header("X-Auth-Token", token)
                .header("OpenStack-API-Version", "compute 2.53")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        let v = get(format!(
            "{}/os-services?binary=nova-compute",
            sim.nova_url()
        ))
        .await;
        assert_eq!(v["services"].as_array().unwrap().len(), 1010);
    }
    report("os-services (1010 computes)", n, t.elapsed());
    let t = Instant::now();
    for i in 0..n {
        let v = get(format!(
            "{}/servers/detail?all_tenants=1&host=compute-{}",
            sim.nova_url(),
            i + 1
        ))
        .await;
        assert_eq!(v["servers"].as_array().unwrap().len(), 20);
    }
    report("servers/detail by host (20 of 20,000)", n, t.elapsed());
    let n = 5;
    let t = Instant::now();
    for _ in 0..n {
        let mut url = format!("{}/servers/detail?all_tenants=1", sim.nova_url());
        let mut total = 0;
        loop {
            let v = get(url.clone()).await;
            total += v["servers"].as_array().unwrap().len();
            match v["servers_links"][0]["href"].as_str() {
                Some(next) => url = next.to_owned(),
                None => break,
            }
        }
        assert_eq!(total, 20_000);
    }
    report("servers/detail all pages (20,000)", n, t.elapsed());
    sim.shutdown().await;
}
