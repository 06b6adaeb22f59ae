//! Log set-up: human-readable lines by default, JSON with `[log] format =
//! "json"`; the filter is `RUST_LOG` when set, else `[log] level`. Logs go to
//! stderr (journald captures it); stdout is kept for command output.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, after the config is loaded.
pub fn init(cfg: &LogConfig) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("novaha: ignoring invalid RUST_LOG {v:?}: {e}");
            EnvFilter::new(&cfg.level)
        }),
        _ => EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("novaha: logging already initialised: {e}");
    }
}

/// Logging for commands that run before (or without) a valid config:
/// text at `warn`, or `RUST_LOG`.
pub fn init_default() {
    init(&LogConfig {
        format: LogFormat::Text,
        level: "warn".to_owned(),
    });
}
