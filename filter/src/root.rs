//! The root context: reads, validates and compiles the plugin configuration once per VM, hands
//! every request a shared, read-only view of it, and ticks: the trust loop, and the requests
//! waiting for a time (hedges).

use crate::breakers;
use crate::host;
use crate::http::{Waiters, WardenHttp};
use crate::shared::Shared;
use crate::trust::{self, TrustLoop};
use mcp_warden_core::config::PluginConfig;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;
use std::time::Duration;

/// How often the root wakes waiting requests: the resolution of hedge deadlines.
const WAKE_PERIOD: Duration = Duration::from_millis(50);

/// The filter's root context.
#[derive(Default)]
pub struct WardenRoot {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    waiters: Rc<Waiters>,
    trust: Option<TrustLoop>,
    trust_period_ms: u64,
    last_trust_tick_ms: u64,
}

impl WardenRoot {
    pub fn new(context_id: u32) -> Self {
        WardenRoot { context_id, ..Default::default() }
    }
}

impl Context for WardenRoot {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        let Some(shared) = &self.shared else { return };
        if self.waiters.call_done(shared, self.context_id, token, num_headers, body_size) {
            return;
        }
        if let Some(lp) = self.trust.as_mut() {
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
        let metrics = crate::metrics::define(&config);
        log::info!("mcp-warden: configured {} servers over {} clusters", config.servers.len(), config.clusters.len());
        let mut period = None;
        if let Some(t) = &config.trust {
            // A per-VM id for the aggregator lease: the clock's nanoseconds at configuration (VMs
            // configure one after the other) mixed with the root context id.
            let owner = host::now_ns() ^ (u64::from(self.context_id) << 48);
            trust::prepare_shared_keys();
            self.trust = Some(TrustLoop::new(owner));
            let p = trust::tick_period(t);
            self.trust_period_ms = p.as_millis() as u64;
            period = Some(p);
        }
        let shared = Shared::new(config, metrics);
        if shared.hedging() {
            period = Some(period.map_or(WAKE_PERIOD, |p| p.min(WAKE_PERIOD)));
        }
        if let Some(p) = period {
            if let Err(e) = host::set_tick_period(p) {
                log::error!("mcp-warden: cannot start the timer: {e}");
            }
        }
        self.shared = Some(Rc::new(shared));
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = &self.shared else { return };
        let now = host::now_ms();
        self.waiters.tick(shared, self.context_id, now);
        if let (Some(lp), Some(t)) = (self.trust.as_mut(), &shared.config.trust) {
            if now.saturating_sub(self.last_trust_tick_ms) + 5 >= self.trust_period_ms {
                self.last_trust_tick_ms = now;
                lp.tick(shared, t, now);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration (refused), no HTTP context: Envoy never gets here because it
        // refuses a filter whose on_configure failed.
        self.shared
            .as_ref()
            .map(|s| Box::new(WardenHttp::new(Rc::clone(s), Rc::clone(&self.waiters), context_id)) as Box<dyn HttpContext>)
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
