//! Request-rate limits that protect the gateway and the database from one noisy client:
//! `POST /realtime/subscribe` per user and per IP address (SPEC §8: 429 with `Retry-After`).
//!
//! Token buckets (the `governor` crate, GCRA) keyed by user id and by peer address: each key
//! may burst to twice its per-second rate (a page subscribing to a few dozen counters at load
//! is normal), then is held to the rate. The per-IP check runs before the JWT is verified, so a
//! flood of forged requests costs the gateway almost nothing. Behind a proxy every request
//! shares the proxy's address: raise or disable the per-IP limit there.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two sweeps of idle keys (the limiter keeps state per key seen).
const SWEEP_EVERY: u64 = 10_000;

pub struct SubscribeLimits {
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    checks: AtomicU64,
}

/// Which limit refused a request, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub scope: &'static str,
    pub retry_after: Duration,
}

impl SubscribeLimits {
    /// `per_user` / `per_ip` requests per second; 0 disables that limit.
    pub fn new(per_user: u32, per_ip: u32) -> Self {
        SubscribeLimits {
            per_user: quota(per_user).map(RateLimiter::keyed),
            per_ip: quota(per_ip).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        self.sweep();
        match &self.per_ip {
            Some(limiter) => limiter.check_key(&ip).map_err(|not_until| Refused {
                scope: "address",
                retry_after: not_until.wait_time_from(self.clock.now()),
            }),
            None => Ok(()),
        }
    }

    pub fn check_user(&self, user: &str) -> Result<(), Refused> {
        match &self.per_user {
            Some(limiter) => limiter
                .check_key(&user.to_owned())
                .map_err(|not_until| Refused {
                    scope: "user",
                    retry_after: not_until.wait_time_from(self.clock.now()),
                }),
            None => Ok(()),
        }
    }

    /// Forgets keys that have been idle long enough to be back at a full burst.
    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
            return;
        }
        if let Some(limiter) = &self.per_user {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
        }
    }
}

fn quota(per_second: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_bursts_to_twice_its_rate_then_is_refused_with_a_wait() {
        let limits = SubscribeLimits::new(5, 0);
        for _ in 0..10 {
            assert!(limits.check_user("u1").is_ok());
        }
        let refused = limits.check_user("u1").expect_err("over the burst");
        assert_eq!(refused.scope, "user");
        assert!(refused.retry_after > Duration::ZERO);
        assert!(limits.check_user("u2").is_ok(), "keys are independent");
        assert!(
            limits.check_ip(IpAddr::from([127, 0, 0, 1])).is_ok(),
            "0 disables"
        );
    }
}
