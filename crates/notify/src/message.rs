//! One rendered notification for one recipient of one channel, and its
//! stable id.

use novaha_core::drivers::notify::DirectoryError;
use serde::{Deserialize, Serialize};

/// Who a message is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Audience {
    /// An operator: the whole incident.
    Admin,
    /// An instance owner or project member: only their instances.
    Owner {
        /// The Keystone user ids this address stands for.
        user_ids: Vec<String>,
        /// How many instances the message lists.
        instances: usize,
    },
    /// A machine (webhook, log): the whole incident.
    Machine,
}

/// What to send, fully rendered, so that a resuming leader needs no
/// directory lookup and no template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    /// An e-mail with a plain-text body and an HTML alternative.
    Email {
        /// Sender address.
        from: String,
        /// The one recipient address.
        to: String,
        /// Subject line.
        subject: String,
        /// Plain-text body.
        text: String,
        /// HTML alternative.
        html: String,
    },
    /// A webhook JSON body (see [`crate::WEBHOOK_SCHEMA`]).
    Webhook {
        /// The body to POST.
        body: serde_json::Value,
    },
    /// One structured log line.
    Log {
        /// Instances in the incident.
        total: usize,
        /// Instances that landed elsewhere.
        done: usize,
        /// Instances in error.
        error: usize,
        /// Instances skipped on purpose.
        skipped: usize,
        /// Instances not final yet.
        pending: usize,
        /// The HA node used, if any.
        ha_node: Option<String>,
        /// The fence driver, if fenced.
        fence_driver: Option<String>,
    },
}

/// One message of the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Stable id: see [`message_id`].
    pub id: String,
    /// The incident it tells about.
    pub incident: String,
    /// The failed node.
    pub node: String,
    /// The channel (`[[notify]]` name) that sends it.
    pub channel: String,
    /// A human-readable recipient: an address, or the channel kind for
    /// webhook and log. Never a secret.
    pub recipient: String,
    /// Who it is for.
    pub audience: Audience,
    /// The rendered content.
    pub payload: Payload,
}

/// FNV-1a, 64 bit: a tiny hash that is stable across Rust versions and
/// builds (std's `DefaultHasher` is not), so two leaders running different
/// binaries derive the same ids.
pub(crate) fn fnv1a64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no part can contain keeps ("a","bc") != ("ab","c").
            h ^= 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Keeps a K/V-key-safe excerpt of `s`: ASCII letters, digits, `-`, `_`
/// and `.` (at most 48 characters), everything else as `_`.
fn key_safe(s: &str) -> String {
    s.chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The stable id of the message of `channel` to `recipient_key` about
/// `incident`: readable prefix plus a hash of all three. The same incident,
/// channel and recipient always give the same id, whoever computes it, so a
/// retried or resumed incident finds the message already queued (or sent)
/// and never queues it twice. `recipient_key` is normalised by the caller
/// (e-mail addresses lowercased).
pub fn message_id(incident: &str, channel: &str, recipient_key: &str) -> String {
    format!(
        "{}.{}.{:016x}",
        key_safe(incident),
        key_safe(channel),
        fnv1a64(&[incident, channel, recipient_key])
    )
}

/// What planning one report produced.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Every message to queue.
    pub messages: Vec<Message>,
    /// Set when owners could not be looked up: no owner message was planned
    /// (owner messages are planned all or nothing, so that a retry plans
    /// complete ones); admin messages are in `messages`.
    pub lookup_error: Option<DirectoryError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_key_safe() {
        let a = message_id("inc-1", "email", "admin:ops@example.org");
        assert_eq!(a, message_id("inc-1", "email", "admin:ops@example.org"));
        assert_ne!(a, message_id("inc-1", "email", "owner:ops@example.org"));
        assert_ne!(a, message_id("inc-2", "email", "admin:ops@example.org"));
        assert_ne!(a, message_id("inc-1", "email2", "admin:ops@example.org"));
        let odd = message_id("inc/with spaces?", "e", "x");
        assert!(odd.starts_with("inc_with_spaces_.e."), "{odd}");
        assert!(!odd.contains('/'));
        // Pinned: a change here would re-send every queued message after an
        // upgrade.
        assert_eq!(fnv1a64(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a64(&["a", "bc"]), fnv1a64(&["ab", "c"]));
    }
}
