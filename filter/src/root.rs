//! The root context: reads, validates and compiles the plugin configuration once per VM, and
//! hands every request a shared, read-only view of it.

use crate::breakers;
use crate::host;
use crate::http::WardenHttp;
use crate::metrics::Metrics;
use mcp_warden_core::config::PluginConfig;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;

/// What every request of this VM shares.
pub struct Shared {
    pub config: PluginConfig,
    pub metrics: Metrics,
}

/// The filter's root context.
#[derive(Default)]
pub struct WardenRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for WardenRoot {}

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
        self.shared = Some(Rc::new(Shared { config, metrics }));
        true
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
