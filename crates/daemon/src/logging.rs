//! Log set-up: human-readable lines by default, JSON with `[log] format =
//! "json"`; the filter is `RUST_LOG` when set, else `[log] level`. Logs go to
//! stderr (journald captures it); stdout is kept for command output.
//!
//! Under systemd, when stderr is the journal's stream (`JOURNAL_STREAM`
//! names stderr's device and inode, as systemd.exec(5) says to check),
//! every line starts with its syslog priority, `<3>` for ERROR, `<4>` WARN,
//! `<6>` INFO, `<7>` DEBUG and TRACE (sd-daemon(3)); journald strips the
//! prefix and files the line at that priority, so `journalctl -p err`
//! shows the errors only. Anywhere else (a terminal, a file, a pipe) lines
//! are left as they are.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat};

/// The syslog priority of a tracing level (sd-daemon(3)).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// True when `journal_stream` (the value of `JOURNAL_STREAM`, `DEV:INODE`)
/// names the file `(dev, ino)` stderr is.
pub fn is_journal_stream(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(v), Some((dev, ino))) = (journal_stream, stderr) else {
        return false;
    };
    let mut parts = v.trim().splitn(2, ':');
    let parse = |p: Option<&str>| p.and_then(|s| s.parse::<u64>().ok());
    matches!((parse(parts.next()), parse(parts.next())), (Some(d), Some(i)) if d == dev && i == ino)
}

/// Stderr's device and inode, if it can be stat'ed.
fn stderr_id() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/fd/2")
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// A formatter that puts the event's syslog priority first when `on`.
struct Prioritised<F> {
    inner: F,
    on: bool,
}

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.on {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber. Call once, after the config is loaded.
pub fn init(cfg: &LogConfig) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("novaha: ignoring invalid RUST_LOG {v:?}: {e}");
            EnvFilter::new(&cfg.level)
        }),
        _ => EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let journal = is_journal_stream(std::env::var("JOURNAL_STREAM").ok().as_deref(), stderr_id());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Text => {
            let inner = tracing_subscriber::fmt::format().with_ansi(false);
            builder
                .with_ansi(false)
                .event_format(Prioritised { inner, on: journal })
                .try_init()
        }
        LogFormat::Json => {
            let inner = tracing_subscriber::fmt::format().json().flatten_event(true);
            builder
                .json()
                .flatten_event(true)
                .event_format(Prioritised { inner, on: journal })
                .try_init()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn only_a_journal_stream_naming_stderr_counts() {
        assert!(is_journal_stream(Some("8:1234"), Some((8, 1234))));
        assert!(!is_journal_stream(Some("8:1234"), Some((8, 999))));
        assert!(!is_journal_stream(Some("8:1234"), None));
        assert!(!is_journal_stream(None, Some((8, 1234))));
        assert!(!is_journal_stream(Some("garbage"), Some((8, 1234))));
    }
}
