//! The aggregator's logic: applies each write to the state inside one database transaction,
//! re-evaluates every score, takes automatic decisions, and publishes a new scores document
//! when something a sidecar acts on changed. Synchronous; the HTTP layer runs it on a blocking
//! thread behind one mutex (one writer per process).
//!
//! A write mutates the in-memory state as it goes; if anything fails before the commit, the
//! transaction rolls back and the state is reloaded from the database before the next call, so
//! memory never holds what the disk does not.
//!
//! On PostgreSQL, replicas share the database and memory is a cache of it: every write first
//! takes the replicas' write lock and, if another replica wrote since, reloads the state and the
//! published document under it; between writes, [`Engine::follow`] does the same on a timer.

use crate::auth::{Principal, Role};
use crate::config::Settings;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::{
    published_score, ratings_of, score_of, ServerState, State, MAX_APPROVALS, MAX_APPROVALS_PER_SERVER, MAX_HELD,
    MAX_HELD_PER_SERVER, MAX_SCANS,
};
use crate::db::{Db, Location, Snapshot, Tx};
use crate::store;
use crate::validate;
use crate::views::{
    ApprovalAck, ApprovalsView, ApproveRequest, AuditAction, RevokeAck, RevokeRequest, REVOKED_RULE, AuditPage, DecisionAck, DefinitionScan, DefinitionsAck,
    FlagAck, HeldChange, Health, ProvisionalServer, ProvisionalView, QuarantineInfo, RatingAck, RatingSummary, ServerDetail, SignalsAck, ToolApprovalRecord,
    Traffic,
};
use axum::body::Bytes;
use mcp_warden_core::trust::model;
use mcp_warden_core::trust::wire::{
    DefinitionBatch, DefinitionVerdict, FlagRequest, RatingRequest, ScoresDocument, SecurityEvent, ServerReport, ServerScore,
    Severity, SignalBatch, Subject, ToolApproval, TrustState,
};
use mcp_warden_core::inspect::{inspect_tool, Action, Fingerprint, Inspector};
use mcp_warden_core::trust::TrustScore;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;
use tracing::{info, warn};

mod maintenance;

use crate::admission::{self, Provisional, Refusal};
use crate::policy::{self, Policy};
use crate::text::escape;

pub use maintenance::StorageFault;

/// The actor named in the audit log for automatic decisions.
pub const AGGREGATOR: &str = "aggregator";
/// A published score is replaced (and the version bumped) when it moved by more than this.
pub const PUBLISH_EPSILON: f64 = 0.005;
/// Lists in the server view.
const DETAIL_EVENTS: u32 = 50;
const DETAIL_RATERS: usize = 50;
const PRUNE_EVERY_MS: u64 = 3_600_000;
/// The rule of the security event a sidecar sends for a change it holds out of `tools/list`.
pub const HELD_RULE: &str = "pin/tool-held";
/// The batch id recorded with findings held while their server was provisional, counted on its admission.
const HELD_BATCH: &str = "held-until-admitted";
/// Servers forgotten per evaluation round at most (each one an audit entry in the round's
/// transaction, which holds writes up meanwhile); the rest wait for the next rounds. A round
/// that forgets costs about one publication of the document plus the audit entries.
const FORGET_PER_ROUND: usize = 1_000;

/// One version of the scores document, serialized once, served to every poller.
#[derive(Debug, Clone)]
pub struct Published {
    pub version: u64,
    pub document: Bytes,
    scores: BTreeMap<String, Arc<ServerScore>>,
}

impl Published {
    fn empty(version: u64) -> Self {
        Published { version, document: Bytes::new(), scores: BTreeMap::new() }
    }

    /// Every server's published score, by name.
    pub fn servers(&self) -> impl Iterator<Item = &ServerScore> {
        self.scores.values().map(|s| s.as_ref())
    }
}

/// The wire document ([`ScoresDocument`](mcp_warden_core::trust::wire::ScoresDocument)) serialized
/// from borrowed scores.
#[derive(Serialize)]
struct DocumentRef<'a> {
    version: u64,
    generated_at_ms: u64,
    servers: Vec<&'a ServerScore>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    approvals: Vec<ToolApproval>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    verdicts: Vec<DefinitionVerdict>,
}

/// The current publication, shared with readers that must not wait for writers.
pub type Publication = Arc<RwLock<Arc<Published>>>;

