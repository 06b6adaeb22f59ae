//! novaha against a real OpenStack: keystone, nova (fake virt driver, three
//! compute hosts and the spare `ha-1`, each host running its nova-compute,
//! its own Consul client agent and an sshd stand-in on its own loopback
//! address), one simulated BMC per host (ipmi_sim + real ipmitool; a
//! power-off kills the whole host), the controller's Consul agent, a real
//! SMTP server, and real `novaha run` processes watching the three signals
//! (nova, consul, tcp). The recovery tests kill compute-1 as a host (its
//! nova-compute, agent and sshd at once; its BMC still reads power on) and
//! check from the outside what an operator would: Nova's servers, services,
//! migration records and instance actions, the K/V tree through
//! `novaha status --json`, the BMC's call log and the captured mails. One
//! test kills a nova-compute alone and a Consul agent alone at Nova's
//! production timers and checks that neither host is ever judged failed.
//!
//! The stack is brought up once per test run and shared
//! ([`OpenStack::shared`]); every test takes the lease first (exclusive use,
//! stack reset to its baseline), so these tests serialise across processes.
//! Each test has its own K/V prefix (in the stack's Consul), SMTP server
//! and temp dir, and kills the novaha processes it started before it gives the lease
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

use harness::{Daemon, Detection, Harness, RECOVERY, Settings};

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
            target: "ha_node",
            detection: Detection::SHORT,
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
    h.stack.kill_host(&failed);
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

/// Detection through Nova, IPMI fence, force-down, the HA
/// compute enabled, every instance evacuated there in its prior state
/// (2.94: no start needed), the opted-out one left, one evacuation record
/// each, mails naming every instance.
#[test]
fn a_dead_compute_is_fenced_and_evacuated_to_the_ha_node() {
    recover_compute("e2e-os-recover", Some("2.94"), false);
}

/// At 2.95 Nova lands evacuated servers SHUTOFF; novaha
/// starts the ones that were ACTIVE and leaves the SHUTOFF one off.
#[test]
fn at_2_95_evacuated_servers_that_were_active_are_started() {
    recover_compute("e2e-os-mv295", Some("2.95"), true);
}

