//! The filter's Envoy stats: their names and the ids a host defines for them once per
//! configuration, so that the data path only increments by id. Generic over the host's id
//! (a proxy-wasm metric id, a dynamic module's stat id).
//!
//! Names (proxy-wasm shows them as `wasmcustom.<name>`, a dynamic module as
//! `dynamicmodulescustom.<name>`; the shipped bootstrap turns the cluster and server segments
//! into `mcp_cluster` / `mcp_server` Prometheus labels):
//! - `mcp_warden.cluster.<cluster>.{requests,success,slow,fallback,rejected,untrusted,retried,hedged,session_moved}`
//! - `mcp_warden.cluster.<cluster>.failure.<kind>`
//! - `mcp_warden.cluster.<cluster>.security.{findings,stripped,blocked}`
//! - `mcp_warden.cluster.<cluster>.breaker.{state,opened,half_opened,closed}` (`state` a gauge)
//! - `mcp_warden.server.<server>.{requests,degraded}`

use super::io::{ClusterStat, ServerStat, Stat};
use crate::breaker::Phase;
use crate::config::PluginConfig;
use crate::FailureKind;

/// Stat ids of one cluster.
#[derive(Debug, Clone)]
pub struct ClusterIds<Id> {
    pub requests: Id,
    pub success: Id,
    pub slow: Id,
    pub fallback: Id,
    pub rejected: Id,
    pub untrusted: Id,
    pub retried: Id,
    pub hedged: Id,
    pub session_moved: Id,
    pub security_findings: Id,
    pub security_stripped: Id,
    pub security_blocked: Id,
    /// Indexed by [`FailureKind::index`].
    pub failures: Vec<Id>,
    /// The breaker's phase as a gauge ([`Phase::gauge`]).
    pub state: Id,
    pub opened: Id,
    pub half_opened: Id,
    pub closed: Id,
}

/// Stat ids of one logical server.
#[derive(Debug, Clone)]
pub struct ServerIds<Id> {
    pub requests: Id,
    pub degraded: Id,
}

/// Every stat id, indexed like the configuration's clusters and servers.
#[derive(Debug)]
pub struct StatIds<Id> {
    pub clusters: Vec<ClusterIds<Id>>,
    pub servers: Vec<ServerIds<Id>>,
}

impl<Id> Default for StatIds<Id> {
    fn default() -> Self {
        StatIds { clusters: Vec::new(), servers: Vec::new() }
    }
}

impl<Id: Copy> StatIds<Id> {
    /// Defines every stat the configuration needs through the host's `counter` and `gauge`.
    pub fn define(cfg: &PluginConfig, mut counter: impl FnMut(&str) -> Id, mut gauge: impl FnMut(&str) -> Id) -> Self {
        let clusters = cfg
            .clusters
            .iter()
            .map(|c| {
                let p = format!("mcp_warden.cluster.{}.", c.stat_name);
                let mut counter = |n: &str| counter(&format!("{p}{n}"));
                ClusterIds {
                    requests: counter("requests"),
                    success: counter("success"),
                    slow: counter("slow"),
                    fallback: counter("fallback"),
                    rejected: counter("rejected"),
                    untrusted: counter("untrusted"),
                    retried: counter("retried"),
                    hedged: counter("hedged"),
                    session_moved: counter("session_moved"),
                    security_findings: counter("security.findings"),
                    security_stripped: counter("security.stripped"),
                    security_blocked: counter("security.blocked"),
                    failures: FailureKind::ALL.iter().map(|k| counter(&format!("failure.{}", k.as_str()))).collect(),
                    opened: counter("breaker.opened"),
                    half_opened: counter("breaker.half_opened"),
                    closed: counter("breaker.closed"),
                    state: gauge(&format!("{p}breaker.state")),
                }
            })
            .collect();
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let p = format!("mcp_warden.server.{}.", s.name.replace('.', "_"));
                ServerIds { requests: counter(&format!("{p}requests")), degraded: counter(&format!("{p}degraded")) }
            })
            .collect();
        StatIds { clusters, servers }
    }

    pub fn cluster(&self, i: usize) -> Option<&ClusterIds<Id>> {
        self.clusters.get(i)
    }

    pub fn server(&self, i: usize) -> Option<&ServerIds<Id>> {
        self.servers.get(i)
    }

    /// The counter a flow effect names (`None`: no such cluster or server).
    pub fn id(&self, stat: Stat) -> Option<Id> {
        Some(match stat {
            Stat::Cluster(i, s) => {
                let m = self.cluster(i)?;
                match s {
                    ClusterStat::Requests => m.requests,
                    ClusterStat::Success => m.success,
                    ClusterStat::Slow => m.slow,
                    ClusterStat::Fallback => m.fallback,
                    ClusterStat::Rejected => m.rejected,
                    ClusterStat::Untrusted => m.untrusted,
                    ClusterStat::Retried => m.retried,
                    ClusterStat::Hedged => m.hedged,
                    ClusterStat::SessionMoved => m.session_moved,
                    ClusterStat::Failure(kind) => m.failure(kind)?,
                    ClusterStat::SecurityStripped => m.security_stripped,
                    ClusterStat::SecurityBlocked => m.security_blocked,
                }
            }
            Stat::Server(i, s) => {
                let m = self.server(i)?;
                match s {
                    ServerStat::Requests => m.requests,
                    ServerStat::Degraded => m.degraded,
                }
            }
        })
    }
}

impl<Id: Copy> ClusterIds<Id> {
    /// The counter of failures of `kind`.
    pub fn failure(&self, kind: FailureKind) -> Option<Id> {
        self.failures.get(kind.index()).copied()
    }

    /// The counter of transitions into `to`.
    pub fn transition(&self, to: Phase) -> Id {
        match to {
            Phase::Closed => self.closed,
            Phase::Open { .. } => self.opened,
            Phase::HalfOpen { .. } => self.half_opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn every_stat_gets_its_own_documented_name() {
        let cfg = PluginConfig::from_json(
            br#"{"servers":[{"name":"docs.v1","match":{"path_prefix":"/mcp"},"primary":"p","fallbacks":["f"]}]}"#,
        )
        .unwrap();
        let mut names: Vec<String> = Vec::new();
        let mut gauges: Vec<String> = Vec::new();
        let ids: StatIds<usize> = StatIds::define(
            &cfg,
            |n| {
                names.push(n.to_string());
                names.len() - 1
            },
            |n| {
                gauges.push(n.to_string());
                usize::MAX - gauges.len()
            },
        );
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "no two stats share a name");
        assert_eq!(gauges, ["mcp_warden.cluster.p.breaker.state", "mcp_warden.cluster.f.breaker.state"]);
        let name = |stat: Stat| ids.id(stat).and_then(|i| names.get(i)).cloned();
        assert_eq!(name(Stat::Cluster(1, ClusterStat::Fallback)).as_deref(), Some("mcp_warden.cluster.f.fallback"));
        assert_eq!(
            name(Stat::Cluster(0, ClusterStat::Failure(FailureKind::Timeout))).as_deref(),
            Some("mcp_warden.cluster.p.failure.timeout")
        );
        assert_eq!(name(Stat::Server(0, ServerStat::Degraded)).as_deref(), Some("mcp_warden.server.docs_v1.degraded"));
        assert_eq!(ids.id(Stat::Cluster(2, ClusterStat::Requests)), None);
        let p = ids.cluster(0).unwrap();
        assert_eq!(names.get(p.transition(Phase::Closed)).map(String::as_str), Some("mcp_warden.cluster.p.breaker.closed"));
    }
}
