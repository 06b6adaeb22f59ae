//! novaha against a real OpenStack (issue 8): keystone, nova (fake virt
//! driver, three computes and the spare `ha-1`), one simulated BMC per
//! compute (ipmi_sim + real ipmitool; a power-off also kills that node's
//! nova-compute), a real Consul agent, a real SMTP server, and two real
//! `novaha run` processes. Each test kills compute-1's nova-compute and
//! checks from the outside what an operator would: Nova's servers, services,
//! migration records and instance actions, the K/V tree through
//! `novaha status --json`, the BMC's call log and the captured mails.
//!
//! The stack is brought up once per test run and shared
//! ([`OpenStack::shared`]); every test takes the lease first (exclusive use,
//! stack reset to its baseline), so these tests serialise across processes.
//! Each test has its own Consul agent, K/V prefix, SMTP server and temp
//! dir, and kills the novaha processes it started before it gives the lease
//! back (also on panic; also if the test process dies: the daemons run with
//! a parent-death signal).
//!
//! How to run this suite alone, and what it costs: docs/testing.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "real_openstack/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Daemon, Harness, RECOVERY, Settings};

/// How long a powered-on compute may take to report to Nova again (a
/// nova-compute start on a loaded 2-core machine).
const NOVA_BACK: Duration = Duration::from_secs(120);
use novaha_testkit::process::tool;

/// Runs a full recovery of compute-1 with the given microversion ceiling
/// and checks it: ACTIVE ones, a SHUTOFF one, an opted-out one.
fn recover_compute(prefix: &str, max_microversion: Option<&'static str>, starts: bool) {
    let mut h = Harness::start(
        prefix,
        Settings {
            max_microversion,
            concurrency: 8,
        },
    );
    let servers = h.boot_all(&[
        ("e2e-active-1", "ACTIVE", false),
        ("e2e-active-2", "ACTIVE", false),
        ("e2e-shutoff", "SHUTOFF", false),
        ("e2e-opt-out", "ACTIVE", true),
    ]);
    h.spawn("a");
    h.spawn("b");
    h.wait_watching();

    let failed = h.failed().to_owned();
    h.stack.kill_compute(&failed);
    h.wait_done();
    h.assert_recovered(&servers, starts);
    h.assert_mails(&servers);
    let want = max_microversion.unwrap_or("2.95");
    let logs: String = h.daemons.iter().map(Daemon::log).collect();
    assert!(
        logs.contains(&format!("version={want}")),
        "novaha spoke compute {want}:\n{}",
        h.logs()
    );
}

/// Issue 8, test 1: detection through Nova, IPMI fence, force-down, the HA
/// compute enabled, every instance evacuated there in its prior state
/// (2.94: no start needed), the opted-out one left, one evacuation record
/// each, mails naming every instance.
#[test]
fn a_dead_compute_is_fenced_and_evacuated_to_the_ha_node() {
    recover_compute("e2e-os-recover", Some("2.94"), false);
}

/// Issue 8, test 2: at 2.95 Nova lands evacuated servers SHUTOFF; novaha
/// starts the ones that were ACTIVE and leaves the SHUTOFF one off.
#[test]
fn at_2_95_evacuated_servers_that_were_active_are_started() {
    recover_compute("e2e-os-mv295", Some("2.95"), true);
}

