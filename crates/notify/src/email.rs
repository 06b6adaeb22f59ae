//! The `email` driver: SMTP through lettre (STARTTLS, implicit TLS or
//! plain; optional AUTH). One summary per admin address, one message per
//! owner address listing only their instances.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use novaha_core::drivers::notify::{
    Directory, DirectoryError, IncidentReport, InstanceOutcome, NotifyError, Person,
};

use crate::error::Error;
use crate::message::{Audience, Message, Payload, Plan, message_id};
use crate::render::Templates;
use crate::settings::EmailSettings;

const DRIVER: &str = "email";

/// How the connection is secured, from the `smtp_url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://...?tls=required`: STARTTLS or fail.
    Required,
    /// `smtp://` (default): STARTTLS when the server offers it.
    Opportunistic,
    /// `smtp://...?tls=none`: never TLS.
    None,
}

/// The parts of an `smtp_url` novaha uses.
#[derive(Debug, PartialEq, Eq)]
struct SmtpUrl {
    host: String,
    port: u16,
    tls: TlsMode,
}

fn parse_smtp_url(raw: &str) -> Result<SmtpUrl, Error> {
    // Never echo the URL itself: an operator may have put a password in it.
    let url =
        url::Url::parse(raw).map_err(|e| Error::Config(format!("smtp_url: not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(
            "smtp_url: must not hold credentials; use `user` and `password_file`".into(),
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Error::Config("smtp_url: no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let mut tls_param = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "tls" => tls_param = Some(v.into_owned()),
            other => {
                return Err(Error::Config(format!(
                    "smtp_url: unknown query parameter {other:?} (only tls=required|opportunistic|none)"
                )));
            }
        }
    }
    let (tls, default_port) = match url.scheme() {
        "smtps" => {
            if tls_param.is_some() {
                return Err(Error::Config(
                    "smtp_url: smtps:// is always TLS; drop the tls parameter".into(),
                ));
            }
            (TlsMode::Implicit, 465)
        }
        "smtp" => {
            let mode = match tls_param.as_deref() {
                None | Some("opportunistic") => TlsMode::Opportunistic,
                Some("required") => TlsMode::Required,
                Some("none") => TlsMode::None,
                Some(other) => {
                    return Err(Error::Config(format!(
                        "smtp_url: tls={other:?} is not required, opportunistic or none"
                    )));
                }
            };
            (mode, 25)
        }
        other => {
            return Err(Error::Config(format!(
                "smtp_url: scheme {other:?} is not smtp or smtps"
            )));
        }
    };
    Ok(SmtpUrl {
        host,
        port: url.port().unwrap_or(default_port),
        tls,
    })
}

fn read_secret_file(what: &str, path: &std::path::Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or("").to_owned();
    if first.is_empty() {
        return Err(Error::Config(format!("{what} {}: empty", path.display())));
    }
    Ok(first)
}

pub(crate) struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
    admins: Vec<String>,
    directory: Arc<dyn Directory>,
    templates: Templates,
    notify_owners: bool,
    notify_project_members: bool,
    timeout: Duration,
    /// `host:port`, for logs and errors.
    server: String,
}

impl EmailChannel {
    /// Checks the settings (SMTP URL, sender and admin addresses) and
    /// builds the SMTP transport; nothing is sent yet. `directory` finds the
    /// owners' and project members' addresses.
    pub fn new(s: &EmailSettings, directory: Arc<dyn Directory>) -> Result<Self, Error> {
        let url = parse_smtp_url(&s.smtp_url)?;
        s.from
            .parse::<Mailbox>()
            .map_err(|e| Error::Config(format!("email from {:?}: {e}", s.from)))?;
        for a in &s.admins {
            a.parse::<Mailbox>()
                .map_err(|e| Error::Config(format!("email admin address {a:?}: {e}")))?;
        }
        let tls = if url.tls == TlsMode::None {
            Tls::None
        } else {
            let mut b = TlsParameters::builder(url.host.clone());
            if let Some(path) = &s.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::Config(format!("email ca_file {}: {e}", path.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| Error::Config(format!("email ca_file {}: {e}", path.display())))?;
                b = b.add_root_certificate(cert);
            }
            if s.insecure {
                tracing::warn!(server = %url.host, "smtp TLS certificate checks are disabled (insecure = true)");
                b = b
                    .dangerous_accept_invalid_certs(true)
                    .dangerous_accept_invalid_hostnames(true);
            }
            let params = b
                .build_rustls()
                .map_err(|e| Error::Config(format!("email tls: {e}")))?;
            match url.tls {
                TlsMode::Implicit => Tls::Wrapper(params),
                TlsMode::Required => Tls::Required(params),
                _ => Tls::Opportunistic(params),
            }
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.clone())
            .port(url.port)
            .tls(tls)
            .timeout(Some(s.timeout));
        match (&s.user, &s.password_file) {
            (Some(user), Some(path)) => {
                let password = read_secret_file("email password_file", path)?;
                b = b.credentials(Credentials::new(user.clone(), password));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Config("email: user needs password_file".into()));
            }
            (None, Some(_)) => {
                return Err(Error::Config("email: password_file needs user".into()));
            }
        }
        Ok(Self {
            transport: b.build(),
            from: s.from.clone(),
            admins: s.admins.clone(),
            directory,
            templates: Templates::load(s.template_dir.as_deref())?,
            notify_owners: s.notify_owners,
            notify_project_members: s.notify_project_members,
            timeout: s.timeout,
            server: format!("{}:{}", url.host, url.port),
        })
    }

    fn email(
        &self,
        channel: &str,
        report: &IncidentReport,
        kind: &str,
        (to, name): (&str, Option<&str>),
        instances: &[&InstanceOutcome],
        audience: Audience,
    ) -> Result<Message, Error> {
        let r = self.templates.render(kind, report, instances, to, name)?;
        Ok(Message {
            id: message_id(
                &report.incident,
                channel,
                &format!("{kind}:{}", to.to_lowercase()),
            ),
            incident: report.incident.clone(),
            node: report.node.to_string(),
            channel: channel.to_owned(),
            recipient: to.to_owned(),
            audience,
            payload: Payload::Email {
                from: self.from.clone(),
                to: to.to_owned(),
                subject: r.subject,
                text: r.text,
                html: r.html,
            },
        })
    }

    /// The mails one report makes: one per admin and, when enabled, one per
    /// owner or project member (looked up in the directory), each address
    /// once; planned before anything is sent so the outbox can store them.
    pub async fn plan(&self, channel: &str, report: &IncidentReport) -> Result<Plan, Error> {
        let all: Vec<&InstanceOutcome> = report.instances.iter().collect();
        let mut messages = Vec::new();
        let mut admin_set = BTreeSet::new();
        for a in &self.admins {
            // One incident never mails the same person twice.
            if admin_set.insert(a.to_lowercase()) {
                messages.push(self.email(
                    channel,
                    report,
                    "admin",
                    (a, None),
                    &all,
                    Audience::Admin,
                )?);
            }
        }
        let owners = match self.owners(report).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(incident = %report.incident, error = %e, "owner lookup failed; only the admin summary is queued");
                return Ok(Plan {
                    messages,
                    lookup_error: Some(e),
                });
            }
        };
        for (key, o) in owners {
            if admin_set.contains(&key) {
                tracing::debug!(incident = %report.incident, "owner is an admin; the admin summary covers them");
                continue;
            }
            let mine: Vec<&InstanceOutcome> =
                o.instances.iter().map(|&i| &report.instances[i]).collect();
            let audience = Audience::Owner {
                user_ids: o.user_ids.into_iter().collect(),
                instances: mine.len(),
            };
            messages.push(self.email(
                channel,
                report,
                "owner",
                (&o.email, o.name.as_deref()),
                &mine,
                audience,
            )?);
        }
        Ok(Plan {
            messages,
            lookup_error: None,
        })
    }

    /// Every owner address (lowercased) -> who and which instances
    /// (indexes into `report.instances`). All or nothing: any lookup error
    /// fails the whole plan so that a retry plans complete messages.
    async fn owners(
        &self,
        report: &IncidentReport,
    ) -> Result<BTreeMap<String, Owner>, DirectoryError> {
        let mut out: BTreeMap<String, Owner> = BTreeMap::new();
        let add = |p: &Person, idx: usize, out: &mut BTreeMap<String, Owner>| {
            let Some(email) = p.email.as_deref().filter(|e| !e.trim().is_empty()) else {
                tracing::debug!(user = %p.user_id, "user has no e-mail address");
                return;
            };
            let o = out.entry(email.to_lowercase()).or_insert_with(|| Owner {
                email: email.trim().to_owned(),
                name: p.name.clone(),
                user_ids: BTreeSet::new(),
                instances: BTreeSet::new(),
            });
            o.user_ids.insert(p.user_id.clone());
            o.instances.insert(idx);
        };
        if self.notify_owners {
            let mut users: HashMap<&str, Option<Person>> = HashMap::new();
            for (idx, inst) in report.instances.iter().enumerate() {
                let Some(uid) = inst.owner.as_deref() else {
                    continue;
                };
                if !users.contains_key(uid) {
                    let p = self.directory.user(uid).await?;
                    if p.is_none() {
                        tracing::warn!(user = uid, instance = %inst.id, "instance owner not found in the directory");
                    }
                    users.insert(uid, p);
                }
                if let Some(Some(p)) = users.get(uid) {
                    add(p, idx, &mut out);
                }
            }
        }
        if self.notify_project_members {
            let mut projects: HashMap<&str, Vec<Person>> = HashMap::new();
            for (idx, inst) in report.instances.iter().enumerate() {
                let Some(pid) = inst.project.as_deref() else {
                    continue;
                };
                if !projects.contains_key(pid) {
                    let members = self.directory.project_members(pid).await?;
                    projects.insert(pid, members);
                }
                for p in projects.get(pid).map(Vec::as_slice).unwrap_or_default() {
                    add(p, idx, &mut out);
                }
            }
        }
        Ok(out)
    }

    /// Sends one planned mail through the SMTP server, within the
    /// configured timeout.
    pub async fn send(&self, m: &Message) -> Result<(), NotifyError> {
        let Payload::Email {
            from,
            to,
            subject,
            text,
            html,
        } = &m.payload
        else {
            return Err(permanent(format!("message {} is not an e-mail", m.id)));
        };
        let from: Mailbox = from
            .parse()
            .map_err(|e| permanent(format!("invalid sender address {from:?}: {e}")))?;
        let to_box: Mailbox = to
            .parse()
            .map_err(|e| permanent(format!("invalid recipient address {to:?}: {e}")))?;
        let email = lettre::Message::builder()
            .from(from)
            .to(to_box)
            .subject(subject.as_str())
            .message_id(Some(format!("<{}@novaha>", m.id)))
            .multipart(MultiPart::alternative_plain_html(
                text.clone(),
                html.clone(),
            ))
            .map_err(|e| permanent(format!("build message {} for {to}: {e}", m.id)))?;
        let sent = tokio::time::timeout(self.timeout, self.transport.send(email)).await;
        match sent {
            Err(_) => Err(NotifyError::Temporary {
                driver: DRIVER,
                detail: format!(
                    "smtp {} for {to}: timed out after {:?}",
                    self.server, self.timeout
                ),
            }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let detail = format!("smtp {} for {to}: {e}", self.server);
                if is_refused_for_good(&e) {
                    Err(permanent(detail))
                } else {
                    Err(NotifyError::Temporary {
                        driver: DRIVER,
                        detail,
                    })
                }
            }
        }
    }
}

