//! Session pins in shared data: a session created on a fallback keeps going there (see
//! `mcp_warden_core::session`). Only sessions created off the primary are written, so normal
//! traffic costs one shared-data read per request that carries a session id.

use crate::host::HostStore;
use mcp_warden_core::breaker::SharedStore;
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::session::{slot_key, SessionPin, DEFAULT_SESSION_SLOTS};

/// The cluster index a session of `server` is pinned to.
pub fn pinned(cfg: &PluginConfig, server: usize, session: &str) -> Option<usize> {
    let srv = cfg.servers.get(server)?;
    let (bytes, _) = HostStore.get(&slot_key(session, DEFAULT_SESSION_SLOTS)).ok()?;
    let cluster = SessionPin::lookup(&bytes?, &srv.name, session)?;
    srv.clusters.iter().copied().find(|&c| cfg.cluster(c).is_some_and(|c| c.name == cluster))
}

/// Pins a new session to the cluster that created it.
pub fn pin(cfg: &PluginConfig, server: usize, session: &str, cluster: usize) {
    let (Some(srv), Some(c)) = (cfg.servers.get(server), cfg.cluster(cluster)) else { return };
    let pin = SessionPin { session: session.to_string(), server: srv.name.clone(), cluster: c.name.clone() };
    let Some(bytes) = pin.encode() else { return };
    if let Err(e) = HostStore.set(&slot_key(session, DEFAULT_SESSION_SLOTS), &bytes, None) {
        log::warn!("mcp-warden: could not pin a session to `{}`: {e}", c.name);
    }
}

/// Forgets a session's pin (the agent ended the session).
pub fn unpin(cfg: &PluginConfig, server: usize, session: &str) {
    let Some(srv) = cfg.servers.get(server) else { return };
    let key = slot_key(session, DEFAULT_SESSION_SLOTS);
    if let Ok((Some(bytes), cas)) = HostStore.get(&key) {
        if SessionPin::lookup(&bytes, &srv.name, session).is_some() {
            let _ = HostStore.set(&key, b"", cas);
        }
    }
}
