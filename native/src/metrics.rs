//! The module's Envoy stats (names and ids: the core's `flow::stats`), defined once per filter
//! configuration (Envoy freezes stat creation after it), with the wasm filter's names: Envoy
//! shows them as `dynamicmodulescustom.<name>` where the wasm filter's are `wasmcustom.<name>`.

use crate::host::ConfigHost;
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::flow::stats::StatIds;

/// Every stat id of this configuration (`None`: Envoy refused to define it; increments are then
/// skipped).
pub type Metrics = StatIds<Option<usize>>;

/// Defines every stat the configuration needs.
pub fn define(host: ConfigHost, cfg: &PluginConfig) -> Metrics {
    StatIds::define(cfg, |name| host.counter(name), |name| host.gauge(name))
}
