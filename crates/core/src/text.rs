//! Text for errors and reports: the one way novaha cuts a peer's answer to
//! an excerpt and keeps secrets out of it, and the one way it spells an
//! error with its causes.
//!
//! A peer's answer (a BMC's, Keystone's, Consul's, a webhook's) may be huge
//! and may echo what novaha sent, a password or a token included. Whatever
//! of it goes into an error, a log line or a published report goes through
//! [`excerpt`] (or [`scrub`] and [`cut`]): secrets masked first, then cut,
//! so a secret split by the cut cannot leave a readable half.

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// What is appended to a text that [`cut`] shortened.
pub const ELLIPSIS: &str = "...";

/// `text` cut to its first `max_chars` characters (always on a character
/// boundary), with [`ELLIPSIS`] appended when anything was cut; unchanged
/// when it is not longer than that.
pub fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}{ELLIPSIS}", &text[..end]),
    }
}

/// `text` with every occurrence of every non-empty secret replaced by
/// [`MASK`] (an empty secret would match everywhere, so it is skipped).
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_owned(), |out, secret| out.replace(secret, MASK))
}

/// The excerpt of `text` that may go into an error: the `secrets`
/// [scrubbed](scrub), surrounding white space trimmed, then [cut](cut) to
/// `max_chars` characters.
pub fn excerpt(text: &str, max_chars: usize, secrets: &[&str]) -> String {
    cut(scrub(text, secrets).trim(), max_chars)
}

/// An error and its sources, `": "`-joined. Some libraries (reqwest, for
/// one) put the cause only in the sources: "error sending request" says
/// nothing without "connection refused".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_texts_and_cuts_long_ones_on_a_char_boundary() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc...");
        assert_eq!(cut("", 0), "");
        assert_eq!(cut("a", 0), "...");
        // Multi-byte characters count as one and are never split.
        assert_eq!(cut("ééé", 2), "éé...");
        assert_eq!(cut("日本語テキスト", 3), "日本語...");
        let long = "x".repeat(1000);
        assert_eq!(cut(&long, 400).chars().count(), 400 + ELLIPSIS.len());
    }

    #[test]
    fn scrub_masks_every_secret_and_skips_empty_ones() {
        assert_eq!(
            scrub("bad pw hunter2 here", &["hunter2"]),
            "bad pw *** here"
        );
        assert_eq!(
            scrub("tok t0k3n, pw hunter2, t0k3n", &["t0k3n", "hunter2"]),
            "tok ***, pw ***, ***"
        );
        assert_eq!(scrub("nothing", &[""]), "nothing");
        assert_eq!(scrub("nothing", &[]), "nothing");
    }

    #[test]
    fn excerpt_scrubs_before_it_trims_and_cuts() {
        assert_eq!(
            excerpt("  bad hunter2 here \n", 100, &["hunter2"]),
            "bad *** here"
        );
        // A secret across the cut is masked whole, never left half readable.
        let e = excerpt("xxxxhunter2", 6, &["hunter2"]);
        assert_eq!(e, "xxxx**...");
        assert!(!e.contains("hun"));
        // A secret with white space at the edge is still found.
        assert_eq!(excerpt(" pw", 10, &[" pw"]), "***");
        assert_eq!(excerpt("   ", 10, &[]), "");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_joins_every_source() {
        let e = Layer(
            "error sending request",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "error sending request: client error (Connect): connection refused"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
