//! The crate's error type.

use novaha_core::drivers::notify::DirectoryError;
use novaha_core::store::StoreError;

/// Why building a channel, enqueueing or delivering failed. Per-message send
/// failures are not errors of the outbox: they are recorded on the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[[notify]]` settings are unusable (bad URL, unreadable file, a
    /// password in the URL, duplicate channel names ...).
    #[error("notify config: {0}")]
    Config(String),
    /// A template failed to compile or render.
    #[error("notify template {name}: {detail}")]
    Template {
        /// The template's name (e.g. `admin.html.j2`).
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// Reading or writing the outbox in the state store failed.
    #[error("notify outbox store: {0}")]
    Store(#[from] StoreError),
    /// Owners could not be looked up. What could be planned was stored; call
    /// again later to add the rest (ids make that idempotent).
    #[error("notify owner lookup: {0}")]
    Directory(#[from] DirectoryError),
}

impl Error {
    /// True when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config(_) | Self::Template { .. } => false,
            Self::Store(e) => e.is_retryable(),
            Self::Directory(e) => matches!(e, DirectoryError::Unavailable(_)),
        }
    }

    /// True when the leader lock is gone: stop all leader work.
    pub fn is_not_leader(&self) -> bool {
        matches!(self, Self::Store(StoreError::NotLeader { .. }))
    }
}
