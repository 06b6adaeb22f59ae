//! The one exponential backoff of novaha: the delay before a retry starts
//! at `base`, doubles after each failure and stops growing at `cap`.
//!
//! It is pure: where a caller wants jitter (messages or readers that failed
//! together should not all come back at the same instant), the caller
//! supplies the random part ([`Backoff::jittered`]'s `unit`), so the
//! recovery decision and the fault simulator stay deterministic while a
//! network client draws from a random source.

use std::time::Duration;

/// An exponential backoff: `base` doubled per failure, at most `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Backoff {
    /// The backoff from `base` up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The delay before retry `attempt` (1-based; 0 counts as 1):
    /// `base × 2^(attempt − 1)`, saturating instead of overflowing, at most
    /// `cap`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay that follows `current`: doubled (saturating), at most
    /// `cap`. For a caller that keeps its current delay rather than an
    /// attempt count; from `base` it walks the same delays as
    /// [`Backoff::delay`] with 1, 2, 3…
    pub fn next(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.cap)
    }

    /// [`Backoff::delay`] with "equal jitter": half of the delay, plus
    /// `unit` (a number from 0 to 1, clamped to that range) of the other
    /// half. The caller supplies `unit`: a random draw, or a hash of what is
    /// retried where the result must be repeatable.
    pub fn jittered(&self, attempt: u32, unit: f64) -> Duration {
        let raw = self.delay(attempt);
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        raw / 2 + raw.mul_f64(0.5 * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn delays_double_from_the_base_up_to_the_cap() {
        let b = Backoff::new(ms(5), ms(30));
        let delays: Vec<Duration> = (1..=6).map(|a| b.delay(a)).collect();
        assert_eq!(delays, [ms(5), ms(10), ms(20), ms(30), ms(30), ms(30)]);
        assert_eq!(b.delay(0), ms(5), "attempt 0 counts as the first");
    }

    #[test]
    fn huge_attempts_and_durations_saturate_at_the_cap() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        assert_eq!(b.delay(31), Duration::from_secs(300));
        assert_eq!(b.delay(32), Duration::from_secs(300));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
        let wide = Backoff::new(Duration::MAX / 2, Duration::MAX);
        assert_eq!(wide.delay(3), Duration::MAX);
        assert_eq!(wide.next(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn next_walks_the_same_delays_as_the_attempt_count() {
        let b = Backoff::new(ms(500), Duration::from_secs(10));
        let mut current = b.base;
        for attempt in 1..=10 {
            assert_eq!(current, b.delay(attempt), "attempt {attempt}");
            current = b.next(current);
        }
        assert_eq!(b.next(ms(5)), ms(10), "from any current delay");
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        let b = Backoff::new(ms(100), Duration::from_secs(1));
        assert_eq!(b.jittered(1, 0.0), ms(50));
        assert_eq!(b.jittered(1, 1.0), ms(100));
        assert_eq!(b.jittered(3, 0.5), ms(300));
        assert_eq!(b.jittered(9, 1.0), Duration::from_secs(1));
        assert_eq!(b.jittered(1, -3.0), ms(50), "clamped");
        assert_eq!(b.jittered(1, 7.0), ms(100), "clamped");
        assert_eq!(b.jittered(1, f64::NAN), ms(50));
        assert_eq!(b.jittered(2, 0.25), b.jittered(2, 0.25), "deterministic");
    }
}
