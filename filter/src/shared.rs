//! What every request of a VM shares: the compiled configuration, metric ids, and the per-VM
//! state that is not in proxy-wasm shared data (pending trust counts and definitions, the
//! enforced trust table, the retry budget, inspection and answer caches).

use crate::metrics::Metrics;
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::flow::inspection::ListVerdicts;
use mcp_warden_core::flow::TemplateKey;
use mcp_warden_core::retry::{RetryBudget, ToolCatalog};
use mcp_warden_core::trust::sidecar::{DefinitionOutbox, SignalAccumulator, TrustTable};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Most answer templates a VM keeps (then it starts over).
pub const MAX_ANSWER_TEMPLATES: usize = 256;

/// What every request of this VM shares.
pub struct Shared {
    pub config: PluginConfig,
    pub metrics: Metrics,
    /// This VM's outcome counts since its last tick (only with a trust aggregator).
    pub pending: RefCell<SignalAccumulator>,
    /// The trust table this VM enforces.
    pub trust: RefCell<TrustTable>,
    /// The shared table version this VM last loaded (see `trust::refresh`).
    pub trust_seen: Cell<Option<u32>>,
    /// Retries and hedges this VM may still make (a fifth of its requests, bursts of 10).
    pub retry_budget: RefCell<RetryBudget>,
    /// Per VM: the decision taken for the last list of each (server, kind).
    pub list_verdicts: RefCell<ListVerdicts>,
    /// Degraded answers cut around their id (see `flow::answer::left_for_envoy`), bounded.
    pub answer_templates: RefCell<HashMap<TemplateKey, (String, String)>>,
    /// Tool hints per server, with the shared-data version they were read at.
    pub tool_hints: RefCell<HashMap<String, (u32, ToolCatalog)>>,
    /// Tool definitions this VM has not sent for the mesh-wide scan yet (with an aggregator).
    pub outbox: RefCell<DefinitionOutbox>,
    /// Per server: the results hash of a `tools/list` answer whose hints the shared catalog
    /// was seen to hold, and that catalog's version (see `tools::learn`).
    pub learned_lists: RefCell<HashMap<String, (u64, u32)>>,
}

impl Shared {
    pub fn new(config: PluginConfig, metrics: Metrics) -> Self {
        let budget = RetryBudget::new(config.failover.retry_budget_ratio, config.failover.retry_budget_burst);
        Shared {
            config,
            metrics,
            pending: RefCell::new(SignalAccumulator::default()),
            trust: RefCell::new(TrustTable::default()),
            trust_seen: Cell::new(None),
            retry_budget: RefCell::new(budget),
            list_verdicts: RefCell::new(ListVerdicts::default()),
            answer_templates: RefCell::new(HashMap::new()),
            tool_hints: RefCell::new(HashMap::new()),
            outbox: RefCell::new(DefinitionOutbox::default()),
            learned_lists: RefCell::new(HashMap::new()),
        }
    }

    /// Whether any cluster is hedged (the root then ticks often enough to wake requests).
    pub fn hedging(&self) -> bool {
        self.config.failover.retry && self.config.clusters.iter().any(|c| c.hedge_after_ms.is_some())
    }
}
