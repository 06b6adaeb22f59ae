//! `novaha check-config -c FILE [--bmc]`: everything the daemon needs,
//! checked before it is needed, every problem printed (not the first).
//!
//! 1. the file: every section and key (crate::config);
//! 2. Consul: the agent answers, and the token may write below the prefix
//!    (a compare-and-set that can never apply: Consul checks the ACL
//!    before the index, so `403` means no right to write and a refused CAS
//!    means the right is there; nothing is ever written);
//! 3. OpenStack: the cloud resolves (`[openstack]`, `OS_CLOUD`, `OS_*`),
//!    Keystone authenticates, the catalog has a compute endpoint, the
//!    compute microversion is negotiated, and the role may read Nova's
//!    services and list every project's servers (what detection and
//!    evacuation call);
//! 4. with `--bmc`, every compute node's power is read once through its
//!    own driver and credentials (read only, never switched).
//!
//! Exit 0 when all pass, 2 for an invalid file, 1 for any other problem.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use novaha_consul::{ConsulStore, TxnOp, TxnOutcome};
use novaha_core::kv::Schema;
use novaha_core::store::LeaderLease;
use novaha_openstack::{Env, NovaClient, ServiceType, Session};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connect::connect;

/// The key the write check tries to compare-and-set (never written).
const WRITE_PROBE: &str = "check_config";

/// What one check found: lines for stdout, problems for stderr.
#[derive(Debug, Default)]
struct Report {
    passed: Vec<String>,
    problems: Vec<(String, String)>,
}

impl Report {
    fn problem(&mut self, at: &str, message: impl Into<String>) {
        self.problems.push((at.to_owned(), message.into()));
    }
}

/// Bounds one step: its own timeout, or a problem naming it.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )),
    }
}

async fn check_consul(cfg: &Config, report: &mut Report) {
    let limit = cfg.consul.request_timeout + Duration::from_secs(1);
    let (consul, schema) = match connect(cfg) {
        Ok(c) => c,
        Err(e) => return report.problem("consul.address", format!("{e:#}")),
    };
    if let Err(e) = bounded(limit, consul.ping()).await {
        return report.problem(
            "consul.address",
            format!("consul at {} is not reachable: {e}", cfg.consul.address),
        );
    }
    let node = bounded(limit, consul.agent_node_name())
        .await
        .unwrap_or_else(|e| format!("unknown: {e}"));
    let probe = TxnOp::Cas {
        key: schema.internal(WRITE_PROBE),
        value: Vec::new(),
        index: u64::MAX,
    };
    match bounded(limit, consul.txn(&[probe])).await {
        // Consul answers a write the ACL denies as a rolled-back op too.
        Ok(TxnOutcome::RolledBack(failed))
            if failed
                .iter()
                .any(|f| f.what.to_ascii_lowercase().contains("permission denied")) =>
        {
            let why: Vec<&str> = failed.iter().map(|f| f.what.as_str()).collect();
            report.problem(
                "consul.token",
                format!(
                    "the token may not write below {}/ (the daemon writes its state there): {}",
                    schema.prefix(),
                    why.join("; ")
                ),
            );
        }
        // The CAS was weighed (so the ACL allowed the write) and refused.
        Ok(TxnOutcome::RolledBack(_)) => report.passed.push(format!(
            "consul {} reachable (agent node {node}); the token may write {}/",
            cfg.consul.address,
            schema.prefix()
        )),
        Ok(TxnOutcome::Committed(_)) => report.problem(
            "consul.prefix",
            "the write check applied a compare-and-set that should never apply",
        ),
        Err(e) => report.problem(
            "consul.token",
            format!(
                "the token may not write below {}/ (the daemon writes its state there): {e}",
                schema.prefix()
            ),
        ),
    }
}

