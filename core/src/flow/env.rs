//! The state a request shares with every other request of the sidecar (breakers, sessions, tool
//! hints, the trust table, inspection memory, the retry budget), behind one trait. The proxy-wasm
//! host keeps it in shared data, a native host in process memory, the tests in a fake.

use super::io::Decision;
use crate::breaker::{Admission, CallRecord};
use crate::config::PluginConfig;
use crate::inspect::{ListKind, Violation};
use crate::outcome::Outcome;
use crate::retry::ToolHints;
use crate::session::SessionRecord;
use crate::trust::sidecar::TrustEntry;

/// Which cached degraded answer (see [`Env::answer_template`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    pub cluster: usize,
    pub modern_protocol: bool,
    pub tools_call: bool,
    pub tool: Option<String>,
}

/// Shared state, as one request sees it. Indexes are those of [`PluginConfig`].
pub trait Env {
    fn config(&self) -> &PluginConfig;

    /// A request starts: the host may refresh what it caches (the trust table's version).
    fn begin(&self, now_ms: u64);

    // Breakers.
    fn admit(&self, cluster: usize, now_ms: u64) -> Admission;
    /// Records a call; returns the open interval if this call tripped the breaker.
    fn record(&self, cluster: usize, call: CallRecord, now_ms: u64) -> Option<u64>;
    fn release_probe(&self, cluster: usize, epoch: u32, now_ms: u64);

    // Trust.
    fn trust(&self, cluster: usize) -> Option<TrustEntry>;
    /// One call's outcome for the next trust report.
    fn signal(&self, cluster: usize, outcome: Outcome, slow: bool, latency_ms: u64);
    /// The breaker refused a call to this cluster (for the next trust report).
    fn refused(&self, cluster: usize);

    // Sessions.
    fn session(&self, server: usize, session: &str, now_ms: u64) -> Option<SessionRecord>;
    fn init_body(&self, record: &SessionRecord) -> Option<Vec<u8>>;
    fn session_started(&self, server: usize, session: &str, cluster: usize, init: &[u8], now_ms: u64);
    fn session_mapped(&self, server: usize, session: &str, cluster: usize, theirs: &str);
    fn session_ended(&self, server: usize, session: &str);

    // Tool hints (for retries).
    fn tool_hints(&self, server: usize, tool: &str) -> Option<ToolHints>;
    fn learn_tools(&self, server: usize, body: &[u8], sse: bool);

    // The retry budget.
    fn retry_earn(&self);
    fn retry_spend(&self) -> bool;

    // Inspection (findings are queued for the trust report by the implementation).
    fn inspect_list(&self, server: usize, cluster: usize, kind: ListKind, body: &[u8], sse: bool) -> Decision;
    fn inspect_oversized(&self, server: usize, cluster: usize, size: usize) -> Decision;
    fn inspect_result(&self, server: usize, cluster: usize, tool: Option<&str>, body: &[u8], sse: bool);
    fn violation(&self, server: usize, cluster: usize, violation: Violation);

    /// A degraded answer cut around its id, built by `build` once per key and kept (bounded).
    fn answer_template(&self, key: TemplateKey, build: &dyn Fn() -> Option<(String, String)>) -> Option<(String, String)>;
}
