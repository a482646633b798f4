//! What the aggregator holds in memory: per-server evidence and decisions, ratings and vouches,
//! rater standing. Rebuilt from the database at start (and after a failed write).

use crate::admission::Provisional;
use crate::views::{DefinitionScan, HeldChange, QuarantineInfo, ToolApprovalRecord};
use mcp_warden_core::trust::model::{self, Vouch};
use mcp_warden_core::trust::wire::{ServerScore, TrustState};
use mcp_warden_core::trust::{Evidence, ReputationInput, SecurityState, TrustParams, TrustScore};
use std::collections::{BTreeMap, BTreeSet};

/// Lifetime traffic counters of one server (for people; the model uses the decaying evidence).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub success: u64,
    pub failures: u64,
    pub slow: u64,
    pub latency_count: u64,
    pub latency_sum_ms: u64,
    pub last_report_ms: Option<u64>,
}

/// One server's state: everything its score and published state follow from.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerState {
    pub first_seen_ms: u64,
    pub evidence: Evidence,
    pub security: SecurityState,
    pub quarantine: Option<QuarantineInfo>,
    /// Automatic quarantine by score is allowed (false after a release until new adverse
    /// evidence arrives).
    pub auto_armed: bool,
    pub released_ms: Option<u64>,
    pub totals: Totals,
    /// The latest history sample (time, state): decides when the next one is due.
    pub last_sample: Option<(u64, TrustState)>,
}

impl ServerState {
    pub fn new(now_ms: u64) -> Self {
        ServerState {
            first_seen_ms: now_ms,
            evidence: Evidence { updated_ms: now_ms, ..Evidence::default() },
            security: SecurityState { updated_ms: now_ms, ..SecurityState::default() },
            quarantine: None,
            auto_armed: true,
            released_ms: None,
            totals: Totals::default(),
            last_sample: None,
        }
    }
}

/// Everything in memory.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub servers: BTreeMap<String, ServerState>,
    /// server -> rater -> value (the latest rating wins).
    pub ratings: BTreeMap<String, BTreeMap<String, f64>>,
    /// (from, to) -> value.
    pub vouches: BTreeMap<(String, String), f64>,
    /// Each rater's standing in the web of trust (pre-trusted operators 1).
    pub standing: BTreeMap<String, f64>,
    /// Held tool changes sidecars reported, by (server, fingerprint).
    pub held: BTreeMap<(String, String), HeldChange>,
    /// Operators' approvals of tool definitions, by (server, fingerprint): published to sidecars.
    pub approvals: BTreeMap<(String, String), ToolApprovalRecord>,
    /// The mesh-wide scan, by definition fingerprint (those with a severity are published).
    pub scans: BTreeMap<String, DefinitionScan>,
    /// Servers named by fewer sidecar credentials than the admission quorum (not tracked yet).
    pub provisional: BTreeMap<String, Provisional>,
}

/// Held changes kept per server and in all; approvals kept per server (the sidecars' own bound)
/// and in all. Past a bound the oldest goes first.
pub const MAX_HELD_PER_SERVER: usize = 64;
pub const MAX_HELD: usize = 4096;
pub const MAX_APPROVALS_PER_SERVER: usize = mcp_warden_core::trust::sidecar::MAX_APPROVALS_PER_SERVER;
pub const MAX_APPROVALS: usize = mcp_warden_core::trust::sidecar::MAX_APPROVALS;
/// Definitions scanned kept (the oldest scan is forgotten first: scanned again if submitted again),
/// and verdicts published (newest first; sidecars keep as many).
pub const MAX_SCANS: usize = 100_000;
pub const MAX_PUBLISHED_VERDICTS: usize = mcp_warden_core::trust::sidecar::MAX_VERDICTS;

impl State {
    /// The key to drop to keep `map` within `per_server` entries for `server` and `total` in
    /// all (the entry with the smallest `age`), if one must go.
    pub fn oldest_past<V>(
        map: &BTreeMap<(String, String), V>,
        server: &str,
        per_server: usize,
        total: usize,
        age: impl Fn(&V) -> u64,
    ) -> Option<(String, String)> {
        let mine = || map.range((server.to_string(), String::new())..).take_while(|((s, _), _)| s == server);
        let pick = |it: &mut dyn Iterator<Item = (&(String, String), &V)>| it.min_by_key(|(_, v)| age(v)).map(|(k, _)| k.clone());
        if mine().count() >= per_server {
            return pick(&mut mine());
        }
        if map.len() >= total {
            return pick(&mut map.iter());
        }
        None
    }

    /// Verdicts to publish: scans with a severity, newest first, at most [`MAX_PUBLISHED_VERDICTS`].
    pub fn verdicts_newest_first(&self) -> Vec<&DefinitionScan> {
        let mut v: Vec<&DefinitionScan> = self.scans.values().filter(|s| s.severity.is_some()).collect();
        v.sort_by(|a, b| b.scanned_ms.cmp(&a.scanned_ms).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
        v.truncate(MAX_PUBLISHED_VERDICTS);
        v
    }

    /// Approvals in force, newest first (the order the scores document lists them in).
    pub fn approvals_newest_first(&self) -> Vec<&ToolApprovalRecord> {
        let mut v: Vec<&ToolApprovalRecord> = self.approvals.values().collect();
        v.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| a.server.cmp(&b.server)).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
        v
    }

    /// How many raters `from` vouches for.
    pub fn vouches_from(&self, from: &str) -> usize {
        self.vouches.range((from.to_string(), String::new())..).take_while(|((f, _), _)| f == from).count()
    }

    /// Recomputes every rater's standing from the operators and the vouches.
    pub fn recompute_standing(&mut self, pretrusted: &BTreeSet<String>, p: &TrustParams) {
        let vouches: Vec<Vouch> =
            self.vouches.iter().map(|((from, to), v)| Vouch { from: from.clone(), to: to.clone(), value: *v }).collect();
        self.standing = model::rater_standing(pretrusted, &vouches, p);
    }
}

/// The ratings of `server` as the model takes them.
pub fn ratings_of(ratings: &BTreeMap<String, BTreeMap<String, f64>>, server: &str) -> Vec<(String, f64)> {
    ratings.get(server).map(|m| m.iter().map(|(r, v)| (r.clone(), *v)).collect()).unwrap_or_default()
}

/// The score of one server at `now_ms`.
pub fn score_of(
    srv: &ServerState,
    ratings: &[(String, f64)],
    standing: &BTreeMap<String, f64>,
    now_ms: u64,
    p: &TrustParams,
) -> TrustScore {
    let rep = model::reputation(&ReputationInput { ratings, standing }, p);
    model::score(&srv.evidence, &srv.security, rep, now_ms, p)
}

/// What one server looks like in the scores document.
pub fn published_score(name: &str, srv: &ServerState, ts: TrustScore, p: &TrustParams) -> ServerScore {
    ServerScore {
        server: name.to_string(),
        score: ts.score,
        state: model::state(ts.score, srv.quarantine.is_some(), p),
        quarantine_reason: srv.quarantine.as_ref().map(|q| q.reason.clone()),
        breakdown: ts.breakdown,
    }
}
