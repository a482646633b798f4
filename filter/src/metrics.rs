//! The filter's Envoy stats (names and ids: the core's `flow::stats`), defined once per VM at
//! configuration time so that the data path only increments by id. Envoy shows them as
//! `wasmcustom.<name>`.

use crate::host::{self, MetricKind};
use mcp_warden_core::breaker::Phase;
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::flow::stats::{ClusterIds, StatIds};
use mcp_warden_core::flow::Stat;

/// Every metric id of this VM (a metric that could not be defined has id 0: increments then
/// fail quietly in the host).
pub type Metrics = StatIds<u32>;

/// Defines every metric the configuration needs.
pub fn define(cfg: &PluginConfig) -> Metrics {
    StatIds::define(
        cfg,
        |name| host::define_metric(MetricKind::Counter, name).unwrap_or(0),
        |name| host::define_metric(MetricKind::Gauge, name).unwrap_or(0),
    )
}

/// Adds one to the counter a flow effect names.
pub fn count(metrics: &Metrics, stat: Stat) {
    if let Some(id) = metrics.id(stat) {
        host::increment(id, 1);
    }
}

/// Counts a breaker's transition into `to` and sets its state gauge.
pub fn transition(m: &ClusterIds<u32>, to: Phase) {
    host::record(m.state, to.gauge());
    host::increment(m.transition(to), 1);
}
