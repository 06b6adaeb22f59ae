//! Turning an incident report into text: the template context, the e-mail
//! templates (built in, overridable from files), the webhook body and the
//! plain-text instance table.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::Environment;
use novaha_core::drivers::notify::{IncidentReport, InstanceOutcome};
use novaha_core::record::InstanceState;
use serde::Serialize;

use crate::error::Error;

/// The `schema` field of every webhook body. Bump it on any incompatible
/// change; docs/notifications.md documents each version.
pub const WEBHOOK_SCHEMA: &str = "novaha.incident.v1";

/// The template names, in the order they are loaded.
pub(crate) const TEMPLATE_NAMES: [&str; 6] = [
    "admin.subject.j2",
    "admin.txt.j2",
    "admin.html.j2",
    "owner.subject.j2",
    "owner.txt.j2",
    "owner.html.j2",
];

fn builtin(name: &str) -> &'static str {
    match name {
        "admin.subject.j2" => include_str!("../templates/admin.subject.j2"),
        "admin.txt.j2" => include_str!("../templates/admin.txt.j2"),
        "admin.html.j2" => include_str!("../templates/admin.html.j2"),
        "owner.subject.j2" => include_str!("../templates/owner.subject.j2"),
        "owner.txt.j2" => include_str!("../templates/owner.txt.j2"),
        _ => include_str!("../templates/owner.html.j2"),
    }
}

/// Instance counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    pub total: usize,
    pub done: usize,
    pub error: usize,
    pub skipped: usize,
    /// Not final yet (pending or requested): a report sent before the end.
    pub pending: usize,
    /// Done by rebuilding from the image: root disk data lost.
    pub rebuilt: usize,
}

impl Counts {
    /// Counts instances by outcome.
    pub fn of<'a>(instances: impl IntoIterator<Item = &'a InstanceOutcome>) -> Self {
        let mut c = Self::default();
        for i in instances {
            c.total += 1;
            if i.rebuilt() {
                c.rebuilt += 1;
            }
            match i.state {
                InstanceState::Done => c.done += 1,
                InstanceState::Error => c.error += 1,
                InstanceState::Skipped => c.skipped += 1,
                InstanceState::Pending | InstanceState::Requested => c.pending += 1,
            }
        }
        c
    }
}

fn state_name(s: InstanceState) -> &'static str {
    match s {
        InstanceState::Pending => "pending",
        InstanceState::Requested => "requested",
        InstanceState::Done => "done",
        InstanceState::Error => "error",
        InstanceState::Skipped => "skipped",
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize)]
struct Step {
    phase: String,
    at: String,
}

#[derive(Serialize)]
struct FenceView {
    driver: String,
    verified_off_at: String,
}

#[derive(Serialize)]
struct InstanceView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    state: &'static str,
    prior_status: &'a str,
    old_host: &'a str,
    new_host: Option<&'a str>,
    error: Option<&'a str>,
    owner: Option<&'a str>,
    project: Option<&'a str>,
    /// `volume`, `shared`, `local` (absent in older reports).
    storage: Option<&'static str>,
    /// Rebuilt from its image: the root disk's data is lost.
    rebuilt: bool,
    /// What happened, in one sentence.
    outcome: String,
}

#[derive(Serialize)]
struct RecipientView<'a> {
    email: &'a str,
    name: Option<&'a str>,
}

/// What every template sees.
#[derive(Serialize)]
struct Context<'a> {
    incident: &'a str,
    node: &'a str,
    ha_node: Option<&'a str>,
    timeline: Vec<Step>,
    fence: Option<FenceView>,
    instances: Vec<InstanceView<'a>>,
    counts: Counts,
    /// The instances rebuilt from their image (root disk data lost).
    rebuilt: Vec<InstanceView<'a>>,
    /// The instances left for a human (skipped), with why.
    skipped: Vec<InstanceView<'a>>,
    /// The instances as an aligned plain-text table.
    table: String,
    recipient: RecipientView<'a>,
}

fn timeline(report: &IncidentReport) -> Vec<Step> {
    let mut steps: Vec<Step> = report
        .timeline
        .iter()
        .map(|(phase, at)| Step {
            phase: phase.clone(),
            at: ts(at),
        })
        .collect();
    // RFC 3339 in UTC sorts as text.
    steps.sort_by(|a, b| a.at.cmp(&b.at).then(a.phase.cmp(&b.phase)));
    steps
}

