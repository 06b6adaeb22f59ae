//! The `log` driver: one structured log line per incident.

use novaha_core::drivers::notify::{IncidentReport, NotifyError};

use crate::message::{Audience, Message, Payload, message_id};
use crate::render::Counts;

/// The `log` driver. Stateless; it never fails.
pub(crate) struct LogChannel;

impl LogChannel {
    /// The one message a report makes: the counts the log line carries.
    pub fn plan(&self, channel: &str, report: &IncidentReport) -> Message {
        let c = Counts::of(&report.instances);
        Message {
            id: message_id(&report.incident, channel, "log"),
            incident: report.incident.clone(),
            node: report.node.to_string(),
            channel: channel.to_owned(),
            recipient: "log".into(),
            audience: Audience::Machine,
            payload: Payload::Log {
                total: c.total,
                done: c.done,
                error: c.error,
                skipped: c.skipped,
                pending: c.pending,
                ha_node: report.ha_node.as_ref().map(ToString::to_string),
                fence_driver: report.fence.as_ref().map(|f| f.driver.clone()),
            },
        }
    }

    /// Writes the planned message as one structured log line.
    pub fn send(&self, channel: &str, m: &Message) -> Result<(), NotifyError> {
        let Payload::Log {
            total,
            done,
            error,
            skipped,
            pending,
            ha_node,
            fence_driver,
        } = &m.payload
        else {
            return Err(NotifyError::Permanent {
                driver: "log",
                detail: format!("message {} is not a log message", m.id),
            });
        };
        let level_error = *error > 0 || *pending > 0;
        if level_error {
            tracing::error!(
                channel,
                incident = %m.incident,
                node = %m.node,
                ha_node = ha_node.as_deref().unwrap_or("-"),
                fence_driver = fence_driver.as_deref().unwrap_or("-"),
                total, done, error, skipped, pending,
                "incident notification: some instances were not recovered"
            );
        } else {
            tracing::info!(
                channel,
                incident = %m.incident,
                node = %m.node,
                ha_node = ha_node.as_deref().unwrap_or("-"),
                fence_driver = fence_driver.as_deref().unwrap_or("-"),
                total, done, error, skipped, pending,
                "incident notification"
            );
        }
        Ok(())
    }
}
