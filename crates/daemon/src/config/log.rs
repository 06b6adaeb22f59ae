//! `[log]`: the log format and level. `RUST_LOG`, when set, wins over `level`.

use novaha_core::validate::{Problem, Validate};
use serde::Deserialize;

use super::Problems;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `novaha=debug,info`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl Validate for LogConfig {
    /// Checks that `level` is a valid filter.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            problems.push("level", format!("invalid filter {:?}: {e}", self.level));
        }
        problems.0
    }
}
