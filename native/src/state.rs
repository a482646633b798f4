//! Process-wide state shared by every worker thread: one Envoy process, one copy of the module,
//! so plain locks and atomics replace proxy-wasm's shared data.
//!
//! The core's breaker and session tables are written against [`SharedStore`] (versioned values,
//! compare-and-swap): [`MemoryStore`] gives them the same semantics in memory, so the same code,
//! bounds and eviction run here without a serialising host call per access.

use mcp_warden_core::breaker::{SharedStore, StoreError};
use mcp_warden_core::retry::RetryBudget;
use mcp_warden_core::trust::sidecar::{SignalAccumulator, TrustTable};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};

/// Versioned values by key, like Envoy's shared data: a missing key is created whatever the cas;
/// an existing one is replaced only with cas `None`/0 or its current version.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

/// A lock that a panicking holder left poisoned is still the data: take it (every write here
/// is one whole-value replacement, never half done).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Ok(match lock(&self.map).get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut map = lock(&self.map);
        let cas = cas.unwrap_or(0);
        match map.get_mut(key) {
            Some(entry) if cas != 0 && cas != entry.1 => Err(StoreError::CasMismatch),
            Some(entry) => {
                entry.0.clear();
                entry.0.extend_from_slice(value);
                // Never 0: 0 means "unconditional".
                entry.1 = entry.1.wrapping_add(1).max(1);
                Ok(())
            }
            None => {
                map.insert(key.to_string(), (value.to_vec(), 1));
                Ok(())
            }
        }
    }
}

/// What every worker shares, for the life of the process (it outlives a filter configuration
/// that Envoy replaces, as shared data outlives a VM).
pub struct Process {
    /// Breakers and agent sessions (core's encodings, bounded by the core's tables).
    pub store: MemoryStore,
    /// The trust table enforced by every worker (refreshed by the trust loop).
    pub trust: RwLock<TrustTable>,
    /// Outcome counts since the last trust report.
    pub pending: Mutex<SignalAccumulator>,
    /// Retries on fallbacks the process may still make.
    pub retry_budget: Mutex<Option<RetryBudget>>,
}

/// The process's shared state.
pub fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| Process {
        store: MemoryStore::default(),
        trust: RwLock::new(TrustTable::default()),
        pending: Mutex::new(SignalAccumulator::default()),
        retry_budget: Mutex::new(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_warden_core::breaker::{BreakerPolicy, BreakerStore, CallRecord};

    #[test]
    fn versions_follow_envoys_shared_data_rules() {
        let s = MemoryStore::default();
        assert_eq!(s.get("k").unwrap(), (None, None));
        s.set("k", b"a", Some(42)).unwrap(); // a missing key is created whatever the cas
        let (v, cas) = s.get("k").unwrap();
        assert_eq!((v.as_deref(), cas), (Some(&b"a"[..]), Some(1)));
        assert_eq!(s.set("k", b"b", Some(7)), Err(StoreError::CasMismatch));
        s.set("k", b"b", cas).unwrap();
        assert_eq!(s.set("k", b"c", cas), Err(StoreError::CasMismatch)); // the old version lost
        s.set("k", b"c", None).unwrap();
        assert_eq!(s.get("k").unwrap().0.as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn breakers_updated_from_many_threads_lose_no_outcome() {
        let store = std::sync::Arc::new(MemoryStore::default());
        // A window larger than the calls, so every one of them must be in it.
        let policy = BreakerPolicy { window_size: 1_000, minimum_calls: 1_000, ..BreakerPolicy::default() };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                let policy = policy.clone();
                std::thread::spawn(move || {
                    let b = BreakerStore { store: &*store, key: "b", policy: &policy };
                    for _ in 0..50 {
                        b.record(CallRecord { failed: false, slow: false, probe: false, epoch: 0 }, 1_000).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let b = BreakerStore { store: &*store, key: "b", policy: &policy };
        let (state, _) = b.load(1_000).unwrap();
        assert_eq!(state.window.stats(1_000).calls, 200);
    }
}
