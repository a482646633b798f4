//! One filter configuration: the plugin configuration parsed and validated by the same core code
//! as the wasm filter (refused with the field named), the stats it needs, and the periodic work
//! that belongs to it rather than to a request.

use crate::host::{CalloutAnswer, ConfigHost};
use crate::metrics::Metrics;
use crate::state::{self, Breaker};
use crate::trust::TrustLoop;
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::flow::inspection::ListVerdicts;
use mcp_warden_core::flow::TemplateKey;
use mcp_warden_core::retry::RetryBudget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What every request of this configuration shares.
pub struct Shared {
    pub config: PluginConfig,
    pub metrics: Metrics,
    /// Each cluster's breaker (process-wide, found once here: no lookup per request).
    pub breakers: Vec<Breaker>,
    /// Per configuration: the decision taken for the last list of each (server, kind).
    pub list_verdicts: Mutex<ListVerdicts>,
    /// Degraded answers cut around their id (see `flow::answer`), bounded.
    pub answer_templates: Mutex<HashMap<TemplateKey, (String, String)>>,
}

/// The module's side of one `DynamicModuleFilter` configuration.
pub struct FilterConfig {
    shared: Arc<Shared>,
    trust: Option<TrustLoop>,
}

impl FilterConfig {
    /// Parses and validates `bytes`; `None` (after logging the field and why) makes Envoy
    /// refuse the configuration.
    pub fn new(envoy: crate::abi::ConfigEnvoyPtr, name: &[u8], bytes: &[u8]) -> Option<Self> {
        let host = ConfigHost(envoy);
        let config = match PluginConfig::from_json(bytes) {
            Ok(c) => c,
            Err(e) => {
                log::error!("mcp-warden: {e}");
                return None;
            }
        };
        let now = crate::host::now_ms();
        let process = state::process();
        let breakers = config.clusters.iter().map(|c| process.breaker(&c.breaker_key, &c.policy, now)).collect();
        *state::lock(&process.retry_budget) =
            RetryBudget::new(config.failover.retry_budget_ratio, config.failover.retry_budget_burst);
        let metrics = crate::metrics::define(host, &config);
        log::info!(
            "mcp-warden ({}): configured {} servers over {} clusters (native)",
            String::from_utf8_lossy(name),
            config.servers.len(),
            config.clusters.len()
        );
        let shared = Arc::new(Shared {
            config,
            metrics,
            breakers,
            list_verdicts: Mutex::new(ListVerdicts::default()),
            answer_templates: Mutex::new(HashMap::new()),
        });
        let trust = shared.config.trust.as_ref().and_then(|t| TrustLoop::start(host, t));
        Some(FilterConfig { shared, trust })
    }

    /// The read-only view every request gets.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// A scheduled event on the main thread (the trust loop's tick).
    pub fn on_scheduled(&self, event: u64) {
        if let (Some(lp), Some(t)) = (&self.trust, &self.shared.config.trust) {
            lp.tick(t, &self.shared.config.clusters, event, crate::host::now_ms());
        }
    }

    /// The answer to a callout made from the main thread (the aggregator's).
    pub fn on_callout_done(&self, id: u64, answer: CalloutAnswer) {
        if let Some(lp) = &self.trust {
            lp.on_answer(id, answer, crate::host::now_ms());
        }
    }
}
