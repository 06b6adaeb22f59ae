//! `[[notify]]`: who is told about a recovery, one table per notifier,
//! tagged by driver (the notify stage adds keys to its variant).

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

/// One `[[notify]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum NotifyConfig {
    /// `driver = "email"`: SMTP to the admins and the instances' owners.
    Email(EmailNotify),
    /// `driver = "webhook"`: a JSON POST per event.
    Webhook(WebhookNotify),
    /// `driver = "log"`: a log line per event.
    Log(LogNotify),
}

impl NotifyConfig {
    /// The driver's name as written in the file.
    pub fn driver(&self) -> &'static str {
        match self {
            Self::Email(_) => "email",
            Self::Webhook(_) => "webhook",
            Self::Log(_) => "log",
        }
    }

    /// Checks the `index`-th table.
    pub fn validate(&self, index: usize, problems: &mut Problems) {
        let at = |key: &str| format!("notify[{index}].{key}");
        match self {
            Self::Email(c) => {
                match url::Url::parse(&c.smtp_url) {
                    Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host().is_some() => {}
                    Ok(_) => problems.push(
                        at("smtp_url"),
                        format!(
                            "must be smtp://HOST[:PORT] or smtps://HOST[:PORT], got {:?}",
                            c.smtp_url
                        ),
                    ),
                    Err(e) => {
                        problems.push(at("smtp_url"), format!("not a URL: {:?}: {e}", c.smtp_url))
                    }
                }
                if !c.from.contains('@') {
                    problems.push(at("from"), format!("not an e-mail address: {:?}", c.from));
                }
                for a in c.admins.iter().filter(|a| !a.contains('@')) {
                    problems.push(at("admins"), format!("not an e-mail address: {a:?}"));
                }
                if let Some(f) = &c.password_file
                    && let Err(e) = std::fs::metadata(f)
                {
                    problems.push(
                        at("password_file"),
                        format!("cannot read {}: {e}", f.display()),
                    );
                }
            }
            Self::Webhook(c) => match url::Url::parse(&c.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(_) => problems.push(at("url"), format!("must be http(s), got {:?}", c.url)),
                Err(e) => problems.push(at("url"), format!("not a URL: {:?}: {e}", c.url)),
            },
            Self::Log(_) => {}
        }
    }
}

/// `driver = "email"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailNotify {
    /// `smtp://` (STARTTLS opportunistic), `smtps://`, `?tls=required`.
    pub smtp_url: String,
    /// The sender address.
    pub from: String,
    /// Who gets the summary of every recovery.
    #[serde(default)]
    pub admins: Vec<String>,
    /// SMTP login user, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the SMTP password (never in the config file itself).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `driver = "webhook"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookNotify {
    /// Where events are POSTed as JSON.
    pub url: String,
}

/// `driver = "log"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogNotify {}
