//! The flow's shared state ([`mcp_warden_core::flow::Env`]) in process memory: breakers behind a
//! lock each, sessions in the core's session table, tool hints, pins, the trust table and the
//! retry budget (see [`crate::state`]). One `ProcessEnv` per hook: it carries the stream so that
//! breaker transitions and findings are counted on it.

use crate::config::Shared;
use std::cell::Cell;
use crate::host::Stream;
use crate::inspect;
use crate::state::{self, lock};
use mcp_warden_core::breaker::{Admission, CallRecord, Transition};
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::flow::{Decision, Env, TemplateKey};
use mcp_warden_core::inspect::{ListKind, Violation};
use mcp_warden_core::mcp::sse::message_datas;
use mcp_warden_core::retry::{learn_tools, ToolCatalog, ToolHints, MAX_TOOLS};
use mcp_warden_core::session::{SessionRecord, SessionTable, Started};
use mcp_warden_core::trust::sidecar::TrustEntry;
use mcp_warden_core::Outcome;

/// Most answer templates a configuration keeps (then it starts over).
pub const MAX_ANSWER_TEMPLATES: usize = 256;

/// A list body hashed in this hook (its address, length and whether SSE) and its results hash.
type HashedList = (usize, usize, bool, Option<u64>);

/// One hook's view of the shared state.
pub struct ProcessEnv<'a> {
    pub shared: &'a Shared,
    pub stream: Stream,
    /// The last list body hashed in this hook (its address and length, SSE) and its results
    /// hash: learning tool hints and inspecting the list read the same bytes, hashed once.
    list_hash: Cell<Option<HashedList>>,
}

impl<'a> ProcessEnv<'a> {
    pub fn new(shared: &'a Shared, stream: Stream) -> Self {
        ProcessEnv { shared, stream, list_hash: Cell::new(None) }
    }
}

impl ProcessEnv<'_> {
    /// [`inspect::results_hash`] of a list body with the inspector's list bound as the limit,
    /// computed once per hook for the same bytes.
    fn list_results_hash(&self, body: &[u8], sse: bool) -> Option<u64> {
        let key = (body.as_ptr() as usize, body.len(), sse);
        if let Some((p, n, s, h)) = self.list_hash.get() {
            if (p, n, s) == key {
                return h;
            }
        }
        let h = inspect::results_hash(body, sse, self.shared.config.inspector.limits.max_list_bytes);
        self.list_hash.set(Some((key.0, key.1, key.2, h)));
        h
    }

    fn cluster_name(&self, cluster: usize) -> &str {
        self.shared.config.cluster(cluster).map_or("", |c| c.name.as_str())
    }

    fn server_name(&self, server: usize) -> &str {
        self.shared.config.servers.get(server).map_or("", |s| s.name.as_str())
    }

    fn sessions(&self) -> SessionTable<'static, state::MemoryStore> {
        SessionTable::new(&state::process().store, self.shared.config.failover.max_sessions)
    }

    /// Logs and counts a transition (exactly once: the caller that performed it).
    fn report(&self, cluster: usize, t: Option<Transition>) {
        let (Some(t), Some(c)) = (t, self.shared.config.cluster(cluster)) else { return };
        match t.open_for_ms {
            Some(ms) => log::info!("mcp-warden: breaker `{}` {} -> {}: {}; open for {} ms", c.name, t.from.name(), t.to.name(), t.reason, ms),
            None => log::info!("mcp-warden: breaker `{}` {} -> {}: {}", c.name, t.from.name(), t.to.name(), t.reason),
        }
        if let Some(m) = self.shared.metrics.cluster(cluster) {
            self.stream.set_gauge(m.state, t.to.gauge());
            self.stream.increment(m.transition(t.to), 1);
        }
    }
}

fn now_s(now_ms: u64) -> u64 {
    now_ms / 1_000
}

