//! mcp-warden's proxy-wasm HTTP filter for Envoy.
//!
//! Thin glue over `mcp-warden-core`: [`root`] loads and validates the configuration once per
//! VM, [`http`] follows one request (route, observe, judge, degrade), [`breakers`] reads and
//! writes the per-cluster breakers in shared data, [`metrics`] defines the stats and [`host`] is
//! the only module that calls the proxy.

pub mod breakers;
pub mod host;
pub mod http;
pub mod inspect;
pub mod metrics;
pub mod root;
pub mod sessions;
pub mod shared_json;
pub mod tools;
pub mod trust;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // Installs a `log` logger that forwards to Envoy and a panic hook that logs at critical.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::WardenRoot::new(context_id))
    });
}}
