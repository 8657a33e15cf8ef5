//! Limits that protect the gateway and the database from one noisy client:
//! `POST /realtime/subscribe` per user and per IP address (429 with `Retry-After`; a batch of
//! subscriptions costs its user one request per entry), open WebSockets per user and per IP
//! address (429 before the upgrade), and open TCP connections in all and per peer address
//! ([`ConnectionLimits`], checked at accept time by `crate::edge`, before a byte is read).
//!
//! Token buckets (the `governor` crate, GCRA) keyed by user id and by peer address: each key
//! may burst to twice its per-second rate (a page subscribing to a few dozen counters at load
//! is normal), then is held to the rate. The per-IP check runs before the JWT is verified, so a
//! flood of forged requests costs the gateway almost nothing. Behind a proxy every request
//! shares the proxy's address, unless `STATGATE_TRUST_FORWARDED_FOR` is on: then
//! [`client_address`] takes the last `X-Forwarded-For` entry, the address the proxy saw.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use dashmap::DashMap;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two sweeps of idle keys (the limiter keeps state per key seen).
const SWEEP_EVERY: u64 = 10_000;

pub struct SubscribeLimits {
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    /// The per-user quota, kept for its burst (the largest batch one request may charge).
    user_quota: Option<Quota>,
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
            user_quota: quota(per_user),
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
        self.check_user_n(user, NonZeroU32::MIN)
    }

    /// Charges `requests` subscribe requests of `user` at once: a batch of subscriptions costs
    /// what its entries would cost one by one, or nothing when the budget cannot cover them all.
    pub fn check_user_n(&self, user: &str, requests: NonZeroU32) -> Result<(), Refused> {
        let (Some(limiter), Some(quota)) = (&self.per_user, &self.user_quota) else {
            return Ok(());
        };
        let refused = |retry_after| Refused {
            scope: "user",
            retry_after,
        };
        match limiter.check_key_n(&user.to_owned(), requests) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(refused(not_until.wait_time_from(self.clock.now()))),
            // More than a full burst: callers keep batches within `user_burst`.
            Err(_) => Err(refused(quota.burst_size_replenished_in())),
        }
    }

    /// The most subscribe requests one user may make at once; `None` without a per-user limit.
    pub fn user_burst(&self) -> Option<u32> {
        self.user_quota.map(|quota| quota.burst_size().get())
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

/// Open sockets per user and per address; 0 means no limit.
#[derive(Default)]
pub struct SocketLimits {
    per_user: usize,
    per_ip: usize,
    users: DashMap<String, usize>,
    ips: DashMap<IpAddr, usize>,
}

/// One open socket's place in the counts; dropping it (the connection ended, or the upgrade
/// never completed) gives the place back.
pub struct SocketSlot {
    limits: Arc<SocketLimits>,
    user: String,
    ip: IpAddr,
}

impl SocketLimits {
    pub fn new(per_user: usize, per_ip: usize) -> Self {
        SocketLimits {
            per_user,
            per_ip,
            ..Self::default()
        }
    }

    /// Takes a place for a socket of `user` from `ip`, or names the limit that is full.
    pub fn acquire(self: &Arc<Self>, user: &str, ip: IpAddr) -> Result<SocketSlot, &'static str> {
        if !take(&self.ips, ip, self.per_ip) {
            return Err("address");
        }
        if !take(&self.users, user.to_owned(), self.per_user) {
            give_back(&self.ips, &ip);
            return Err("user");
        }
        Ok(SocketSlot {
            limits: self.clone(),
            user: user.to_owned(),
            ip,
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        give_back(&self.limits.users, &self.user);
        give_back(&self.limits.ips, &self.ip);
    }
}

/// Open TCP connections, in all and per peer address; 0 means no limit. Every connection
/// counts from accept to close, an upgraded WebSocket too (it is the same TCP connection).
pub struct ConnectionLimits {
    total: Option<Arc<tokio::sync::Semaphore>>,
    per_ip: usize,
    ips: DashMap<IpAddr, usize>,
}

/// One open TCP connection's place in the counts; dropping it gives the place back.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    _total: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ConnectionLimits {
    pub fn new(total: usize, per_ip: usize) -> Self {
        ConnectionLimits {
            total: (total > 0).then(|| Arc::new(tokio::sync::Semaphore::new(total))),
            per_ip,
            ips: DashMap::new(),
        }
    }

    /// Takes a place for a connection from `ip`, or names the limit that is full (`"address"`
    /// or `"server"`).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, &'static str> {
        if !take(&self.ips, ip, self.per_ip) {
            return Err("address");
        }
        let total = match &self.total {
            Some(total) => match total.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    give_back(&self.ips, &ip);
                    return Err("server");
                }
            },
            None => None,
        };
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
            _total: total,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        give_back(&self.limits.ips, &self.ip);
    }
}