fn permanent(detail: String) -> NotifyError {
    NotifyError::Permanent {
        driver: DRIVER,
        detail,
    }
}

/// A 5xx answer about this message or address is final. Authentication
/// refusals (530, 534, 535, 538) are 5xx too, but they are a config problem
/// that an operator fixes, after which the message should still go out: retry.
fn is_refused_for_good(e: &lettre::transport::smtp::Error) -> bool {
    if !e.is_permanent() {
        return false;
    }
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    !matches!(code.as_str(), "530" | "534" | "535" | "538")
}

struct Owner {
    email: String,
    name: Option<String>,
    user_ids: BTreeSet<String>,
    instances: BTreeSet<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        let u = parse_smtp_url("smtp://127.0.0.1:2525").expect("ok");
        assert_eq!(
            u,
            SmtpUrl {
                host: "127.0.0.1".into(),
                port: 2525,
                tls: TlsMode::Opportunistic
            }
        );
        assert_eq!(
            parse_smtp_url("smtps://mail.example.org").expect("ok").port,
            465
        );
        assert_eq!(
            parse_smtp_url("smtps://mail.example.org").expect("ok").tls,
            TlsMode::Implicit
        );
        assert_eq!(
            parse_smtp_url("smtp://m?tls=required").expect("ok").tls,
            TlsMode::Required
        );
        assert_eq!(
            parse_smtp_url("smtp://m?tls=none").expect("ok").tls,
            TlsMode::None
        );
        assert_eq!(parse_smtp_url("smtp://m").expect("ok").port, 25);
        for bad in [
            "http://m",
            "smtp://m?tls=maybe",
            "smtp://m?x=1",
            "smtps://m?tls=none",
            "nonsense",
        ] {
            assert!(parse_smtp_url(bad).is_err(), "{bad}");
        }
        let err = parse_smtp_url("smtp://bob:hunter2@m").expect_err("credentials refused");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
