//! Fault injection: rules matched against each Keystone/Nova request
//! (never the `/sim/` control API) that answer with an error status, add
//! latency, hang until the client gives up, or send a malformed body.

use serde::{Deserialize, Serialize};

/// What a matching request suffers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultKind {
    /// Answer with this HTTP status and Nova's/Keystone's error body
    /// (`computeFault` for 5xx).
    Status {
        /// The status code, e.g. 500 or 503.
        status: u16,
    },
    /// Wait this long, then serve the request normally.
    Latency {
        /// Milliseconds of added latency.
        ms: u64,
    },
    /// Never answer (until the sim stops): models a hung API.
    Hang,
    /// Answer 200 with a truncated, unparsable JSON body.
    Malformed,
}

/// One fault rule. Matching: `method` (if set) equals the request method
/// and `path` is a substring of the request path (e.g. `"/os-services"`,
/// `"/auth/tokens"`, `"/compute/"`). Each match fires with probability
/// `rate` (seeded RNG, so runs repeat); `count` (if set) limits how many
/// times it fires before it is removed (1 = one-shot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Rule id, assigned by the sim (ignored on input).
    #[serde(default)]
    pub id: u64,
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Substring of the path to match.
    pub path: String,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Probability in [0, 1] that a matching request is hit (default 1).
    #[serde(default = "one")]
    pub rate: f64,
    /// Fire at most this many times (forever when absent).
    #[serde(default)]
    pub count: Option<u32>,
}

fn one() -> f64 {
    1.0
}

impl FaultRule {
    /// A rule that always fires on `path` with `kind`.
    pub fn new(path: &str, kind: FaultKind) -> Self {
        FaultRule {
            id: 0,
            method: None,
            path: path.to_owned(),
            kind,
            rate: 1.0,
            count: None,
        }
    }

    /// Restricts the rule to one HTTP method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_uppercase());
        self
    }

    /// Fires at most `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }

    /// Fires with probability `rate`.
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    /// Whether the rule applies to this request (before the rate draw).
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.contains(&self.path)
    }
}
