//! The crate's one error type.

/// Why the monitor could not be built or a signal could not be read.
/// Messages name what failed and never carry a token.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// `[monitor]` cannot work as written.
    #[error("monitor settings: {0}")]
    Settings(String),
    /// Consul's health checks could not be read (transport, timeout, error
    /// status or an answer that does not parse).
    #[error("reading the health checks: {0}")]
    ConsulHealth(novaha_consul::ConsulError),
}

impl MonitorError {
    /// True when a later attempt may succeed (a Consul read that failed
    /// for a transient reason); settings errors never are.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Settings(_) => false,
            Self::ConsulHealth(e) => e.is_retryable(),
        }
    }
}
