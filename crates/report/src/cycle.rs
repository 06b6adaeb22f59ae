//! The leader's cycle record (`internal/last_cycle`, which `status` reads)
//! and what `run --once` prints from it and from its recovery tasks.

use std::collections::BTreeMap;

use novaha_core::NodeName;
use serde::Serialize;

use crate::plan::Plan;

/// What one cycle saw, written to `novaha/last_cycle` and printed by
/// `run --once`.
#[derive(Clone, Debug, Serialize)]
pub struct CycleReport {
    /// The leader's id.
    pub id: String,
    /// The tenure's epoch.
    pub epoch: String,
    /// When the cycle ran (RFC 3339).
    pub at: String,
    /// Compute nodes in the tree.
    pub compute_nodes: usize,
    /// HA nodes in the tree.
    pub ha_nodes: usize,
    /// Compute nodes whose `failed` flag is True.
    pub failed: Vec<NodeName>,
    /// Invalid values in the tree.
    pub invalid: usize,
    /// Nodes judged failed this cycle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub judged_failed: Vec<NodeName>,
    /// The mass-failure guard tripped this cycle.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mass_failure: bool,
    /// Nova could not be read: nothing was judged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nova_unreachable: bool,
    /// The last failures-tolerated figure by availability zone (`""` = no
    /// zone), read every `[evacuate] capacity_interval`; absent until read
    /// or without Placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures_tolerated: Option<BTreeMap<String, u32>>,
}

/// How a recovery task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing (more) to do for the node: done, reset, or not ours.
    Idle,
    /// Needs an operator (logged at ERROR).
    Stuck(String),
    /// Stopped at a wait because the task runs once (`run --once`).
    Waiting(String),
    /// Leadership was lost or shutdown began.
    Cancelled,
}

/// What `run --once` prints: `No failed nodes` when none (as the original
/// Osha does, so cron jobs and ad-hoc checks can grep it), else the failed
/// nodes, what each recovery reached, and in a dry run each plan.
pub fn once_summary(
    report: &CycleReport,
    outcomes: &[(NodeName, Outcome)],
    plans: &[Plan],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut failed: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
    for n in &report.judged_failed {
        if !failed.contains(&n.to_string()) {
            failed.push(n.to_string());
        }
    }
    if report.nova_unreachable {
        out.push_str("Nova could not be read: nothing was judged this cycle\n");
    }
    if failed.is_empty() && plans.is_empty() {
        out.push_str("No failed nodes\n");
    } else if !failed.is_empty() {
        let _ = writeln!(out, "Failed nodes: {}", failed.join(", "));
    }
    if report.mass_failure {
        out.push_str("Mass-failure guard tripped: nothing fenced\n");
    }
    for (node, o) in outcomes {
        let text = match o {
            Outcome::Idle => "recovery done (or nothing to do)".to_owned(),
            Outcome::Stuck(r) => format!("recovery stuck: {r}"),
            Outcome::Waiting(r) => format!("recovery waiting: {r} (the next run goes on)"),
            Outcome::Cancelled => "recovery interrupted".to_owned(),
        };
        let _ = writeln!(out, "{node}: {text}");
    }
    for p in plans {
        let _ = writeln!(out, "{p}");
    }
    if report.invalid > 0 {
        let _ = writeln!(out, "Invalid values: {} (see the log)", report.invalid);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failed: &[&str]) -> CycleReport {
        CycleReport {
            id: "a".into(),
            epoch: "e".into(),
            at: "t".into(),
            compute_nodes: 3,
            ha_nodes: 1,
            failed: failed.iter().map(|n| NodeName::from(*n)).collect(),
            invalid: 0,
            judged_failed: Vec::new(),
            mass_failure: false,
            nova_unreachable: false,
            failures_tolerated: None,
        }
    }

    #[test]
    fn once_summary_says_no_failed_nodes_like_osha() {
        assert_eq!(once_summary(&report(&[]), &[], &[]), "No failed nodes\n");
        let out = once_summary(
            &report(&["c1", "c2"]),
            &[
                (NodeName::from("c1"), Outcome::Idle),
                (
                    NodeName::from("c2"),
                    Outcome::Waiting("no-free-ha-node".into()),
                ),
            ],
            &[],
        );
        assert_eq!(
            out,
            "Failed nodes: c1, c2\nc1: recovery done (or nothing to do)\n\
             c2: recovery waiting: no-free-ha-node (the next run goes on)\n"
        );
        let mut r = report(&[]);
        r.nova_unreachable = true;
        assert!(once_summary(&r, &[], &[]).starts_with("Nova could not be read"));
    }
}