impl Env for ProcessEnv<'_> {
    fn config(&self) -> &PluginConfig {
        &self.shared.config
    }

    fn begin(&self, _now_ms: u64) {
        // The trust table is replaced in place by the trust loop: nothing to refresh.
    }

    fn admit(&self, cluster: usize, now_ms: u64) -> Admission {
        let (Some(b), Some(c)) = (self.shared.breakers.get(cluster), self.shared.config.cluster(cluster)) else {
            return Admission::Allowed { epoch: 0 };
        };
        let step = lock(b).admit(&c.policy, now_ms);
        self.report(cluster, step.transition);
        step.value
    }

    fn record(&self, cluster: usize, call: CallRecord, now_ms: u64) -> Option<u64> {
        let (b, c) = (self.shared.breakers.get(cluster)?, self.shared.config.cluster(cluster)?);
        let step = lock(b).record(&c.policy, call, now_ms);
        self.report(cluster, step.transition);
        step.transition.and_then(|t| t.open_for_ms)
    }

    fn release_probe(&self, cluster: usize, epoch: u32, _now_ms: u64) {
        if let Some(b) = self.shared.breakers.get(cluster) {
            lock(b).release_probe(epoch);
        }
    }

    fn trust(&self, cluster: usize) -> Option<TrustEntry> {
        state::process().trust.read().ok()?.get(self.cluster_name(cluster))
    }

    fn signal(&self, cluster: usize, outcome: Outcome, slow: bool, latency_ms: u64) {
        lock(&state::process().pending).record(self.cluster_name(cluster), outcome, slow, latency_ms);
    }

    fn refused(&self, cluster: usize) {
        lock(&state::process().pending).record_refused(self.cluster_name(cluster));
    }

    fn session(&self, server: usize, session: &str, now_ms: u64) -> Option<SessionRecord> {
        self.sessions().lookup(self.server_name(server), session, now_s(now_ms))
    }

    fn init_body(&self, record: &SessionRecord) -> Option<Vec<u8>> {
        self.sessions().init_body(record)
    }

    fn session_started(&self, server: usize, session: &str, cluster: usize, init: &[u8], now_ms: u64) {
        let (srv, c) = (self.server_name(server), self.cluster_name(cluster));
        match self.sessions().start(srv, session, c, init, now_s(now_ms)) {
            Ok(Started::Recorded { evicted: true }) => {
                log::debug!("mcp-warden: session table bucket full; the least recently used session was forgotten")
            }
            Ok(Started::Recorded { .. }) => {}
            Ok(Started::Unrecordable) => log::debug!("mcp-warden: a session id of `{srv}` cannot be recorded"),
            Err(e) => log::warn!("mcp-warden: could not remember a session of `{srv}`: {e}"),
        }
    }

    fn session_mapped(&self, server: usize, session: &str, cluster: usize, theirs: &str) {
        let c = self.cluster_name(cluster);
        match self.sessions().map(self.server_name(server), session, c, theirs) {
            Ok(true) => {}
            Ok(false) => log::debug!("mcp-warden: session mapping to `{c}` not kept (record gone or id unrecordable)"),
            Err(e) => log::warn!("mcp-warden: could not map a session to `{c}`: {e}"),
        }
    }

    fn session_ended(&self, server: usize, session: &str) {
        if let Err(e) = self.sessions().forget(self.server_name(server), session) {
            log::debug!("mcp-warden: could not forget a session of `{}`: {e}", self.server_name(server));
        }
    }

    fn tool_hints(&self, server: usize, tool: &str) -> Option<ToolHints> {
        state::process().tool_hints.read().ok()?.get(self.server_name(server))?.get(tool).copied()
    }

    fn learn_tools(&self, server: usize, body: &[u8], sse: bool) {
        // The same results as the list last learned from for this server teach nothing new:
        // skip the parse. Only when the hash covers every message (none left out by the bound).
        let name = self.server_name(server);
        let hash = (body.len() <= self.shared.config.inspector.limits.max_list_bytes)
            .then(|| self.list_results_hash(body, sse))
            .flatten();
        if hash.is_some() && lock(&state::process().learned_lists).get(name).copied() == hash {
            return;
        }
        let mut learned = ToolCatalog::new();
        if sse {
            for data in message_datas(body, self.shared.config.inspect_max_bytes) {
                learn_tools(&data, &mut learned);
            }
        } else {
            learn_tools(body, &mut learned);
        }
        if learned.is_empty() {
            return;
        }
        // The list's hash is recorded under the hints' lock, so that it always names the list
        // the hints were last learned from (another worker learning another list waits).
        let remember = |hash: Option<u64>| {
            if let Some(h) = hash {
                // One entry per server with hints (bounded like them).
                lock(&state::process().learned_lists).insert(name.to_string(), h);
            }
        };
        let known = |hints: &std::collections::HashMap<String, ToolCatalog>| {
            hints.get(name).is_some_and(|c| learned.iter().all(|(t, h)| c.get(t) == Some(h)))
        };
        // A list whose hints are all known already only reads.
        if let Ok(hints) = state::process().tool_hints.read() {
            if known(&hints) {
                remember(hash);
                return;
            }
        }
        if let Ok(mut all) = state::process().tool_hints.write() {
            // Bounded by the configuration's servers, and MAX_TOOLS per server.
            let catalog = all.entry(name.to_string()).or_default();
            for (tool, hints) in learned {
                if catalog.len() < MAX_TOOLS || catalog.contains_key(&tool) {
                    catalog.insert(tool, hints);
                }
            }
            remember(hash);
        }
    }

    fn retry_earn(&self) {
        lock(&state::process().retry_budget).earn()
    }

    fn retry_spend(&self) -> bool {
        lock(&state::process().retry_budget).try_spend()
    }

    fn inspect_list(&self, server: usize, cluster: usize, kind: ListKind, body: &[u8], sse: bool) -> Decision {
        let hash = self.list_results_hash(body, sse);
        inspect::list_answer(self.shared, self.stream, self.server_name(server), cluster, kind, body, sse, hash)
    }

    fn inspect_oversized(&self, server: usize, cluster: usize, size: usize) -> Decision {
        inspect::oversized(self.shared, self.stream, self.server_name(server), cluster, size)
    }

    fn inspect_result(&self, server: usize, cluster: usize, tool: Option<&str>, body: &[u8], sse: bool) {
        inspect::tool_result(self.shared, self.stream, self.server_name(server), cluster, tool, body, sse)
    }

    fn violation(&self, server: usize, cluster: usize, violation: Violation) {
        inspect::violation(self.shared, self.stream, self.server_name(server), cluster, violation)
    }

    fn answer_template(&self, key: TemplateKey, build: &dyn Fn() -> Option<(String, String)>) -> Option<(String, String)> {
        if let Some(t) = lock(&self.shared.answer_templates).get(&key) {
            return Some(t.clone());
        }
        let t = build()?;
        let mut templates = lock(&self.shared.answer_templates);
        if templates.len() >= MAX_ANSWER_TEMPLATES {
            templates.clear();
        }
        templates.insert(key, t.clone());
        Some(t)
    }
}