/// Issue 8, test 3: after a recovery, the node comes back (powered on
/// through its BMC), an operator resets the flags in the K/V tree; novaha
/// clears the force-down, re-enables the service, and Nova reports it up.
#[test]
fn the_operators_reset_puts_the_compute_back_in_service() {
    let mut h = Harness::start(
        "e2e-os-reset",
        Settings {
            max_microversion: Some("2.94"),
            concurrency: 8,
        },
    );
    let servers = h.boot_all(&[("e2e-reset-1", "ACTIVE", false)]);
    h.spawn("a");
    h.spawn("b");
    h.wait_watching();
    let failed = h.failed().to_owned();
    h.stack.kill_compute(&failed);
    h.wait_done();
    h.assert_recovered(&servers, false);

    // The node is repaired: power it on through its BMC, as an operator
    // would (the hook starts its nova-compute again).
    let bmc = h.stack.bmc(&failed);
    let out = Command::new(tool("NOVAHA_IPMITOOL", &[], "ipmitool"))
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(bmc.port.to_string())
        .args(["-U", &bmc.user, "-f"])
        .arg(&bmc.password_file)
        .args(["chassis", "power", "on"])
        .output()
        .expect("run ipmitool");
    assert!(
        out.status.success(),
        "power on {failed}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let powered_on = chrono::Utc::now().naive_utc();
    assert!(h.stack.compute_running(&failed));
    // "Comes back": its nova-compute reports to Nova again (a heartbeat
    // newer than the power-on). Nova still reads it down: it is forced down,
    // and novaha does nothing until the flags are reset.
    let nova = h.nova.clone();
    let back = nova.wait_until("compute-1 reports again", NOVA_BACK, || {
        let svc = nova.service(&failed);
        svc["updated_at"]
            .as_str()
            .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").ok())
            .is_some_and(|t| t > powered_on)
    });
    assert!(
        back,
        "{failed} never reported again: {}",
        nova.service(&failed)
    );
    let svc = h.nova.service(&failed);
    assert_eq!(svc["forced_down"], true, "{svc}");
    assert_eq!(svc["state"], "down", "{svc}");

    // The operator's reset, straight in the K/V tree (Consul UI).
    for flag in ["failed", "recovered"] {
        h.agent.kv_put(
            &format!("{}/compute_nodes/{failed}/status/{flag}", h.prefix),
            b"False",
        );
    }
    let ok = nova.wait_until("service restored", RECOVERY, || {
        let s = nova.service(&failed);
        s["forced_down"] == false && s["status"] == "enabled" && s["state"] == "up"
    });
    assert!(
        ok,
        "{failed} not restored: {}\n{}",
        nova.service(&failed),
        h.logs()
    );
    let st = h.wait_status("number_fails cleared", Duration::from_secs(30), |s| {
        let n = &s["compute_nodes"][&failed];
        n["failed"] == false && n["recovered"] == false && n["number_fails"] == 0
    });
    assert!(st["compute_nodes"][&failed]["phase"].is_null(), "{st:#}");
    // It stays in service: a healthy node is never fenced again.
    let s = h.nova.service(&failed);
    assert_eq!(s["state"], "up", "{s}");
    let calls = h.bmc_calls(&failed);
    assert_eq!(calls.matches("set power 0").count(), 1, "{calls}");
}

/// Issue 8, test 4: the leader is `kill -9`ed while it evacuates (one call
/// in flight at a time, killed right after the first one was recorded);
/// the standby takes over, finishes, and Nova's migration records still
/// show exactly one evacuation per instance.
#[test]
fn the_standby_finishes_an_evacuation_when_the_leader_is_killed() {
    let mut h = Harness::start(
        "e2e-os-failover",
        Settings {
            max_microversion: Some("2.94"),
            concurrency: 1,
        },
    );
    let servers = h.boot_all(&[
        ("e2e-fo-1", "ACTIVE", false),
        ("e2e-fo-2", "ACTIVE", false),
        ("e2e-fo-3", "ACTIVE", false),
    ]);
    h.spawn("a");
    h.spawn("b");
    let leader = h.wait_watching();
    let failed = h.failed().to_owned();
    h.stack.kill_compute(&failed);

    // Wait until the leader recorded its first evacuate call, then kill it.
    let deadline = Instant::now() + RECOVERY;
    let states = loop {
        let states: BTreeMap<String, String> = h
            .record()
            .and_then(|r| r["instances"].as_object().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|(id, i)| (id, i["state"].as_str().unwrap_or("").to_owned()))
            .collect();
        if states.values().any(|s| s == "requested" || s == "done") {
            break states;
        }
        assert!(
            Instant::now() < deadline,
            "no evacuation recorded: {:#}\n{}",
            h.record().unwrap_or_default(),
            h.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let d = h.daemons.iter_mut().find(|d| d.id == leader).unwrap();
    d.guard.signal("KILL");
    d.guard.wait_exit(Duration::from_secs(10));
    assert!(
        states.values().any(|s| s == "pending"),
        "killed mid-evacuation, with instances still to go: {states:?}"
    );

    let standby = if leader == "a" { "b" } else { "a" };
    h.wait_status("the standby leads", Duration::from_secs(60), |s| {
        s["leader"]["id"] == standby
    });
    h.wait_done();
    h.assert_recovered(&servers, false);
    h.assert_mails(&servers);
}
