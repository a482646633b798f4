//! Reads and writes the per-cluster breakers in shared data, and reports every transition
//! exactly once (the writer whose compare-and-swap performed it logs and counts it).

use crate::host::HostStore;
use crate::metrics::Metrics;
use mcp_warden_core::breaker::{Admission, BreakerStore, CallRecord, StoreError, Transition};
use mcp_warden_core::config::PluginConfig;

fn store<'a>(cfg: &'a PluginConfig, cluster: usize) -> Option<BreakerStore<'a, HostStore>> {
    let c = cfg.cluster(cluster)?;
    Some(BreakerStore { store: &HostStore, key: &c.breaker_key, policy: &c.policy })
}

/// Creates the cluster's breaker in shared data if it does not exist yet.
pub fn ensure(cfg: &PluginConfig, cluster: usize, now: u64) -> Result<(), StoreError> {
    match store(cfg, cluster) {
        Some(s) => s.ensure(now),
        None => Ok(()),
    }
}

/// May a call go to this cluster now? A store that cannot be read admits (fail open: the
/// breaker must never be the reason traffic stops).
pub fn admit(cfg: &PluginConfig, metrics: &Metrics, cluster: usize, now: u64) -> Admission {
    let Some(s) = store(cfg, cluster) else { return Admission::Allowed { epoch: 0 } };
    match s.admit(now) {
        Ok((admission, transition)) => {
            report(cfg, metrics, cluster, transition);
            admission
        }
        Err(e) => {
            log::warn!("mcp-warden: breaker of `{}` unreadable, admitting: {e}", s.key);
            Admission::Allowed { epoch: 0 }
        }
    }
}

/// Records a call's result.
pub fn record(cfg: &PluginConfig, metrics: &Metrics, cluster: usize, call: CallRecord, now: u64) -> Option<Transition> {
    let s = store(cfg, cluster)?;
    match s.record(call, now) {
        Ok((_, transition)) => {
            report(cfg, metrics, cluster, transition);
            transition
        }
        Err(e) => {
            log::warn!("mcp-warden: could not record a call on `{}`: {e}", s.key);
            None
        }
    }
}

/// Gives back a half-open probe slot.
pub fn release_probe(cfg: &PluginConfig, cluster: usize, epoch: u32, now: u64) {
    if let Some(s) = store(cfg, cluster) {
        if let Err(e) = s.release_probe(epoch, now) {
            log::debug!("mcp-warden: could not release a probe on `{}`: {e}", s.key);
        }
    }
}

/// How long until the cluster may be tried again, for a refused admission.
pub fn retry_after_ms(a: Admission) -> u64 {
    match a {
        Admission::Rejected { retry_after_ms, .. } => retry_after_ms,
        _ => 0,
    }
}

fn report(cfg: &PluginConfig, metrics: &Metrics, cluster: usize, t: Option<Transition>) {
    let (Some(t), Some(c)) = (t, cfg.cluster(cluster)) else { return };
    match t.open_for_ms {
        Some(ms) => log::info!(
            "mcp-warden: breaker `{}` {} -> {}: {}; open for {} ms",
            c.name,
            t.from.name(),
            t.to.name(),
            t.reason,
            ms
        ),
        None => log::info!("mcp-warden: breaker `{}` {} -> {}: {}", c.name, t.from.name(), t.to.name(), t.reason),
    }
    if let Some(m) = metrics.cluster(cluster) {
        crate::metrics::transition(m, t.to);
    }
}
