//! Agent sessions in shared data (see `mcp_warden_core::session`): which cluster created each
//! session, the `initialize` to replay on a fallback, and the sessions the sidecar opened there.
//! One write per new session, one read per request that carries a session id.

use crate::host::HostStore;
use crate::shared_json;
use mcp_warden_core::breaker::SharedStore;
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::session::{init_key, slot_key, SessionRecord, DEFAULT_SESSION_SLOTS, MAX_INIT_BYTES};

/// The record of an agent session of `server`, if the sidecar saw it start.
pub fn record(cfg: &PluginConfig, server: usize, session: &str) -> Option<SessionRecord> {
    let srv = cfg.servers.get(server)?;
    let (bytes, _) = HostStore.get(&slot_key(session, DEFAULT_SESSION_SLOTS)).ok()?;
    SessionRecord::lookup(&bytes?, &srv.name, session)
}

/// The cluster index named `name` in `server`'s chain.
pub fn cluster_index(cfg: &PluginConfig, server: usize, name: &str) -> Option<usize> {
    cfg.servers.get(server)?.clusters.iter().copied().find(|&c| cfg.cluster(c).is_some_and(|c| c.name == name))
}

/// Remembers a session that `cluster` just created, with the `initialize` that created it.
pub fn started(cfg: &PluginConfig, server: usize, session: &str, cluster: usize, init_body: &[u8]) {
    let (Some(srv), Some(c)) = (cfg.servers.get(server), cfg.cluster(cluster)) else { return };
    let record = SessionRecord {
        session: session.to_string(),
        server: srv.name.clone(),
        origin: c.name.clone(),
        protocol_version: None,
        mapped: Default::default(),
    };
    let Ok(bytes) = serde_json::to_vec(&record) else { return };
    // A newer session replaces whatever older one shared its slot.
    let stored = HostStore.set(&slot_key(session, DEFAULT_SESSION_SLOTS), &bytes, None);
    let init = if init_body.len() <= MAX_INIT_BYTES { init_body } else { &[][..] };
    let stored_init = HostStore.set(&init_key(session, DEFAULT_SESSION_SLOTS), init, None);
    if let Err(e) = stored.and(stored_init) {
        log::warn!("mcp-warden: could not remember a session of `{}`: {e}", srv.name);
    }
}

/// The `initialize` body that started a session, to replay on a fallback.
pub fn init_body(session: &str) -> Option<Vec<u8>> {
    match HostStore.get(&init_key(session, DEFAULT_SESSION_SLOTS)) {
        Ok((Some(b), _)) if !b.is_empty() => Some(b),
        _ => None,
    }
}

/// Records the session the sidecar opened on `cluster` for the agent's `session`.
pub fn mapped(cfg: &PluginConfig, server: usize, session: &str, cluster: usize, fallback_session: &str) {
    let (Some(srv), Some(c)) = (cfg.servers.get(server), cfg.cluster(cluster)) else { return };
    let key = slot_key(session, DEFAULT_SESSION_SLOTS);
    let result = shared_json::update::<SessionRecord>(&key, |r| {
        if r.session == session && r.server == srv.name && r.mapped.len() < 16 {
            r.mapped.insert(c.name.clone(), fallback_session.to_string());
        }
    });
    if let Err(e) = result {
        log::warn!("mcp-warden: could not map a session to `{}`: {e}", c.name);
    }
}

/// Forgets an agent session (it was deleted).
pub fn forget(cfg: &PluginConfig, server: usize, session: &str) {
    let Some(srv) = cfg.servers.get(server) else { return };
    let key = slot_key(session, DEFAULT_SESSION_SLOTS);
    if let Ok((Some(bytes), cas)) = HostStore.get(&key) {
        if SessionRecord::lookup(&bytes, &srv.name, session).is_some() {
            let _ = HostStore.set(&key, b"", cas);
            let _ = HostStore.set(&init_key(session, DEFAULT_SESSION_SLOTS), b"", None);
        }
    }
}
