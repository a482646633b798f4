//! mcp-warden's proxy-wasm HTTP filter for Envoy.
//!
//! A host for the core's request flow (`mcp_warden_core::flow`): [`root`] loads and validates
//! the configuration once per VM and ticks (trust loop, hedge timers), [`http`] turns proxy
//! callbacks into flow events and its effects into host calls, [`env`] is the flow's shared
//! state over [`shared`] (per VM) and proxy-wasm shared data ([`breakers`], [`sessions`],
//! [`tools`], [`inspect`], [`trust`], [`shared_json`]), [`metrics`] defines the stats and
//! [`host`] is the only module that calls the proxy.

pub mod breakers;
pub mod env;
pub mod host;
pub mod http;
pub mod inspect;
pub mod metrics;
pub mod root;
pub mod sessions;
pub mod shared;
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