fn take<K: Eq + Hash>(counts: &DashMap<K, usize>, key: K, limit: usize) -> bool {
    let mut count = counts.entry(key).or_insert(0);
    if limit != 0 && *count >= limit {
        return false;
    }
    *count += 1;
    true
}

fn give_back<K: Eq + Hash>(counts: &DashMap<K, usize>, key: &K) {
    counts.remove_if_mut(key, |_, count| {
        *count = count.saturating_sub(1);
        *count == 0
    });
}

/// The client's address for per-address limits: the TCP peer, or, when the proxy in front is
/// trusted, the last `X-Forwarded-For` entry (the one that proxy appended; earlier entries
/// come from the client and prove nothing). A missing or malformed header means the peer.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trust_forwarded_for: bool) -> IpAddr {
    if !trust_forwarded_for {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|list| list.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    #[test]
    fn the_client_address_is_the_last_forwarded_entry_only_when_the_proxy_is_trusted() {
        let peer: IpAddr = "10.0.0.9".parse().expect("ip");
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        assert_eq!(client_address(peer, &headers, false), peer);
        assert_eq!(
            client_address(peer, &headers, true),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("not an address"),
        );
        assert_eq!(client_address(peer, &headers, true), peer);
        assert_eq!(client_address(peer, &HeaderMap::new(), true), peer);
    }

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

    #[test]
    fn a_batch_is_charged_per_entry_and_all_or_nothing() {
        let limits = SubscribeLimits::new(5, 0);
        assert_eq!(limits.user_burst(), Some(10));
        let seven = NonZeroU32::new(7).expect("non-zero");
        assert!(limits.check_user_n("u1", seven).is_ok());
        let refused = limits.check_user_n("u1", seven).expect_err("7 + 7 > 10");
        assert_eq!(refused.scope, "user");
        // The refused batch took nothing: what is left still covers three.
        for _ in 0..3 {
            assert!(limits.check_user("u1").is_ok());
        }
        let over_burst = NonZeroU32::new(11).expect("non-zero");
        assert!(limits.check_user_n("u2", over_burst).is_err());
        assert_eq!(SubscribeLimits::new(0, 0).user_burst(), None);
    }

    #[test]
    fn connection_places_are_counted_in_all_and_per_address_and_given_back() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let first = limits.acquire(a).expect("first");
        let _second = limits.acquire(a).expect("second");
        assert_eq!(limits.acquire(a).err(), Some("address"));
        let _third = limits.acquire(b).expect("another address");
        assert_eq!(limits.acquire(b).err(), Some("server"));
        assert_eq!(
            limits.ips.get(&b).map(|count| *count),
            Some(1),
            "a refusal by the total gives the address's place back"
        );
        drop(first);
        assert!(
            limits.acquire(b).is_ok(),
            "a closed connection frees its place"
        );
        let unlimited = Arc::new(ConnectionLimits::new(0, 0));
        let held: Vec<_> = (0..100).map(|_| unlimited.acquire(a)).collect();
        assert!(held.iter().all(Result::is_ok), "0 means no limit");
    }

    #[test]
    fn socket_places_are_counted_per_user_and_address_and_given_back() {
        let limits = Arc::new(SocketLimits::new(2, 3));
        let ip = IpAddr::from([10, 0, 0, 1]);
        let a = limits.acquire("u1", ip).expect("first");
        let _b = limits.acquire("u1", ip).expect("second");
        assert_eq!(limits.acquire("u1", ip).err(), Some("user"));
        let _c = limits.acquire("u2", ip).expect("another user");
        assert_eq!(limits.acquire("u3", ip).err(), Some("address"));
        drop(a);
        assert!(
            limits.acquire("u1", ip).is_ok(),
            "a closed socket gives its place back"
        );
        assert!(limits.users.get("u3").is_none_or(|c| *c == 0));
    }
}
