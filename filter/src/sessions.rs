//! Agent sessions in shared data (see `mcp_warden_core::session`): which cluster created each
//! session, the `initialize` to replay on a fallback, and the sessions the sidecar opened there.
//! One read per request that carries a session id; writes when a session starts, is mapped or
//! ends, and a last-use refresh at most once a minute per session.

use crate::host::{self, HostStore};
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::session::{SessionRecord, SessionTable, Started};

fn table(cfg: &PluginConfig) -> SessionTable<'static, HostStore> {
    SessionTable::new(&HostStore, cfg.failover.max_sessions)
}

fn now_s() -> u64 {
    host::now_ms() / 1_000
}

/// The record of an agent session of `server`, if the sidecar saw it start (and still has it).
pub fn record(cfg: &PluginConfig, server: usize, session: &str) -> Option<SessionRecord> {
    let srv = cfg.servers.get(server)?;
    table(cfg).lookup(&srv.name, session, now_s())
}

/// The cluster index named `name` in `server`'s chain.
pub fn cluster_index(cfg: &PluginConfig, server: usize, name: &str) -> Option<usize> {
    cfg.servers.get(server)?.clusters.iter().copied().find(|&c| cfg.cluster(c).is_some_and(|c| c.name == name))
}

/// Remembers a session that `cluster` just created, with the `initialize` that created it.
pub fn started(cfg: &PluginConfig, server: usize, session: &str, cluster: usize, init_body: &[u8]) {
    let (Some(srv), Some(c)) = (cfg.servers.get(server), cfg.cluster(cluster)) else { return };
    match table(cfg).start(&srv.name, session, &c.name, init_body, now_s()) {
        Ok(Started::Recorded { evicted: true }) => {
            log::debug!("mcp-warden: session table bucket full; the least recently used session was forgotten")
        }
        Ok(Started::Recorded { .. }) => {}
        Ok(Started::Unrecordable) => log::debug!("mcp-warden: a session id of `{}` cannot be recorded", srv.name),
        Err(e) => log::warn!("mcp-warden: could not remember a session of `{}`: {e}", srv.name),
    }
}

/// The `initialize` body that started a session, to replay on a fallback.
pub fn init_body(cfg: &PluginConfig, record: &SessionRecord) -> Option<Vec<u8>> {
    table(cfg).init_body(record)
}

/// Records the session the sidecar opened on `cluster` for the agent's `session`.
pub fn mapped(cfg: &PluginConfig, server: usize, session: &str, cluster: usize, fallback_session: &str) {
    let (Some(srv), Some(c)) = (cfg.servers.get(server), cfg.cluster(cluster)) else { return };
    match table(cfg).map(&srv.name, session, &c.name, fallback_session) {
        Ok(true) => {}
        Ok(false) => log::debug!("mcp-warden: session mapping to `{}` not kept (record gone or id unrecordable)", c.name),
        Err(e) => log::warn!("mcp-warden: could not map a session to `{}`: {e}", c.name),
    }
}

/// Forgets an agent session (it was deleted).
pub fn forget(cfg: &PluginConfig, server: usize, session: &str) {
    let Some(srv) = cfg.servers.get(server) else { return };
    if let Err(e) = table(cfg).forget(&srv.name, session) {
        log::debug!("mcp-warden: could not forget a session of `{}`: {e}", srv.name);
    }
}
