//! Process-wide state shared by every worker thread: one Envoy process, one copy of the module,
//! so plain locks replace proxy-wasm's shared data. It outlives a filter configuration that Envoy
//! replaces, as shared data outlives a VM.
//!
//! Breakers are the core's state machines behind one lock each (no encoding). Agent sessions
//! use the core's session table, written against [`SharedStore`] (versioned values,
//! compare-and-swap): [`MemoryStore`] gives it those semantics in memory, so the same code,
//! bounds and eviction run here.

use mcp_warden_core::breaker::store::CREATE_ONLY;
use mcp_warden_core::breaker::{BreakerPolicy, BreakerState, SharedStore, StoreError};
use mcp_warden_core::inspect::ToolPins;
use mcp_warden_core::retry::{RetryBudget, ToolCatalog};
use mcp_warden_core::trust::sidecar::{DefinitionOutbox, SignalAccumulator, TrustTable};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

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
                // Never 0 ("unconditional") nor `CREATE_ONLY` ("create if missing").
                entry.1 = match entry.1.wrapping_add(1) {
                    0 | CREATE_ONLY => 1,
                    v => v,
                };
                Ok(())
            }
            None => {
                map.insert(key.to_string(), (value.to_vec(), 1));
                Ok(())
            }
        }
    }
}

/// One cluster's breaker, shared by every worker.
pub type Breaker = Arc<Mutex<BreakerState>>;

/// What every worker shares, for the life of the process.
pub struct Process {
    /// Breakers by their key (`Cluster::breaker_key`); one per configured cluster.
    breakers: Mutex<HashMap<String, Breaker>>,
    /// Agent sessions (the core's session table: its buckets, bounds and eviction).
    pub store: MemoryStore,
    /// The trust table enforced by every worker (replaced by the trust loop).
    pub trust: RwLock<TrustTable>,
    /// Outcome counts and security findings since the last trust report.
    pub pending: Mutex<SignalAccumulator>,
    /// Retries and hedges the process may still make (a fifth of its requests, bursts of 10).
    pub retry_budget: Mutex<RetryBudget>,
    /// Tool hints per logical server, learned from `tools/list` answers (bounded by `MAX_TOOLS`).
    pub tool_hints: RwLock<HashMap<String, ToolCatalog>>,
    /// Per server name: the results hash of the `tools/list` answer its hints were last learned
    /// from (set while holding `tool_hints`), so the same list again is not parsed again.
    /// One entry per server in `tool_hints`.
    pub learned_lists: Mutex<HashMap<String, u64>>,
    /// Tool definitions pinned per server (bounded per server and by the server count).
    pub pins: Mutex<Option<ToolPins>>,
    /// The first server that listed each tool name, for shadowing (bounded).
    pub tool_owners: Mutex<BTreeMap<String, String>>,
    /// Tool definitions not yet sent for the aggregator's mesh-wide scan (bounded).
    pub outbox: Mutex<DefinitionOutbox>,
}

/// The process's shared state.
pub fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| Process {
        breakers: Mutex::new(HashMap::new()),
        store: MemoryStore::default(),
        trust: RwLock::new(TrustTable::default()),
        pending: Mutex::new(SignalAccumulator::default()),
        retry_budget: Mutex::new(RetryBudget::new(0.2, 10.0)),
        tool_hints: RwLock::new(HashMap::new()),
        learned_lists: Mutex::new(HashMap::new()),
        pins: Mutex::new(None),
        tool_owners: Mutex::new(BTreeMap::new()),
        outbox: Mutex::new(DefinitionOutbox::default()),
    })
}

impl Process {
    /// The breaker under `key`, kept across configurations unless shaped for another policy
    /// (then a fresh closed one, as the wasm filter does with an incompatible stored state).
    pub fn breaker(&self, key: &str, policy: &BreakerPolicy, now_ms: u64) -> Breaker {
        let mut map = lock(&self.breakers);
        if let Some(b) = map.get(key) {
            if lock(b).window.fits(policy.window_kind, policy.window_size) {
                return Arc::clone(b);
            }
        }
        let b = Arc::new(Mutex::new(BreakerState::new(policy, now_ms)));
        map.insert(key.to_string(), Arc::clone(&b));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_warden_core::breaker::{BreakerStore, CallRecord};

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
    fn no_acknowledged_write_is_lost_under_concurrent_compare_and_swap() {
        // Four threads update one value through the core's bounded compare-and-swap loop (the
        // session table's pattern). A writer may give up after losing too many races (an error
        // it sees); every write that succeeded must be in the final value.
        let store = std::sync::Arc::new(MemoryStore::default());
        // A window larger than the calls, so every recorded one stays in it.
        let policy = BreakerPolicy { window_size: 1_000, minimum_calls: 1_000, ..BreakerPolicy::default() };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                let policy = policy.clone();
                std::thread::spawn(move || {
                    let b = BreakerStore { store: &*store, key: "b", policy: &policy };
                    let mut acknowledged = 0u32;
                    for _ in 0..50 {
                        match b.record(CallRecord { failed: false, slow: false, probe: false, epoch: 0 }, 1_000) {
                            Ok(_) => acknowledged += 1,
                            Err(e) => assert_eq!(e, StoreError::CasMismatch),
                        }
                    }
                    acknowledged
                })
            })
            .collect();
        let acknowledged: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let b = BreakerStore { store: &*store, key: "b", policy: &policy };
        let (state, _) = b.load(1_000).unwrap();
        assert!(acknowledged > 0);
        assert_eq!(state.window.stats(1_000).calls, acknowledged);
    }
}
