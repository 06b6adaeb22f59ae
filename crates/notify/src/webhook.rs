//! The `webhook` driver: one JSON POST per incident (schema
//! [`crate::WEBHOOK_SCHEMA`]), with a Slack-compatible `text` field.

use std::time::Duration;

use novaha_core::Secret;
use novaha_core::drivers::notify::{IncidentReport, NotifyError};
use novaha_core::http::{CappedBody, ERROR_BODY_LIMIT};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::error::Error;
use crate::message::{Audience, Message, Payload, message_id};
use crate::render::webhook_body;
use crate::settings::WebhookSettings;

const DRIVER: &str = "webhook";
/// The longest excerpt of a receiver's error answer kept in an error.
const EXCERPT_CHARS: usize = 200;

pub(crate) struct WebhookChannel {
    client: reqwest::Client,
    url: Secret,
    /// `scheme://host:port`: what logs and errors may show of the URL.
    shown: String,
}

impl WebhookChannel {
    /// Checks the URL (http or https) and builds the HTTP client; errors
    /// never show the URL past its host, it may hold a token.
    pub fn new(s: &WebhookSettings) -> Result<Self, Error> {
        let url = url::Url::parse(s.url.expose())
            .map_err(|e| Error::Config(format!("webhook url: not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "webhook url: scheme {} is not http or https",
                url.scheme()
            )));
        }
        let shown = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or("-"),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut headers = HeaderMap::new();
        for (name, value) in &s.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Config(format!("webhook header {name:?}: invalid name")))?;
            let mut v = HeaderValue::from_str(value.expose())
                .map_err(|_| Error::Config(format!("webhook header {name}: invalid value")))?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        let mut b = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            .default_headers(headers)
            .user_agent(concat!("novaha/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &s.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| Error::Config(format!("webhook ca_file {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("webhook ca_file {}: {e}", path.display())))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if s.insecure {
            tracing::warn!(webhook = %shown, "webhook TLS certificate checks are disabled (insecure = true)");
            b = b.danger_accept_invalid_certs(true);
        }
        let client = b
            .build()
            .map_err(|e| Error::Config(format!("webhook client: {}", e.without_url())))?;
        Ok(Self {
            client,
            url: s.url.clone(),
            shown,
        })
    }

    /// The one message a report makes: its JSON body, planned before it is
    /// sent so the outbox can store it.
    pub fn plan(&self, channel: &str, report: &IncidentReport) -> Message {
        let id = message_id(&report.incident, channel, "webhook");
        Message {
            payload: Payload::Webhook {
                body: webhook_body(&id, report),
            },
            id,
            incident: report.incident.clone(),
            node: report.node.to_string(),
            channel: channel.to_owned(),
            recipient: format!("webhook {}", self.shown),
            audience: Audience::Machine,
        }
    }

    /// POSTs one planned message; only the answer's status counts.
    pub async fn send(&self, m: &Message) -> Result<(), NotifyError> {
        let Payload::Webhook { body } = &m.payload else {
            return Err(NotifyError::Permanent {
                driver: DRIVER,
                detail: format!("message {} is not a webhook message", m.id),
            });
        };
        let mut res = self
            .client
            .post(self.url.expose())
            .header("Idempotency-Key", &m.id)
            .json(body)
            .send()
            .await
            .map_err(|e| NotifyError::Temporary {
                driver: DRIVER,
                detail: format!("POST to {}: {}", self.shown, e.without_url()),
            })?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        // Only an excerpt is kept: read no more of the body than that needs.
        let mut body = CappedBody::new(ERROR_BODY_LIMIT);
        while let Ok(Some(chunk)) = res.chunk().await
            && body.push(&chunk)
        {}
        let text = String::from_utf8_lossy(&body.finish().0).into_owned();
        let excerpt = novaha_core::text::excerpt(&text, EXCERPT_CHARS, &[]);
        let detail = format!("POST to {}: HTTP {status}: {excerpt}", self.shown);
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(NotifyError::Temporary {
                driver: DRIVER,
                detail,
            })
        } else {
            Err(NotifyError::Permanent {
                driver: DRIVER,
                detail,
            })
        }
    }
}
