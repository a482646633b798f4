//! One upstream call of a request (like Envoy's `UpstreamRequest`): the cluster, its breaker
//! admission, when it started, how it travels (through Envoy's router, or as a call the flow
//! dispatches itself, possibly after opening a session there) and whether its verdict is in.

use super::env::Env;
use super::io::{ClusterStat, Effect, Level, Stat};
use crate::breaker::{Admission, CallRecord};
use crate::outcome::{FailureKind, Outcome};

/// The steps of opening a session on a cluster for an agent session created elsewhere (or
/// expired there) before the call itself goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// Waiting for the request body before starting.
    Pending,
    /// The agent's `initialize` replayed there (call id).
    Initialize(u32),
    /// `notifications/initialized` sent with the cluster's new session id.
    Initialized(u32, String),
}

/// How the attempt reaches its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Envoy's router, following the route header.
    Router,
    /// A call the flow dispatched (`None` until it is sent).
    Call(Option<u32>),
}

/// One upstream call.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub cluster: usize,
    /// Place of the cluster in the server's chain (0: primary).
    pub position: usize,
    pub admission: Admission,
    pub started_ms: u64,
    pub via: Via,
    pub opening: Option<Opening>,
    pub recorded: bool,
}

impl Attempt {
    pub fn new(cluster: usize, position: usize, admission: Admission, via: Via, now: u64) -> Self {
        Attempt { cluster, position, admission, started_ms: now, via, opening: None, recorded: false }
    }

    /// Whether `call` is this attempt's call or one of its session-opening calls.
    pub fn owns(&self, call: u32) -> bool {
        self.via == Via::Call(Some(call))
            || matches!(&self.opening, Some(Opening::Initialize(c) | Opening::Initialized(c, _)) if *c == call)
    }

    /// Records the verdict once on the cluster's breaker, stats and trust counts. Returns the
    /// open interval if this very call tripped the breaker.
    pub fn record<E: Env + ?Sized>(&mut self, env: &E, outcome: Outcome, now: u64, out: &mut Vec<Effect>) -> Option<u64> {
        if self.recorded {
            return None;
        }
        self.recorded = true;
        let cfg = env.config();
        let cluster = self.cluster;
        let (probe, epoch) = match self.admission {
            Admission::Probe { epoch } => (true, epoch),
            Admission::Allowed { epoch } => (false, epoch),
            Admission::Rejected { .. } => return None,
        };
        let policy = &cfg.cluster(cluster)?.policy;
        let latency = now.saturating_sub(self.started_ms);
        let slow = latency >= policy.slow_call_duration_ms;
        let stat = |s| Effect::Stat(Stat::Cluster(cluster, s));
        let failed = match outcome {
            Outcome::Unknown => {
                if probe {
                    env.release_probe(cluster, epoch, now);
                }
                return None;
            }
            Outcome::Success => {
                out.push(stat(ClusterStat::Success));
                false
            }
            Outcome::Failure(kind) => {
                out.push(stat(ClusterStat::Failure(kind)));
                if kind == FailureKind::UnknownCluster {
                    out.push(Effect::Log(
                        Level::Error,
                        format!(
                            "Envoy has no cluster `{}`: check the plugin configuration against the clusters",
                            cfg.cluster(cluster).map_or("", |c| c.name.as_str())
                        ),
                    ));
                }
                true
            }
        };
        if slow {
            out.push(stat(ClusterStat::Slow));
        }
        if cfg.trust.is_some() {
            env.signal(cluster, outcome, slow, latency);
        }
        env.record(cluster, CallRecord { failed, slow, probe, epoch }, now)
    }

    /// Gives back a half-open probe slot the attempt will never use.
    pub fn release<E: Env + ?Sized>(&mut self, env: &E, now: u64) {
        if let (false, Admission::Probe { epoch }) = (self.recorded, self.admission) {
            self.recorded = true;
            env.release_probe(self.cluster, epoch, now);
        }
    }
}
