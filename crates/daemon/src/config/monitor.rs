//! `[monitor]`: how often nodes are checked and when one is judged failed
//! (docs/configuration.md, "`[monitor]`"; the judgement itself:
//! docs/recovery.md, "Detection: `detect::judge`"). The daemon owns `interval`, `threshold` and the
//! mass-failure guard; the monitor stage owns `signals`, `[monitor.nova]`,
//! `[monitor.consul]` and `[monitor.tcp]` (its types, embedded as fields: `deny_unknown_fields`
//! does not combine with `flatten`), handed over by [`MonitorConfig::signals`].

use std::time::Duration;

use novaha_core::validate::{Problem, Validate};
use novaha_monitor::{
    ConsulSignalSettings, MonitorSettings, NovaSignalSettings, Signal, TcpSignalSettings,
};
use serde::Deserialize;

use super::Problems;

/// The default `[monitor] blind_after`.
pub const DEFAULT_BLIND_AFTER: Duration = Duration::from_secs(30);

/// `[monitor]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Time between two leader cycles.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A node is failed when `number_fails > threshold`.
    pub threshold: u32,
    /// Mass-failure guard: when more than this fraction of the nodes fail in
    /// the same window, nothing is fenced.
    pub max_failed_fraction: f64,
    /// Mass-failure guard by count; unset = only the fraction applies.
    pub max_failed_nodes: Option<u32>,
    /// How long the leader may judge nothing (cloud unreadable) before it
    /// reports itself blind: `/readyz` 503, `novaha_monitor_blind` 1.
    #[serde(with = "humantime_serde")]
    pub blind_after: Duration,
    /// The detection signals (`nova` always; `consul`, `tcp` confirm it).
    pub signals: Vec<Signal>,
    /// `[monitor.nova]`: the `nova` signal's heartbeat age.
    pub nova: NovaSignalSettings,
    /// `[monitor.consul]`: the `consul` signal.
    pub consul: ConsulSignalSettings,
    /// `[monitor.tcp]`: the `tcp` signal.
    pub tcp: TcpSignalSettings,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            threshold: 3,
            max_failed_fraction: 0.5,
            max_failed_nodes: None,
            blind_after: DEFAULT_BLIND_AFTER,
            signals: MonitorSettings::default().signals,
            nova: NovaSignalSettings::default(),
            consul: ConsulSignalSettings::default(),
            tcp: TcpSignalSettings::default(),
        }
    }
}

impl MonitorConfig {
    /// The monitor stage's settings.
    pub fn signals(&self) -> MonitorSettings {
        MonitorSettings {
            signals: self.signals.clone(),
            nova: self.nova.clone(),
            consul: self.consul.clone(),
            tcp: self.tcp.clone(),
        }
    }
}

impl Validate for MonitorConfig {
    /// Checks the ranges, and the monitor stage's keys.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        problems.0.extend(self.signals().validate());
        if self.interval < Duration::from_millis(500) {
            problems.push(
                "interval",
                format!(
                    "must be at least 500ms, got {}",
                    humantime::format_duration(self.interval)
                ),
            );
        }
        // novaha cannot read Nova's report_interval; its own interval is the
        // one period it knows, and deployments run it at or below
        // report_interval: a stale_after within it would call nodes stale
        // between two ordinary heartbeats (docs/configuration.md).
        if let Some(stale) = self.nova.stale_after
            && stale <= self.interval
        {
            problems.push(
                "nova.stale_after",
                format!(
                    "must be longer than monitor.interval ({}), got {}",
                    humantime::format_duration(self.interval),
                    humantime::format_duration(stale)
                ),
            );
        }
        if !(self.max_failed_fraction > 0.0 && self.max_failed_fraction <= 1.0) {
            problems.push(
                "max_failed_fraction",
                format!("must be in (0, 1], got {}", self.max_failed_fraction),
            );
        }
        if self.max_failed_nodes == Some(0) {
            problems.push(
                "max_failed_nodes",
                "must be at least 1 (0 would fence nothing ever; leave it unset instead)",
            );
        }
        problems.0
    }
}
