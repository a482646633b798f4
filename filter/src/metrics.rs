//! The filter's Envoy stats, defined once per VM at configuration time so that the data path
//! only increments by id.
//!
//! Names (Envoy prefixes `wasmcustom.`; the shipped bootstrap turns the cluster and server
//! segments into `mcp_cluster` / `mcp_server` Prometheus labels):
//! - `mcp_warden.cluster.<cluster>.{requests,success,slow,fallback,rejected,untrusted,retried,hedged,session_moved}`
//! - `mcp_warden.cluster.<cluster>.failure.<kind>`
//! - `mcp_warden.cluster.<cluster>.security.{findings,stripped,blocked}`
//! - `mcp_warden.cluster.<cluster>.breaker.{state,opened,half_opened,closed}`
//! - `mcp_warden.server.<server>.{requests,degraded}`

use crate::host::{self, MetricKind};
use mcp_warden_core::breaker::Phase;
use mcp_warden_core::config::PluginConfig;
use mcp_warden_core::flow::{ClusterStat, ServerStat, Stat};
use mcp_warden_core::FailureKind;

/// Metric ids of one cluster.
#[derive(Debug, Default, Clone)]
pub struct ClusterMetrics {
    pub requests: u32,
    pub success: u32,
    pub slow: u32,
    pub fallback: u32,
    pub rejected: u32,
    pub untrusted: u32,
    pub retried: u32,
    pub hedged: u32,
    pub session_moved: u32,
    pub security_findings: u32,
    pub security_stripped: u32,
    pub security_blocked: u32,
    pub failures: [u32; FailureKind::ALL.len()],
    pub state: u32,
    pub opened: u32,
    pub half_opened: u32,
    pub closed: u32,
}

/// Metric ids of one logical server.
#[derive(Debug, Default, Clone)]
pub struct ServerMetrics {
    pub requests: u32,
    pub degraded: u32,
}

/// Every metric id, indexed like the configuration's clusters and servers.
#[derive(Debug, Default)]
pub struct Metrics {
    pub clusters: Vec<ClusterMetrics>,
    pub servers: Vec<ServerMetrics>,
}

fn counter(name: &str) -> u32 {
    // A metric that cannot be defined gets id 0: increments then fail quietly in the host.
    host::define_metric(MetricKind::Counter, name).unwrap_or(0)
}

impl Metrics {
    /// Defines every metric the configuration needs.
    pub fn define(cfg: &PluginConfig) -> Self {
        let clusters = cfg
            .clusters
            .iter()
            .map(|c| {
                let p = format!("mcp_warden.cluster.{}.", c.stat_name);
                let mut failures = [0u32; FailureKind::ALL.len()];
                for k in FailureKind::ALL {
                    if let Some(slot) = failures.get_mut(k.index()) {
                        *slot = counter(&format!("{p}failure.{}", k.as_str()));
                    }
                }
                ClusterMetrics {
                    requests: counter(&format!("{p}requests")),
                    success: counter(&format!("{p}success")),
                    slow: counter(&format!("{p}slow")),
                    fallback: counter(&format!("{p}fallback")),
                    rejected: counter(&format!("{p}rejected")),
                    untrusted: counter(&format!("{p}untrusted")),
                    retried: counter(&format!("{p}retried")),
                    hedged: counter(&format!("{p}hedged")),
                    session_moved: counter(&format!("{p}session_moved")),
                    security_findings: counter(&format!("{p}security.findings")),
                    security_stripped: counter(&format!("{p}security.stripped")),
                    security_blocked: counter(&format!("{p}security.blocked")),
                    failures,
                    state: host::define_metric(MetricKind::Gauge, &format!("{p}breaker.state")).unwrap_or(0),
                    opened: counter(&format!("{p}breaker.opened")),
                    half_opened: counter(&format!("{p}breaker.half_opened")),
                    closed: counter(&format!("{p}breaker.closed")),
                }
            })
            .collect();
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let p = format!("mcp_warden.server.{}.", s.name.replace('.', "_"));
                ServerMetrics { requests: counter(&format!("{p}requests")), degraded: counter(&format!("{p}degraded")) }
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

    /// Adds one to the counter a flow effect names.
    pub fn count(&self, stat: Stat) {
        let id = match stat {
            Stat::Cluster(i, s) => {
                let Some(m) = self.cluster(i) else { return };
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
                    ClusterStat::Failure(kind) => return m.failure(kind),
                    ClusterStat::SecurityStripped => m.security_stripped,
                    ClusterStat::SecurityBlocked => m.security_blocked,
                }
            }
            Stat::Server(i, s) => {
                let Some(m) = self.server(i) else { return };
                match s {
                    ServerStat::Requests => m.requests,
                    ServerStat::Degraded => m.degraded,
                }
            }
        };
        host::increment(id, 1);
    }
}

impl ClusterMetrics {
    /// Counts a failure of the given kind.
    pub fn failure(&self, kind: FailureKind) {
        if let Some(&id) = self.failures.get(kind.index()) {
            host::increment(id, 1);
        }
    }

    /// Counts a transition into `to` and sets the state gauge.
    pub fn transition(&self, to: Phase) {
        host::record(self.state, to.gauge());
        let id = match to {
            Phase::Closed => self.closed,
            Phase::Open { .. } => self.opened,
            Phase::HalfOpen { .. } => self.half_opened,
        };
        host::increment(id, 1);
    }
}
