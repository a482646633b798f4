//! The flow's shared state ([`mcp_warden_core::flow::Env`]) over this VM's [`Shared`] and
//! proxy-wasm shared data.

use crate::shared::{Shared, MAX_ANSWER_TEMPLATES};
use std::cell::Cell;
use crate::{breakers, inspect, sessions, tools, trust};
use mcp_warden_core::breaker::{Admission, CallRecord};
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::flow::{Decision, Env, TemplateKey};
use mcp_warden_core::inspect::{ListKind, Violation};
use mcp_warden_core::retry::ToolHints;
use mcp_warden_core::session::SessionRecord;
use mcp_warden_core::trust::sidecar::TrustEntry;
use mcp_warden_core::Outcome;

/// One request's view of the VM's shared state, for one callback; the second field keeps the
/// results hash of the list body this callback hashed (learning its tool hints and judging it
/// hash the same bytes).
pub struct VmEnv<'a>(pub &'a Shared, Cell<Option<HashedList>>);

/// A list body (address, length, SSE or not) and its results hash.
type HashedList = (usize, usize, bool, Option<u64>);

impl<'a> VmEnv<'a> {
    pub fn new(shared: &'a Shared) -> Self {
        VmEnv(shared, Cell::new(None))
    }

    /// [`inspect::results_hash`] of a list body with the inspector's list bound as the limit,
    /// computed once per callback for the same bytes.
    fn list_results_hash(&self, body: &[u8], sse: bool) -> Option<u64> {
        let key = (body.as_ptr() as usize, body.len(), sse);
        if let Some((p, n, s, h)) = self.1.get() {
            if (p, n, s) == key {
                return h;
            }
        }
        let h = inspect::results_hash(body, sse, self.0.config.inspector.limits.max_list_bytes);
        self.1.set(Some((key.0, key.1, key.2, h)));
        h
    }

    fn cluster_name(&self, cluster: usize) -> &str {
        self.0.config.cluster(cluster).map_or("", |c| c.name.as_str())
    }

    fn server_name(&self, server: usize) -> &str {
        self.0.config.servers.get(server).map_or("", |s| s.name.as_str())
    }
}

impl Env for VmEnv<'_> {
    fn config(&self) -> &PluginConfig {
        &self.0.config
    }

    fn begin(&self, _now_ms: u64) {
        if self.0.config.trust.is_some() {
            trust::refresh(self.0);
        }
    }

    fn admit(&self, cluster: usize, now_ms: u64) -> Admission {
        breakers::admit(&self.0.config, &self.0.metrics, cluster, now_ms)
    }

    fn record(&self, cluster: usize, call: CallRecord, now_ms: u64) -> Option<u64> {
        breakers::record(&self.0.config, &self.0.metrics, cluster, call, now_ms).and_then(|t| t.open_for_ms)
    }

    fn release_probe(&self, cluster: usize, epoch: u32, now_ms: u64) {
        breakers::release_probe(&self.0.config, cluster, epoch, now_ms)
    }

    fn trust(&self, cluster: usize) -> Option<TrustEntry> {
        self.0.trust.borrow().get(self.cluster_name(cluster))
    }

    fn signal(&self, cluster: usize, outcome: Outcome, slow: bool, latency_ms: u64) {
        self.0.pending.borrow_mut().record(self.cluster_name(cluster), outcome, slow, latency_ms);
    }

    fn refused(&self, cluster: usize) {
        self.0.pending.borrow_mut().record_refused(self.cluster_name(cluster));
    }

    fn session(&self, server: usize, session: &str, _now_ms: u64) -> Option<SessionRecord> {
        sessions::record(&self.0.config, server, session)
    }

    fn init_body(&self, record: &SessionRecord) -> Option<Vec<u8>> {
        sessions::init_body(&self.0.config, record)
    }

    fn session_started(&self, server: usize, session: &str, cluster: usize, init: &[u8], _now_ms: u64) {
        sessions::started(&self.0.config, server, session, cluster, init)
    }

    fn session_mapped(&self, server: usize, session: &str, cluster: usize, theirs: &str) {
        sessions::mapped(&self.0.config, server, session, cluster, theirs)
    }

    fn session_ended(&self, server: usize, session: &str) {
        sessions::forget(&self.0.config, server, session)
    }

    fn tool_hints(&self, server: usize, tool: &str) -> Option<ToolHints> {
        tools::hints(self.0, self.server_name(server), tool)
    }

    fn learn_tools(&self, server: usize, body: &[u8], sse: bool) {
        // The hash names the whole list only when no message was left out by the bound.
        let hash = (body.len() <= self.0.config.inspector.limits.max_list_bytes)
            .then(|| self.list_results_hash(body, sse))
            .flatten();
        tools::learn(self.0, self.server_name(server), body, sse, self.0.config.inspect_max_bytes, hash)
    }

    fn retry_earn(&self) {
        self.0.retry_budget.borrow_mut().earn()
    }

    fn retry_spend(&self) -> bool {
        self.0.retry_budget.borrow_mut().try_spend()
    }

    fn inspect_list(&self, server: usize, cluster: usize, kind: ListKind, body: &[u8], sse: bool) -> Decision {
        let hash = self.list_results_hash(body, sse);
        inspect::list_answer(self.0, self.server_name(server), self.cluster_name(cluster), kind, body, sse, hash)
    }

    fn inspect_oversized(&self, server: usize, cluster: usize, size: usize) -> Decision {
        inspect::oversized(self.0, self.server_name(server), self.cluster_name(cluster), size)
    }

    fn inspect_result(&self, server: usize, cluster: usize, tool: Option<&str>, body: &[u8], sse: bool) {
        inspect::tool_result(self.0, self.server_name(server), self.cluster_name(cluster), tool, body, sse)
    }

    fn violation(&self, server: usize, cluster: usize, violation: Violation) {
        inspect::violation(self.0, self.server_name(server), self.cluster_name(cluster), violation)
    }

    fn answer_template(&self, key: TemplateKey, build: &dyn Fn() -> Option<(String, String)>) -> Option<(String, String)> {
        if let Some(t) = self.0.answer_templates.borrow().get(&key) {
            return Some(t.clone());
        }
        let t = build()?;
        let mut templates = self.0.answer_templates.borrow_mut();
        if templates.len() >= MAX_ANSWER_TEMPLATES {
            templates.clear();
        }
        templates.insert(key, t.clone());
        Some(t)
    }
}
