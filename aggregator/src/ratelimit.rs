//! Token buckets per caller, in a map with a fixed capacity. Time is passed in (milliseconds of a
//! monotonic clock), so the arithmetic is tested without sleeping.

use crate::config::Rate;
use std::collections::HashMap;
use std::hash::Hash;

/// One caller's bucket: `tokens` left as of `updated_ms`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

impl Bucket {
    fn full(rate: Rate, now: u64) -> Bucket {
        Bucket { tokens: f64::from(rate.burst), updated_ms: now }
    }

    fn refill(&mut self, rate: Rate, now: u64) {
        let elapsed = now.saturating_sub(self.updated_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.updated_ms = self.updated_ms.max(now);
    }

    /// Takes one token, or says how long (ms) until one is there.
    fn take(&mut self, rate: Rate, now: u64) -> Result<(), u64> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate.per_second * 1000.0).ceil().max(1.0) as u64)
        }
    }
}

/// Buckets by key, at most `capacity` of them. When a new key arrives and the map is full, the
/// quarter of the keys seen least recently is forgotten (they start again with a full bucket):
/// the map never grows past its capacity, and eviction costs O(log n) per insertion on average.
#[derive(Debug)]
pub struct Buckets<K> {
    map: HashMap<K, Bucket>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(capacity: usize) -> Self {
        Buckets { map: HashMap::new(), capacity: capacity.max(1) }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes one token from `key`'s bucket; `Err(ms)` until the next token if it is empty.
    pub fn take(&mut self, key: &K, rate: Rate, now: u64) -> Result<(), u64> {
        if let Some(b) = self.map.get_mut(key) {
            return b.take(rate, now);
        }
        if self.map.len() >= self.capacity {
            self.evict();
        }
        let mut b = Bucket::full(rate, now);
        let r = b.take(rate, now);
        self.map.insert(key.clone(), b);
        r
    }

    fn evict(&mut self) {
        let mut seen: Vec<(u64, K)> = self.map.iter().map(|(k, b)| (b.updated_ms, k.clone())).collect();
        seen.sort_unstable_by_key(|(at, _)| *at);
        let drop = (self.capacity / 4).max(1);
        for (_, k) in seen.into_iter().take(drop) {
            self.map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate::new(2.0, 3);

    #[test]
    fn a_burst_then_the_rate() {
        let mut b: Buckets<&str> = Buckets::new(10);
        for _ in 0..3 {
            assert_eq!(b.take(&"a", R, 1000), Ok(()));
        }
        // Empty: the next token comes in 1/2 s.
        assert_eq!(b.take(&"a", R, 1000), Err(500));
        assert_eq!(b.take(&"a", R, 1250), Err(250));
        assert_eq!(b.take(&"a", R, 1500), Ok(()));
        assert_eq!(b.take(&"a", R, 1500), Err(500));
        // Other keys have their own bucket.
        assert_eq!(b.take(&"b", R, 1500), Ok(()));
        // A long pause refills up to the burst, not more.
        for _ in 0..3 {
            assert_eq!(b.take(&"a", R, 100_000), Ok(()));
        }
        assert!(b.take(&"a", R, 100_000).is_err());
    }

    #[test]
    fn time_going_backwards_takes_nothing_extra() {
        let mut b: Buckets<u8> = Buckets::new(4);
        for _ in 0..3 {
            b.take(&1, R, 5000).unwrap();
        }
        assert!(b.take(&1, R, 4000).is_err());
        assert!(b.take(&1, R, 5000).is_err());
    }

    #[test]
    fn the_map_is_bounded_and_forgets_the_least_recent() {
        let mut b: Buckets<u32> = Buckets::new(100);
        for k in 0..10_000u32 {
            let _ = b.take(&k, R, u64::from(k));
            assert!(b.len() <= 100);
        }
        // The most recent keys are still limited; the oldest were forgotten.
        let recent = 9_999;
        for _ in 0..2 {
            let _ = b.take(&recent, R, 9_999);
        }
        assert!(b.take(&recent, R, 9_999).is_err());
        assert!(b.take(&0, R, 9_999).is_ok());
    }
}