async fn check_openstack(cfg: &Config, report: &mut Report) {
    let limit = cfg.openstack.timeout * 2 + Duration::from_secs(1);
    let cloud = match cfg.openstack.resolve(&Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            return report.problem("openstack", format!("no usable cloud: {e}"));
        }
    };
    let session = match Session::new(cloud) {
        Ok(s) => Arc::new(s),
        Err(e) => return report.problem("openstack", format!("{e:#}")),
    };
    if let Err(e) = bounded(limit, session.authenticate()).await {
        return report.problem(
            "openstack.auth",
            format!("keystone refused or did not answer: {e}"),
        );
    }
    let who = session.identity().map_or_else(String::new, |i| {
        format!(
            " as user {} in project {}",
            i.user_id.as_deref().unwrap_or("?"),
            i.project_id.as_deref().unwrap_or("?")
        )
    });
    let endpoint = match bounded(limit, session.endpoint(ServiceType::Compute)).await {
        Ok(e) => e,
        Err(e) => {
            return report.problem(
                "openstack",
                format!("no compute endpoint in the catalog: {e}"),
            );
        }
    };
    let nova = match bounded(
        limit,
        NovaClient::connect_wanting(session.clone(), cfg.openstack.wanted_microversion()),
    )
    .await
    {
        Ok(n) => n,
        Err(e) => {
            return report.problem(
                "openstack",
                format!("compute microversion negotiation with {endpoint}: {e}"),
            );
        }
    };
    report.passed.push(format!(
        "openstack: authenticated{who}; compute {endpoint} at microversion {}{}",
        nova.microversion(),
        nova.cloud_max()
            .map_or_else(String::new, |m| format!(" (cloud max {m})"))
    ));
    let mut rights = Vec::new();
    match bounded(limit, nova.compute_services()).await {
        Ok(services) => rights.push(format!("read {} nova-compute service(s)", services.len())),
        Err(e) => report.problem(
            "openstack.auth",
            format!("the role may not read Nova's services (detection needs it): {e}"),
        ),
    }
    // A host nobody has: the call exercises the all-projects listing an
    // evacuation makes without returning anything.
    match bounded(limit, nova.servers_on_host("novaha-check-config.invalid")).await {
        Ok(_) => rights.push("list every project's servers".to_owned()),
        Err(e) => report.problem(
            "openstack.auth",
            format!("the role may not list every project's servers (evacuation needs it): {e}"),
        ),
    }
    if !rights.is_empty() {
        report
            .passed
            .push(format!("openstack: the role may {}", rights.join(" and ")));
    }
}

async fn check_bmcs(cfg: &Config, report: &mut Report) {
    let (consul, schema) = match connect(cfg) {
        Ok(c) => c,
        Err(_) => return, // reported by the consul check
    };
    let creds = crate::credentials::store(cfg, &consul);
    let store = Arc::new(ConsulStore::new(consul, schema.clone()));
    let health = match crate::fence_health::FenceHealth::new(store, schema, &cfg.fence, None) {
        Ok(h) => h.without_publishing().with_credentials(creds),
        Err(e) => return report.problem("fence", format!("{e}")),
    };
    // Read only: a private token nobody cancels, nothing is published.
    let lease = LeaderLease::new(
        "check-config".into(),
        "check-config".into(),
        CancellationToken::new(),
    );
    match health.round(&lease, &Default::default()).await {
        Ok(doc) => {
            for (node, n) in &doc.nodes {
                if n.healthy {
                    report.passed.push(format!(
                        "bmc of {node}: power {} read through {}",
                        n.power.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                        n.driver
                    ));
                } else {
                    report.problem(
                        &format!("bmc.{node}"),
                        format!(
                            "{}: {}",
                            n.driver,
                            n.error.as_deref().unwrap_or("power unreadable")
                        ),
                    );
                }
            }
            if doc.nodes.is_empty() {
                report
                    .passed
                    .push("bmc: no compute node in the tree yet".to_owned());
            }
        }
        Err(e) => report.problem("bmc", format!("{e}")),
    }
}

/// `novaha check-config [--bmc]`.
pub async fn check_config(path: &Path, bmc: bool) -> ExitCode {
    let cfg = match crate::load(path) {
        Ok(c) => c,
        Err(code) => {
            eprintln!(
                "novaha: consul reachability not checked, nor openstack: fix the config first"
            );
            return code;
        }
    };
    let mut report = Report::default();
    report
        .passed
        .push(format!("config {} is valid", path.display()));
    check_consul(&cfg, &mut report).await;
    check_openstack(&cfg, &mut report).await;
    if bmc {
        check_bmcs(&cfg, &mut report).await;
    }
    report.passed.push(format!(
        "prefix {}; fence driver {}; {} notifier(s)",
        Schema::new(&cfg.consul.prefix),
        cfg.fence.driver,
        cfg.notify.len()
    ));
    for line in &report.passed {
        println!("{line}");
    }
    if report.problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "novaha: config {} problem(s) ({}):",
        path.display(),
        report.problems.len()
    );
    for (at, message) in &report.problems {
        eprintln!("  - {at}: {message}");
    }
    ExitCode::FAILURE
}
