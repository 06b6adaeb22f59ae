//! The ipmi driver against OpenIPMI's `ipmi_sim` (one simulated BMC per
//! node) with the real `ipmitool`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use novaha_core::kv::BmcConfig;
use novaha_core::{NodeName, PowerState, Secret};
use novaha_fence::{
    FenceError, FenceRegistry, FenceSettings, FenceTarget, IpmiSettings, check_power,
};
use novaha_testkit::ipmi::{IpmiBmc, ipmitool};

fn settings() -> FenceSettings {
    FenceSettings {
        confirm_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
        ipmi: IpmiSettings {
            ipmitool: ipmitool(),
            session_timeout: Duration::from_secs(1),
            retries: 1,
            command_timeout: Duration::from_secs(10),
            ..IpmiSettings::default()
        },
        ..FenceSettings::default()
    }
}

fn target(node: &str, bmc: &IpmiBmc, user: &str, password: &str) -> FenceTarget {
    FenceTarget {
        node: NodeName::from(node),
        bmc: BmcConfig {
            driver: Some("ipmi".into()),
            ip: Some("127.0.0.1".into()),
            port: Some(bmc.port()),
            user: Some(user.into()),
            password: Secret::new(password),
            ..BmcConfig::default()
        },
    }
}

#[tokio::test]
async fn fence_powers_the_simulated_chassis_off_and_unfence_on() {
    let bmc = IpmiBmc::start("admin", "pw-fence-ok");
    let other = IpmiBmc::start("admin", "pw-other");
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("compute-1", &bmc, "admin", "pw-fence-ok");
    let fencer = reg.fencer_for(&t).unwrap();
    assert_eq!(fencer.driver(), "ipmi");
    assert_eq!(fencer.power_state(&t).await.unwrap(), PowerState::On);

    let fenced = fencer.fence(&t).await.unwrap();
    assert_eq!(fenced.node().as_str(), "compute-1");
    assert_eq!(fenced.driver(), "ipmi");
    assert!(!bmc.power_is_on(), "the simulated chassis is still on");
    assert!(
        bmc.calls().iter().any(|c| c == "set power 0"),
        "{:?}",
        bmc.calls()
    );
    assert!(other.power_is_on(), "another node's BMC was touched");
    assert!(other.calls().iter().all(|c| !c.starts_with("set")));

    // Idempotent: fencing an off node confirms it again.
    fencer.fence(&t).await.unwrap();
    assert!(!bmc.power_is_on());

    fencer.unfence(&t).await.unwrap();
    assert!(bmc.power_is_on());
    assert_eq!(fencer.power_state(&t).await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn wrong_password_is_a_clear_auth_error_and_nothing_is_powered_off() {
    let bmc = IpmiBmc::start("admin", "pw-right");
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("compute-2", &bmc, "admin", "pw-wrong-1234");
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(matches!(err, FenceError::Auth { .. }), "{err}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.contains("compute-2") && msg.contains("authentication failed"),
        "{msg}"
    );
    assert!(
        !msg.contains("pw-wrong-1234") && !msg.contains("pw-right"),
        "{msg}"
    );
    assert!(bmc.power_is_on());
    assert!(
        bmc.calls().iter().all(|c| !c.starts_with("set")),
        "{:?}",
        bmc.calls()
    );
}

#[tokio::test]
async fn bmc_down_is_unreachable_within_the_short_timeout() {
    let mut bmc = IpmiBmc::start("admin", "pw-down");
    let t = target("compute-3", &bmc, "admin", "pw-down");
    bmc.stop();
    let reg = FenceRegistry::new(&settings()).unwrap();
    let started = Instant::now();
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, FenceError::Unreachable { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(err.to_string().contains("BMC unreachable"), "{err}");
}

#[tokio::test]
async fn a_bmc_that_still_reads_on_is_not_confirmed() {
    let bmc = IpmiBmc::start("admin", "pw-stubborn");
    bmc.refuse_power_off(true);
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("compute-4", &bmc, "admin", "pw-stubborn");
    let started = Instant::now();
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(
        matches!(
            err,
            FenceError::NotConfirmed {
                last: PowerState::On,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    // It waited out (nearly) the whole confirm_timeout: stops one poll early.
    assert!(started.elapsed() >= Duration::from_millis(1800));
    assert!(bmc.power_is_on());
    assert!(bmc.calls().iter().any(|c| c == "set power 0"));
    let reads = bmc.calls().iter().filter(|c| *c == "get power").count();
    assert!(reads >= 3, "polled only {reads} times");
}

#[tokio::test]
async fn health_check_reads_every_node_and_names_the_broken_ones() {
    let good = IpmiBmc::start("admin", "pw-h1");
    let bad_pw = IpmiBmc::start("admin", "pw-h2");
    let mut down = IpmiBmc::start("admin", "pw-h3");
    let off = IpmiBmc::start("admin", "pw-h4");
    off.set_power(false);
    let targets = vec![
        target("h-good", &good, "admin", "pw-h1"),
        target("h-badpw", &bad_pw, "admin", "nope"),
        target("h-down", &down, "admin", "pw-h3"),
        target("h-off", &off, "admin", "pw-h4"),
        FenceTarget {
            node: NodeName::from("h-noip"),
            bmc: BmcConfig::default(),
        },
        FenceTarget {
            node: NodeName::from("h-ilo"),
            bmc: BmcConfig {
                driver: Some("ilo".into()),
                ..BmcConfig::default()
            },
        },
    ];
    down.stop();
    let reg = FenceRegistry::new(&settings()).unwrap();
    let reports = check_power(&reg, &targets, 4).await;
    let names: Vec<&str> = reports.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(
        names,
        ["h-good", "h-badpw", "h-down", "h-off", "h-noip", "h-ilo"]
    );
    assert_eq!(reports[0].result, Ok(PowerState::On));
    assert!(reports[0].is_healthy());
    let e1 = reports[1].result.as_ref().unwrap_err();
    assert!(e1.contains("authentication failed"), "{e1}");
    let e2 = reports[2].result.as_ref().unwrap_err();
    assert!(e2.contains("unreachable"), "{e2}");
    assert_eq!(reports[3].result, Ok(PowerState::Off));
    assert!(
        reports[4]
            .result
            .as_ref()
            .unwrap_err()
            .contains("config/bmc/ip")
    );
    assert_eq!(reports[5].driver, "unknown");
    assert!(
        reports[5]
            .result
            .as_ref()
            .unwrap_err()
            .contains("unknown fence driver")
    );
    assert!(
        reports
            .iter()
            .all(|r| r.driver != "ipmi" || r.node.as_str() != "h-ilo")
    );
    // Read-only: nothing was switched.
    assert!(good.power_is_on() && bad_pw.power_is_on() && !off.power_is_on());
    for b in [&good, &bad_pw, &off] {
        assert!(
            b.calls().iter().all(|c| !c.starts_with("set")),
            "{:?}",
            b.calls()
        );
    }
}

#[tokio::test]
async fn a_refused_off_command_counts_only_if_power_reads_off() {
    let bmc = IpmiBmc::start("admin", "pw-refuse");
    bmc.fail_power_commands(true);
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("compute-5", &bmc, "admin", "pw-refuse");
    let fencer = reg.fencer_for(&t).unwrap();
    // Chassis on, command refused: an error, never Fenced.
    let err = fencer.fence(&t).await.unwrap_err();
    assert!(matches!(err, FenceError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("ipmitool power off"), "{err}");
    assert!(bmc.power_is_on());
    // Chassis already off, command refused: the reading of Off is evidence.
    bmc.set_power(false);
    let fenced = fencer.fence(&t).await.unwrap();
    assert_eq!(fenced.node().as_str(), "compute-5");
}

#[tokio::test]
async fn an_empty_password_still_never_prompts() {
    let bmc = IpmiBmc::start("admin", "");
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("compute-6", &bmc, "admin", "");
    let fencer = reg.fencer_for(&t).unwrap();
    assert_eq!(fencer.power_state(&t).await.unwrap(), PowerState::On);
    fencer.fence(&t).await.unwrap();
    assert!(!bmc.power_is_on());
}
