//! novaha-demo: the README's first command (`scripts/demo.sh` runs the
//! `novaha-demo` binary). It tells the whole story on one machine with no
//! config file: a real Consul dev agent, the simulator (3 compute hosts, 1
//! HA node, 10 instances) in this process, two real `novaha run` daemons
//! (the production `novaha` binary, as child processes), one compute host
//! killed, and the recovery narrated phase by phase from what can be read
//! from outside (the K/V tree and the simulator), ending with every
//! instance on the HA node and the `novaha status` table.
//!
//! It is its own crate so that the production binary never links the
//! simulator: it depends on novaha-core (to read the K/V tree), novaha-consul
//! (to read it from the agent), novaha-sim and novaha-testkit (the process,
//! Consul and simulator plumbing the end-to-end tests use), never on the
//! daemon crate; everything a daemon does, the real `novaha` binary does
//! ([`run::find_novaha`] says where it is looked for).
//!
//! It owns only what it starts: the agent and the daemons (each in its own
//! process group, so a terminal's Ctrl-C reaches only the demo, which then
//! stops them in order), the simulator and one temp dir. It must never
//! touch a Consul, a cloud or a file it did not create, and never run with
//! a real fencer: the daemons' config says `driver = "noop"` and the
//! narration says plainly that nothing was powered off.

use std::time::Duration;

use novaha_sim::SimHandle;

pub mod run;
pub mod story;

pub use story::{Story, render};

/// The K/V prefix of the demo (the fixed default).
pub const PREFIX: &str = "ha_cluster";
/// The compute host the demo kills.
pub const VICTIM: &str = "compute-1";
/// The HA (spare) node of the demo.
pub const HA_NODE: &str = "ha-1";
/// How long a killed host's service takes to read `down` in the sim.
pub const SERVICE_DOWN_TIME: Duration = Duration::from_secs(3);
/// How long an evacuation takes to land in the sim (visible, not slow).
pub const EVACUATE_DELAY: Duration = Duration::from_millis(1500);
/// `[monitor] threshold` of the demo: failed after 3 failing cycles.
pub const THRESHOLD: u32 = 2;

/// The demo's config for one daemon (`id`): everything inline, short timers,
/// the noop fencer explicitly allowed, a log notifier, HTTP on a free port.
/// The recovery benchmark runs its daemon with it too.
pub fn config_text(consul: &str, sim: &SimHandle, id: &str) -> String {
    let c = sim.credentials();
    format!(
        r#"# written by novaha-demo: a throw-away config for one demo daemon
[consul]
address = "{consul}"
prefix = "{PREFIX}"
request_timeout = "5s"

[election]
id = "{id}"
session_ttl = "10s"
lock_delay = "1s"
check_ttl = "2s"

[openstack]
region_name = "{region}"
timeout = "10s"

[openstack.auth]
auth_url = "{auth_url}"
username = "{username}"
password = "{password}"
project_name = "{project}"
user_domain_name = "{udomain}"
project_domain_name = "{pdomain}"

[monitor]
interval = "1s"
threshold = {THRESHOLD}

# The demo has no BMC: the noop fencer powers nothing off. Never in production.
[fence]
driver = "noop"
allow_noop = true

[evacuate]
target = "ha_node"
poll_interval = "500ms"
# The demo cloud's instances are image-backed; their disks are declared to be
# on storage every compute shares, so they keep them when evacuated.
shared_storage = true

[[notify]]
driver = "log"

[http]
listen = "127.0.0.1:0"

[log]
format = "text"
level = "info"
"#,
        region = c.region_name,
        auth_url = c.auth_url,
        username = c.username,
        password = c.password,
        project = c.project_name,
        udomain = c.user_domain_name,
        pdomain = c.project_domain_name,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use novaha::config::Config;
    use novaha_testkit::cloud::SimCloud;

    use super::*;

    #[test]
    fn the_demo_config_is_valid_and_allows_only_noop_explicitly() {
        let cloud = SimCloud::start();
        let text = config_text("http://127.0.0.1:1", cloud.sim(), "novaha-a");
        let cfg = Config::from_toml_str(Path::new("demo.toml"), &text, &Default::default())
            .expect("the demo config is valid");
        assert!(cfg.fence.allow_noop);
        assert_eq!(cfg.monitor.threshold, THRESHOLD);
        assert_eq!(cfg.http.listen.port(), 0);
    }
}
