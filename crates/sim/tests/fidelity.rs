//! The sim checked with the real OpenStack Python clients
//! (python-novaclient, keystoneauth1, openstacksdk from PyPI, installed in
//! the cache by scripts/deps/python-clients.sh): `fidelity.py` logs in,
//! lists services and servers (paging), forces a host down by service id,
//! evacuates, lists migrations and checks Keystone users and assignments.
//! If a real client rejects the sim, the sim is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use novaha_sim::{Sim, SimConfig};

/// The venv's python: `NOVAHA_CLIENTS_PYTHON`, else
/// `<cache>/python-clients/bin/python` (cache = `NOVAHA_CACHE` or the repo's
/// `.cache`). Missing is a failure naming the install script, never a skip.
fn clients_python() -> PathBuf {
    if let Some(p) = std::env::var_os("NOVAHA_CLIENTS_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("NOVAHA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache"));
    let p = cache.join("python-clients/bin/python");
    assert!(
        p.is_file(),
        "{} not found: run scripts/deps/python-clients.sh (or scripts/test-deps.sh)",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_openstack_clients_accept_the_sim() {
    let python = clients_python();
    let sim = Sim::start(
        "127.0.0.1:0",
        SimConfig {
            hosts: 3,
            instances_per_host: 4,
            ha_nodes: 1,
            max_limit: 5,
            service_down_time: Duration::from_secs(1),
            evacuate_delay: Duration::from_millis(300),
            ..SimConfig::default()
        },
    )
    .await
    .expect("start sim");
    let creds = sim.credentials();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fidelity.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .env("OS_AUTH_URL", &creds.auth_url)
        .env("SIM_URL", sim.base_url())
        .env("OS_APP_CRED_ID", &creds.application_credential_id)
        .env("OS_APP_CRED_SECRET", &creds.application_credential_secret)
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("fidelity.py finished within 180 s")
        .expect("run fidelity.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("FIDELITY OK"),
        "fidelity.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // The sim recorded the mutating calls the clients made, without secrets.
    let calls = sim.calls();
    assert!(calls.iter().any(|c| c.method == "PUT"
        && c.path.contains("/os-services/")
        && c.body["forced_down"] == serde_json::json!(true)));
    assert!(
        calls
            .iter()
            .any(|c| c.path.ends_with("/action") && c.body.get("evacuate").is_some())
    );
    let log = serde_json::to_string(&calls).expect("serialize calls");
    assert!(
        !log.contains(&creds.application_credential_secret),
        "secret in the call log"
    );
    assert!(
        !log.contains("\"password\":\"admin\""),
        "password in the call log"
    );
    assert!(
        log.contains("\"password\":\"***\""),
        "auth calls recorded, redacted"
    );
    sim.shutdown().await;
}
