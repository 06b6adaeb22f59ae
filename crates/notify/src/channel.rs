//! A configured notify channel: one `[[notify]]` entry, built. A closed enum
//! over the drivers, matched in one place.

use async_trait::async_trait;
use novaha_core::drivers::notify::{IncidentReport, Notifier, NotifyError};

use crate::email::EmailChannel;
use crate::error::Error;
use crate::logline::LogChannel;
use crate::message::{Message, Plan};
use crate::webhook::WebhookChannel;

enum Kind {
    Email(Box<EmailChannel>),
    Webhook(WebhookChannel),
    Log(LogChannel),
}

/// One built `[[notify]]` entry. It turns a report into messages
/// ([`Channel::plan`]) and sends one message ([`Channel::send`]); the
/// [`crate::Outbox`] sits between the two. It also implements [`Notifier`]
/// for direct, outbox-less sending.
pub struct Channel {
    name: String,
    kind: Kind,
}

impl Channel {
    pub(crate) fn email(name: String, c: EmailChannel) -> Self {
        Self {
            name,
            kind: Kind::Email(Box::new(c)),
        }
    }

    pub(crate) fn webhook(name: String, c: WebhookChannel) -> Self {
        Self {
            name,
            kind: Kind::Webhook(c),
        }
    }

    pub(crate) fn log(name: String, c: LogChannel) -> Self {
        Self {
            name,
            kind: Kind::Log(c),
        }
    }

    /// The channel's name (`name`, else the driver name); part of every
    /// message id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The driver name as written in config.
    pub fn driver_name(&self) -> &'static str {
        match self.kind {
            Kind::Email(_) => "email",
            Kind::Webhook(_) => "webhook",
            Kind::Log(_) => "log",
        }
    }

    /// Renders `report` into one message per recipient. Read-only (directory
    /// lookups for the e-mail owners), cancel-safe.
    pub(crate) async fn plan(&self, report: &IncidentReport) -> Result<Plan, Error> {
        match &self.kind {
            Kind::Email(c) => c.plan(&self.name, report).await,
            Kind::Webhook(c) => Ok(Plan {
                messages: vec![c.plan(&self.name, report)],
                lookup_error: None,
            }),
            Kind::Log(c) => Ok(Plan {
                messages: vec![c.plan(&self.name, report)],
                lookup_error: None,
            }),
        }
    }

    /// Sends one message. Not idempotent (the peer sees a second copy if
    /// called twice): the outbox calls it once per claim. `Temporary` errors
    /// are worth a retry, `Permanent` ones are not.
    pub async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        match &self.kind {
            Kind::Email(c) => c.send(message).await,
            Kind::Webhook(c) => c.send(message).await,
            Kind::Log(c) => c.send(&self.name, message),
        }
    }
}

#[async_trait]
impl Notifier for Channel {
    fn driver(&self) -> &'static str {
        self.driver_name()
    }

    /// Plans and sends every message now, without an outbox: one failed
    /// recipient does not stop the others; the result reports the first
    /// failure (temporary if any failure was).
    async fn notify(&self, report: &IncidentReport) -> Result<(), NotifyError> {
        let driver = self.driver_name();
        let plan = self
            .plan(report)
            .await
            .map_err(|e| NotifyError::Permanent {
                driver,
                detail: e.to_string(),
            })?;
        let total = plan.messages.len();
        let mut failures: Vec<NotifyError> = Vec::new();
        for m in &plan.messages {
            if let Err(e) = self.send(m).await {
                tracing::warn!(channel = %self.name, message = %m.id, error = %e, "notification failed");
                failures.push(e);
            }
        }
        if let Some(e) = plan.lookup_error {
            failures.push(NotifyError::Temporary {
                driver,
                detail: format!("owner lookup: {e}"),
            });
        }
        let Some(first) = failures.first() else {
            return Ok(());
        };
        let detail = format!(
            "{} of {total} messages failed; first: {first}",
            failures.len()
        );
        if failures.iter().any(NotifyError::is_retryable) {
            Err(NotifyError::Temporary { driver, detail })
        } else {
            Err(NotifyError::Permanent { driver, detail })
        }
    }
}
