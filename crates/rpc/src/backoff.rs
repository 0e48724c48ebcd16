//! The reconnection policy, as a sans-IO state machine.
//!
//! Defaults follow the TypeScript SDK (first delay 100 ms, doubling, at most 10 attempts) with
//! a cap on any one delay (`max_delay`) and jitter, so a fleet that lost the same machine does
//! not come back in lockstep. Errors that can never succeed (bad credentials, unknown host)
//! end the loop at once. The policy reads no clock and no randomness of its own: the caller
//! passes the jitter sample, so every schedule is reproducible in tests.

use std::time::Duration;

/// How reconnection is paced.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first attempt.
    pub first_delay: Duration,
    /// Growth factor between attempts.
    pub multiplier: f64,
    /// Largest delay before any attempt.
    pub max_delay: Duration,
    /// Attempts before giving up (0: never reconnect).
    pub max_attempts: u32,
    /// Fraction of each delay that is randomised, in [0, 1]: a delay `d` becomes a value in
    /// `[d·(1 − jitter), d]`.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(10),
            max_attempts: 10,
            jitter: 0.2,
        }
    }
}

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// May succeed later (connection refused, timeout, reset).
    Transient,
    /// Can never succeed by retrying (bad credentials, unknown host, bad TLS identity).
    Permanent,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Wait this long, then make attempt number `attempt` (1-based).
    RetryAfter { attempt: u32, delay: Duration },
    /// Stop: `attempts` were made without success.
    GiveUp { attempts: u32 },
}

/// One reconnection episode: from the loss of a connection to success or giving up.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempts: u32,
}

impl Backoff {
    /// A new episode under `policy`.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            attempts: 0,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay before attempt `n` (1-based), before jitter.
    fn base_delay(&self, n: u32) -> Duration {
        let grown = self.policy.first_delay.as_secs_f64()
            * self
                .policy
                .multiplier
                .max(1.0)
                .powi(n.saturating_sub(1) as i32);
        Duration::try_from_secs_f64(grown)
            .unwrap_or(self.policy.max_delay)
            .min(self.policy.max_delay)
    }

    /// What to do after the connection was lost (`last` = None) or an attempt failed.
    /// `random` is a sample in [0, 1) used for jitter.
    pub fn next(&mut self, last: Option<Failure>, random: f64) -> Next {
        if last == Some(Failure::Permanent) || self.attempts >= self.policy.max_attempts {
            return Next::GiveUp {
                attempts: self.attempts,
            };
        }
        self.attempts += 1;
        let base = self.base_delay(self.attempts);
        let jitter = self.policy.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        Next::RetryAfter {
            attempt: self.attempts,
            delay: base.mul_f64(1.0 - jitter),
        }
    }
}

/// A jitter sample in [0, 1) without a dependency: the sub-second clock is random enough to
/// spread a fleet's retries.
pub fn jitter_sample() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_100ms_up_to_the_cap_then_gives_up_after_ten() {
        let mut b = Backoff::new(BackoffPolicy {
            max_delay: ms(5000),
            ..BackoffPolicy::default()
        });
        let mut delays = Vec::new();
        let mut last = None;
        loop {
            match b.next(last, 0.0) {
                Next::RetryAfter { attempt, delay } => {
                    assert_eq!(attempt as usize, delays.len() + 1);
                    delays.push(delay);
                    last = Some(Failure::Transient);
                }
                Next::GiveUp { attempts } => {
                    assert_eq!(attempts, 10);
                    break;
                }
            }
        }
        let expected: Vec<_> = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(delays, expected);
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let mut b = Backoff::new(BackoffPolicy::default());
        assert_eq!(
            b.next(None, 0.5),
            Next::RetryAfter {
                attempt: 1,
                delay: ms(90)
            }
        );
        let Next::RetryAfter { delay, .. } = b.next(Some(Failure::Transient), 0.999_999) else {
            panic!()
        };
        assert!(delay > ms(160) && delay <= ms(200), "{delay:?}");
    }

    #[test]
    fn permanent_failures_stop_at_once_and_zero_attempts_means_never() {
        let mut b = Backoff::new(BackoffPolicy::default());
        assert!(matches!(b.next(None, 0.0), Next::RetryAfter { .. }));
        assert_eq!(
            b.next(Some(Failure::Permanent), 0.0),
            Next::GiveUp { attempts: 1 }
        );
        let mut never = Backoff::new(BackoffPolicy {
            max_attempts: 0,
            ..BackoffPolicy::default()
        });
        assert_eq!(never.next(None, 0.0), Next::GiveUp { attempts: 0 });
    }

    #[test]
    fn huge_multipliers_saturate_at_the_cap() {
        let mut b = Backoff::new(BackoffPolicy {
            multiplier: 1e9,
            max_attempts: 100,
            ..BackoffPolicy::default()
        });
        for _ in 0..50 {
            let Next::RetryAfter { delay, .. } = b.next(Some(Failure::Transient), 0.0) else {
                panic!()
            };
            assert!(delay <= BackoffPolicy::default().max_delay);
        }
    }
}
