//! Shared helpers for the tests against a real Consul agent.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use novaha_consul::{Consul, ConsulSettings, Election, ElectionSettings, LeaderInfo};
use novaha_core::kv::Schema;
use novaha_testkit::consul::ConsulAgent;

/// Sends the library's warnings (why a keeper gave a lease up, a failed
/// renew) to the test's captured output, shown when the test fails.
pub fn log_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NOVAHA_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A client for `agent`.
pub fn client(agent: &ConsulAgent) -> Consul {
    Consul::new(&ConsulSettings {
        address: agent.http_addr(),
        token: None,
        request_timeout: Duration::from_secs(5),
        tls: Default::default(),
    })
    .expect("client settings are valid")
}

/// A schema with a prefix of its own, so tests never share keys.
pub fn schema(test: &str) -> Schema {
    Schema::new(&format!("t-{test}-{}", std::process::id()))
}

/// Short timings for tests: session 10s (Consul's minimum), check 2s, lock-delay 1s.
pub fn settings(id: &str) -> ElectionSettings {
    ElectionSettings {
        session_ttl: Duration::from_secs(10),
        lock_delay: Duration::from_secs(1),
        check_ttl: Duration::from_secs(2),
        check_id: format!("novaha-test-{id}"),
        leader_info: LeaderInfo {
            id: id.to_owned(),
            host: "localhost".into(),
            pid: std::process::id(),
            version: "test".into(),
        },
    }
}

pub fn election(agent: &ConsulAgent, schema: &Schema, id: &str) -> Election {
    Election::new(client(agent), schema.clone(), settings(id))
}
