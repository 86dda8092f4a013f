//! Retry delays: exponential in the attempt number, capped, with jitter so that alerts that
//! failed together (a receiver that was down) do not all come back at the same instant.

use std::time::Duration;

/// The ceiling before jitter: min(max, base * 2^(attempt - 1)); attempt 1 is the first.
pub fn ceiling(attempt: u32, base: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1);
    2u32.checked_pow(doublings).and_then(|factor| base.checked_mul(factor)).map_or(max, |delay| delay.min(max))
}

/// "Equal jitter": uniform in [ceiling / 2, ceiling], so a retry never comes much sooner than
/// the exponential schedule says, while retries of one moment still spread over half of it.
pub fn jittered(ceiling: Duration) -> Duration {
    let high = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(high / 2..=high))
}

/// The delay before retrying after `attempt` failures in a row.
pub fn delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    jittered(ceiling(attempt, base, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(1000);
    const MAX: Duration = Duration::from_secs(300);

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        assert_eq!(ceiling(1, BASE, MAX), Duration::from_secs(1));
        assert_eq!(ceiling(2, BASE, MAX), Duration::from_secs(2));
        assert_eq!(ceiling(9, BASE, MAX), Duration::from_secs(256));
        assert_eq!(ceiling(10, BASE, MAX), MAX);
        // An attempt of 0 (never sent by claim_alerts) counts as the first.
        assert_eq!(ceiling(0, BASE, MAX), BASE);
        // 2^31 and beyond overflow: the cap, not a panic.
        for attempt in [32, 33, 64, u32::MAX] {
            assert_eq!(ceiling(attempt, BASE, MAX), MAX, "attempt {attempt}");
        }
        let huge_base = Duration::from_secs(u64::MAX / 2);
        assert_eq!(ceiling(3, huge_base, MAX), MAX);
    }

    #[test]
    fn jitter_stays_between_half_and_the_ceiling() {
        for attempt in [1, 2, 5, 9, 10, 40] {
            let ceiling = ceiling(attempt, Duration::from_millis(100), Duration::from_secs(1));
            for _ in 0..200 {
                let delay = jittered(ceiling);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
            }
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
        assert!(jittered(Duration::from_millis(1)) <= Duration::from_millis(1));
    }

    #[test]
    fn delay_is_jittered_ceiling() {
        for _ in 0..100 {
            let delay = delay(3, Duration::from_millis(100), Duration::from_secs(1));
            assert!(delay >= Duration::from_millis(200) && delay <= Duration::from_millis(400), "{delay:?}");
        }
    }
}
