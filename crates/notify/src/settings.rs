//! The `[[notify]]` config entries, one variant per driver.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use novaha_core::Secret;
use novaha_core::validate::{Problem, Validate};
use serde::Deserialize;

/// One `[[notify]]` entry, tagged by `driver`. Unknown keys are rejected.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "driver", rename_all = "snake_case")]
pub enum NotifySettings {
    /// `driver = "email"`: SMTP to admins and instance owners.
    Email(EmailSettings),
    /// `driver = "webhook"`: a JSON POST per incident.
    Webhook(WebhookSettings),
    /// `driver = "log"`: one structured log line per incident.
    Log(LogSettings),
}

impl NotifySettings {
    /// The channel's name: `name` if set, else the driver name. Names are
    /// part of every outbox message id, so two channels need two names.
    pub fn channel_name(&self) -> &str {
        match self {
            Self::Email(s) => s.name.as_deref().unwrap_or("email"),
            Self::Webhook(s) => s.name.as_deref().unwrap_or("webhook"),
            Self::Log(s) => s.name.as_deref().unwrap_or("log"),
        }
    }
}

/// What can be checked without sending anything: addresses, URL schemes,
/// readable files. A webhook URL is a secret: problems never print it.
/// (That channel names are unique is the list's rule: the daemon checks it.)
impl Validate for NotifySettings {
    fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut file = |key: &str, path: &Option<PathBuf>| {
            if let Some(p) = path
                && let Err(e) = std::fs::metadata(p)
            {
                out.push(Problem::new(
                    key,
                    format!("cannot read {}: {e}", p.display()),
                ));
            }
        };
        match self {
            Self::Email(c) => {
                file("password_file", &c.password_file);
                file("ca_file", &c.ca_file);
                file("template_dir", &c.template_dir);
                match url::Url::parse(&c.smtp_url) {
                    Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host().is_some() => {
                        if !u.username().is_empty() || u.password().is_some() {
                            out.push(Problem::new(
                                "smtp_url",
                                "must not hold credentials: use `user` and `password_file`",
                            ));
                        }
                    }
                    Ok(_) => out.push(Problem::new(
                        "smtp_url",
                        format!(
                            "must be smtp://HOST[:PORT] or smtps://HOST[:PORT], got {:?}",
                            c.smtp_url
                        ),
                    )),
                    Err(e) => out.push(Problem::new("smtp_url", format!("not a URL: {e}"))),
                }
                if !c.from.contains('@') {
                    out.push(Problem::new(
                        "from",
                        format!("not an e-mail address: {:?}", c.from),
                    ));
                }
                for a in c.admins.iter().filter(|a| !a.contains('@')) {
                    out.push(Problem::new(
                        "admins",
                        format!("not an e-mail address: {a:?}"),
                    ));
                }
            }
            Self::Webhook(c) => {
                file("ca_file", &c.ca_file);
                match url::Url::parse(c.url.expose()) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    Ok(u) => out.push(Problem::new(
                        "url",
                        format!(
                            "must be an http(s) URL with a host, got scheme {:?}",
                            u.scheme()
                        ),
                    )),
                    Err(e) => out.push(Problem::new("url", format!("not a URL: {e}"))),
                }
            }
            Self::Log(_) => {}
        }
        out
    }
}

fn default_true() -> bool {
    true
}

fn default_email_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `driver = "email"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// Channel name (default `email`); must be unique among `[[notify]]`.
    #[serde(default)]
    pub name: Option<String>,
    /// `smtp://host[:port]` (STARTTLS when offered), `smtp://...?tls=required`
    /// (STARTTLS or fail), `smtp://...?tls=none` (plain), `smtps://host[:port]`
    /// (implicit TLS). No credentials in the URL: use `user` and
    /// `password_file`.
    pub smtp_url: String,
    /// The sender address.
    pub from: String,
    /// Who gets the incident summary.
    #[serde(default)]
    pub admins: Vec<String>,
    /// SMTP AUTH user (with `password_file`).
    #[serde(default)]
    pub user: Option<String>,
    /// File holding the SMTP password (first line; trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle to trust in addition to the built-in roots (a private
    /// CA or a self-signed relay).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (never in production; logged loudly).
    #[serde(default)]
    pub insecure: bool,
    /// Folder with template overrides (`admin.subject.j2`, `admin.txt.j2`,
    /// `admin.html.j2`, `owner.subject.j2`, `owner.txt.j2`, `owner.html.j2`);
    /// a file absent there keeps the built-in template.
    #[serde(default)]
    pub template_dir: Option<PathBuf>,
    /// Mail each instance's owner (`user_id`) about their instances.
    #[serde(default = "default_true")]
    pub notify_owners: bool,
    /// Also mail every member of the instance's project (effective role
    /// assignments) that has an e-mail address.
    #[serde(default)]
    pub notify_project_members: bool,
    /// Timeout of one SMTP delivery.
    #[serde(default = "default_email_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `driver = "webhook"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Channel name (default `webhook`); must be unique among `[[notify]]`.
    #[serde(default)]
    pub name: Option<String>,
    /// Where to POST. Treated as a secret (a Slack URL holds its token):
    /// logs and errors show only scheme, host and port.
    pub url: Secret,
    /// Extra request headers (e.g. `Authorization`); values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// PEM CA bundle to trust in addition to the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (never in production; logged loudly).
    #[serde(default)]
    pub insecure: bool,
    /// Timeout of one POST.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `driver = "log"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Channel name (default `log`); must be unique among `[[notify]]`.
    #[serde(default)]
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        notify: Vec<NotifySettings>,
    }

    #[test]
    fn parses_every_driver_with_defaults() {
        let doc: Doc = toml::from_str(
            r#"
            [[notify]]
            driver = "email"
            smtp_url = "smtp://127.0.0.1:25"
            from = "novaha@example.org"
            admins = ["ops@example.org"]

            [[notify]]
            driver = "webhook"
            url = "https://hooks.example.org/T000/secret"
            headers = { Authorization = "Bearer abc" }
            timeout = "3s"

            [[notify]]
            driver = "log"
            "#,
        )
        .expect("valid config");
        let NotifySettings::Email(e) = &doc.notify[0] else {
            panic!("first is email")
        };
        assert!(e.notify_owners);
        assert!(!e.notify_project_members);
        assert_eq!(e.timeout, Duration::from_secs(30));
        let NotifySettings::Webhook(w) = &doc.notify[1] else {
            panic!("second is webhook")
        };
        assert_eq!(w.timeout, Duration::from_secs(3));
        assert!(!format!("{w:?}").contains("Bearer abc"));
        assert!(!format!("{w:?}").contains("secret"));
        assert_eq!(doc.notify[2].channel_name(), "log");
    }

    #[test]
    fn rejects_unknown_keys_and_drivers() {
        let err = toml::from_str::<Doc>(
            r#"
            [[notify]]
            driver = "email"
            smtp_url = "smtp://127.0.0.1:25"
            from = "a@b"
            admin = ["typo@example.org"]
            "#,
        )
        .err()
        .expect("unknown key rejected");
        assert!(err.to_string().contains("admin"), "{err}");
        let err = toml::from_str::<Doc>("[[notify]]\ndriver = \"pigeon\"\n")
            .err()
            .expect("unknown driver rejected");
        assert!(err.to_string().contains("pigeon"), "{err}");
    }
}
