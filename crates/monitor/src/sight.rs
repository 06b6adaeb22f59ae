//! The leader's sight: whether it could judge the nodes this cycle.
//!
//! A leader that cannot read the cloud (no `[openstack]` configured, auth
//! failing, an expired application credential, Nova or Keystone down)
//! holds the lock and judges nothing: high availability is off. That must
//! be loud, not a WARN line per cycle. [`Sight`] turns each cycle's
//! outcome into a state: blind once the failures have lasted longer than
//! `[monitor] blind_after` (a grace that rides out a single slow call),
//! with the reason and the time since the last full judgement. The leader
//! publishes it on `/readyz` (503 with the reason), in
//! `novaha_monitor_blind` and `novaha_monitor_judgement_age_seconds`, and
//! in its cycle record, which `novaha status` reads (docs/runbook.md,
//! "A blind leader").
//!
//! Logging follows the transitions only: the first failing cycle at WARN,
//! the crossing of the grace at ERROR (an operator must act), the return of
//! sight at INFO; every other cycle at DEBUG.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

/// What the leader knows about its sight after a cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct SightReport {
    /// Blind beyond the grace: nothing has been judged for longer than
    /// `blind_after`.
    pub blind: bool,
    /// Why the last cycle judged nothing (also within the grace).
    pub reason: Option<String>,
    /// Since when the cycles judge nothing.
    pub since: Option<DateTime<Utc>>,
    /// The last full judgement (every node judged with Nova's answer).
    pub last_judgement: Option<DateTime<Utc>>,
    /// Seconds since the last full judgement, or since this tenure began
    /// when it has not judged yet.
    pub judgement_age_seconds: f64,
}

/// The state across cycles of one process.
#[derive(Debug)]
pub struct Sight {
    grace: Duration,
    began: Option<DateTime<Utc>>,
    since: Option<DateTime<Utc>>,
    last_judgement: Option<DateTime<Utc>>,
    alerted: bool,
}

impl Sight {
    /// A leader's sight with `grace` before failing cycles count as blind.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            began: None,
            since: None,
            last_judgement: None,
            alerted: false,
        }
    }

    /// A new tenure begins at `now`: the age of a leader that has not
    /// judged yet is counted from here, and a previous tenure's blindness
    /// starts over (the new leader gets its own grace).
    pub fn begin(&mut self, now: DateTime<Utc>) {
        self.began = Some(now);
        self.since = None;
        self.alerted = false;
    }

    /// Folds one cycle in: `blind_reason` is `None` when every node was
    /// judged with Nova's answer, else why nothing was judged.
    pub fn observe(&mut self, blind_reason: Option<&str>, now: DateTime<Utc>) -> SightReport {
        let began = *self.began.get_or_insert(now);
        match blind_reason {
            None => {
                if let Some(since) = self.since.take() {
                    let seconds = (now - since).num_milliseconds() as f64 / 1000.0;
                    if self.alerted {
                        info!(
                            blind_seconds = seconds,
                            "the leader can judge again: Nova answered"
                        );
                    } else {
                        debug!(
                            blind_seconds = seconds,
                            "Nova answered again within the grace"
                        );
                    }
                }
                self.alerted = false;
                self.last_judgement = Some(now);
            }
            Some(reason) => {
                let since = *self.since.get_or_insert(now);
                let over = (now - since)
                    .to_std()
                    .is_ok_and(|elapsed| elapsed >= self.grace);
                let grace = humantime::format_duration(self.grace).to_string();
                if over && !self.alerted {
                    self.alerted = true;
                    error!(
                        reason,
                        blind_after = %grace,
                        last_judgement = ?self.last_judgement.map(novaha_core::kv::format_time),
                        "the leader is blind: it cannot judge any node, so no failure is detected or recovered; /readyz says 503"
                    );
                } else if since == now {
                    warn!(reason, blind_after = %grace, "cannot read the cloud: no judgement this cycle");
                } else {
                    debug!(
                        reason,
                        "still cannot read the cloud: no judgement this cycle"
                    );
                }
            }
        }
        // Counted from this tenure's start at the earliest: the other
        // daemon judged while this one stood by.
        let from = self.last_judgement.map_or(began, |j| j.max(began));
        let age = (now - from).num_milliseconds().max(0) as f64 / 1000.0;
        SightReport {
            blind: self.alerted,
            reason: blind_reason.map(str::to_owned),
            since: self.since,
            last_judgement: self.last_judgement,
            judgement_age_seconds: age,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("a valid time")
    }

    #[test]
    fn blind_only_after_the_grace_and_sighted_at_the_first_judgement() {
        let mut s = Sight::new(Duration::from_secs(30));
        s.begin(t(0));
        let r = s.observe(None, t(0));
        assert!(!r.blind);
        assert_eq!(r.judgement_age_seconds, 0.0);
        let r = s.observe(Some("nova: connection refused"), t(10));
        assert!(!r.blind, "within the grace");
        assert_eq!(r.reason.as_deref(), Some("nova: connection refused"));
        assert_eq!(r.since, Some(t(10)));
        assert_eq!(r.judgement_age_seconds, 10.0);
        let r = s.observe(Some("nova: connection refused"), t(39));
        assert!(!r.blind, "29 s < 30 s");
        let r = s.observe(Some("keystone: 401"), t(40));
        assert!(r.blind);
        assert_eq!(r.reason.as_deref(), Some("keystone: 401"));
        assert_eq!(
            r.since,
            Some(t(10)),
            "the streak started at the first failure"
        );
        assert_eq!(r.judgement_age_seconds, 40.0);
        assert!(s.observe(Some("x"), t(100)).blind, "stays blind");
        let r = s.observe(None, t(110));
        assert!(!r.blind);
        assert_eq!(r.reason, None);
        assert_eq!(r.since, None);
        assert_eq!(r.last_judgement, Some(t(110)));
        assert_eq!(r.judgement_age_seconds, 0.0);
        // A new streak gets a new grace.
        assert!(!s.observe(Some("x"), t(120)).blind);
    }

    #[test]
    fn a_leader_that_never_judged_counts_its_age_from_its_tenure() {
        let mut s = Sight::new(Duration::from_secs(0));
        s.begin(t(5));
        let r = s.observe(Some("no [openstack] configured"), t(5));
        assert!(r.blind, "a zero grace is blind at once");
        assert_eq!(r.last_judgement, None);
        assert_eq!(s.observe(Some("x"), t(65)).judgement_age_seconds, 60.0);
        // A new tenure starts over.
        s.begin(t(100));
        let r = s.observe(Some("x"), t(100));
        assert!(r.blind);
        assert_eq!(r.since, Some(t(100)));
    }
}
