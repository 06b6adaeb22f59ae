//! Safety rule 8 (docs/safety.md): no secret in a log line, an error string
//! or any process's command line. Fences against `ipmi_sim` (success, wrong
//! password, a BMC that stays on, the health check) while a thread scans
//! every `/proc/*/cmdline`, with all tracing output captured.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use novaha_core::kv::BmcConfig;
use novaha_core::{NodeName, Secret};
use novaha_fence::{FenceRegistry, FenceSettings, FenceTarget, IpmiSettings, check_power};
use novaha_testkit::ipmi::{IpmiBmc, ipmitool};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Scan {
    leaks: Vec<String>,
    canary_seen: bool,
    ipmitool_seen: usize,
    scans: usize,
}

/// Scans /proc/*/cmdline until `stop`, recording any that holds a secret.
fn scan_cmdlines(secrets: Vec<String>, canary: String, stop: Arc<AtomicBool>) -> Scan {
    let mut scan = Scan::default();
    while !stop.load(Ordering::SeqCst) {
        scan.scans += 1;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            break;
        };
        for entry in dir.flatten() {
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let text = String::from_utf8_lossy(&raw).replace('\0', " ");
            if text.contains(&canary) {
                scan.canary_seen = true;
            }
            if text.contains("ipmitool") && text.contains("chassis") {
                scan.ipmitool_seen += 1;
            }
            for s in &secrets {
                if text.contains(s.as_str()) {
                    scan.leaks.push(text.clone());
                }
            }
        }
    }
    scan
}

#[tokio::test]
async fn no_secret_in_logs_errors_or_command_lines() {
    // IPMI v2 passwords are at most 20 bytes.
    let nonce = format!(
        "{:x}{:x}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros() % 0xffff_ffff
    );
    let right = format!("R{nonce}q");
    let wrong = format!("W{nonce}z");
    let canary = format!("Canary-{nonce}");

    let logs = Buf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ok_bmc = IpmiBmc::start("admin", &right);
    let stubborn = IpmiBmc::start("admin", &right);
    stubborn.refuse_power_off(true);

    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (secrets, canary, stop) = (
            vec![right.clone(), wrong.clone()],
            canary.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || scan_cmdlines(secrets, canary, stop))
    };
    // The scanner must be able to see a secret on a command line: a canary.
    let mut canary_proc = Command::new("sh")
        .args(["-c", "sleep 0.5", "sh", &canary])
        .spawn()
        .unwrap();

    let settings = FenceSettings {
        confirm_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        ipmi: IpmiSettings {
            ipmitool: ipmitool(),
            session_timeout: Duration::from_secs(1),
            retries: 1,
            ..IpmiSettings::default()
        },
        ..FenceSettings::default()
    };
    let reg = FenceRegistry::new(&settings).unwrap();
    let target = |node: &str, bmc: &IpmiBmc, pw: &str| FenceTarget {
        node: NodeName::from(node),
        bmc: BmcConfig {
            ip: Some("127.0.0.1".into()),
            port: Some(bmc.port()),
            user: Some("admin".into()),
            password: Secret::new(pw),
            ..BmcConfig::default()
        },
    };
    let good = target("sec-ok", &ok_bmc, &right);
    let bad = target("sec-badpw", &ok_bmc, &wrong);
    let stay_on = target("sec-on", &stubborn, &right);

    let mut errors = Vec::new();
    let fenced = reg.fencer_for(&good).unwrap().fence(&good).await.unwrap();
    assert!(!ok_bmc.power_is_on());
    errors.push(format!("{fenced:?}"));
    let e = reg.fencer_for(&bad).unwrap().fence(&bad).await.unwrap_err();
    errors.push(e.to_string());
    errors.push(format!("{e:?}"));
    let e = reg
        .fencer_for(&stay_on)
        .unwrap()
        .fence(&stay_on)
        .await
        .unwrap_err();
    errors.push(e.to_string());
    errors.push(format!("{e:?}"));
    for r in check_power(&reg, &[good.clone(), bad.clone(), stay_on.clone()], 3).await {
        errors.push(format!("{r:?}"));
    }
    errors.push(format!("{good:?} {reg:?} {settings:?}"));

    canary_proc.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let scan = scanner.join().unwrap();

    assert!(
        scan.canary_seen,
        "the /proc scanner never saw the canary ({} scans)",
        scan.scans
    );
    assert!(
        scan.ipmitool_seen > 0,
        "the /proc scanner never saw an ipmitool run ({} scans)",
        scan.scans
    );
    assert!(
        scan.leaks.is_empty(),
        "secret on a command line: {:?}",
        scan.leaks
    );

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("power verified off"),
        "no logs captured: {logs}"
    );
    assert!(
        logs.contains("power read failed") || logs.contains("fence path unhealthy"),
        "{logs}"
    );
    for s in [&right, &wrong] {
        assert!(!logs.contains(s.as_str()), "secret in logs:\n{logs}");
        for e in &errors {
            assert!(!e.contains(s.as_str()), "secret in error: {e}");
        }
    }
    assert!(
        errors.iter().any(|e| e.contains("authentication failed")),
        "{errors:?}"
    );
}
