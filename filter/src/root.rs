//! The root context: reads, validates and compiles the plugin configuration once per VM, and
//! hands every request a shared, read-only view of it.

use crate::breakers;
use crate::host;
use crate::http::WardenHttp;
use crate::metrics::Metrics;
use crate::trust::{self, TrustLoop};
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::retry::RetryBudget;
use mcp_warden_core::trust::sidecar::{SignalAccumulator, TrustTable};
use std::cell::RefCell;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;

/// What every request of this VM shares.
pub struct Shared {
    pub config: PluginConfig,
    pub metrics: Metrics,
    /// This VM's outcome counts since its last tick (only with a trust aggregator).
    pub pending: RefCell<SignalAccumulator>,
    /// The trust table this VM enforces (refreshed on tick).
    pub trust: RefCell<TrustTable>,
    /// Retries on fallbacks this VM may still make (a fifth of its requests, bursts of 10).
    pub retry_budget: RefCell<RetryBudget>,
    /// The last list answer inspected per (server, list kind), by hash, and its decision.
    pub list_verdicts: RefCell<crate::inspect::VerdictCache>,
    /// Degraded answers left for Envoy while a JSON answer is held, cut around the id, per
    /// (cluster, modern protocol, tool name of a `tools/call`): built once, bounded.
    pub answer_templates: RefCell<crate::http::AnswerTemplates>,
}

/// The filter's root context.
#[derive(Default)]
pub struct WardenRoot {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    trust: Option<TrustLoop>,
}

impl WardenRoot {
    pub fn new(context_id: u32) -> Self {
        WardenRoot { context_id, ..Default::default() }
    }
}

impl Context for WardenRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if let (Some(shared), Some(lp)) = (&self.shared, self.trust.as_mut()) {
            lp.on_response(shared, token, body_size, host::now_ms());
        }
    }
}

impl RootContext for WardenRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match host::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(b) => b,
            Err(e) => {
                log::error!("mcp-warden: cannot read the plugin configuration: {e}");
                return false;
            }
        };
        let config = match PluginConfig::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                // Returning false makes Envoy refuse the filter: never serve with a half-read config.
                log::error!("mcp-warden: {e}");
                return false;
            }
        };
        let now = host::now_ms();
        for (i, c) in config.clusters.iter().enumerate() {
            if let Err(e) = breakers::ensure(&config, i, now) {
                log::warn!("mcp-warden: cannot create the breaker of cluster `{}`: {e}", c.name);
            }
        }
        let metrics = Metrics::define(&config);
        log::info!(
            "mcp-warden: configured {} servers over {} clusters",
            config.servers.len(),
            config.clusters.len()
        );
        if let Some(t) = &config.trust {
            // A per-VM id for the aggregator lease: the clock's nanoseconds at configuration (VMs
            // configure one after the other) mixed with the root context id.
            let owner = host::now_ns() ^ (u64::from(self.context_id) << 48);
            trust::prepare_shared_keys();
            self.trust = Some(TrustLoop::new(owner));
            if let Err(e) = proxy_wasm::hostcalls::set_tick_period(trust::tick_period(t)) {
                log::error!("mcp-warden: cannot start the trust timer: {e:?}");
            }
        }
        let retry_budget = RetryBudget::new(config.failover.retry_budget_ratio, config.failover.retry_budget_burst);
        self.shared = Some(Rc::new(Shared {
            config,
            metrics,
            pending: RefCell::new(SignalAccumulator::default()),
            trust: RefCell::new(TrustTable::default()),
            retry_budget: RefCell::new(retry_budget),
            list_verdicts: RefCell::new(crate::inspect::VerdictCache::default()),
            answer_templates: RefCell::new(crate::http::AnswerTemplates::default()),
        }));
        true
    }

    fn on_tick(&mut self) {
        if let (Some(shared), Some(lp)) = (&self.shared, self.trust.as_mut()) {
            if let Some(t) = &shared.config.trust {
                lp.tick(shared, t, host::now_ms());
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration (refused), no HTTP context: Envoy never gets here because it
        // refuses a filter whose on_configure failed.
        self.shared.as_ref().map(|s| Box::new(WardenHttp::new(Rc::clone(s))) as Box<dyn HttpContext>)
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