pub fn current(p: &Publication) -> Arc<Published> {
    p.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Would a sidecar act differently on `new` than on the published `old`?
fn moved(old: Option<&Arc<ServerScore>>, new: &ServerScore) -> bool {
    match old {
        None => true,
        Some(o) => {
            o.state != new.state
                || o.quarantine_reason != new.quarantine_reason
                || (o.score - new.score).abs() > PUBLISH_EPSILON
        }
    }
}

/// The database could not be opened or read at start.
#[derive(Debug)]
pub struct OpenError(pub String);

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpenError {}

pub struct Engine {
    db: Db,
    /// The change counter this cache reflects (PostgreSQL; `None` on SQLite, the only writer).
    seen_changes: Option<i64>,
    settings: Settings,
    pretrusted: BTreeSet<String>,
    state: State,
    published: Arc<Published>,
    publication: Publication,
    /// Memory may differ from the database (a write failed): reload before the next call.
    stale: bool,
    /// Publish on the next evaluation even if nothing moved (start, after a reload).
    force_publish: bool,
    last_prune_ms: u64,
    metrics: Arc<Metrics>,
    /// Since when (ms) and why database writes fail; cleared by the next commit that succeeds.
    write_failure: Option<(u64, String)>,
    /// Vouches changed since rater standing was last computed: the next tick recomputes it
    /// (off the write path: a vouch acknowledges once it is on disk).
    standing_stale: bool,
    /// What one sidecar's findings may do (its safety memory stored with the state).
    policy: Policy,
    /// The mesh-wide scan's inspector: the core's built-in rules, detector and policy.
    inspector: Inspector,
}

/// What a write sees: its transaction and the state it changes.
struct Ctx<'a, 't> {
    tx: &'a mut Tx<'t>,
    state: &'a mut State,
    settings: &'a Settings,
    now: u64,
    /// Servers whose row must be written before the commit (and that are re-evaluated).
    dirty: BTreeSet<String>,
    /// Re-evaluate every server, not only the dirty ones (rater standing changed).
    full: bool,
    /// Automatic quarantines decided in this write (counted once it commits).
    auto_quarantines: u64,
    /// Findings not counted because their credential spent its budget.
    withheld: u64,
    policy: &'a mut Policy,
    /// The approvals or the verdicts changed: publish a new document even if no score moved.
    lists_changed: bool,
    /// Servers forgotten in this write (removed from the published document).
    forgotten: Vec<String>,
    /// The de-duplication window of findings (`None`: off).
    dedup: Option<u64>,
    /// Provisional servers changed in this write (stored, or deleted when gone, before the commit).
    provisional_dirty: BTreeSet<String>,
    /// Servers admitted in this write, and by whom (`sidecars`, `operator`, `scanner`, `rater`).
    admitted: Vec<(String, &'static str)>,
}

/// What became of a server a sidecar credential named that the aggregator does not track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named {
    /// The quorum was reached: it is tracked now.
    Admitted,
    /// Provisional: its report is held.
    Held,
    /// Not tracked, its report dropped.
    Refused(Refusal),
}

/// What a committed write returns: its result, the new publication if any, the automatic
/// quarantines, the change counter (PostgreSQL) and the servers admitted (and by whom).
type Committed<R> = (R, Option<Published>, u64, Option<i64>, Vec<(String, &'static str)>);

/// What a batch of signals did, for the ack, the metrics and the log.
#[derive(Debug, Default)]
struct Intake {
    applied: usize,
    dropped: BTreeSet<String>,
    refused: BTreeMap<&'static str, u64>,
    provisional: BTreeSet<String>,
    admitted: Vec<String>,
    withheld: u64,
}

/// Quarantines `srv` by the aggregator's own decision, with an audit entry.
fn decide_quarantine(tx: &mut Tx<'_>, now: u64, name: &str, srv: &mut ServerState, reason: String, score: f64) -> Result<(), ApiError> {
    tx.insert_audit(now, AGGREGATOR, AuditAction::AutoQuarantine, name, &reason, score)?;
    warn!(server = name, score, "automatic quarantine: {}", escape(&reason));
    srv.quarantine = Some(QuarantineInfo { reason, by: AGGREGATOR.to_string(), since_ms: now, automatic: true });
    Ok(())
}

impl Ctx<'_, '_> {
    /// The server's state, created on first mention (capacity was checked before the write).
    fn server(&mut self, name: &str) -> &mut ServerState {
        self.dirty.insert(name.to_string());
        let now = self.now;
        self.state.servers.entry(name.to_string()).or_insert_with(|| ServerState::new(now))
    }

    /// Tracks `name` from now on (capacity was checked): a provisional server leaves the
    /// provisional set and what its reports said meanwhile is counted now, each finding as its
    /// credential's. `by` names who admitted it, for the metric.
    fn admit(&mut self, name: &str, by: &'static str) -> Result<(), ApiError> {
        let held = self.state.provisional.remove(name);
        if held.is_some() {
            self.provisional_dirty.insert(name.to_string());
        }
        if !self.state.servers.contains_key(name) {
            self.admitted.push((name.to_string(), by));
        }
        self.server(name);
        let Some(p) = held else { return Ok(()) };
        let first = p.voices.keys().next().cloned().unwrap_or_default();
        if p.held.outcomes.total() > 0 || p.held.latency.count > 0 {
            let r = ServerReport { server: name.to_string(), outcomes: p.held.outcomes.clone(), latency: p.held.latency.clone(), security: Vec::new() };
            self.apply_report(&first, HELD_BATCH, &r)?;
        }
        for (who, events) in p.held.events_by_credential() {
            let r = ServerReport { server: name.to_string(), security: events, ..ServerReport::default() };
            self.apply_report(who, HELD_BATCH, &r)?;
        }
        Ok(())
    }

    /// Sidecar credential `who` names `name`, a server not tracked (in a report, or in its
    /// configuration's list when `report` is `None`): a voice towards its admission.
    fn name_server(&mut self, who: &str, name: &str, report: Option<&ServerReport>, named: &mut Option<usize>) -> Result<Named, ApiError> {
        let (now, settings) = (self.now, self.settings);
        let sc = &settings.sidecar;
        let quorum = sc.quorum();
        if !self.state.provisional.contains_key(name) {
            let mine = *named.get_or_insert_with(|| admission::named_by(&self.state.provisional, who));
            if mine >= sc.provisional_per_sidecar {
                return Ok(Named::Refused(Refusal::ProvisionalPerSidecar));
            }
        }
        let p = self.state.provisional.entry(name.to_string()).or_insert_with(|| Provisional::new(now));
        p.expire(now.saturating_sub(sc.provisional_retention_ms));
        if p.voice(who, now) {
            if let Some(n) = named.as_mut() {
                *n += 1;
            }
        }
        self.provisional_dirty.insert(name.to_string());
        if p.voices() < quorum {
            if let Some(r) = report {
                p.held.add(who, r);
            }
            return Ok(Named::Held);
        }
        if self.state.servers.len() >= settings.max_servers {
            return Ok(Named::Refused(Refusal::MaxServers));
        }
        if !self.policy.admit_new_server(who, name, now) {
            return Ok(Named::Refused(Refusal::NewServersPerWindow));
        }
        self.admit(name, "sidecars")?;
        // No longer provisional: it leaves the credential's count.
        if let Some(n) = named.as_mut() {
            *n = n.saturating_sub(1);
        }
        Ok(Named::Admitted)
    }

    /// Forgets voices older than `provisional_retention_ms`, and the provisional servers left
    /// with none.
    fn expire_provisional(&mut self) {
        let since = self.now.saturating_sub(self.settings.sidecar.provisional_retention_ms);
        let dirty = &mut self.provisional_dirty;
        self.state.provisional.retain(|name, p| {
            if p.expire(since) {
                dirty.insert(name.clone());
            }
            p.voices() > 0
        });
    }

    /// Applies one report of sidecar credential `who` on a tracked server: its findings (each
    /// recorded, counted as the ingestion policy says), held tool changes, outcome counts, and a
    /// quarantine when a finding may quarantine.
    fn apply_report(&mut self, who: &str, batch_id: &str, r: &ServerReport) -> Result<(), ApiError> {
        let (now, dedup, settings) = (self.now, self.dedup, self.settings);
        let released_ms = self.state.servers.get(&r.server).and_then(|s| s.released_ms);
        // (event, the severity it counts at, whether it may quarantine)
        let mut counted: Vec<(&SecurityEvent, Severity, bool)> = Vec::new();
        for e in &r.security {
            // Stored (a repeat of the same rule adds a report); whether it counts is the
            // policy's call (its de-duplication is by kind, not by rule name).
            self.tx.record_security_event(&r.server, who, batch_id, e, now, dedup)?;
            let v = self.policy.finding(who, &r.server, e.tool.as_deref(), &e.rule, e.severity, e.quarantine, now, dedup, released_ms);
            if v.over_budget {
                self.withheld += 1;
            }
            if v.counts {
                counted.push((e, v.severity, v.quarantines));
            }
        }
        if !r.security.is_empty() {
            self.tx.trim_security_events(&r.server)?;
        }
        for e in r.security.iter().filter(|e| e.rule == HELD_RULE) {
            self.record_held(&r.server, e, who)?;
        }
        let srv = self.server(&r.server);
        srv.evidence.add(&r.outcomes, now, &settings.trust);
        let t = &mut srv.totals;
        t.success = t.success.saturating_add(r.outcomes.success);
        t.failures = t.failures.saturating_add(r.outcomes.failure_total());
        t.slow = t.slow.saturating_add(r.outcomes.slow);
        t.latency_count = t.latency_count.saturating_add(r.latency.count);
        t.latency_sum_ms = t.latency_sum_ms.saturating_add(r.latency.sum_ms);
        t.last_report_ms = Some(now);
        // New adverse evidence re-arms automatic quarantine after a release.
        if r.outcomes.failure_total() > 0 || r.outcomes.slow > 0 || !counted.is_empty() {
            srv.auto_armed = true;
        }
        // One penalty per tool per report, at its most severe finding: a poisoned tool
        // often matches several rules, which is one offence, not several.
        let mut worst: BTreeMap<Option<&str>, Severity> = BTreeMap::new();
        for (e, severity, _) in &counted {
            let w = worst.entry(e.tool.as_deref()).or_insert(*severity);
            if *severity > *w {
                *w = *severity;
            }
        }
        for severity in worst.into_values() {
            srv.security.add(severity, now, &settings.trust);
        }
        if let Some((e, _, _)) = counted.iter().find(|(_, _, q)| *q) {
            if self.quarantine_critical(&r.server, event_reason(e, who))? {
                self.policy.quarantined(&r.server, policy::kind(&e.rule), now);
            }
        }
        Ok(())
    }

    fn persist_provisional(&mut self) -> Result<(), ApiError> {
        for name in &self.provisional_dirty {
            self.tx.put_provisional(name, self.state.provisional.get(name))?;
        }
        Ok(())
    }

    fn score(&self, name: &str) -> Option<TrustScore> {
        let srv = self.state.servers.get(name)?;
        let rs = ratings_of(&self.state.ratings, name);
        Some(score_of(srv, &rs, &self.state.standing, self.now, &self.settings.trust))
    }

    /// Quarantines `name` for a critical finding, unless it already is.
    fn quarantine_critical(&mut self, name: &str, reason: String) -> Result<bool, ApiError> {
        let score = self.score(name).map(|s| s.score).unwrap_or(0.0);
        let now = self.now;
        if let Some(srv) = self.state.servers.get_mut(name) {
            if srv.quarantine.is_none() {
                decide_quarantine(self.tx, now, name, srv, reason, score)?;
                self.dirty.insert(name.to_string());
                self.auto_quarantines += 1;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Scores the servers this write touched (every server when `full`), quarantines those under
    /// `quarantine_below` (when armed), takes history samples, and builds a new publication if
    /// any of them moved past the thresholds. Servers not evaluated keep their published score
    /// until the next full evaluation (the timer's, every `evaluate_interval_ms`).
    fn evaluate(&mut self, published: &Published, force: bool) -> Result<Option<Published>, ApiError> {
        let p = &self.settings.trust;
        let now = self.now;
        let targets: Vec<String> =
            if self.full { self.state.servers.keys().cloned().collect() } else { self.dirty.iter().cloned().collect() };
        let mut fresh = Vec::with_capacity(targets.len());
        let mut any_moved = force || self.lists_changed || !self.forgotten.is_empty();
        let State { servers: states, ratings, standing, .. } = &mut *self.state;
        for name in targets {
            let Some(srv) = states.get_mut(&name) else { continue };
            let rs = ratings_of(ratings, &name);
            let ts = score_of(srv, &rs, standing, now, p);
            if srv.quarantine.is_none() && srv.auto_armed && ts.score < p.quarantine_below {
                let reason = format!(
                    "score {:.3} fell below quarantine_below {}: {}",
                    ts.score, p.quarantine_below, ts.breakdown.explanation
                );
                decide_quarantine(self.tx, now, &name, srv, reason, ts.score)?;
                self.dirty.insert(name.clone());
                self.auto_quarantines += 1;
            }
            let st = model::state(ts.score, srv.quarantine.is_some(), p);
            let due = match srv.last_sample {
                None => true,
                Some((at, last)) => last != st || now.saturating_sub(at) >= self.settings.history_sample_interval_ms,
            };
            if due {
                self.tx.insert_sample(&name, now, ts.score, st)?;
                srv.last_sample = Some((now, st));
            }
            let score = published_score(&name, srv, ts, p);
            any_moved |= moved(published.scores.get(&name), &score);
            fresh.push((name, score));
        }
        if !any_moved {
            return Ok(None);
        }
        let mut scores = published.scores.clone();
        for name in &self.forgotten {
            scores.remove(name);
        }
        for (name, score) in fresh {
            scores.insert(name, Arc::new(score));
        }
        let version = published.version + 1;
        let approvals = self
            .state
            .approvals_newest_first()
            .into_iter()
            .map(|a| ToolApproval { server: a.server.clone(), fingerprint: a.fingerprint.clone(), tool: a.tool.clone() })
            .collect();
        let verdicts = self
            .state
            .verdicts_newest_first()
            .into_iter()
            .filter_map(|d| {
                Some(DefinitionVerdict { fingerprint: d.fingerprint.clone(), severity: d.severity?, rules: d.rules.clone(), tool: d.tool.clone() })
            })
            .collect();
        let doc = DocumentRef {
            version,
            generated_at_ms: now,
            servers: scores.values().map(|s| s.as_ref()).collect(),
            approvals,
            verdicts,
        };
        let document = serde_json::to_vec(&doc).map_err(|e| ApiError::internal(format!("cannot serialize scores: {e}")))?;
        self.tx.publish(version, &document)?;
        Ok(Some(Published { version, document: Bytes::from(document), scores }))
    }

    /// Keeps a `pin/tool-held` event as a held change waiting for an operator (unless its
    /// fingerprint is approved already: a sidecar that has not polled since still holds it).
    /// Bounded: past [`MAX_HELD_PER_SERVER`] or [`MAX_HELD`] the least recently reported goes.
    fn record_held(&mut self, server: &str, e: &SecurityEvent, by: &str) -> Result<(), ApiError> {
        let Some(fp) = e.new_fingerprint.as_deref().filter(|f| validate::fingerprint(f).is_ok()) else { return Ok(()) };
        let key = (server.to_string(), fp.to_string());
        if self.state.approvals.contains_key(&key) {
            return Ok(());
        }
        let now = self.now;
        let held = match self.state.held.get(&key) {
            Some(h) => HeldChange {
                tool: e.tool.clone().or_else(|| h.tool.clone()),
                old_fingerprint: e.old_fingerprint.clone().or_else(|| h.old_fingerprint.clone()),
                why: e.evidence.clone().or_else(|| h.why.clone()),
                reported_by: by.to_string(),
                last_ms: now,
                reports: h.reports.saturating_add(1),
                ..h.clone()
            },
            None => {
                if let Some(old) = State::oldest_past(&self.state.held, server, MAX_HELD_PER_SERVER, MAX_HELD, |h| h.last_ms) {
                    self.tx.delete_held(&old.0, &old.1)?;
                    self.state.held.remove(&old);
                }
                HeldChange {
                    server: server.to_string(),
                    fingerprint: fp.to_string(),
                    tool: e.tool.clone(),
                    old_fingerprint: e.old_fingerprint.clone(),
                    why: e.evidence.clone(),
                    reported_by: by.to_string(),
                    first_ms: now,
                    last_ms: now,
                    reports: 1,
                }
            }
        };
        let held = HeldChange { why: held.why.map(|w| validate::truncate(&w, validate::MAX_EVIDENCE)), ..held };
        self.tx.upsert_held(&held)?;
        self.state.held.insert(key, held);
        Ok(())
    }

    /// Forgets (at most `FORGET_PER_ROUND`) servers that no sidecar reported and no scanner or
    /// operator acted on since `retention_ms` ago, with an audit entry each. A quarantined
    /// server is kept: forgetting it would lift its quarantine.
    fn forget_stale(&mut self, retention_ms: u64) -> Result<(), ApiError> {
        if retention_ms == 0 {
            return Ok(());
        }
        let (now, cutoff) = (self.now, self.now.saturating_sub(retention_ms));
        let stale: Vec<(String, u64)> = self
            .state
            .servers
            .iter()
            .filter(|(_, s)| s.quarantine.is_none())
            .map(|(name, s)| (name.clone(), last_known_ms(s)))
            .filter(|(_, last)| *last < cutoff)
            .take(FORGET_PER_ROUND)
            .collect();
        for (name, last) in stale {
            let score = self.score(&name).map(|s| s.score).unwrap_or(0.0);
            let reason = format!(
                "forgotten: no sidecar reported it and no scanner or operator acted on it since {last} ms \
                 (server_retention_ms {retention_ms})"
            );
            self.tx.insert_audit(now, AGGREGATOR, AuditAction::Forget, &name, &reason, score)?;
            self.state.servers.remove(&name);
            self.state.ratings.remove(&name);
            // Its held changes were reports about it; an operator's approvals stay (decisions).
            self.state.held.retain(|(server, _), _| server != &name);
            self.policy.forget(&name);
            self.dirty.remove(&name);
            info!(server = name.as_str(), last_known_ms = last, "server forgotten after server_retention_ms");
            self.forgotten.push(name);
        }
        if !self.forgotten.is_empty() {
            self.tx.forget_servers(&self.forgotten)?;
        }
        Ok(())
    }

    fn persist_dirty(&mut self) -> Result<(), ApiError> {
        for name in &self.dirty {
            if let Some(srv) = self.state.servers.get(name) {
                self.tx.upsert_server(name, srv)?;
            }
        }
        Ok(())
    }
}

/// Most definitions revoked at once (they are never forgotten to make room for scans).
pub const MAX_REVOKED: usize = 10_000;

/// Most rules named in one verdict.
const MAX_VERDICT_RULES: usize = 8;

/// One definition scanned with the core's inspector: a verdict when the policy acts on it (strip
/// or above), at the worst severity it acts on, naming those rules.
fn scan_definition(insp: &Inspector, fp: &str, server: &str, def: &serde_json::Value, others: &[&str], now: u64) -> DefinitionScan {
    let v = inspect_tool(insp, server, def, others);
    let acting: Vec<_> = v.findings.iter().filter(|f| insp.action_for(f.severity) >= Action::Strip).collect();
    let severity = (v.action >= Action::Strip).then(|| acting.iter().map(|f| f.severity).max()).flatten();
    let mut rules: Vec<String> = acting.iter().map(|f| f.rule.clone()).collect();
    rules.sort_unstable();
    rules.dedup();
    rules.truncate(MAX_VERDICT_RULES);
    let tool = def.get("name").and_then(serde_json::Value::as_str).map(|n| validate::truncate(n, validate::MAX_ID));
    DefinitionScan { fingerprint: fp.to_string(), server: server.to_string(), tool, severity, rules, scanned_ms: now }
}

/// When a sidecar, scanner or operator last showed the server exists: first seen, last
/// reported, last finding or flag, last released (a rating alone does not keep a server).
fn last_known_ms(s: &ServerState) -> u64 {
    let q = s.quarantine.as_ref().map(|q| q.since_ms);
    [Some(s.first_seen_ms), s.totals.last_report_ms, s.released_ms, q, Some(s.security.updated_ms)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
}

fn event_reason(e: &SecurityEvent, by: &str) -> String {
    let tool = e.tool.as_deref().map(|t| format!(" on tool `{t}`")).unwrap_or_default();
    let evidence = e.evidence.as_deref().map(|v| format!(": {}", validate::truncate(v, 200))).unwrap_or_default();
    let what = if e.severity == Severity::Critical {
        "critical security event".to_string()
    } else {
        format!("{} security event", e.severity.as_str())
    };
    let asked = if e.quarantine { " (its policy asks for quarantine)" } else { "" };
    format!("{what} `{}`{tool} reported by sidecar `{by}`{asked}{evidence}", e.rule)
}

fn flag_reason(f: &FlagRequest, by: &str) -> String {
    let tool = f.tool.as_deref().map(|t| format!(" on tool `{t}`")).unwrap_or_default();
    let desc = f.description.as_deref().map(|d| format!(": {}", validate::truncate(d, 200))).unwrap_or_default();
    format!("critical flag `{}`{tool} from `{by}`{desc}", f.rule)
}

/// Refuses a write that would make the aggregator track more than `max_servers`.
/// Servers past `max_servers` that operators' and scanners' writes may still add (1%, at least
/// 10): sidecars filling the table must not leave an operator unable to quarantine.
fn reserve(settings: &Settings) -> usize {
    (settings.max_servers / 100).max(10)
}

fn check_capacity<'n>(state: &State, settings: &Settings, names: impl IntoIterator<Item = &'n str>) -> Result<(), ApiError> {
    check_capacity_with(state, settings, 0, names)
}

fn check_capacity_with<'n>(
    state: &State,
    settings: &Settings,
    extra: usize,
    names: impl IntoIterator<Item = &'n str>,
) -> Result<(), ApiError> {
    let new: BTreeSet<&str> = names.into_iter().filter(|n| !state.servers.contains_key(*n)).collect();
    if state.servers.len() + new.len() > settings.max_servers + extra {
        return Err(ApiError::new(
            axum::http::StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the aggregator tracks at most {} servers (max_servers) and tracks {}; this write would add {} new \
                 ones. Servers nobody reports are forgotten after server_retention_ms; raise max_servers if the \
                 mesh has more",
                settings.max_servers,
                state.servers.len(),
                new.len()
            ),
        ));
    }
    Ok(())
}

/// Replaces the cache with `snap`: the state, and on PostgreSQL the published document as the
/// replicas stored it (served byte for byte, so one version is one document whichever replica
/// answers), and the ingestion policy's durable memory. `true` when the next evaluation must
/// publish (SQLite: the document is rebuilt).
#[allow(clippy::too_many_arguments)]
fn install(
    snap: Snapshot,
    state: &mut State,
    policy: &mut Policy,
    published: &mut Arc<Published>,
    publication: &Publication,
    seen_changes: &mut Option<i64>,
    pretrusted: &BTreeSet<String>,
    settings: &Settings,
) -> Result<bool, ApiError> {
    let mut fresh = snap.state;
    fresh.recompute_standing(pretrusted, &settings.trust);
    *state = fresh;
    policy.restore(snap.policy);
    *seen_changes = snap.changes;
    match snap.publication {
        Some((version, doc)) => {
            if version > published.version || published.document.is_empty() {
                let parsed: ScoresDocument = serde_json::from_str(&doc)
                    .map_err(|e| ApiError::internal(format!("the stored scores document is not valid: {e}")))?;
                let scores = parsed.servers.into_iter().map(|s| (s.server.clone(), Arc::new(s))).collect();
                let p = Arc::new(Published { version, document: Bytes::from(doc), scores });
                *published = p.clone();
                *publication.write().unwrap_or_else(PoisonError::into_inner) = p;
            }
            Ok(false)
        }
        None => {
            if snap.version > published.version {
                // A commit reported failure but reached the disk: never reuse its version number.
                *published = Arc::new(Published { version: snap.version, ..(**published).clone() });
            }
            Ok(true)
        }
    }
}

impl Engine {
    /// Opens the database, rebuilds the state, and publishes a first document (a version above
    /// any published before, so no poller's ETag matches across a restart). On PostgreSQL a
    /// replica joining others serves the document they published.
    pub fn open(location: &Location, settings: Settings, pretrusted: BTreeSet<String>, now: u64) -> Result<Engine, OpenError> {
        let metrics = Arc::new(Metrics::new(settings.metrics_require_token));
        let fail = |what: &str, e: &dyn fmt::Display| {
            let e = e.to_string();
            let hint = if e.contains("locked") { " (is another aggregator using this database?)" } else { "" };
            OpenError(format!("{what} {location}: {e}{hint}"))
        };
        let mut db = Db::open(location).map_err(|e| match &e {
            // Never replaced nor repaired here: the file may be all that is left of the log.
            crate::db::Error::Sqlite(se) if store::is_corruption(se) => OpenError(format!(
                "database {location} is damaged or not an mcp-warden database ({e}); refusing to start. Nothing was \
                 changed: restore a backup (`mcp-warden-ctl restore`), or move the file away to start with an \
                 empty database"
            )),
            _ => fail("cannot open database", &e),
        })?;
        // A broken chain is reported, not fatal: the log is evidence, and refusing to start would
        // hand whoever edited the file an outage too.
        match db.verify_audit() {
            Ok(v) => {
                if let Some(b) = v.broken {
                    tracing::error!(entry = b.id, "the audit log's hash chain is broken: {} (see GET /v1/audit/verify)", b.reason);
                }
            }
            Err(e) => return Err(fail("cannot read database", &e)),
        }
        let snap = db.snapshot().map_err(|e| fail("cannot read database", &e))?;
        let published = Arc::new(Published::empty(0));
        let settings_policy = settings.sidecar.clone();
        let mut engine = Engine {
            db,
            seen_changes: None,
            settings,
            pretrusted,
            state: State::default(),
            publication: Arc::new(RwLock::new(published.clone())),
            published,
            stale: false,
            force_publish: true,
            last_prune_ms: 0,
            metrics,
            write_failure: None,
            standing_stale: false,
            policy: Policy::new(settings_policy),
            inspector: Inspector::builtin(),
        };
        let shared = snap.publication.is_some();
        let force = install(
            snap,
            &mut engine.state,
            &mut engine.policy,
            &mut engine.published,
            &engine.publication,
            &mut engine.seen_changes,
            &engine.pretrusted,
            &engine.settings,
        )
        .map_err(|e| fail("cannot read database", &e.message))?;
        engine.force_publish = force;
        engine.metrics.servers_provisional(engine.state.provisional.len());
        if !shared {
            engine.tick(now).map_err(|e| fail("cannot write database", &e.message))?;
        }
        Ok(engine)
    }

    /// The publication handle readers poll without taking the engine's lock.
    pub fn publication(&self) -> Publication {
        self.publication.clone()
    }

    /// The service's metrics (the engine counts what its writes did).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Does this process share its database with other replicas (PostgreSQL)?
    pub fn is_shared(&self) -> bool {
        self.db.is_shared()
    }

    fn ensure_fresh(&mut self) -> Result<(), ApiError> {
        if !self.stale {
            return Ok(());
        }
        let snap = self.db.snapshot()?;
        let force = install(
            snap,
            &mut self.state,
            &mut self.policy,
            &mut self.published,
            &self.publication,
            &mut self.seen_changes,
            &self.pretrusted,
            &self.settings,
        )?;
        self.stale = false;
        self.force_publish |= force;
        info!("state reloaded from the database after a failed write");
        Ok(())
    }

    /// PostgreSQL: catches the cache up with what other replicas committed (the state and the
    /// published document), so a decision taken on any replica is served by this one too.
    /// Cheap when nothing changed: one read of the change counter. `true` if it reloaded.
    pub fn follow(&mut self) -> Result<bool, ApiError> {
        if !self.db.is_shared() {
            return Ok(false);
        }
        // Unreachable: memory may be behind the database from now on (and health says so).
        let changes = self.db.changes().inspect_err(|_| self.stale = true)?;
        if !self.stale && changes == self.seen_changes {
            return Ok(false);
        }
        let snap = self.db.snapshot().inspect_err(|_| self.stale = true)?;
        install(
            snap,
            &mut self.state,
            &mut self.policy,
            &mut self.published,
            &self.publication,
            &mut self.seen_changes,
            &self.pretrusted,
            &self.settings,
        )?;
        self.stale = false;
        self.metrics.servers_provisional(self.state.provisional.len());
        Ok(true)
    }

    /// The follow timer's round (PostgreSQL): catches up with the database, or, when the leader
    /// is gone (its lock is free), takes over and evaluates at once, so a dead leader is
    /// replaced within one follow interval, well inside one evaluation interval.
    pub fn follow_round(&mut self, now: u64) -> Result<(), ApiError> {
        if !self.db.is_shared() {
            return Ok(());
        }
        if !self.db.is_leader() && self.db.lead().inspect_err(|_| self.stale = true)? {
            return self.tick(now);
        }
        self.follow().map(|_| ())
    }

    /// One round of the evaluation timer: the leader (the only process on SQLite; the holder of
    /// the leader lock on PostgreSQL) re-evaluates, the other replicas follow. `true` if this
    /// process led.
    pub fn round(&mut self, now: u64) -> Result<bool, ApiError> {
        if self.db.lead().inspect_err(|_| self.stale = true)? {
            self.tick(now)?;
            Ok(true)
        } else {
            self.follow()?;
            Ok(false)
        }
    }

    /// Runs `f` and the evaluation in one transaction; publishes after the commit. `f` checks
    /// its preconditions before it changes anything: a 4xx error from it leaves the state as
    /// it was.
    fn write<R>(
        &mut self,
        now: u64,
        full: bool,
        f: impl FnOnce(&mut Ctx<'_, '_>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        self.ensure_fresh()?;
        let started = Instant::now();
        let changes_before = self.db.total_changes();
        let mut precondition = false;
        let result = (|| -> Result<Committed<R>, ApiError> {
            let mut tx = self.db.transaction()?;
            // PostgreSQL: one writer across replicas; catch up with the others' writes first.
            if let Some(changes) = tx.lock_for_write()? {
                if Some(changes) != self.seen_changes {
                    let snap = tx.snapshot()?;
                    self.force_publish |= install(
                        snap,
                        &mut self.state,
                        &mut self.policy,
                        &mut self.published,
                        &self.publication,
                        &mut self.seen_changes,
                        &self.pretrusted,
                        &self.settings,
                    )?;
                }
            }
            let full = full || self.force_publish;
            let mut ctx = Ctx {
                tx: &mut tx,
                state: &mut self.state,
                settings: &self.settings,
                now,
                dirty: BTreeSet::new(),
                full,
                auto_quarantines: 0,
                withheld: 0,
                policy: &mut self.policy,
                lists_changed: false,
                forgotten: Vec::new(),
                dedup: match self.settings.security_dedup_window_ms {
                    0 => None,
                    w => Some(now.saturating_sub(w)),
                },
                provisional_dirty: BTreeSet::new(),
                admitted: Vec::new(),
            };
            let r = f(&mut ctx).inspect_err(|e| precondition = e.status.is_client_error())?;
            for change in ctx.policy.drain() {
                ctx.tx.policy_change(&change)?;
            }
            let next = ctx.evaluate(&self.published, self.force_publish)?;
            ctx.persist_dirty()?;
            ctx.persist_provisional()?;
            let auto_quarantines = ctx.auto_quarantines;
            let admitted = std::mem::take(&mut ctx.admitted);
            let changes = tx.bump_changes()?;
            tx.commit()?;
            Ok((r, next, auto_quarantines, changes, admitted))
        })();
        self.metrics.store_write(result.is_ok(), started.elapsed());
        match result {
            Ok((r, next, auto_quarantines, changes, admitted)) => {
                for (name, by) in &admitted {
                    self.metrics.server_admitted(by);
                    info!(server = name.as_str(), by = by, "server admitted: tracked and published from now on");
                }
                self.metrics.servers_provisional(self.state.provisional.len());
                if changes.is_some() {
                    self.seen_changes = changes;
                }
                // Only a commit that wrote something shows the disk takes writes again.
                if self.db.wrote_since(changes_before) {
                    if let Some((since, _)) = self.write_failure.take() {
                        info!("database writes succeed again (failing since {since} ms)");
                    }
                }
                self.metrics.decision(AuditAction::AutoQuarantine.as_str(), auto_quarantines);
                if let Some(p) = next {
                    let p = Arc::new(p);
                    self.published = p.clone();
                    *self.publication.write().unwrap_or_else(PoisonError::into_inner) = p;
                    self.force_publish = false;
                }
                Ok(r)
            }
            Err(e) => {
                // The policy's memory must not keep what the disk did not take either.
                if !precondition || self.policy.has_pending() {
                    self.stale = true;
                }
                if e.status == axum::http::StatusCode::INSUFFICIENT_STORAGE {
                    self.metrics.servers_refused("max_servers", 1);
                    warn!("a write was refused: {}", e.message);
                }
                if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
                    let since = self.write_failure.as_ref().map_or(now, |(since, _)| *since);
                    self.write_failure = Some((since, e.message.clone()));
                }
                Err(e)
            }
        }
    }

    fn dedup_since(&self, now: u64) -> Option<u64> {
        match self.settings.security_dedup_window_ms {
            0 => None,
            w => Some(now.saturating_sub(w)),
        }
    }

    /// (score, state) of `name` now.
    fn current(&self, name: &str, now: u64) -> (f64, TrustState) {
        match self.state.servers.get(name) {
            Some(srv) => {
                let rs = ratings_of(&self.state.ratings, name);
                let ts = score_of(srv, &rs, &self.state.standing, now, &self.settings.trust);
                (ts.score, model::state(ts.score, srv.quarantine.is_some(), &self.settings.trust))
            }
            None => (0.0, TrustState::Degraded),
        }
    }

    /// `POST /v1/signals`. Reports of tracked servers are applied. A server not tracked is
    /// named: provisional (its report held) until `server_admission_quorum` distinct sidecar
    /// credentials named it, then admitted, if `max_servers` and the credential's
    /// `new_servers_per_window` allow (else its report is dropped). The batch's `configured`
    /// list names, too, but only servers some report made provisional already: a configuration
    /// alone never adds one. The ack, the log and the metrics say what was held and dropped.
    pub fn signals(&mut self, who: &Principal, batch: &SignalBatch, now: u64) -> Result<SignalsAck, ApiError> {
        self.ensure_fresh()?;
        // Seen (the batch id is taken) inside the write: on PostgreSQL a resend may reach
        // another replica while the first is still being written; the write lock orders them.
        let outcome = self.write(now, false, |ctx| {
            if ctx.tx.batch_seen(&who.name, &batch.batch_id)? {
                return Ok(None);
            }
            ctx.tx.insert_batch(&who.name, &batch.batch_id, &batch.sidecar, now)?;
            let mut out = Intake::default();
            // How many provisional servers this credential names (counted once, when needed).
            let mut named: Option<usize> = None;
            for r in &batch.servers {
                if !ctx.state.servers.contains_key(&r.server) {
                    if out.dropped.contains(&r.server) {
                        continue;
                    }
                    match ctx.name_server(&who.name, &r.server, Some(r), &mut named)? {
                        Named::Admitted => out.admitted.push(r.server.clone()),
                        Named::Held => {
                            out.provisional.insert(r.server.clone());
                            continue;
                        }
                        Named::Refused(why) => {
                            out.dropped.insert(r.server.clone());
                            *out.refused.entry(why.as_str()).or_default() += 1;
                            continue;
                        }
                    }
                }
                ctx.apply_report(&who.name, &batch.batch_id, r)?;
                out.applied += 1;
            }
            for name in &batch.configured {
                if ctx.state.provisional.contains_key(name) && !out.provisional.contains(name) {
                    if let Named::Admitted = ctx.name_server(&who.name, name, None, &mut named)? {
                        out.admitted.push(name.clone());
                    }
                }
            }
            out.provisional.retain(|n| !ctx.state.servers.contains_key(n));
            out.withheld = ctx.withheld;
            Ok(Some(out))
        })?;
        let Some(out) = outcome else {
            self.metrics.signal_batch(true, 0, 0);
            return Ok(SignalsAck {
                batch_id: batch.batch_id.clone(),
                duplicate: true,
                servers: 0,
                dropped_servers: Vec::new(),
                provisional: 0,
                provisional_servers: Vec::new(),
                admitted_servers: Vec::new(),
                version: self.published.version,
            });
        };
        self.metrics.signal_batch(false, out.applied, out.dropped.len());
        self.metrics.signal_reports_held(out.provisional.len());
        let sc = &self.settings.sidecar;
        for (reason, n) in &out.refused {
            self.metrics.servers_refused(reason, *n);
            let knob = match *reason {
                "max_servers" => format!("max_servers ({}) reached", self.settings.max_servers),
                "new_servers_per_window" => format!("past new_servers_per_window ({})", sc.new_servers_per_window),
                _ => format!("past provisional_per_sidecar ({})", sc.provisional_per_sidecar),
            };
            warn!(sidecar = who.name, "{knob}: reports of {n} servers not tracked were dropped");
        }
        if !out.provisional.is_empty() {
            let first: Vec<&str> = out.provisional.iter().take(5).map(String::as_str).collect();
            info!(
                sidecar = who.name,
                "reports of {} provisional servers held until {} sidecar credentials name them or an operator admits them \
                 (server_admission_quorum; {} provisional in all): {}",
                out.provisional.len(),
                sc.quorum(),
                self.state.provisional.len(),
                escape(&first.join(", "))
            );
        }
        if out.withheld > 0 {
            self.metrics.findings_withheld(out.withheld);
            warn!(
                sidecar = who.name,
                "{} findings recorded but not counted: this credential's uncorroborated findings reached sidecar.server_budget ({} servers per window)",
                out.withheld,
                sc.server_budget
            );
        }
        Ok(SignalsAck {
            batch_id: batch.batch_id.clone(),
            duplicate: false,
            servers: out.applied,
            dropped_servers: out.dropped.into_iter().collect(),
            provisional: out.provisional.len(),
            provisional_servers: out.provisional.into_iter().take(admission::ACK_LISTED).collect(),
            admitted_servers: out.admitted,
            version: self.published.version,
        })
    }

    /// `POST /v1/ratings`. A vouch (a rating of a rater) is stored and acknowledged; standing
    /// follows at the next periodic evaluation. A withdrawn vouch (value 0) is deleted, and a
    /// rater holds at most `max_vouches_per_rater` vouches.
    pub fn rate(&mut self, who: &Principal, req: &RatingRequest, now: u64) -> Result<RatingAck, ApiError> {
        let vouch = matches!(req.subject, Subject::Rater(_));
        self.write(now, false, |ctx| {
            match &req.subject {
                Subject::Server(s) => check_capacity(ctx.state, ctx.settings, [s.as_str()])?,
                Subject::Rater(r) => {
                    let key = (who.name.clone(), r.clone());
                    let held = ctx.state.vouches_from(&who.name);
                    if req.value > 0.0 && !ctx.state.vouches.contains_key(&key) && held >= ctx.settings.max_vouches_per_rater {
                        return Err(ApiError::conflict(format!(
                            "`{}` already vouches for {held} raters, the most one rater may (max_vouches_per_rater); \
                             withdraw one (a vouch of value 0) first",
                            who.name
                        )));
                    }
                }
            }
            match &req.subject {
                Subject::Server(s) => {
                    ctx.tx.upsert_rating(&who.name, &req.subject, req.value, req.comment.as_deref(), now)?;
                    ctx.state.ratings.entry(s.clone()).or_default().insert(who.name.clone(), req.value);
                    let prior = ctx.settings.trust.reputation_prior;
                    ctx.admit(s, if who.role == Role::Operator { "operator" } else { "rater" })?;
                    let srv = ctx.server(s);
                    if req.value < prior {
                        srv.auto_armed = true;
                    }
                }
                Subject::Rater(r) => {
                    let key = (who.name.clone(), r.clone());
                    if req.value > 0.0 {
                        ctx.tx.upsert_rating(&who.name, &req.subject, req.value, req.comment.as_deref(), now)?;
                        ctx.state.vouches.insert(key, req.value);
                    } else {
                        ctx.tx.delete_rating(&who.name, &req.subject)?;
                        ctx.state.vouches.remove(&key);
                    }
                }
            }
            Ok(())
        })?;
        if vouch {
            self.standing_stale = true;
        }
        self.metrics.rating(if vouch { "rater" } else { "server" });
        Ok(RatingAck {
            rater: who.name.clone(),
            rater_standing: self.state.standing.get(&who.name).copied().unwrap_or(0.0),
            subject: req.subject.clone(),
            value: req.value,
            version: self.published.version,
        })
    }

    /// `POST /v1/flags`.
    pub fn flag(&mut self, who: &Principal, req: &FlagRequest, now: u64) -> Result<FlagAck, ApiError> {
        let dedup = self.dedup_since(now);
        let (id, counted) = self.write(now, false, |ctx| {
            check_capacity_with(ctx.state, ctx.settings, reserve(ctx.settings), [req.server.as_str()])?;
            let (id, counted) = ctx.tx.record_flag(&who.name, req, req.description.as_deref(), now, dedup)?;
            ctx.admit(&req.server, if who.role == Role::Operator { "operator" } else { "scanner" })?;
            let settings = ctx.settings;
            let srv = ctx.server(&req.server);
            if counted {
                srv.security.add(req.severity, now, &settings.trust);
                srv.auto_armed = true;
                if req.severity == Severity::Critical {
                    ctx.quarantine_critical(&req.server, flag_reason(req, &who.name))?;
                }
            }
            Ok((id, counted))
        })?;
        self.metrics.flag(req.severity.as_str(), counted);
        let (score, state) = self.current(&req.server, now);
        Ok(FlagAck { id, server: req.server.clone(), counted, score, state, version: self.published.version })
    }

    /// `POST /v1/servers/{server}/quarantine`.
    pub fn quarantine(&mut self, who: &Principal, server: &str, reason: &str, now: u64) -> Result<DecisionAck, ApiError> {
        let audit_id = self.write(now, false, |ctx| {
            if let Some(q) = ctx.state.servers.get(server).and_then(|s| s.quarantine.as_ref()) {
                return Err(ApiError::conflict(format!(
                    "server `{server}` is already quarantined (by `{}` at {} ms: {})",
                    q.by, q.since_ms, q.reason
                )));
            }
            check_capacity_with(ctx.state, ctx.settings, reserve(ctx.settings), [server])?;
            ctx.admit(server, "operator")?;
            let score = ctx.score(server).map(|s| s.score).unwrap_or(0.0);
            let id = ctx.tx.insert_audit(now, &who.name, AuditAction::Quarantine, server, reason, score)?;
            let srv = ctx.server(server);
            srv.quarantine =
                Some(QuarantineInfo { reason: reason.to_string(), by: who.name.clone(), since_ms: now, automatic: false });
            Ok(id)
        })?;
        self.metrics.decision(AuditAction::Quarantine.as_str(), 1);
        warn!(server, operator = who.name, "quarantined by an operator: {}", escape(reason));
        let (score, state) = self.current(server, now);
        Ok(DecisionAck { server: server.to_string(), state, score, audit_id, version: self.published.version })
    }

    /// `POST /v1/servers/{server}/admit`: an operator vouches that `server` is one of the
    /// mesh's servers; it is tracked and published from now on (what sidecars reported of it
    /// while it was provisional counts now), with an audit entry.
    pub fn admit(&mut self, who: &Principal, server: &str, reason: &str, now: u64) -> Result<DecisionAck, ApiError> {
        let audit_id = self.write(now, false, |ctx| {
            if let Some(s) = ctx.state.servers.get(server) {
                return Err(ApiError::conflict(format!("server `{server}` is tracked already (since {} ms)", s.first_seen_ms)));
            }
            check_capacity_with(ctx.state, ctx.settings, reserve(ctx.settings), [server])?;
            let named = ctx.state.provisional.get(server).map(|p| p.voices.keys().cloned().collect::<Vec<_>>().join(", "));
            ctx.admit(server, "operator")?;
            let score = ctx.score(server).map(|s| s.score).unwrap_or(0.0);
            let why = match named {
                Some(by) => format!("admitted (named by sidecars {by}): {}", reason.trim()),
                None => format!("admitted (no sidecar had named it): {}", reason.trim()),
            };
            Ok(ctx.tx.insert_audit(now, &who.name, AuditAction::Admit, server, &why, score)?)
        })?;
        self.metrics.decision(AuditAction::Admit.as_str(), 1);
        warn!(server, operator = who.name, "admitted by an operator: {}", escape(reason));
        let (score, state) = self.current(server, now);
        Ok(DecisionAck { server: server.to_string(), state, score, audit_id, version: self.published.version })
    }

    /// `GET /v1/provisional`: servers not tracked yet, the credentials that named them, and
    /// what their reports said meanwhile (newest first, at most `limit`).
    pub fn provisional(&mut self, limit: usize) -> Result<ProvisionalView, ApiError> {
        self.ensure_fresh()?;
        let mut servers: Vec<ProvisionalServer> = self
            .state
            .provisional
            .iter()
            .map(|(name, p)| ProvisionalServer {
                server: name.clone(),
                first_ms: p.first_ms,
                last_ms: p.last_ms(),
                named_by: p.voices.keys().cloned().collect(),
                held_calls: p.held.outcomes.total(),
                held_findings: p.held.events.len(),
            })
            .collect();
        servers.sort_by(|a, b| b.last_ms.cmp(&a.last_ms).then_with(|| a.server.cmp(&b.server)));
        let total = servers.len();
        servers.truncate(limit);
        Ok(ProvisionalView { quorum: self.settings.sidecar.quorum(), total, servers })
    }

    /// `POST /v1/servers/{server}/release`. Automatic quarantine by score stays disarmed until
    /// new adverse evidence (failures, slow calls, a counted security event or flag, a rating
    /// below the prior) arrives; a critical finding quarantines again at once.
    pub fn release(&mut self, who: &Principal, server: &str, reason: &str, now: u64) -> Result<DecisionAck, ApiError> {
        let audit_id = self.write(now, false, |ctx| {
            match ctx.state.servers.get(server) {
                None => return Err(ApiError::not_found(format!("unknown server `{server}`"))),
                Some(s) if s.quarantine.is_none() => {
                    return Err(ApiError::conflict(format!("server `{server}` is not quarantined")));
                }
                Some(_) => {}
            }
            let score = ctx.score(server).map(|s| s.score).unwrap_or(0.0);
            let id = ctx.tx.insert_audit(now, &who.name, AuditAction::Release, server, reason, score)?;
            let srv = ctx.server(server);
            srv.quarantine = None;
            srv.auto_armed = false;
            srv.released_ms = Some(now);
            ctx.policy.released(server, now);
            Ok(id)
        })?;
        self.metrics.decision(AuditAction::Release.as_str(), 1);
        warn!(server, operator = who.name, "released by an operator: {}", escape(reason));
        let (score, state) = self.current(server, now);
        Ok(DecisionAck { server: server.to_string(), state, score, audit_id, version: self.published.version })
    }

    /// `POST /v1/servers/{server}/approvals`: approves a tool definition (by fingerprint) for
    /// `server`, with an audit entry; the next scores document carries it to every sidecar, which
    /// then lets the held change through and pins it. The held change it clears is forgotten.
    /// Bounded: past [`MAX_APPROVALS_PER_SERVER`] or [`MAX_APPROVALS`] the oldest approval goes
    /// (a sidecar that pinned it keeps its pin; one that never saw the change pins on first use).
    pub fn approve(&mut self, who: &Principal, server: &str, req: &ApproveRequest, now: u64) -> Result<ApprovalAck, ApiError> {
        let (audit_id, tool) = self.write(now, false, |ctx| {
            if !ctx.state.servers.contains_key(server) {
                return Err(ApiError::not_found(format!("unknown server `{server}`")));
            }
            let key = (server.to_string(), req.fingerprint.clone());
            if let Some(a) = ctx.state.approvals.get(&key) {
                return Err(ApiError::conflict(format!(
                    "fingerprint {} is already approved for `{server}` (by `{}` at {} ms)",
                    req.fingerprint, a.approved_by, a.at_ms
                )));
            }
            let tool = req.tool.clone().or_else(|| ctx.state.held.get(&key).and_then(|h| h.tool.clone()));
            let score = ctx.score(server).map(|s| s.score).unwrap_or(0.0);
            let what = tool.as_deref().map(|t| format!(" of tool `{t}`")).unwrap_or_default();
            let reason = format!("approved definition {}{what}: {}", req.fingerprint, req.reason.trim());
            let id = ctx.tx.insert_audit(now, &who.name, AuditAction::ApproveTool, server, &reason, score)?;
            if let Some(old) = State::oldest_past(&ctx.state.approvals, server, MAX_APPROVALS_PER_SERVER, MAX_APPROVALS, |a| a.at_ms) {
                ctx.tx.delete_approval(&old.0, &old.1)?;
                ctx.state.approvals.remove(&old);
            }
            let record = ToolApprovalRecord {
                server: server.to_string(),
                fingerprint: req.fingerprint.clone(),
                tool: tool.clone(),
                approved_by: who.name.clone(),
                at_ms: now,
                reason: req.reason.trim().to_string(),
            };
            ctx.tx.insert_approval(&record)?;
            ctx.state.approvals.insert(key.clone(), record);
            // Approving again lifts an operator's revocation (not a scan's own verdict).
            if let Some(scan) = ctx.state.scans.get_mut(&req.fingerprint) {
                if scan.revoked() {
                    scan.rules.retain(|r| r != REVOKED_RULE);
                    if scan.rules.is_empty() {
                        ctx.tx.delete_scan(&req.fingerprint)?;
                        ctx.state.scans.remove(&req.fingerprint);
                    } else {
                        let scan = scan.clone();
                        ctx.tx.insert_scan(&scan)?;
                    }
                }
            }
            if ctx.state.held.remove(&key).is_some() {
                ctx.tx.delete_held(server, &req.fingerprint)?;
            }
            ctx.lists_changed = true;
            Ok((id, tool))
        })?;
        self.metrics.decision(AuditAction::ApproveTool.as_str(), 1);
        warn!(server, operator = who.name, fingerprint = req.fingerprint, "tool definition approved: {}", escape(&req.reason));
        Ok(ApprovalAck { server: server.to_string(), fingerprint: req.fingerprint.clone(), tool, audit_id, version: self.published.version })
    }

    /// `POST /v1/servers/{server}/revoke`: withdraws an approval of `fingerprint` for `server`
    /// (if any) and condemns the definition: it becomes a verdict (at least `high`, rule
    /// [`REVOKED_RULE`]) that every sidecar enforces by stripping it, wherever it is listed,
    /// until an operator approves it again. Never forgotten to make room for scans.
    pub fn revoke(&mut self, who: &Principal, server: &str, req: &RevokeRequest, now: u64) -> Result<RevokeAck, ApiError> {
        let (audit_id, approval_withdrawn) = self.write(now, false, |ctx| {
            if !ctx.state.servers.contains_key(server) {
                return Err(ApiError::not_found(format!("unknown server `{server}`")));
            }
            let key = (server.to_string(), req.fingerprint.clone());
            let scan = ctx.state.scans.get(&req.fingerprint);
            // Approving lifts a revocation: a revoked definition has no approval to withdraw.
            if scan.is_some_and(DefinitionScan::revoked) {
                return Err(ApiError::conflict(format!("fingerprint {} is already revoked", req.fingerprint)));
            }
            let revoked = ctx.state.scans.values().filter(|d| d.revoked()).count();
            if revoked >= MAX_REVOKED {
                return Err(ApiError::conflict(format!(
                    "{revoked} definitions are revoked already (at most {MAX_REVOKED}): approve some first"
                )));
            }
            let approval = ctx.state.approvals.remove(&key);
            if approval.is_some() {
                ctx.tx.delete_approval(server, &req.fingerprint)?;
            }
            let tool = approval.as_ref().and_then(|a| a.tool.clone()).or_else(|| scan.and_then(|d| d.tool.clone()));
            let mut record = scan.cloned().unwrap_or(DefinitionScan {
                fingerprint: req.fingerprint.clone(),
                server: server.to_string(),
                tool: tool.clone(),
                severity: None,
                rules: Vec::new(),
                scanned_ms: now,
            });
            record.severity = Some(record.severity.map_or(Severity::High, |s| s.max(Severity::High)));
            record.rules.push(REVOKED_RULE.to_string());
            ctx.tx.insert_scan(&record)?;
            ctx.state.scans.insert(req.fingerprint.clone(), record);
            let score = ctx.score(server).map(|s| s.score).unwrap_or(0.0);
            let what = tool.as_deref().map(|t| format!(" of tool `{t}`")).unwrap_or_default();
            let reason = format!("revoked definition {}{what}: {}", req.fingerprint, req.reason.trim());
            let id = ctx.tx.insert_audit(now, &who.name, AuditAction::RevokeTool, server, &reason, score)?;
            ctx.lists_changed = true;
            Ok((id, approval.is_some()))
        })?;
        self.metrics.decision(AuditAction::RevokeTool.as_str(), 1);
        warn!(server, operator = who.name, fingerprint = req.fingerprint, "tool definition revoked: {}", escape(&req.reason));
        Ok(RevokeAck {
            server: server.to_string(),
            fingerprint: req.fingerprint.clone(),
            approval_withdrawn,
            audit_id,
            version: self.published.version,
        })
    }

    /// `POST /v1/definitions`: scans each definition whose fingerprint was never scanned (once
    /// for the whole mesh) with the core's inspector, keeps every scan, and publishes those the
    /// policy acts on (strip or above) as verdicts by fingerprint in the scores document.
    pub fn definitions(&mut self, batch: &DefinitionBatch, now: u64) -> Result<DefinitionsAck, ApiError> {
        self.ensure_fresh()?;
        // Fingerprints first; each distinct one once (the first submission names the server).
        let mut wanted: Vec<(String, usize)> = Vec::with_capacity(batch.definitions.len());
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (i, d) in batch.definitions.iter().enumerate() {
            // A sidecar that redacted a definition sends the fingerprint of what it listed, which
            // cannot be recomputed from what arrived; anything else is fingerprinted here.
            let redacted = d.fingerprint.is_some() && d.definition.to_string().contains("[redacted]");
            let fp = match &d.fingerprint {
                Some(f) if redacted => f.clone(),
                _ => Fingerprint::of(&d.definition).to_string(),
            };
            if seen.insert(fp.clone()) {
                wanted.push((fp, i));
            }
        }
        let mut fresh: Vec<DefinitionScan> = Vec::new();
        let mut known = 0usize;
        for (fp, i) in &wanted {
            if self.state.scans.contains_key(fp) {
                known += 1;
                continue;
            }
            let Some(d) = batch.definitions.get(*i) else { continue };
            // The other tools the same server submitted in this batch: shadowing evidence.
            let others: Vec<&str> = batch
                .definitions
                .iter()
                .filter(|o| o.server == d.server)
                .filter_map(|o| o.definition.get("name").and_then(serde_json::Value::as_str))
                .collect();
            fresh.push(scan_definition(&self.inspector, fp, &d.server, &d.definition, &others, now));
        }
        let scanned = fresh.len();
        let acting = fresh.iter().any(|d| d.severity.is_some());
        if !fresh.is_empty() {
            self.write(now, false, |ctx| {
                let excess = (ctx.state.scans.len() + fresh.len()).saturating_sub(MAX_SCANS);
                if excess > 0 {
                    // An operator's revocation is not a scan to make room from: a flood of new
                    // definitions must not lift it.
                    let mut by_age: Vec<(u64, String)> = ctx
                        .state
                        .scans
                        .values()
                        .filter(|d| !d.revoked())
                        .map(|d| (d.scanned_ms, d.fingerprint.clone()))
                        .collect();
                    by_age.sort_unstable();
                    for (_, fp) in by_age.into_iter().take(excess) {
                        ctx.tx.delete_scan(&fp)?;
                        ctx.state.scans.remove(&fp);
                    }
                }
                for d in &fresh {
                    ctx.tx.insert_scan(d)?;
                    ctx.state.scans.insert(d.fingerprint.clone(), d.clone());
                }
                ctx.lists_changed |= acting;
                Ok(())
            })?;
        }
        self.metrics.definitions_scanned(scanned as u64);
        let verdicts = wanted.iter().filter_map(|(fp, _)| self.state.scans.get(fp).filter(|d| d.severity.is_some()).cloned()).collect();
        Ok(DefinitionsAck { received: batch.definitions.len(), scanned, known, verdicts, version: self.published.version })
    }

    /// `GET /v1/approvals`: held changes and approvals, of `server` or all, newest first.
    pub fn approvals(&mut self, server: Option<&str>) -> Result<ApprovalsView, ApiError> {
        self.ensure_fresh()?;
        let of = |s: &str| server.is_none_or(|want| want == s);
        let mut held: Vec<HeldChange> = self.state.held.values().filter(|h| of(&h.server)).cloned().collect();
        held.sort_by(|a, b| b.last_ms.cmp(&a.last_ms).then_with(|| a.server.cmp(&b.server)).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
        let approvals = self.state.approvals_newest_first().into_iter().filter(|a| of(&a.server)).cloned().collect();
        Ok(ApprovalsView { held, approvals, version: self.published.version })
    }

    /// The periodic re-evaluation (scores decay with time), and pruning once an hour.
    pub fn tick(&mut self, now: u64) -> Result<(), ApiError> {
        if now.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
            let mut tx = self.db.transaction()?;
            let (h, b) = tx.prune(
                now.saturating_sub(self.settings.history_retention_ms),
                now.saturating_sub(self.settings.batch_retention_ms),
                now.saturating_sub(self.settings.sidecar.budget_window_ms),
                now.saturating_sub(self.settings.security_dedup_window_ms),
            )?;
            tx.commit()?;
            self.last_prune_ms = now;
            if h + b > 0 {
                info!(history_samples = h, batch_ids = b, "pruned past retention");
            }
        }
        if self.standing_stale {
            self.state.recompute_standing(&self.pretrusted, &self.settings.trust);
            self.standing_stale = false;
        }
        let retention = self.settings.server_retention_ms;
        let forgotten = self.write(now, true, |ctx| {
            ctx.expire_provisional();
            ctx.forget_stale(retention)?;
            Ok(ctx.forgotten.len())
        })?;
        self.metrics.decision(AuditAction::Forget.as_str(), forgotten as u64);
        Ok(())
    }

    /// `GET /v1/servers/{server}`.
    pub fn detail(&mut self, name: &str, now: u64) -> Result<ServerDetail, ApiError> {
        self.ensure_fresh()?;
        let p = &self.settings.trust;
        let Some(srv) = self.state.servers.get(name) else {
            return Err(ApiError::not_found(match self.state.provisional.get(name) {
                Some(p) => format!(
                    "server `{name}` is not tracked yet: provisional, named by sidecars {} of the {} needed \
                     (server_admission_quorum); an operator may admit it (`mcp-warden-ctl admit {name}`)",
                    p.voices.keys().cloned().collect::<Vec<_>>().join(", "),
                    self.settings.sidecar.quorum()
                ),
                None => format!("unknown server `{name}`"),
            }));
        };
        let rs = ratings_of(&self.state.ratings, name);
        let ts = score_of(srv, &rs, &self.state.standing, now, p);
        let state = model::state(ts.score, srv.quarantine.is_some(), p);
        let mut raters = self.db.server_ratings(name)?;
        for r in &mut raters {
            r.standing = self.state.standing.get(&r.rater).copied().unwrap_or(0.0);
        }
        let count = raters.len();
        let mean = (count > 0).then(|| raters.iter().map(|r| r.value).sum::<f64>() / count as f64);
        let unknown_raters = raters.iter().filter(|r| r.standing <= p.unknown_rater_standing).count();
        raters.sort_by(|a, b| b.standing.total_cmp(&a.standing).then(b.at_ms.cmp(&a.at_ms)));
        raters.truncate(DETAIL_RATERS);
        let t = &srv.totals;
        Ok(ServerDetail {
            server: name.to_string(),
            score: ts.score,
            state,
            quarantine: srv.quarantine.clone(),
            auto_quarantine_armed: srv.auto_armed,
            released_ms: srv.released_ms,
            first_seen_ms: srv.first_seen_ms,
            traffic: Traffic {
                success: t.success,
                failures: t.failures,
                slow: t.slow,
                latency_mean_ms: (t.latency_count > 0).then(|| t.latency_sum_ms as f64 / t.latency_count as f64),
                last_report_ms: t.last_report_ms,
            },
            history: self.db.history(name, now.saturating_sub(self.settings.history_retention_ms))?,
            security_events: self.db.security_events(name, DETAIL_EVENTS)?,
            flags: self.db.flags(name, DETAIL_EVENTS)?,
            ratings: RatingSummary {
                count,
                mean,
                reputation: ts.breakdown.reputation,
                rating_weight: ts.breakdown.rating_weight,
                unknown_raters,
                raters,
            },
            breakdown: ts.breakdown,
            version: self.published.version,
            generated_at_ms: now,
        })
    }

    /// `GET /v1/audit`.
    pub fn audit(&mut self, server: Option<&str>, before_id: Option<i64>, limit: u32) -> Result<AuditPage, ApiError> {
        let entries = self.db.audit(server, before_id, limit)?;
        let next_before_id = if entries.len() == limit as usize { entries.last().map(|e| e.id) } else { None };
        Ok(AuditPage { entries, next_before_id })
    }

    /// The health as of now, from memory (the database is read only to reload after a failed
    /// write): `Err` while it cannot be read back, `degraded` while writes fail.
    pub fn health_view(&mut self) -> Result<Health, String> {
        self.ensure_fresh().map_err(|e| e.message)?;
        let (status, reason) = match &self.write_failure {
            None => ("ok", None),
            Some((since, e)) => ("degraded", Some(format!("database writes failing since {since} ms: {e}"))),
        };
        Ok(Health { status: status.into(), version: self.published.version, servers: self.state.servers.len(), reason })
    }

    /// `GET /healthz`: fails while the database cannot be read back after a failed write;
    /// `degraded` while writes fail (reads are still served).
    /// On PostgreSQL it also fails while the database cannot be reached, so load balancers
    /// (Envoy's health checks) send sidecars to a replica that can write.
    pub fn health(&mut self) -> Result<Health, ApiError> {
        self.ensure_fresh()?;
        self.db.ping()?;
        let (status, reason) = match &self.write_failure {
            None => ("ok", None),
            Some((since, e)) => ("degraded", Some(format!("database writes failing since {since} ms: {e}"))),
        };
        Ok(Health { status: status.into(), version: self.published.version, servers: self.state.servers.len(), reason })
    }
}
