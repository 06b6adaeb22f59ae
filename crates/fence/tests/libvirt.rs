//! The libvirt driver against a private `libvirtd` serving libvirt's `test`
//! driver over `test+tcp://`, with the real `virsh`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use novaha_core::kv::BmcConfig;
use novaha_core::{NodeName, PowerState};
use novaha_fence::{FenceError, FenceRegistry, FenceSettings, FenceTarget, LibvirtSettings};
use novaha_testkit::libvirt::{Libvirtd, virsh};

fn settings() -> FenceSettings {
    FenceSettings {
        driver: novaha_fence::DriverName::Libvirt,
        confirm_timeout: Duration::from_secs(3),
        poll_interval: Duration::from_millis(100),
        libvirt: LibvirtSettings {
            virsh: virsh(),
            command_timeout: Duration::from_secs(10),
            uri: None,
        },
        ..FenceSettings::default()
    }
}

fn target(node: &str, lv: &Libvirtd, domain: &str) -> FenceTarget {
    FenceTarget {
        node: NodeName::from(node),
        bmc: BmcConfig {
            extra: [
                ("uri".to_owned(), lv.uri()),
                ("domain".to_owned(), domain.to_owned()),
            ]
            .into(),
            ..BmcConfig::default()
        },
    }
}

#[tokio::test]
async fn destroy_is_verified_with_domstate_and_start_undoes_it() {
    let lv = Libvirtd::start();
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("lab-1", &lv, Libvirtd::DOMAIN);
    let fencer = reg.fencer_for(&t).unwrap();
    assert_eq!(fencer.driver(), "libvirt");
    assert_eq!(fencer.power_state(&t).await.unwrap(), PowerState::On);

    let fenced = fencer.fence(&t).await.unwrap();
    assert_eq!(fenced.driver(), "libvirt");
    assert_eq!(lv.domstate(Libvirtd::DOMAIN).as_deref(), Some("shut off"));

    // Idempotent: destroying a stopped domain confirms it again.
    fencer.fence(&t).await.unwrap();
    assert_eq!(fencer.power_state(&t).await.unwrap(), PowerState::Off);

    fencer.unfence(&t).await.unwrap();
    assert_eq!(lv.domstate(Libvirtd::DOMAIN).as_deref(), Some("running"));
    fencer.unfence(&t).await.unwrap();
}

#[tokio::test]
async fn unknown_domain_is_a_config_error_and_a_dead_daemon_is_unreachable() {
    let mut lv = Libvirtd::start();
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = target("lab-2", &lv, "no-such-domain");
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(matches!(err, FenceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("no-such-domain"), "{err}");
    assert_eq!(lv.domstate(Libvirtd::DOMAIN).as_deref(), Some("running"));

    let t = target("lab-2", &lv, Libvirtd::DOMAIN);
    lv.stop();
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(matches!(err, FenceError::Unreachable { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_node_without_uri_is_refused() {
    let reg = FenceRegistry::new(&settings()).unwrap();
    let t = FenceTarget {
        node: NodeName::from("lab-3"),
        bmc: BmcConfig::default(),
    };
    let err = reg.fencer_for(&t).unwrap().fence(&t).await.unwrap_err();
    assert!(err.to_string().contains("no libvirt URI"), "{err}");
}
