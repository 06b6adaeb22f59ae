//! The crate's error type.

use std::time::Duration;

/// Why a Consul call failed. Messages name the call and never carry the
/// ACL token or a stored value.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The settings cannot work (bad address, token not sendable).
    #[error("invalid consul settings: {0}")]
    Settings(String),
    /// The request did not complete (connection refused, reset, ...).
    #[error("consul {what}: request failed: {detail}")]
    Transport {
        /// The call.
        what: String,
        /// The transport error chain.
        detail: String,
    },
    /// No answer within the timeout: for a write, an unknown outcome.
    #[error("consul {what}: no answer within {timeout:?}")]
    Timeout {
        /// The call.
        what: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// Consul answered with an error status.
    #[error("consul {what}: HTTP {status}: {body}")]
    Status {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
        /// An excerpt of Consul's answer.
        body: String,
    },
    /// Consul's answer could not be understood.
    #[error("consul {what}: unexpected answer: {detail}")]
    Decode {
        /// The call.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A successful answer was longer than the client reads (64 MiB): a
    /// broken proxy in front of the agent, or a
    /// K/V tree grown far past what novaha writes. Not retryable: the same
    /// read would bring the same answer.
    #[error("consul {what}: answer larger than {limit} bytes, not read further")]
    TooLarge {
        /// The call.
        what: String,
        /// The bound, in bytes.
        limit: usize,
    },
    /// The agent answers but its cluster has no leader (no quorum).
    #[error("consul has no cluster leader")]
    NoLeader,
    /// A transaction larger than Consul accepts.
    #[error("consul txn of {ops} ops exceeds the limit of {max}")]
    TooManyOps {
        /// Ops requested.
        ops: usize,
        /// Consul's limit.
        max: usize,
    },
}

impl ConsulError {
    /// True when the same call may succeed later: transport failures,
    /// timeouts, 5xx and 429 answers, a cluster without a leader.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } | Self::NoLeader => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Settings(_)
            | Self::Decode { .. }
            | Self::TooLarge { .. }
            | Self::TooManyOps { .. } => false,
        }
    }
}
