//! One shape for checking settings: every config section and every stage's
//! settings implement [`Validate`], which returns every [`Problem`] at once
//! (empty = usable), so `novaha check-config` can print them all.
//!
//! A value names its keys relative to itself (`concurrency`,
//! `nova.stale_after`, `""` for the value as a whole); whoever embeds it
//! adds its own name with [`Problem::under`] (`evacuate.concurrency`,
//! `notify[1].smtp_url`), as the file spells the key.

use std::fmt;

/// One thing wrong with a setting: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key's path (`election.session_ttl`), relative to whatever
    /// validated it until its embedder adds its name; empty for the value
    /// as a whole.
    pub at: String,
    /// What is wrong, lowercase, naming the offending value (never a
    /// secret).
    pub message: String,
}

impl Problem {
    /// A problem at `at`.
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            message: message.into(),
        }
    }

    /// The same problem seen from the value that embeds this one under
    /// `name`: `timeout` under `evacuate` is `evacuate.timeout`, `[2].url`
    /// under `notify` is `notify[2].url`, the whole value is `name`.
    #[must_use]
    pub fn under(self, name: &str) -> Self {
        let at = if self.at.is_empty() {
            name.to_owned()
        } else if self.at.starts_with('[') {
            format!("{name}{}", self.at)
        } else {
            format!("{name}.{}", self.at)
        };
        Self { at, ..self }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

/// Settings that can say everything wrong with them.
pub trait Validate {
    /// Every problem (empty = usable), each at its key relative to `self`.
    /// Pure apart from reading files the settings name.
    fn validate(&self) -> Vec<Problem>;
}

/// A list (`[[notify]]`): each entry's problems, under its index.
impl<T: Validate> Validate for Vec<T> {
    fn validate(&self) -> Vec<Problem> {
        self.iter()
            .enumerate()
            .flat_map(|(i, v)| {
                v.validate()
                    .into_iter()
                    .map(move |p| p.under(&format!("[{i}]")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Range(u32);

    impl Validate for Range {
        fn validate(&self) -> Vec<Problem> {
            if self.0 == 0 {
                vec![Problem::new("count", "must be at least 1")]
            } else {
                Vec::new()
            }
        }
    }

    #[test]
    fn embedders_prefix_the_path_as_the_file_spells_it() {
        let p = Problem::new("stale_after", "too short")
            .under("nova")
            .under("monitor");
        assert_eq!(p.to_string(), "monitor.nova.stale_after: too short");
        assert_eq!(
            Problem::new("", "bad").under("fence").to_string(),
            "fence: bad"
        );
        assert_eq!(Problem::new("", "bad").to_string(), "bad");
        let list = vec![Range(1), Range(0)];
        let problems: Vec<String> = list
            .validate()
            .into_iter()
            .map(|p| p.under("notify").to_string())
            .collect();
        assert_eq!(problems, ["notify[1].count: must be at least 1"]);
    }
}
