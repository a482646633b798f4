//! Compare-and-swap updates of breakers kept in a host's shared data.
//!
//! Every worker thread of a proxy runs its own VM; the only state they share is the host's
//! key-value store, whose writes carry a version (`cas`). A writer that lost the race reads again
//! and re-applies its change, so no outcome is lost and every transition happens exactly once.

use super::codec;
use super::machine::{Admission, BreakerState, CallRecord, Step, Transition};
use super::policy::BreakerPolicy;
use std::fmt;

/// A failure of the host's store other than a lost race.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the value since it was read.
    CasMismatch,
    /// Anything else the host reported.
    Host(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => write!(f, "value changed by another writer"),
            StoreError::Host(m) => write!(f, "shared data: {m}"),
        }
    }
}

/// The host's shared key-value store (proxy-wasm shared data, or a fake in tests).
pub trait SharedStore {
    /// The value and its version, or `None` when the key does not exist.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Writes if the version still matches (`None`: unconditional).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// A compare-and-swap value no key has: Envoy's shared data sets a key that does not exist
/// whatever the cas, and refuses one that does unless the cas matches, so a write with this
/// creates a key only if no other worker created it first (a plain set would overwrite it).
pub const CREATE_ONLY: u32 = u32::MAX;

/// How many times a writer retries after losing a race before giving up on one update.
pub const MAX_CAS_ATTEMPTS: usize = 16;

/// The outcome of an update: the step's value and the transition that this writer performed.
pub type Update<T> = Result<(T, Option<Transition>), StoreError>;

/// One cluster's breaker, read and written through a [`SharedStore`].
pub struct BreakerStore<'a, S: SharedStore> {
    pub store: &'a S,
    pub key: &'a str,
    pub policy: &'a BreakerPolicy,
}

impl<'a, S: SharedStore> BreakerStore<'a, S> {
    /// The current state; a missing or unreadable value (or one shaped for another policy) is a
    /// fresh closed breaker.
    pub fn load(&self, now_ms: u64) -> Result<(BreakerState, Option<u32>), StoreError> {
        let (value, cas) = self.store.get(self.key)?;
        let state = value
            .and_then(|v| codec::decode(&v).ok())
            .filter(|s| s.window.fits(self.policy.window_kind, self.policy.window_size))
            .unwrap_or_else(|| BreakerState::new(self.policy, now_ms));
        Ok((state, cas))
    }

