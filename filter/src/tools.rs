//! What each logical server said about its tools (`readOnlyHint`, `idempotentHint`), learned from
//! the `tools/list` answers passing through and kept in shared data, so that any worker can tell
//! whether a failed `tools/call` may be retried on a fallback.

use crate::shared_json;
use mcp_warden_core::mcp::sse::message_datas;
use mcp_warden_core::retry::{learn_tools, ToolCatalog};

fn key(server: &str) -> String {
    format!("mcp_warden.tools.{server}")
}

/// The catalog of a logical server.
pub fn catalog(server: &str) -> ToolCatalog {
    shared_json::load(&key(server))
}

/// Learns from a complete `tools/list` answer body (JSON or SSE) and stores what it learned.
pub fn learn(server: &str, body: &[u8], sse: bool, limit: usize) {
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
    let result = shared_json::update::<ToolCatalog>(&key(server), |c| {
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
