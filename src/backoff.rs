//! The one backoff rule: a delay that doubles from `first` up to `max`, spread by
//! ±20 % jitter so that many retriers do not wake together. The supervisor's core
//! computes unit restart delays with [`Backoff::delay`] (jitter injected, so it stays
//! pure); async loops hold a [`Retry`] and sleep on it.

use std::time::Duration;

/// A doubling delay between `first` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub first: Duration,
    /// The ceiling.
    pub max: Duration,
}

impl Backoff {
    /// Doubling from `first` to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The delay before retry number `retry` (0 is the first), with `jitter` in
    /// `[0, 1)` spreading it over 80–120 % (never above `max`).
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exp = self
            .first
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max);
        exp.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
            .min(self.max)
    }

    /// A retry loop's state under this rule.
    pub fn retry(self) -> Retry {
        Retry {
            backoff: self,
            retries: 0,
        }
    }
}

/// Where an async retry loop stands: [`Retry::wait`] sleeps for the next delay,
/// [`Retry::reset`] starts over after a success.
#[derive(Debug, Clone)]
pub struct Retry {
    backoff: Backoff,
    retries: u32,
}

impl Retry {
    /// The next delay (and counts the retry).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.backoff.delay(self.retries, fastrand::f64());
        self.retries = self.retries.saturating_add(1);
        d
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Starts over from the first delay.
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn delays_double_up_to_the_ceiling_with_bounded_jitter() {
        let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let mid: Vec<u128> = (0..7).map(|n| b.delay(n, 0.5).as_millis()).collect();
        assert_eq!(mid, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(1, 0.999_999).as_millis(), 599);
        assert_eq!(b.delay(40, 1.0), Duration::from_secs(5), "never above max");
        let mut r = b.retry();
        assert!(r.next_delay() <= Duration::from_millis(300));
        assert!(r.next_delay() >= Duration::from_millis(400));
        r.reset();
        assert!(r.next_delay() <= Duration::from_millis(300));
    }
}
