//! novaha-monitor: what the monitor observes each cycle (docs/stages.md,
//! "Monitor signals"), turned into exactly what `novaha_core::detect::judge` takes.
//!
//! It owns the signals: `nova` (one `os-services` call per cycle for every
//! node, and with `[monitor.nova] stale_after` each heartbeat's age by
//! Nova's clock), `consul` (the nodes' Consul health checks, all configured checks
//! critical = failed, as os-nova-ha-monitor's health_aggregate; one
//! `/v1/health/state/any` call per cycle) and `tcp` (a connect to
//! host:port with a timeout, bounded concurrency), their `[monitor]`
//! settings ([`MonitorSettings`]) and the one call the runner makes per
//! cycle: [`Monitor::observe`].
//!
//! It must never judge (counting and thresholds are core's `detect`), never
//! write anything anywhere, never let an unknown signal make a node fail
//! (see [`Observation`] for how unknowns combine) and never panic on what
//! Nova or Consul answer.

mod consul;
mod error;
mod monitor;
mod nova;
mod observe;
mod settings;
mod sight;
mod tcp;

pub use consul::{ConsulHealth, ConsulVerdict, consul_verdict};
pub use error::MonitorError;
pub use monitor::{Monitor, Observation, Problem};
pub use nova::{Heartbeats, heartbeats, nova_services};
pub use observe::Observe;
pub use settings::{
    ConsulSignalSettings, MIN_STALE_AFTER, MonitorSettings, NovaSignalSettings, Signal,
    TcpSignalSettings,
};
pub use sight::{Sight, SightReport};
pub use tcp::{TcpOutcome, probe};
