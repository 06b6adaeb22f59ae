//! novaha-notify: telling owners and operators what happened in an incident.
//!
//! It owns the notify drivers (`email` over SMTP with lettre, `webhook` as a
//! JSON POST, `log` as one structured log line), their config
//! ([`NotifySettings`], the daemon's `[[notify]]` list), the built-in message
//! templates, and the [`Outbox`]: the queue of rendered messages kept in the
//! state store (Consul) so that a leader change loses no pending message and a
//! resumed incident never sends the same message twice.
//!
//! It must never block fencing or evacuation (the recovery runner enqueues
//! after those steps and the leader's outbox worker delivers in the
//! background), never depend on another driver crate (owners' addresses come
//! through core's [`Directory`] trait), never write outside the outbox folder
//! of the state tree, never overwrite an outbox entry it could not parse, and
//! never put a secret (SMTP password, webhook header values, the webhook URL's
//! path, which may hold a token) in a log line or an error.

mod channel;
mod email;
mod error;
mod logline;
mod message;
mod outbox;
mod render;
mod settings;
mod webhook;

use std::sync::Arc;

pub use channel::Channel;
pub use error::Error;
pub use message::{Audience, Message, Payload, message_id};
pub use novaha_core::drivers::notify::{
    Directory, IncidentReport, InstanceOutcome, Notifier, NotifyError, Person,
};
pub use outbox::{
    Backoff, DeliveryOutcome, DeliverySummary, EnqueueSummary, EntryStatus, Outbox, OutboxEntry,
    OutboxOptions, OutcomeSink,
};
pub use render::WEBHOOK_SCHEMA;
pub use settings::{EmailSettings, LogSettings, NotifySettings, WebhookSettings};

/// Builds one notify channel from its `[[notify]]` settings: the one `match`
/// over the driver names. Reads the files the settings name (password, CA,
/// templates) now, so a broken config fails at start-up, not mid-incident.
pub fn build_channel(
    settings: &NotifySettings,
    directory: Arc<dyn Directory>,
) -> Result<Channel, Error> {
    let name = settings.channel_name().to_owned();
    match settings {
        NotifySettings::Email(s) => Ok(Channel::email(
            name,
            email::EmailChannel::new(s, directory)?,
        )),
        NotifySettings::Webhook(s) => Ok(Channel::webhook(name, webhook::WebhookChannel::new(s)?)),
        NotifySettings::Log(_) => Ok(Channel::log(name, logline::LogChannel)),
    }
}

/// Builds a notifier that sends directly (no outbox) from its settings. The
/// daemon's recovery path should prefer [`Outbox`], which survives a leader
/// change; this is for one-shot use (`novaha` tooling, tests).
pub fn build(
    settings: &NotifySettings,
    directory: Arc<dyn Directory>,
) -> Result<Arc<dyn Notifier>, Error> {
    Ok(Arc::new(build_channel(settings, directory)?))
}
