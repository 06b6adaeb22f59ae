//! `[[notify]]`: owned by the notify stage. Each table is a
//! [`novaha_notify::NotifySettings`] tagged by `driver` (`email`, `webhook`,
//! `log`), embedded as is; its keys are documented in docs/notifications.md.
//! Each entry checks what it can without sending anything; the daemon
//! adds the list's rule, one name per channel.

use std::collections::BTreeSet;

use novaha_core::validate::Problem;

pub use novaha_notify::NotifySettings as NotifyConfig;

/// The driver's name as written in the file.
pub fn driver(n: &NotifyConfig) -> &'static str {
    match n {
        NotifyConfig::Email(_) => "email",
        NotifyConfig::Webhook(_) => "webhook",
        NotifyConfig::Log(_) => "log",
    }
}

/// The list's own rule: every channel has its own name (names are part of
/// every outbox message id). Each entry's own problems are its
/// [`Validate`](novaha_core::validate::Validate)'s. Keys are relative to
/// `notify` (`[1].name`).
pub fn unique_names(list: &[NotifyConfig]) -> Vec<Problem> {
    let mut names = BTreeSet::new();
    list.iter()
        .enumerate()
        .filter(|(_, n)| !names.insert(n.channel_name().to_owned()))
        .map(|(index, n)| {
            Problem::new(
                format!("[{index}].name"),
                format!(
                    "channel name {:?} is used twice; give each [[notify]] its own `name`",
                    n.channel_name()
                ),
            )
        })
        .collect()
}
