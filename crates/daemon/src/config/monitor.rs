//! `[monitor]`: how often nodes are checked and when one is judged failed
//! (DESIGN.md section 6).

use std::time::Duration;

use serde::Deserialize;

use super::Problems;

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
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            threshold: 3,
            max_failed_fraction: 0.5,
            max_failed_nodes: None,
        }
    }
}

impl MonitorConfig {
    /// Checks the ranges.
    pub fn validate(&self, problems: &mut Problems) {
        if self.interval < Duration::from_millis(500) {
            problems.push(
                "monitor.interval",
                format!(
                    "must be at least 500ms, got {}",
                    humantime::format_duration(self.interval)
                ),
            );
        }
        if !(self.max_failed_fraction > 0.0 && self.max_failed_fraction <= 1.0) {
            problems.push(
                "monitor.max_failed_fraction",
                format!("must be in (0, 1], got {}", self.max_failed_fraction),
            );
        }
        if self.max_failed_nodes == Some(0) {
            problems.push(
                "monitor.max_failed_nodes",
                "must be at least 1 (0 would fence nothing ever; leave it unset instead)",
            );
        }
    }
}