    /// Writes a fresh closed breaker if none exists yet (call at configuration time, so the
    /// first data-path write is already a compare-and-swap).
    pub fn ensure(&self, now_ms: u64) -> Result<(), StoreError> {
        let (value, cas) = self.store.get(self.key)?;
        let usable = value
            .and_then(|v| codec::decode(&v).ok())
            .is_some_and(|s| s.window.fits(self.policy.window_kind, self.policy.window_size));
        if !usable {
            let mut buf = Vec::new();
            codec::encode(&BreakerState::new(self.policy, now_ms), &mut buf);
            match self.store.set(self.key, &buf, cas.or(Some(CREATE_ONLY))) {
                // Another worker wrote it meanwhile: theirs stands.
                Ok(()) | Err(StoreError::CasMismatch) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Asks for admission. A closed breaker answers from one read, with no write.
    pub fn admit(&self, now_ms: u64) -> Update<Admission> {
        self.update(now_ms, |s| s.admit(self.policy, now_ms))
    }

    /// Records a call's result.
    pub fn record(&self, call: CallRecord, now_ms: u64) -> Update<()> {
        self.update(now_ms, |s| s.record(self.policy, call, now_ms))
    }

    /// Hands back a probe slot for a call that ended with no verdict.
    pub fn release_probe(&self, epoch: u32, now_ms: u64) -> Update<()> {
        self.update(now_ms, |s| s.release_probe(epoch))
    }

    fn update<T>(&self, now_ms: u64, mut step: impl FnMut(&mut BreakerState) -> Step<T>) -> Update<T> {
        let mut buf = Vec::new();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut state, cas) = self.load(now_ms)?;
            let out = step(&mut state);
            if !out.changed {
                return Ok((out.value, out.transition));
            }
            codec::encode(&state, &mut buf);
            match self.store.set(self.key, &buf, cas.or(Some(CREATE_ONLY))) {
                Ok(()) => return Ok((out.value, out.transition)),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;
    use super::*;
    use crate::breaker::machine::Phase;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Envoy's shared data (proxy-wasm-cpp-host `SharedData::set`): a key that does not exist is set
    /// whatever the cas; an existing one only with cas 0 or its current cas. `conflicts` makes the
    /// next compare-and-swaps on existing keys fail, as if another worker wrote first.
    #[derive(Default)]
    pub struct FakeStore {
        pub map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        pub conflicts: Cell<u32>,
        pub next_cas: Cell<u32>,
        /// Written just before the next set, as by another worker between our read and our write.
        pub interlude: RefCell<Option<(String, Vec<u8>)>>,
    }

    impl SharedStore for FakeStore {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            Ok(match self.map.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            })
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let mut map = self.map.borrow_mut();
            if let Some((k, v)) = self.interlude.borrow_mut().take() {
                self.next_cas.set(self.next_cas.get() + 1);
                map.insert(k, (v, self.next_cas.get()));
            }
            let cas = cas.unwrap_or(0);
            if let Some(entry) = map.get_mut(key) {
                if cas != 0 && self.conflicts.get() > 0 {
                    self.conflicts.set(self.conflicts.get() - 1);
                    entry.1 = entry.1.wrapping_add(1_000);
                    return Err(StoreError::CasMismatch);
                }
                if cas != 0 && cas != entry.1 {
                    return Err(StoreError::CasMismatch);
                }
            }
            self.next_cas.set(self.next_cas.get() + 1);
            map.insert(key.to_string(), (value.to_vec(), self.next_cas.get()));
            Ok(())
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn closed_admission_does_not_write() {
        let store = FakeStore::default();
        let p = BreakerPolicy::default();
        let b = BreakerStore { store: &store, key: "k", policy: &p };
        b.ensure(0).unwrap();
        let version = store.map.borrow()["k"].1;
        assert!(b.admit(1).unwrap().0.admitted());
        assert_eq!(store.map.borrow()["k"].1, version);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lost_races_are_retried_and_nothing_is_lost() {
        let store = FakeStore::default();
        let p = BreakerPolicy::default();
        let b = BreakerStore { store: &store, key: "k", policy: &p };
        b.ensure(0).unwrap();
        let mut transitions = 0;
        for i in 0..5 {
            store.conflicts.set(3);
            let (_, t) = b.record(CallRecord { failed: true, slow: false, probe: false, epoch: 0 }, i).unwrap();
            transitions += usize::from(t.is_some());
        }
        assert_eq!(transitions, 1);
        assert!(matches!(b.load(6).unwrap().0.phase, Phase::Open { .. }));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_first_write_keeps_a_breaker_another_worker_created_meanwhile() {
        // No `ensure` ran: the key is missing when read, and another worker creates it (with
        // one recorded call) between this writer's read and its write.
        let store = FakeStore::default();
        let p = BreakerPolicy { window_size: 100, minimum_calls: 100, ..Default::default() };
        let b = BreakerStore { store: &store, key: "k", policy: &p };
        let mut theirs = BreakerState::new(&p, 0);
        let _ = theirs.record(&p, CallRecord { failed: true, slow: false, probe: false, epoch: 0 }, 1);
        let mut buf = Vec::new();
        codec::encode(&theirs, &mut buf);
        *store.interlude.borrow_mut() = Some(("k".into(), buf));
        b.record(CallRecord { failed: false, slow: false, probe: false, epoch: 0 }, 2).unwrap();
        let stats = b.load(3).unwrap().0.window.stats(3);
        assert_eq!((stats.calls, stats.failures), (2, 1));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn gives_up_after_bounded_attempts() {
        let store = FakeStore::default();
        let p = BreakerPolicy::default();
        let b = BreakerStore { store: &store, key: "k", policy: &p };
        b.ensure(0).unwrap();
        store.conflicts.set(u32::MAX);
        let r = b.record(CallRecord { failed: true, slow: false, probe: false, epoch: 0 }, 1);
        assert_eq!(r.unwrap_err(), StoreError::CasMismatch);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn garbage_or_reshaped_state_becomes_a_fresh_breaker() {
        let store = FakeStore::default();
        store.set("k", b"garbage", None).unwrap();
        let p = BreakerPolicy::default();
        let b = BreakerStore { store: &store, key: "k", policy: &p };
        assert_eq!(b.load(5).unwrap().0, BreakerState::new(&p, 5));
        // A policy with another window shape resets the stored window.
        b.ensure(0).unwrap();
        let p2 = BreakerPolicy { window_size: 50, ..Default::default() };
        let b2 = BreakerStore { store: &store, key: "k", policy: &p2 };
        assert!(b2.load(0).unwrap().0.window.fits(p2.window_kind, 50));
    }
}
