//! Per-client request rate limits: one token bucket per client identity
//! (its certificate identity, or its address on an insecure cluster).
//! A request over the limit is RESOURCE_EXHAUSTED before anything else
//! happens, so it changes nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets idle this long are forgotten (when the map grows large).
const IDLE_SECS: f64 = 60.0;
/// Above this many clients, idle buckets are pruned.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Tokens added per second; 0 disables the limit.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u64, burst: u64) -> RateLimiter {
        RateLimiter {
            rate: per_second as f64,
            burst: burst.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `client`'s bucket; false when it is empty.
    pub(crate) fn allow(&self, client: &str) -> bool {
        self.allow_at(client, Instant::now())
    }

    fn allow_at(&self, client: &str, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        // Fail closed: a lock poisoned by a panic mid-update admits no one
        // (RESOURCE_EXHAUSTED changes nothing), never everyone.
        let Ok(mut map) = self.buckets.lock() else {
            return false;
        };
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() < IDLE_SECS);
        }
        let (tokens, last) = map.entry(client.to_string()).or_insert((self.burst, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = RateLimiter::new(10, 5);
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| l.allow_at("a", t0)).count(), 5);
        // Another client has its own bucket.
        assert!(l.allow_at("b", t0));
        // 0.5 s later: 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..8).filter(|_| l.allow_at("a", t1)).count(), 5);
        assert!(RateLimiter::new(0, 0).allow_at("a", t1), "0 disables");
    }

    #[test]
    fn a_poisoned_limiter_admits_no_one() {
        let l = std::sync::Arc::new(RateLimiter::new(10, 5));
        let l2 = l.clone();
        let _ = std::thread::spawn(move || {
            let _g = l2.buckets.lock();
            panic!("poison the lock on purpose");
        })
        .join();
        assert!(l.buckets.is_poisoned());
        assert!(!l.allow("a"), "a poisoned limiter must fail closed");
    }
}
