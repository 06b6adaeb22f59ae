//! The `novaha-sim` binary (docs/simulator.md, "Running it"): prints the Keystone URL
//! and credentials, seeds compute and spare hosts, serves the control API,
//! and exits 0 on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn binary_prints_credentials_and_serves_the_control_api() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_novaha-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--hosts",
            "2",
            "--instances-per-host",
            "3",
        ])
        .args(["--ha-nodes", "2", "--service-down-time", "1s"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start novaha-sim");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = HashMap::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((k, v)) = line.split_once('=') {
                printed.insert(k.to_owned(), v.to_owned());
            }
            if line.starts_with("NOVAHA_SIM_URL=") {
                break;
            }
        }
    })
    .await
    .expect("novaha-sim printed its URL");
    let base = printed["NOVAHA_SIM_URL"].clone();
    assert_eq!(printed["OS_AUTH_URL"], format!("{base}/identity/v3"));
    assert_eq!(printed["OS_USERNAME"], "admin");
    assert_eq!(printed["OS_PASSWORD"], "admin");
    assert_eq!(printed["OS_PROJECT_NAME"], "admin");
    assert_eq!(printed["OS_USER_DOMAIN_NAME"], "Default");

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/sim/hosts/compute-1/kill"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let hosts: Value = http
        .get(format!("{base}/sim/hosts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hosts = hosts["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, ["compute-1", "compute-2", "ha-1", "ha-2"]);
    assert!(
        hosts
            .iter()
            .filter(|h| h["ha"] == true)
            .all(|h| h["status"] == "disabled")
    );
    assert_eq!(hosts[0]["killed"], true);
    assert_eq!(hosts[0]["servers"], 3);
    let r = http
        .post(format!("{base}/sim/clock/advance"))
        .json(&serde_json::json!({"seconds": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let hosts: Value = http
        .get(format!("{base}/sim/hosts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hosts["hosts"][0]["state"], "down");
    let calls: Value = http
        .get(format!("{base}/sim/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        calls,
        serde_json::json!([]),
        "control calls are not recorded"
    );

    let pid = child.id().unwrap();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit {status}");
}
