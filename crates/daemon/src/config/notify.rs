//! `[[notify]]`: owned by the notify stage. Each table is a
//! [`novaha_notify::NotifySettings`] tagged by `driver` (`email`, `webhook`,
//! `log`), embedded as is; its keys are documented in docs/notifications.md.
//! The daemon checks what it can without sending anything.

use std::collections::BTreeSet;

use super::Problems;

pub use novaha_notify::NotifySettings as NotifyConfig;

/// The driver's name as written in the file.
pub fn driver(n: &NotifyConfig) -> &'static str {
    match n {
        NotifyConfig::Email(_) => "email",
        NotifyConfig::Webhook(_) => "webhook",
        NotifyConfig::Log(_) => "log",
    }
}

/// Checks every table: addresses, URL schemes, readable files, unique
/// channel names. A webhook URL is a secret: problems never print it.
pub fn validate(list: &[NotifyConfig], problems: &mut Problems) {
    let mut names = BTreeSet::new();
    for (index, n) in list.iter().enumerate() {
        let at = |key: &str| format!("notify[{index}].{key}");
        if !names.insert(n.channel_name().to_owned()) {
            problems.push(
                at("name"),
                format!(
                    "channel name {:?} is used twice; give each [[notify]] its own `name`",
                    n.channel_name()
                ),
            );
        }
        let mut file = |key: &str, path: &Option<std::path::PathBuf>| {
            if let Some(p) = path
                && let Err(e) = std::fs::metadata(p)
            {
                problems.push(at(key), format!("cannot read {}: {e}", p.display()));
            }
        };
        match n {
            NotifyConfig::Email(c) => {
                file("password_file", &c.password_file);
                file("ca_file", &c.ca_file);
                file("template_dir", &c.template_dir);
                match url::Url::parse(&c.smtp_url) {
                    Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host().is_some() => {
                        if !u.username().is_empty() || u.password().is_some() {
                            problems.push(
                                at("smtp_url"),
                                "must not hold credentials: use `user` and `password_file`",
                            );
                        }
                    }
                    Ok(_) => problems.push(
                        at("smtp_url"),
                        format!(
                            "must be smtp://HOST[:PORT] or smtps://HOST[:PORT], got {:?}",
                            c.smtp_url
                        ),
                    ),
                    Err(e) => problems.push(at("smtp_url"), format!("not a URL: {e}")),
                }
                if !c.from.contains('@') {
                    problems.push(at("from"), format!("not an e-mail address: {:?}", c.from));
                }
                for a in c.admins.iter().filter(|a| !a.contains('@')) {
                    problems.push(at("admins"), format!("not an e-mail address: {a:?}"));
                }
            }
            NotifyConfig::Webhook(c) => {
                file("ca_file", &c.ca_file);
                match url::Url::parse(c.url.expose()) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    Ok(u) => problems.push(
                        at("url"),
                        format!(
                            "must be an http(s) URL with a host, got scheme {:?}",
                            u.scheme()
                        ),
                    ),
                    Err(e) => problems.push(at("url"), format!("not a URL: {e}")),
                }
            }
            NotifyConfig::Log(_) => {}
        }
    }
}