/// After a recovery, the node comes back (powered on
/// through its BMC), an operator resets the flags in the K/V tree; novaha
/// clears the force-down, re-enables the service, and Nova reports it up.
#[test]
fn the_operators_reset_puts_the_compute_back_in_service() {
    let mut h = Harness::start(
        "e2e-os-reset",
        Settings {
            max_microversion: Some("2.94"),
            concurrency: 8,
            target: "ha_node",
            detection: Detection::SHORT,
        },
    );
    let servers = h.boot_all(&[("e2e-reset-1", "ACTIVE", false)]);
    h.spawn("a");
    h.spawn("b");
    h.wait_watching();
    let failed = h.failed().to_owned();
    h.stack.kill_host(&failed);
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
        h.kv_put(
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

/// The leader is `kill -9`ed while it evacuates (one call
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
            target: "ha_node",
            detection: Detection::SHORT,
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
    h.stack.kill_host(&failed);

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

/// At Nova's production timers (`report_interval = 10`,
/// `service_down_time = 60`) with the fast detection keys (2 s cycle,
/// threshold 2, `stale_after = "15s"`): compute-1's nova-compute alone is
/// killed (its agent and sshd answer) and compute-2's Consul agent alone
/// (its nova-compute heartbeats, its sshd answers). For 75 s, past the
/// heartbeat going stale and past Nova's own `down`, neither is ever
/// counted, judged failed or fenced; both are reported degraded, with what
/// each signal reads.
#[test]
fn a_lone_dead_nova_compute_or_consul_agent_is_never_judged_failed() {
    let mut h = Harness::start(
        &format!("e2e-lone-{}", std::process::id()),
        Settings {
            max_microversion: Some("2.94"),
            concurrency: 8,
            target: "ha_node",
            detection: Detection::PRODUCTION_FAST,
        },
    );
    h.spawn("a");
    h.wait_watching();
    let (nova_only, agent_only) = (h.stack.computes[0].clone(), h.stack.computes[1].clone());
    h.wait_status("both hosts known", Duration::from_secs(30), |s| {
        s["compute_nodes"][&agent_only]["failed"] == false
    });
    let start = Instant::now();
    h.stack.kill_compute(&nova_only);
    h.stack.kill_agent(&agent_only);
    assert_eq!(h.stack.host_running(&nova_only), (false, true, true));
    assert_eq!(h.stack.host_running(&agent_only), (true, false, true));
    let mut seen_stale = false;
    let mut seen_down = false;
    let mut seen_agent = false;
    while start.elapsed() < Duration::from_secs(75) {
        let s = h.status();
        for node in [&nova_only, &agent_only] {
            let n = &s["compute_nodes"][node];
            assert_eq!(
                (&n["failed"], &n["number_fails"]),
                (&serde_json::json!(false), &serde_json::json!(0)),
                "{node} counted or judged failed {:?} after the kill\nstatus: {s:#}\n{}",
                start.elapsed(),
                h.logs()
            );
        }
        let d1 = s["compute_nodes"][&nova_only]["degraded"]
            .as_str()
            .unwrap_or("");
        seen_stale |= d1 == "nova=stale consul=healthy tcp=healthy";
        seen_down |= d1 == "nova=down consul=healthy tcp=healthy";
        seen_agent |= s["compute_nodes"][&agent_only]["degraded"] == "nova=up consul=failed";
        std::thread::sleep(Duration::from_secs(1));
    }
    // The stale window (heartbeat older than stale_after, Nova still
    // saying up) lasts service_down_time - stale_after; a slow Nova read
    // on a loaded machine can miss it, so either reading counts for the
    // nova-only host. What must never happen is asserted above.
    assert!(
        (seen_stale || seen_down) && seen_agent,
        "degraded readings seen: stale {seen_stale}, down {seen_down}, agent {seen_agent}\n{}",
        h.logs()
    );
    // Nova itself has read the nova-compute down by now: still not fenced.
    assert_eq!(h.nova.service(&nova_only)["state"], "down");
    for node in [&nova_only, &agent_only] {
        assert!(
            !h.bmc_calls(node).contains("set power"),
            "{node} was powered off: {}",
            h.bmc_calls(node)
        );
    }
    let log = h.daemons[0].log();
    for node in [&nova_only, &agent_only] {
        assert!(
            log.lines()
                .any(|l| l.contains("node degraded") && l.contains(&format!("node={node}"))),
            "no degraded log line for {node}\n{}",
            h.logs()
        );
    }
}

/// The spare's Placement inventory, lowered for one test and put back
/// after it (also on panic): nova-compute only rewrites an inventory it
/// changed itself, so a test's `reserved` stays until then.
struct SpareRoom {
    rt: tokio::runtime::Runtime,
    placement: novaha_openstack::PlacementClient,
    uuid: String,
    saved: novaha_core::capacity::Inventory,
}

impl SpareRoom {
    /// Leaves room on `host` for exactly `n` more servers of `ram_mb` each
    /// (memory at ratio 1.0, the rest reserved), through novaha's own
    /// Placement client over the stack's clouds.yaml.
    fn limit(h: &Harness, host: &str, n: u64, ram_mb: u64) -> Self {
        use novaha_openstack::{Env, OpenStackConfig, PlacementClient, Session};
        let rt = tokio::runtime::Runtime::new().unwrap();
        let cfg = OpenStackConfig {
            cloud: Some(novaha_testkit::openstack::OpenStack::CLOUD.to_owned()),
            clouds_file: Some(h.stack.clouds_yaml.clone()),
            ..OpenStackConfig::default()
        };
        let cloud = cfg.resolve(&Env::default()).unwrap();
        let placement = PlacementClient::new(std::sync::Arc::new(Session::new(cloud).unwrap()));
        let (uuid, saved, used) = rt.block_on(async {
            let rp = placement.provider_named(host).await.unwrap().unwrap();
            let (inv, _) = placement.inventories(&rp.uuid).await.unwrap();
            let used = placement.usages(&rp.uuid).await.unwrap();
            (rp.uuid, inv.memory_mb.unwrap(), used)
        });
        let room = novaha_core::capacity::Inventory {
            reserved: saved.total - used.memory_mb - n * ram_mb,
            allocation_ratio: 1.0,
            ..saved
        };
        rt.block_on(placement.set_inventory(&uuid, "MEMORY_MB", &room))
            .unwrap();
        Self {
            rt,
            placement,
            uuid,
            saved,
        }
    }
}

impl Drop for SpareRoom {
    fn drop(&mut self) {
        let put = self.rt.block_on(self.placement.set_inventory(
            &self.uuid,
            "MEMORY_MB",
            &self.saved,
        ));
        if let Err(e) = put {
            eprintln!("could not restore the spare's MEMORY_MB inventory: {e}");
        }
    }
}

/// Capacity from Placement (docs/recovery.md, "Capacity"): the spare's
/// inventory fits 2 of the 3 servers. Returns the harness (daemon running,
/// compute-1 killed), the servers, and the guard that restores the room.
fn spare_fits_two(
    prefix: &str,
    target: &'static str,
) -> (Harness<'static>, Vec<String>, SpareRoom) {
    let mut h = Harness::start(
        prefix,
        Settings {
            max_microversion: Some("2.94"),
            concurrency: 8,
            target,
            detection: Detection::SHORT,
        },
    );
    let servers = h.boot_all(&[
        ("cap-1", "ACTIVE", false),
        ("cap-2", "ACTIVE", false),
        ("cap-3", "ACTIVE", false),
    ]);
    let ram = h.nova.get(&format!("/flavors/{}", h.stack.flavor_id))["flavor"]["ram"]
        .as_u64()
        .unwrap();
    let ha = h.ha().to_owned();
    let room = SpareRoom::limit(&h, &ha, 2, ram);
    h.spawn("a");
    h.wait_watching();
    let failed = h.failed().to_owned();
    h.stack.kill_host(&failed);
    (h, servers.into_iter().map(|s| s.id).collect(), room)
}

/// `ha_node_then_scheduler`: two land on the spare, the third on another
/// compute through the scheduler; all ACTIVE, one evacuation each.
#[test]
fn a_spare_with_room_for_two_of_three_sends_the_third_through_the_scheduler() {
    let (h, ids, _room) = spare_fits_two("e2e-os-cap-sched", "ha_node_then_scheduler");
    h.wait_done();
    let ha = h.ha().to_owned();
    let mut on_ha = 0;
    for id in &ids {
        let s = h.nova.server(id);
        let host = s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or("").to_owned();
        assert_eq!(s["status"], "ACTIVE", "{id}: {s}");
        assert_ne!(host, h.failed(), "{id} still on the failed host");
        if host == ha {
            on_ha += 1;
        }
        assert_eq!(h.evacuations(id).len(), 1, "{id}: one evacuation");
    }
    assert_eq!(on_ha, 2, "two on the spare, one elsewhere:\n{}", h.logs());
    let rec = h.record().unwrap();
    let via: Vec<_> = ids
        .iter()
        .filter(|id| rec["instances"][id.as_str()]["via_scheduler"] == true)
        .collect();
    assert_eq!(via.len(), 1, "{rec:#}");
}

/// `ha_node`: two land on the spare, the third waits with an alert and is
/// never sent (so never ERROR).
#[test]
fn a_spare_with_room_for_two_of_three_makes_the_third_wait_under_ha_node() {
    let (h, ids, _room) = spare_fits_two("e2e-os-cap-wait", "ha_node");
    let failed = h.failed().to_owned();
    let s = h.wait_status("two landed, one waiting", RECOVERY, |s| {
        let n = &s["compute_nodes"][&failed];
        let done = ids
            .iter()
            .filter(|id| n["instances"][id.as_str()]["state"] == "done")
            .count();
        done == 2
            && n["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no room on"))
    });
    let n = &s["compute_nodes"][&failed];
    assert_eq!(n["phase"], "evacuating", "{n:#}");
    let waiting: Vec<&String> = ids
        .iter()
        .filter(|id| n["instances"][id.as_str()]["state"] == "pending")
        .collect();
    assert_eq!(waiting.len(), 1, "{n:#}");
    let logs: String = h.daemons.iter().map(Daemon::log).collect();
    assert!(logs.contains("no-room-on-ha-node"), "{}", h.logs());
    std::thread::sleep(Duration::from_secs(5));
    let w = h.nova.server(waiting[0]);
    assert_ne!(w["status"], "ERROR", "{w}");
    assert!(h.evacuations(waiting[0]).is_empty(), "never sent");
    for id in ids.iter().filter(|id| *id != waiting[0]) {
        assert_eq!(h.evacuations(id).len(), 1, "{id}: one evacuation");
        let s = h.nova.server(id);
        assert_eq!(s["status"], "ACTIVE", "{s}");
        assert_eq!(s["OS-EXT-SRV-ATTR:host"], h.ha(), "{s}");
    }
}
