//! JSON values in proxy-wasm shared data, read and changed with compare-and-swap. For state
//! that changes rarely (trust counts per tick, tool catalogs); breakers use their own compact
//! codec because they change on every call.

use crate::host::HostStore;
use mcp_warden_core::breaker::store::{CREATE_ONLY, MAX_CAS_ATTEMPTS};
use mcp_warden_core::breaker::{SharedStore, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// JSON through the `&str` reader, like every other parse in the filter: one copy of
/// serde_json's parser in the binary instead of one per reader type.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()
}

/// The value under `key`, or its default when absent or unreadable.
pub fn load<T: DeserializeOwned + Default>(key: &str) -> T {
    match HostStore.get(key) {
        Ok((Some(bytes), _)) => parse(&bytes).unwrap_or_default(),
        _ => T::default(),
    }
}

/// Read-modify-write of the value under `key`, retried on lost races.
pub fn update<T>(key: &str, mut change: impl FnMut(&mut T)) -> Result<(), StoreError>
where
    T: DeserializeOwned + Serialize + Default,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (bytes, cas) = HostStore.get(key)?;
        let mut value: T = bytes.as_deref().and_then(parse).unwrap_or_default();
        change(&mut value);
        let out = serde_json::to_vec(&value).map_err(|e| StoreError::Host(e.to_string()))?;
        match HostStore.set(key, &out, cas.or(Some(CREATE_ONLY))) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}