/// An aligned plain-text table of `instances`: one line each, the last
/// column saying what happened (moved where, rebuilt from the image and the
/// disk lost, not moved and why, failed and why).
pub(crate) fn instance_table(instances: &[&InstanceOutcome]) -> String {
    let header = [
        "INSTANCE",
        "ID",
        "PRIOR",
        "STORAGE",
        "STATE",
        "OLD HOST",
        "WHAT HAPPENED",
    ];
    let rows: Vec<[String; 7]> = instances
        .iter()
        .map(|i| {
            [
                i.name.clone().unwrap_or_else(|| "-".into()),
                i.id.clone(),
                i.prior_status.clone(),
                i.storage.map_or("-", |s| s.as_str()).into(),
                state_name(i.state).into(),
                i.old_host.clone(),
                i.summary(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (k, (cell, w)) in cells.iter().zip(width).enumerate() {
            if k + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&header);
    for r in &rows {
        out.push('\n');
        out.push_str(&line(&r.each_ref().map(String::as_str)));
    }
    out
}

/// A compiled set of the six e-mail templates.
pub(crate) struct Templates {
    env: Environment<'static>,
}

/// A rendered e-mail.
pub(crate) struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Templates {
    /// The built-in templates, each replaced by `<dir>/<name>` when that
    /// file exists. Each is compiled and test-rendered now, so a broken
    /// override fails at start-up.
    pub fn load(dir: Option<&Path>) -> Result<Self, Error> {
        let mut env = Environment::new();
        for name in TEMPLATE_NAMES {
            let source = match dir.map(|d| d.join(name)) {
                Some(path) if path.is_file() => {
                    std::fs::read_to_string(&path).map_err(|e| Error::Template {
                        name: name.to_owned(),
                        detail: format!("read {}: {e}", path.display()),
                    })?
                }
                _ => builtin(name).to_owned(),
            };
            env.add_template_owned(name, source)
                .map_err(|e| Error::Template {
                    name: name.to_owned(),
                    detail: e.to_string(),
                })?;
        }
        let t = Self { env };
        let sample = sample_report();
        let all: Vec<&InstanceOutcome> = sample.instances.iter().collect();
        t.render("admin", &sample, &all, "ops@example.org", None)?;
        t.render("owner", &sample, &all, "owner@example.org", Some("Owner"))?;
        Ok(t)
    }

    /// Renders the `kind` ("admin" or "owner") e-mail about `instances`.
    pub fn render(
        &self,
        kind: &str,
        report: &IncidentReport,
        instances: &[&InstanceOutcome],
        email: &str,
        name: Option<&str>,
    ) -> Result<RenderedEmail, Error> {
        let ctx = Context {
            incident: &report.incident,
            node: report.node.as_str(),
            ha_node: report.ha_node.as_ref().map(|n| n.as_str()),
            timeline: timeline(report),
            fence: report.fence.as_ref().map(|f| FenceView {
                driver: f.driver.clone(),
                verified_off_at: ts(&f.verified_off_at),
            }),
            instances: instances.iter().map(|i| view(i)).collect(),
            counts: Counts::of(instances.iter().copied()),
            rebuilt: instances
                .iter()
                .filter(|i| i.rebuilt())
                .map(|i| view(i))
                .collect(),
            skipped: instances
                .iter()
                .filter(|i| i.state == InstanceState::Skipped)
                .map(|i| view(i))
                .collect(),
            table: instance_table(instances),
            recipient: RecipientView { email, name },
        };
        let value = minijinja::Value::from(minijinja::value::Serde(&ctx));
        let one = |suffix: &str| -> Result<String, Error> {
            let name = format!("{kind}.{suffix}.j2");
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&value))
                .map_err(|e| Error::Template {
                    name,
                    detail: e.to_string(),
                })
        };
        let subject = one("subject")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(RenderedEmail {
            subject,
            text: one("txt")?,
            html: one("html")?,
        })
    }
}

fn view(i: &InstanceOutcome) -> InstanceView<'_> {
    InstanceView {
        id: &i.id,
        name: i.name.as_deref(),
        state: state_name(i.state),
        prior_status: &i.prior_status,
        old_host: &i.old_host,
        new_host: i.new_host.as_deref(),
        error: i.error.as_deref(),
        owner: i.owner.as_deref(),
        project: i.project.as_deref(),
        storage: i.storage.map(|s| s.as_str()),
        rebuilt: i.rebuilt(),
        outcome: i.summary(),
    }
}

/// A one-paragraph summary for chat (Slack's `text` field).
pub(crate) fn chat_text(report: &IncidentReport) -> String {
    let c = Counts::of(&report.instances);
    let mut s = format!(
        "novaha: compute node {} failed; {}/{} instances recovered",
        report.node, c.done, c.total
    );
    if let Some(ha) = &report.ha_node {
        s.push_str(&format!(" onto {ha}"));
    }
    if c.error > 0 {
        s.push_str(&format!(", {} in error", c.error));
    }
    if c.skipped > 0 {
        s.push_str(&format!(", {} skipped", c.skipped));
    }
    if c.rebuilt > 0 {
        s.push_str(&format!(", {} rebuilt from image (disk lost)", c.rebuilt));
    }
    if c.pending > 0 {
        s.push_str(&format!(", {} unfinished", c.pending));
    }
    s.push_str(&format!(" (incident {})", report.incident));
    s
}

/// The webhook body, schema [`WEBHOOK_SCHEMA`].
pub(crate) fn webhook_body(id: &str, report: &IncidentReport) -> serde_json::Value {
    let counts = Counts::of(&report.instances);
    let instances: Vec<InstanceView<'_>> = report.instances.iter().map(view).collect();
    serde_json::json!({
        "schema": WEBHOOK_SCHEMA,
        "id": id,
        "incident": report.incident,
        "node": report.node.as_str(),
        "ha_node": report.ha_node.as_ref().map(|n| n.as_str()),
        "timeline": report.timeline.iter().map(|(k, v)| (k.clone(), ts(v))).collect::<std::collections::BTreeMap<_, _>>(),
        "fence": report.fence.as_ref().map(|f| serde_json::json!({
            "driver": f.driver,
            "verified_off_at": ts(&f.verified_off_at),
        })),
        "summary": counts,
        "instances": instances,
        "text": chat_text(report),
    })
}

fn sample_report() -> IncidentReport {
    let at = DateTime::<Utc>::UNIX_EPOCH;
    IncidentReport {
        incident: "sample".into(),
        node: "compute-1".into(),
        ha_node: Some("ha-1".into()),
        timeline: [("detected".to_owned(), at)].into_iter().collect(),
        fence: Some(novaha_core::record::FenceRecord {
            driver: "ipmi".into(),
            verified_off_at: at,
        }),
        instances: vec![InstanceOutcome {
            id: "00000000-0000-0000-0000-000000000000".into(),
            name: Some("vm".into()),
            state: InstanceState::Done,
            prior_status: "ACTIVE".into(),
            old_host: "compute-1".into(),
            new_host: Some("ha-1".into()),
            error: None,
            owner: Some("u".into()),
            project: Some("p".into()),
            storage: Some(novaha_core::storage::StorageClass::Volume),
        }],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn report() -> IncidentReport {
        let mut r = sample_report();
        r.incident = "inc-42".into();
        r.instances.push(InstanceOutcome {
            id: "11111111-1111-1111-1111-111111111111".into(),
            name: Some("<db>".into()),
            state: InstanceState::Error,
            prior_status: "SHUTOFF".into(),
            old_host: "compute-1".into(),
            new_host: None,
            error: Some("no valid host".into()),
            owner: Some("u2".into()),
            project: Some("p2".into()),
            storage: None,
        });
        r
    }

    fn storage_report() -> IncidentReport {
        use novaha_core::storage::StorageClass;
        let mut r = report();
        r.instances.push(InstanceOutcome {
            id: "22222222-2222-2222-2222-222222222222".into(),
            name: Some("cache".into()),
            state: InstanceState::Done,
            prior_status: "ACTIVE".into(),
            old_host: "compute-1".into(),
            new_host: Some("ha-1".into()),
            storage: Some(StorageClass::Local),
            ..InstanceOutcome::default()
        });
        r.instances.push(InstanceOutcome {
            id: "33333333-3333-3333-3333-333333333333".into(),
            name: Some("scratch".into()),
            state: InstanceState::Skipped,
            prior_status: "ACTIVE".into(),
            old_host: "compute-1".into(),
            error: Some("root disk on the failed host's local storage: needs a human".into()),
            storage: Some(StorageClass::Local),
            ..InstanceOutcome::default()
        });
        r
    }

    #[test]
    fn mails_say_moved_rebuilt_and_skipped_plainly() {
        let t = Templates::load(None).expect("built-ins compile");
        let r = storage_report();
        let all: Vec<_> = r.instances.iter().collect();
        for kind in ["admin", "owner"] {
            let m = t
                .render(kind, &r, &all, "a@example.org", None)
                .expect("render");
            for needle in [
                "moved to ha-1",
                "rebuilt from its image on ha-1: the root disk's data is lost",
                "not moved: root disk on the failed host's local storage: needs a human",
                "volume",
                "local",
            ] {
                assert!(
                    m.text.contains(needle),
                    "{kind} text lacks {needle}: {}",
                    m.text
                );
                let html = needle.replace('\'', "&#x27;");
                assert!(
                    m.html.contains(&html),
                    "{kind} html lacks {html}: {}",
                    m.html
                );
            }
            assert!(
                m.text
                    .contains("cache (22222222-2222-2222-2222-222222222222)"),
                "{kind}: the rebuilt list names it: {}",
                m.text
            );
            assert!(
                m.text
                    .contains("scratch (33333333-3333-3333-3333-333333333333)"),
                "{kind}: the needs-a-human list names it: {}",
                m.text
            );
        }
        let m = t
            .render("admin", &r, &all, "a@example.org", None)
            .expect("render");
        assert!(m.subject.contains("1 skipped"), "{}", m.subject);
        assert!(m.subject.contains("1 rebuilt"), "{}", m.subject);
        let text = chat_text(&r);
        assert!(text.contains("1 rebuilt from image (disk lost)"), "{text}");
    }

    #[test]
    fn builtin_templates_render_every_field_and_escape_html() {
        let t = Templates::load(None).expect("built-ins compile");
        let r = report();
        let all: Vec<_> = r.instances.iter().collect();
        let m = t
            .render("admin", &r, &all, "ops@example.org", None)
            .expect("render");
        assert_eq!(
            m.subject,
            "[novaha] compute-1 failed: 1/2 instances recovered, 1 in error"
        );
        for needle in [
            "inc-42",
            "ha-1",
            "ipmi",
            "1970-01-01T00:00:00Z",
            "00000000-0000-0000-0000-000000000000",
            "no valid host",
            "SHUTOFF",
        ] {
            assert!(m.text.contains(needle), "text lacks {needle}: {}", m.text);
            assert!(m.html.contains(needle), "html lacks {needle}");
        }
        assert!(m.html.contains("&lt;db&gt;"), "html escapes names");
        assert!(m.text.contains("<db>"), "text keeps names");
    }

    #[test]
    fn table_is_aligned() {
        let r = report();
        let all: Vec<_> = r.instances.iter().collect();
        let t = instance_table(&all);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("ID").expect("ID column");
        assert_eq!(lines[1].find("00000000"), Some(col));
        assert_eq!(lines[2].find("11111111"), Some(col));
    }

    #[test]
    fn override_from_dir_and_broken_override_fails_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("owner.subject.j2"),
            "Custom {{ node }} {{ recipient.email }}",
        )
        .expect("write");
        let t = Templates::load(Some(dir.path())).expect("override loads");
        let r = report();
        let all: Vec<_> = r.instances.iter().collect();
        let m = t.render("owner", &r, &all, "a@b.c", None).expect("render");
        assert_eq!(m.subject, "Custom compute-1 a@b.c");
        std::fs::write(dir.path().join("admin.txt.j2"), "{% for %}").expect("write");
        let err = Templates::load(Some(dir.path()))
            .err()
            .expect("broken template rejected");
        assert!(err.to_string().contains("admin.txt.j2"), "{err}");
    }

    #[test]
    fn webhook_body_follows_schema() {
        let b = webhook_body("id-1", &report());
        assert_eq!(b["schema"], WEBHOOK_SCHEMA);
        assert_eq!(b["id"], "id-1");
        assert_eq!(b["node"], "compute-1");
        assert_eq!(b["summary"]["total"], 2);
        assert_eq!(b["summary"]["error"], 1);
        assert_eq!(b["instances"][1]["state"], "error");
        assert_eq!(b["fence"]["driver"], "ipmi");
        let text = b["text"].as_str().expect("text");
        assert!(
            text.contains("compute-1") && text.contains("1 in error"),
            "{text}"
        );
    }
}
