//! Bounded reading of a peer's HTTP answer. A BMC, Nova, Keystone,
//! Placement, Consul or a webhook receiver that answers with an endless or
//! huge body (broken firmware, a proxy's error page streamed forever, a
//! hostile endpoint) must not make the daemon hold it all in memory: every
//! HTTP client of novaha feeds the body's chunks into a [`CappedBody`] and
//! stops reading when it says so. The accumulator is pure (no I/O, no HTTP
//! types), so each driver crate keeps its own `chunk().await` loop and this
//! one rule of when to stop.

/// How much of an error answer (a non-2xx status) any client reads: it only
/// feeds an excerpt of a few hundred characters into an error message, so
/// 8 KiB is plenty, and cutting it is never itself an error.
pub const ERROR_BODY_LIMIT: usize = 8 << 10;

/// A body read up to `limit` bytes. Feed it chunks with [`CappedBody::push`]
/// until the body ends or `push` answers `false`; [`CappedBody::finish`]
/// then gives the bytes kept and whether they are the whole body.
#[derive(Debug)]
pub struct CappedBody {
    limit: usize,
    bytes: Vec<u8>,
    cut: bool,
}

impl CappedBody {
    /// An empty body that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: Vec::new(),
            cut: false,
        }
    }

    /// The body of an answer with a success (2xx) status or not: a success
    /// is kept up to `limit` (what the client needs whole; a longer one is
    /// an error of the client's), an error status up to
    /// [`ERROR_BODY_LIMIT`] (an excerpt; a longer one is simply cut).
    pub fn for_answer(success: bool, limit: usize) -> Self {
        Self::new(if success { limit } else { ERROR_BODY_LIMIT })
    }

    /// The bound this body was made with (for the error naming it).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Appends `chunk`, as far as the limit allows. `false` means the limit
    /// is reached and the body goes on beyond it: stop reading (what did not
    /// fit is dropped, and so is every later chunk).
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.cut {
            return false;
        }
        let room = self.limit - self.bytes.len();
        if chunk.len() > room {
            self.bytes.extend_from_slice(&chunk[..room]);
            self.cut = true;
            return false;
        }
        self.bytes.extend_from_slice(chunk);
        true
    }

    /// The bytes kept, and `true` when they are the whole body (it ended
    /// within the limit), `false` when it was cut at the limit.
    pub fn finish(self) -> (Vec<u8>, bool) {
        (self.bytes, !self.cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(limit: usize, chunks: &[&[u8]]) -> (Vec<u8>, bool, usize) {
        let mut body = CappedBody::new(limit);
        let mut taken = 0;
        for c in chunks {
            taken += 1;
            if !body.push(c) {
                break;
            }
        }
        let (bytes, complete) = body.finish();
        (bytes, complete, taken)
    }

    #[test]
    fn a_body_within_the_limit_is_whole() {
        assert_eq!(feed(8, &[b"abc", b"de"]), (b"abcde".to_vec(), true, 2));
        assert_eq!(feed(8, &[]), (Vec::new(), true, 0));
    }

    #[test]
    fn a_body_of_exactly_the_limit_is_whole() {
        assert_eq!(feed(5, &[b"abc", b"de"]), (b"abcde".to_vec(), true, 2));
        // An empty chunk at the limit is not more body.
        assert_eq!(feed(3, &[b"abc", b""]), (b"abc".to_vec(), true, 2));
    }

    #[test]
    fn a_longer_body_is_cut_at_the_limit_and_reading_stops() {
        // The chunk that crosses the limit stops the reading: the rest is
        // never asked for.
        assert_eq!(
            feed(4, &[b"abc", b"def", b"ghi"]),
            (b"abcd".to_vec(), false, 2)
        );
        assert_eq!(feed(0, &[b"a"]), (Vec::new(), false, 1));
    }

    #[test]
    fn an_error_answer_is_kept_only_to_an_excerpt() {
        assert_eq!(CappedBody::for_answer(true, 1 << 30).limit(), 1 << 30);
        assert_eq!(
            CappedBody::for_answer(false, 1 << 30).limit(),
            ERROR_BODY_LIMIT
        );
    }

    #[test]
    fn pushes_after_the_cut_keep_nothing() {
        let mut body = CappedBody::new(2);
        assert_eq!(body.limit(), 2);
        assert!(!body.push(b"abc"));
        assert!(!body.push(b""));
        assert!(!body.push(b"d"));
        assert_eq!(body.finish(), (b"ab".to_vec(), false));
    }
}
