//! The retry delay policy: exponential, capped, optionally jittered, and
//! never shorter than what the network asked for.

use std::time::Duration;

use rand::Rng;

/// Delay before attempt `attempts + 1`, given `attempts` failures so far.
#[must_use]
pub fn delay(
    attempts: i64,
    initial: Duration,
    max: Duration,
    jitter: bool,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let mut base = initial.saturating_mul(1u32 << exp).min(max);
    if jitter {
        // "Equal jitter": keeps at least half the delay so a flood of
        // failures still spreads out, without synchronised retries.
        let f: f64 = rand::thread_rng().gen_range(0.5..=1.0);
        base = base.mul_f64(f);
    }
    retry_after.map_or(base, |ra| base.max(ra))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_and_honours_retry_after() {
        let d = |n| delay(n, 100 * MS, 1000 * MS, false, None);
        assert_eq!(d(1), 100 * MS);
        assert_eq!(d(2), 200 * MS);
        assert_eq!(d(4), 800 * MS);
        assert_eq!(d(5), 1000 * MS);
        assert_eq!(d(500), 1000 * MS);
        assert_eq!(
            delay(1, 100 * MS, 1000 * MS, false, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        let j = delay(3, 100 * MS, 1000 * MS, true, None);
        assert!(j >= 200 * MS && j <= 400 * MS, "{j:?}");
    }
}
