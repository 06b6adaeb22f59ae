//! What every command needs to reach Consul: the client settings of a
//! config, a client with the schema of the configured prefix, and this
//! host's name (the lock value, and who an operator's write came from).

use anyhow::Context;
use novaha_consul::Consul;
use novaha_core::kv::Schema;

use crate::config::Config;

/// A Consul client and the schema of the configured prefix.
pub fn connect(cfg: &Config) -> anyhow::Result<(Consul, Schema)> {
    let consul = Consul::new(&cfg.consul.settings())
        .with_context(|| format!("consul client for {}", cfg.consul.address))?;
    Ok((consul, Schema::new(&cfg.consul.prefix)))
}

/// This host's name, for the lock value.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
