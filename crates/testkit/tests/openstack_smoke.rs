//! Proves the real-OpenStack harness (tests/openstack/, testkit::openstack)
//! end to end: what novaha will do to a real Nova, done by hand. Boot two
//! servers on compute-1, power compute-1 off through its simulated BMC
//! (real ipmitool against ipmi_sim, whose hook kills that nova-compute),
//! wait until Nova reads it down, force it down, enable the spare, evacuate
//! both servers there and check they are ACTIVE on the spare with
//! `evacuation` migration records.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use novaha_testkit::openstack::{Bmc, OpenStack};
use novaha_testkit::process::tool;

/// `ipmitool ... chassis power ARGS` against a simulated BMC; the password
/// comes from a file, never the command line.
fn ipmi_power(bmc: &Bmc, args: &[&str]) -> String {
    let out = Command::new(tool("NOVAHA_IPMITOOL", &[], "ipmitool"))
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(bmc.port.to_string())
        .args(["-U", &bmc.user, "-f"])
        .arg(&bmc.password_file)
        .args(["chassis", "power"])
        .args(args)
        .output()
        .expect("run ipmitool");
    assert!(
        out.status.success(),
        "ipmitool chassis power {args:?} on {}: {}",
        bmc.host,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn pid_file(stack: &OpenStack, name: &str) -> String {
    std::fs::read_to_string(stack.state_dir.join("run").join(format!("{name}.pid")))
        .unwrap_or_else(|e| panic!("pid file of {name}: {e}"))
}

#[test]
fn kill_force_down_and_evacuate_a_compute_of_a_real_nova() {
    let stack = OpenStack::shared().lease();
    let nova = stack.nova();
    let failed = stack.computes[0].clone();
    let spare = stack.ha_host.clone();
    assert_eq!(
        nova.service(&spare)["status"],
        "disabled",
        "the spare starts disabled"
    );

    let ids: Vec<String> = (1..=2)
        .map(|i| nova.boot_on(&stack, &format!("smoke-{i}"), &failed))
        .collect();
    for id in &ids {
        nova.wait_server_on(id, Some(&failed), "ACTIVE", Duration::from_secs(180));
    }

    // Power the node off through its BMC: the hook cuts its nova-compute.
    let bmc = stack.bmc(&failed);
    assert_eq!(ipmi_power(&bmc, &["status"]), "Chassis Power is on");
    ipmi_power(&bmc, &["off"]);
    assert_eq!(ipmi_power(&bmc, &["status"]), "Chassis Power is off");
    assert!(
        !stack.compute_running(&failed),
        "power-off stopped {failed}'s nova-compute"
    );
    let calls = std::fs::read_to_string(&bmc.calls_log).expect("BMC calls log");
    assert!(
        calls.contains("set power 0"),
        "the hook saw the power-off: {calls}"
    );

    // What novaha will do: wait for Nova to read the node down, force it
    // down, enable the spare, evacuate everything there.
    nova.wait_service_state(&failed, "down", Duration::from_secs(60));
    let svc = nova.force_down(&failed, true);
    assert_eq!(svc["service"]["forced_down"], true);
    nova.enable_service(&spare);
    for id in &ids {
        nova.evacuate(id, Some(&spare));
    }
    for id in &ids {
        nova.wait_server_on(id, Some(&spare), "ACTIVE", Duration::from_secs(180));
        let migs = nova.migrations(&format!("instance_uuid={id}&migration_type=evacuation"));
        assert_eq!(migs.len(), 1, "one evacuation record for {id}: {migs:?}");
        assert_eq!(migs[0]["source_compute"], failed.as_str());
        assert_eq!(migs[0]["dest_compute"], spare.as_str());
        assert!(
            matches!(migs[0]["status"].as_str(), Some("done" | "completed")),
            "evacuation of {id} finished: {}",
            migs[0]
        );
    }
    assert!(
        nova.servers_on(&failed).is_empty(),
        "nothing left on {failed}"
    );

    // Power back on: the node's nova-compute runs again, completes the
    // evacuations (it cleans up what left it), and can then be un-forced.
    ipmi_power(&bmc, &["on"]);
    assert!(
        stack.compute_running(&failed),
        "power-on started {failed}'s nova-compute"
    );
    nova.unforce_down(&failed, Duration::from_secs(120));
    nova.wait_service_state(&failed, "up", Duration::from_secs(120));
}

#[test]
fn a_second_bring_up_reuses_the_running_stack() {
    let stack = OpenStack::shared();
    let before = pid_file(stack, "keystone");
    let again = OpenStack::up(&stack.state_dir, None);
    assert_eq!(
        pid_file(stack, "keystone"),
        before,
        "no service was restarted"
    );
    assert_eq!(again.auth_url, stack.auth_url);
    assert_eq!(again.image_id, stack.image_id);
    assert!(Path::new(&again.clouds_yaml).is_file());
    // The token works against the running keystone.
    assert!(!again.token().is_empty());
}
