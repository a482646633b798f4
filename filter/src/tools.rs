//! What each logical server said about its tools (`readOnlyHint`, `idempotentHint`), learned from
//! the `tools/list` answers passing through and kept in shared data, so that every worker can
//! tell whether a failed or slow `tools/call` may go to another cluster.

use crate::host::HostStore;
use crate::shared::Shared;
use crate::shared_json;
use mcp_warden_core::breaker::SharedStore;
use mcp_warden_core::mcp::sse::message_datas;
use mcp_warden_core::retry::{learn_tools, ToolCatalog, ToolHints};

fn key(server: &str) -> String {
    format!("mcp_warden.tools.{server}")
}

/// The hints of one tool of a logical server; the catalog is parsed again only when the shared
/// copy changed (its compare-and-swap version moved).
pub fn hints(shared: &Shared, server: &str, tool: &str) -> Option<ToolHints> {
    let Ok((bytes, cas)) = HostStore.get(&key(server)) else { return None };
    let (Some(bytes), Some(cas)) = (bytes, cas) else { return None };
    let mut cache = shared.tool_hints.borrow_mut();
    match cache.get(server) {
        Some((seen, catalog)) if *seen == cas => catalog.get(tool).copied(),
        _ => {
            let catalog: ToolCatalog = shared_json::parse(&bytes).unwrap_or_default();
            let found = catalog.get(tool).copied();
            // Bounded by the configuration's servers.
            cache.insert(server.to_string(), (cas, catalog));
            found
        }
    }
}

/// Learns from a complete `tools/list` answer body (JSON or SSE) and stores what is new.
///
/// The usual case is the same list again: when the shared catalog has not changed (same CAS
/// version) since it was seen to hold every hint of a list with the same results, nothing is
/// parsed.
/// `hash` is the results hash of the whole list (`None`: not known, then it is parsed).
pub fn learn(shared: &Shared, server: &str, body: &[u8], sse: bool, limit: usize, hash: Option<u64>) {
    let key = key(server);
    let (stored, cas) = HostStore.get(&key).unwrap_or((None, None));
    let seen = hash.zip(cas);
    if seen.is_some() && shared.learned_lists.borrow().get(server).copied() == seen {
        return;
    }
    let mut learned = ToolCatalog::new();
    if sse {
        for data in message_datas(body, limit) {
            learn_tools(&data, &mut learned);
        }
    } else {
        learn_tools(body, &mut learned);
    }
    if learned.is_empty() {
        return;
    }
    let current: ToolCatalog = stored.as_deref().and_then(shared_json::parse).unwrap_or_default();
    if learned.iter().all(|(name, hints)| current.get(name) == Some(hints)) {
        // Known at this version: remembered (bounded by the configuration's servers). After a
        // write of ours it is not: another worker may have written in between.
        if let Some(seen) = seen {
            shared.learned_lists.borrow_mut().insert(server.to_string(), seen);
        }
        return;
    }
    let result = shared_json::update::<ToolCatalog>(&key, |c| {
        for (name, hints) in &learned {
            if c.len() < mcp_warden_core::retry::MAX_TOOLS || c.contains_key(name) {
                c.insert(name.clone(), *hints);
            }
        }
    });
    if let Err(e) = result {
        log::debug!("mcp-warden: tool hints of `{server}` not stored: {e}");
    }
}
