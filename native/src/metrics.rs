//! The module's Envoy stats, defined once per filter configuration (Envoy freezes stat creation
//! after it), with the wasm filter's names: Envoy shows them as `dynamicmodulescustom.<name>`
//! where the wasm filter's are `wasmcustom.<name>`.

use crate::host::ConfigHost;
use mcp_warden_core::breaker::Phase;
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::flow::{ClusterStat, ServerStat, Stat};
use mcp_warden_core::FailureKind;

/// Stat ids of one cluster (`None`: Envoy refused to define it; increments are then skipped).
#[derive(Debug, Default, Clone)]
pub struct ClusterMetrics {
    pub requests: Option<usize>,
    pub success: Option<usize>,
    pub slow: Option<usize>,
    pub fallback: Option<usize>,
    pub rejected: Option<usize>,
    pub untrusted: Option<usize>,
    pub retried: Option<usize>,
    pub hedged: Option<usize>,
    pub session_moved: Option<usize>,
    pub security_findings: Option<usize>,
    pub security_stripped: Option<usize>,
    pub security_blocked: Option<usize>,
    pub failures: Vec<Option<usize>>,
    pub state: Option<usize>,
    pub opened: Option<usize>,
    pub half_opened: Option<usize>,
    pub closed: Option<usize>,
}

/// Stat ids of one logical server.
#[derive(Debug, Default, Clone)]
pub struct ServerMetrics {
    pub requests: Option<usize>,
    pub degraded: Option<usize>,
}

/// Every stat id, indexed like the configuration's clusters and servers.
#[derive(Debug, Default)]
pub struct Metrics {
    pub clusters: Vec<ClusterMetrics>,
    pub servers: Vec<ServerMetrics>,
}

impl Metrics {
    /// Defines every stat the configuration needs.
    pub fn define(host: ConfigHost, cfg: &PluginConfig) -> Self {
        let clusters = cfg
            .clusters
            .iter()
            .map(|c| {
                let p = format!("mcp_warden.cluster.{}.", c.stat_name);
                let counter = |n: &str| host.counter(&format!("{p}{n}"));
                ClusterMetrics {
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
                    state: host.gauge(&format!("{p}breaker.state")),
                    opened: counter("breaker.opened"),
                    half_opened: counter("breaker.half_opened"),
                    closed: counter("breaker.closed"),
                }
            })
            .collect();
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let p = format!("mcp_warden.server.{}.", s.name.replace('.', "_"));
                ServerMetrics { requests: host.counter(&format!("{p}requests")), degraded: host.counter(&format!("{p}degraded")) }
            })
            .collect();
        Metrics { clusters, servers }
    }

    pub fn cluster(&self, i: usize) -> Option<&ClusterMetrics> {
        self.clusters.get(i)
    }

    pub fn server(&self, i: usize) -> Option<&ServerMetrics> {
        self.servers.get(i)
    }

    /// The counter a flow stat names.
    pub fn id(&self, stat: Stat) -> Option<usize> {
        match stat {
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
                    ClusterStat::Failure(kind) => m.failure(kind),
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
        }
    }
}

impl ClusterMetrics {
    /// The counter of failures of `kind`.
    pub fn failure(&self, kind: FailureKind) -> Option<usize> {
        self.failures.get(kind.index()).copied().flatten()
    }

    /// The counter of transitions into `to`.
    pub fn transition(&self, to: Phase) -> Option<usize> {
        match to {
            Phase::Closed => self.closed,
            Phase::Open { .. } => self.opened,
            Phase::HalfOpen { .. } => self.half_opened,
        }
    }
}
