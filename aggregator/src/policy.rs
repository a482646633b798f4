//! What one sidecar's word may do (docs/DECISIONS.md, "What one sidecar alone may do"): a
//! sidecar reports what it saw, and one credential alone must not change the whole mesh. The
//! ingestion policy the engine asks before a sidecar's finding counts or quarantines:
//!
//! - findings are de-duplicated on (server, tool, finding kind, severity), the kind read from the
//!   rule's family (`poison/…`, `unicode/…`, `pin/…`, `shadow/…`, `protocol/…`; anything else is
//!   `other`), so renaming a rule does not make the same finding new;
//! - one credential's uncorroborated findings raise the penalty of at most `server_budget`
//!   servers per `budget_window_ms` (a second sidecar credential reporting the same server
//!   corroborates, and then the budget does not apply);
//! - a critical finding quarantines at once only if its kind is one a sidecar verifies in the
//!   traffic it proxies, or another sidecar corroborates it; an `other` finding counts at most as
//!   `high` until corroborated; `quarantine: true` is honoured only from `quarantine_min_severity`;
//! - after an operator's release, findings of the kinds that caused the quarantine do not
//!   quarantine again for `release_cooldown_ms`;
//! - one credential introduces at most `new_servers_per_window` servers per `budget_window_ms`.
//!
//! What safety rests on is stored with the state ([`Memory`], written in the same transaction
//! as the write that changed it, through the [`Change`]s the engine drains): the kinds behind a
//! quarantine and a release, each credential's spent budgets, and the findings that counted
//! (de-duplication). So a restart, or another replica on PostgreSQL, neither lifts a cool-down,
//! nor counts a repeated finding again, nor hands a credential a fresh budget. Corroboration
//! stays in memory (bounded): after a restart it starts afresh, which only withholds.
//! Time is passed in.

use mcp_warden_core::trust::wire::Severity;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// The policy's knobs (part of the aggregator's settings).
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarPolicy {
    /// `quarantine: true` in a sidecar's event is honoured from this severity on.
    pub quarantine_min_severity: Severity,
    /// Servers one sidecar credential's uncorroborated findings may penalise per window.
    pub server_budget: usize,
    /// New servers one sidecar credential may introduce per window.
    pub new_servers_per_window: usize,
    pub budget_window_ms: u64,
    /// After an operator's release, the same kinds of finding do not quarantine again for this.
    pub release_cooldown_ms: u64,
    /// Distinct sidecar credentials that must name a server before it is tracked
    /// ([`crate::admission`]); `None`: `min(2, sidecar credentials in the tokens file)`, set at start.
    pub admission_quorum: Option<usize>,
    /// Provisional servers one sidecar credential may name at once.
    pub provisional_per_sidecar: usize,
    /// A credential's naming of a provisional server is forgotten after this long.
    pub provisional_retention_ms: u64,
}

impl SidecarPolicy {
    /// The admission quorum in force (1 when it was never resolved against the tokens).
    pub fn quorum(&self) -> usize {
        crate::admission::quorum(self.admission_quorum, 1)
    }
}

impl Default for SidecarPolicy {
    fn default() -> Self {
        SidecarPolicy {
            quarantine_min_severity: Severity::High,
            server_budget: 5,
            new_servers_per_window: 200,
            budget_window_ms: 3_600_000,
            release_cooldown_ms: 3_600_000,
            admission_quorum: None,
            provisional_per_sidecar: 1_000,
            provisional_retention_ms: 24 * 3_600_000,
        }
    }
}

/// Rule families a sidecar checks itself in the traffic it proxies (tool definitions, results).
const VERIFIED_KINDS: [&str; 5] = ["poison", "unicode", "pin", "shadow", "protocol"];
/// Distinct sidecar credentials that make a finding on a server corroborated.
const CORROBORATING: usize = 2;
/// Bounds of the memory kept per server.
const KEYS_PER_SERVER: usize = 64;
const REPORTERS_PER_SERVER: usize = 8;

/// The finding kind of a rule: its family when it is one a sidecar verifies, else `other`.
pub fn kind(rule: &str) -> &'static str {
    if rule == "tool-changed" {
        return "pin";
    }
    let family = rule.split('/').next().unwrap_or("");
    VERIFIED_KINDS.iter().find(|k| **k == family).copied().unwrap_or("other")
}

/// What the policy makes of one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// It adds to the server's penalty.
    pub counts: bool,
    /// The severity it counts at (an uncorroborated `other` finding at most `high`).
    pub severity: Severity,
    /// It may quarantine the server by itself (critical, or its policy asked at a severity the
    /// aggregator honours; of a verified kind or corroborated; not in a release's cool-down).
    pub quarantines: bool,
    /// It was refused because its credential spent its budget (recorded, not counted).
    pub over_budget: bool,
}

type Key = (Option<String>, &'static str, Severity);

/// What a credential's budget was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// An uncorroborated finding raised this server's penalty.
    Penalty,
    /// It introduced this server.
    NewServer,
}

impl Spent {
    pub fn as_str(self) -> &'static str {
        match self {
            Spent::Penalty => "penalty",
            Spent::NewServer => "new_server",
        }
    }
    pub fn parse(s: &str) -> Option<Spent> {
        match s {
            "penalty" => Some(Spent::Penalty),
            "new_server" => Some(Spent::NewServer),
            _ => None,
        }
    }
}

/// One spending of a credential's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetEntry {
    pub credential: String,
    pub on: Spent,
    pub server: String,
    pub at_ms: u64,
}

/// Which kinds of finding a row of [`Memory`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The kinds behind the server's current quarantine.
    Quarantined,
    /// The kinds its last release by an operator covers (none: every kind).
    Released,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Quarantined => "quarantined",
            Phase::Released => "released",
        }
    }
    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "quarantined" => Some(Phase::Quarantined),
            "released" => Some(Phase::Released),
            _ => None,
        }
    }
}

/// The kinds of one server in one phase, since `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindsEntry {
    pub server: String,
    pub phase: Phase,
    pub kinds: Vec<String>,
    pub at_ms: u64,
}

/// A finding that counted on `server`: the same (tool, kind, severity) within the
/// de-duplication window is a repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEntry {
    pub server: String,
    pub tool: Option<String>,
    pub kind: String,
    pub severity: Severity,
    pub at_ms: u64,
}

/// The policy's durable memory, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub kinds: Vec<KindsEntry>,
    pub budget: Vec<BudgetEntry>,
    pub seen: Vec<SeenEntry>,
}

/// A change of the durable memory, for the write that caused it to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replaces the server's row of this phase.
    Kinds(KindsEntry),
    /// Removes the server's row of this phase.
    ClearKinds { server: String, phase: Phase },
    Budget(BudgetEntry),
    /// Replaces the entry of the same (server, tool, kind, severity).
    Seen(SeenEntry),
    /// Removes that entry (the server's memory is full: its oldest goes).
    Unseen(SeenEntry),
}

/// The policy's memory.
#[derive(Debug, Default)]
pub struct Policy {
    pub params: SidecarPolicy,
    /// server -> finding key -> when it last counted.
    seen: HashMap<String, BTreeMap<Key, u64>>,
    /// server -> sidecar credential -> when it last reported a finding there.
    reporters: HashMap<String, BTreeMap<String, u64>>,
    /// credential -> (when, server) its uncorroborated findings penalised, in the window.
    spent: HashMap<String, VecDeque<(u64, String)>>,
    /// credential -> when it introduced a new server, in the window.
    introduced: HashMap<String, VecDeque<u64>>,
    /// server -> kinds that quarantined it (until released).
    quarantined_for: HashMap<String, BTreeSet<&'static str>>,
    /// server -> (released at, kinds that had quarantined it).
    released: HashMap<String, (u64, BTreeSet<&'static str>)>,
    /// Changes of the durable memory not yet stored.
    journal: Vec<Change>,
}

fn trim(q: &mut VecDeque<(u64, String)>, since: u64) {
    while q.front().is_some_and(|(at, _)| *at < since) {
        q.pop_front();
    }
}

impl Policy {
    pub fn new(params: SidecarPolicy) -> Policy {
        Policy { params, ..Policy::default() }
    }

    /// Replaces the durable memory with what the database holds (at start, and whenever the
    /// engine reloads its state); the in-memory de-duplication and corroboration stay.
    pub fn restore(&mut self, m: Memory) {
        self.journal.clear();
        self.quarantined_for.clear();
        self.released.clear();
        self.spent.clear();
        self.introduced.clear();
        self.seen.clear();
        for e in m.seen {
            let key: Key = (e.tool, kind(&e.kind), e.severity);
            self.seen.entry(e.server).or_default().insert(key, e.at_ms);
        }
        for e in m.kinds {
            let kinds: BTreeSet<&'static str> = e.kinds.iter().map(|k| kind(k)).collect();
            match e.phase {
                Phase::Quarantined => {
                    self.quarantined_for.insert(e.server, kinds);
                }
                Phase::Released => {
                    self.released.insert(e.server, (e.at_ms, kinds));
                }
            }
        }
        let mut budget = m.budget;
        budget.sort_by_key(|b| b.at_ms);
        for b in budget {
            match b.on {
                Spent::Penalty => self.spent.entry(b.credential).or_default().push_back((b.at_ms, b.server)),
                Spent::NewServer => self.introduced.entry(b.credential).or_default().push_back(b.at_ms),
            }
        }
    }

    /// The changes of the durable memory since the last call, for the current write to store.
    pub fn drain(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.journal)
    }

    /// Are changes waiting to be stored? (A write that fails then must reload the memory.)
    pub fn has_pending(&self) -> bool {
        !self.journal.is_empty()
    }

    fn since(&self, now: u64) -> u64 {
        now.saturating_sub(self.params.budget_window_ms)
    }

    /// May `who` introduce `server` now? Counts it if so.
    pub fn admit_new_server(&mut self, who: &str, server: &str, now: u64) -> bool {
        let since = self.since(now);
        let cap = self.params.new_servers_per_window;
        let q = self.introduced.entry(who.to_string()).or_default();
        while q.front().is_some_and(|at| *at < since) {
            q.pop_front();
        }
        if q.len() >= cap {
            return false;
        }
        q.push_back(now);
        self.journal.push(Change::Budget(BudgetEntry {
            credential: who.to_string(),
            on: Spent::NewServer,
            server: server.to_string(),
            at_ms: now,
        }));
        true
    }

    fn corroborated(&self, server: &str, since: u64) -> bool {
        self.reporters.get(server).is_some_and(|r| r.values().filter(|at| **at >= since).count() >= CORROBORATING)
    }

    /// One finding of sidecar credential `who` on `server`. `dedup_since`: a finding with the
    /// same key counted after it is a repeat. `released_ms`: the server's last release (from the
    /// database, for a release this memory did not see).
    #[allow(clippy::too_many_arguments)]
    pub fn finding(
        &mut self,
        who: &str,
        server: &str,
        tool: Option<&str>,
        rule: &str,
        severity: Severity,
        asks_quarantine: bool,
        now: u64,
        dedup_since: Option<u64>,
        released_ms: Option<u64>,
    ) -> Verdict {
        let since = self.since(now);
        let kind = kind(rule);
        let reporters = self.reporters.entry(server.to_string()).or_default();
        reporters.insert(who.to_string(), now);
        if reporters.len() > REPORTERS_PER_SERVER {
            if let Some(oldest) = reporters.iter().min_by_key(|(_, at)| **at).map(|(w, _)| w.clone()) {
                reporters.remove(&oldest);
            }
        }
        let corroborated = self.corroborated(server, since);
        let severity = if kind == "other" && !corroborated { severity.min(Severity::High) } else { severity };
        let key: Key = (tool.map(str::to_string), kind, severity);
        let repeat = match (dedup_since, self.seen.get(server).and_then(|m| m.get(&key))) {
            (Some(d), Some(at)) => *at >= d,
            _ => false,
        };
        if repeat {
            return Verdict { counts: false, severity, quarantines: false, over_budget: false };
        }
        if !corroborated {
            let budget = self.params.server_budget;
            let spent = self.spent.entry(who.to_string()).or_default();
            trim(spent, since);
            if !spent.iter().any(|(_, s)| s == server) {
                if spent.len() >= budget {
                    return Verdict { counts: false, severity, quarantines: false, over_budget: true };
                }
                spent.push_back((now, server.to_string()));
                self.journal.push(Change::Budget(BudgetEntry {
                    credential: who.to_string(),
                    on: Spent::Penalty,
                    server: server.to_string(),
                    at_ms: now,
                }));
            }
        }
        let seen = self.seen.entry(server.to_string()).or_default();
        seen.insert(key.clone(), now);
        let entry = |(tool, kind, severity): Key, at_ms: u64| SeenEntry {
            server: server.to_string(),
            tool,
            kind: kind.to_string(),
            severity,
            at_ms,
        };
        self.journal.push(Change::Seen(entry(key, now)));
        if seen.len() > KEYS_PER_SERVER {
            if let Some((oldest, at)) = seen.iter().min_by_key(|(_, at)| **at).map(|(k, at)| (k.clone(), *at)) {
                seen.remove(&oldest);
                self.journal.push(Change::Unseen(entry(oldest, at)));
            }
        }
        let asked = severity == Severity::Critical || (asks_quarantine && severity >= self.params.quarantine_min_severity);
        let trusted_kind = kind != "other" || corroborated;
        let cooling = self.cooling(server, kind, now, released_ms);
        Verdict { counts: true, severity, quarantines: asked && trusted_kind && !cooling, over_budget: false }
    }

    /// Within a release's cool-down for this kind of finding?
    fn cooling(&self, server: &str, kind: &'static str, now: u64, released_ms: Option<u64>) -> bool {
        let within = |at: u64| now.saturating_sub(at) < self.params.release_cooldown_ms;
        match self.released.get(server) {
            Some((at, kinds)) => within(*at) && (kinds.is_empty() || kinds.contains(kind)),
            // Released before this memory began: what quarantined it is unknown, so every kind
            // waits out the cool-down.
            None => released_ms.is_some_and(within),
        }
    }

    /// A finding of `kind` quarantined `server` at `now`.
    pub fn quarantined(&mut self, server: &str, kind: &'static str, now: u64) {
        let kinds = self.quarantined_for.entry(server.to_string()).or_default();
        kinds.insert(kind);
        let kinds = kinds.iter().map(|k| k.to_string()).collect();
        self.journal.push(Change::Kinds(KindsEntry { server: server.to_string(), phase: Phase::Quarantined, kinds, at_ms: now }));
    }

    /// An operator released `server` at `now`.
    pub fn released(&mut self, server: &str, now: u64) {
        let kinds = self.quarantined_for.remove(server).unwrap_or_default();
        let stored = kinds.iter().map(|k| k.to_string()).collect();
        self.released.insert(server.to_string(), (now, kinds));
        self.journal.push(Change::ClearKinds { server: server.to_string(), phase: Phase::Quarantined });
        self.journal.push(Change::Kinds(KindsEntry { server: server.to_string(), phase: Phase::Released, kinds: stored, at_ms: now }));
    }

    /// Forgets what is known of `server` (it was forgotten by the aggregator, which removes its
    /// stored rows itself).
    pub fn forget(&mut self, server: &str) {
        self.seen.remove(server);
        self.reporters.remove(server);
        self.quarantined_for.remove(server);
        self.released.remove(server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    fn crit(p: &mut Policy, who: &str, server: &str, rule: &str, now: u64) -> Verdict {
        p.finding(who, server, Some("t"), rule, Severity::Critical, false, now, Some(0), None)
    }

    #[test]
    fn kinds_come_from_the_rule_family() {
        assert_eq!(kind("poison/ignore-instructions"), "poison");
        assert_eq!(kind("unicode/tag-characters"), "unicode");
        assert_eq!(kind("tool-changed"), "pin");
        assert_eq!(kind("totally-new-rule-7"), "other");
        assert_eq!(kind("poisonous/x"), "other");
    }

    #[test]
    fn one_credential_penalises_a_bounded_number_of_servers_unless_corroborated() {
        let mut p = Policy::new(SidecarPolicy { server_budget: 3, ..SidecarPolicy::default() });
        let verdicts: Vec<Verdict> = (0..100).map(|i| crit(&mut p, "s1", &format!("srv{i}"), "unicode/tag-characters", 1)).collect();
        assert_eq!(verdicts.iter().filter(|v| v.counts).count(), 3);
        assert_eq!(verdicts.iter().filter(|v| v.quarantines).count(), 3);
        assert!(verdicts[3].over_budget);
        // A second sidecar seeing srv50 corroborates: it counts (for both).
        assert!(crit(&mut p, "s2", "srv50", "unicode/tag-characters", 2).quarantines);
        // The window passes: the budget is back.
        assert!(crit(&mut p, "s1", "srv77", "unicode/tag-characters", 2 * H).counts);
    }

    #[test]
    fn renaming_the_rule_does_not_make_a_finding_new() {
        let mut p = Policy::new(SidecarPolicy::default());
        assert!(crit(&mut p, "s1", "w", "poison/a", 1).counts);
        assert!(!crit(&mut p, "s1", "w", "poison/b", 2).counts);
        assert!(!crit(&mut p, "s1", "w", "poison/renamed-again", 3).counts);
        assert!(crit(&mut p, "s1", "w", "unicode/bidi-control", 4).counts, "another kind is new evidence");
    }

    #[test]
    fn an_invented_kind_neither_quarantines_nor_counts_as_critical_alone() {
        let mut p = Policy::new(SidecarPolicy::default());
        let v = crit(&mut p, "s1", "w", "my-very-own-rule", 1);
        assert!(v.counts && !v.quarantines);
        assert_eq!(v.severity, Severity::High);
        let v = crit(&mut p, "s2", "w", "another-invention", 2);
        assert!(v.quarantines, "corroborated by a second sidecar");
        assert_eq!(v.severity, Severity::Critical);
    }

    #[test]
    fn quarantine_true_is_honoured_only_from_the_policy_severity() {
        let mut p = Policy::new(SidecarPolicy::default());
        let low = p.finding("s1", "w", Some("t"), "poison/long-description", Severity::Low, true, 1, Some(0), None);
        assert!(low.counts && !low.quarantines);
        let high = p.finding("s1", "w", Some("t"), "poison/hidden-block", Severity::High, true, 1, Some(0), None);
        assert!(high.quarantines);
    }

    #[test]
    fn a_release_sticks_for_the_cool_down_unless_a_new_kind_arrives() {
        let mut p = Policy::new(SidecarPolicy::default());
        assert!(crit(&mut p, "s1", "w", "unicode/tag-characters", 1).quarantines);
        p.quarantined("w", "unicode", 5);
        p.released("w", 10);
        // Same kind, even renamed or on another tool, within the cool-down: no quarantine.
        let v = p.finding("s1", "w", Some("other-tool"), "unicode/x", Severity::Critical, false, 20, Some(0), None);
        assert!(!v.quarantines);
        // A different kind is new evidence.
        assert!(crit(&mut p, "s1", "w", "poison/secret-file", 30).quarantines);
        // After the cool-down, the same kind quarantines again.
        let v = p.finding("s1", "w", Some("third-tool"), "unicode/y", Severity::Critical, false, 10 + H, Some(0), None);
        assert!(v.quarantines);
        // A release this memory never saw (a restart): every kind waits out the cool-down.
        let mut fresh = Policy::new(SidecarPolicy::default());
        let v = fresh.finding("s1", "v", Some("t"), "poison/a", Severity::Critical, false, 20, Some(0), Some(10));
        assert!(v.counts && !v.quarantines);
    }

    #[test]
    fn new_servers_per_credential_are_bounded() {
        let mut p = Policy::new(SidecarPolicy { new_servers_per_window: 10, ..SidecarPolicy::default() });
        assert_eq!((0..100).filter(|i| p.admit_new_server("s1", &format!("n{i}"), 1)).count(), 10);
        assert!(p.admit_new_server("s2", "x", 1));
        assert!(p.admit_new_server("s1", "y", 2 + H));
    }

    /// Replays what a policy stored into a fresh one (a restart).
    fn restarted(p: &mut Policy, stored: &mut Memory) -> Policy {
        for c in p.drain() {
            match c {
                Change::Kinds(k) => {
                    stored.kinds.retain(|e| !(e.server == k.server && e.phase == k.phase));
                    stored.kinds.push(k);
                }
                Change::ClearKinds { server, phase } => stored.kinds.retain(|e| !(e.server == server && e.phase == phase)),
                Change::Budget(b) => stored.budget.push(b),
                Change::Seen(e) => {
                    stored.seen.retain(|x| !(x.server == e.server && x.tool == e.tool && x.kind == e.kind && x.severity == e.severity));
                    stored.seen.push(e);
                }
                Change::Unseen(e) => {
                    stored.seen.retain(|x| !(x.server == e.server && x.tool == e.tool && x.kind == e.kind && x.severity == e.severity))
                }
            }
        }
        let mut fresh = Policy::new(p.params.clone());
        fresh.restore(stored.clone());
        fresh
    }

    #[test]
    fn cool_downs_and_budgets_survive_a_restart() {
        let mut p = Policy::new(SidecarPolicy { server_budget: 2, new_servers_per_window: 3, ..SidecarPolicy::default() });
        let mut stored = Memory::default();
        assert!(crit(&mut p, "s1", "w", "unicode/tag-characters", 1).quarantines);
        p.quarantined("w", "unicode", 1);
        let mut p = restarted(&mut p, &mut stored);
        p.released("w", 10);
        assert!(crit(&mut p, "s1", "v", "poison/a", 11).counts);
        assert_eq!((0..5).filter(|i| p.admit_new_server("s1", &format!("n{i}"), 12)).count(), 3);
        let mut p = restarted(&mut p, &mut stored);
        // The release still holds the same kind off, and only that kind.
        let v = p.finding("s1", "w", Some("t2"), "unicode/x", Severity::Critical, false, 20, Some(0), Some(10));
        assert!(!v.quarantines, "{v:?}");
        // The budget is spent (w and v): a third server is withheld, and no new server admitted.
        assert!(crit(&mut p, "s1", "u", "poison/a", 21).over_budget);
        assert!(!p.admit_new_server("s1", "n9", 22));
        // A different kind on w is new evidence (w is within budget already).
        assert!(crit(&mut p, "s1", "w", "poison/secret-file", 23).quarantines);
        // A repeat of a finding that counted before the restart is still a repeat.
        let mut p = restarted(&mut p, &mut stored);
        assert!(!crit(&mut p, "s1", "w", "poison/renamed", 24).counts);
        assert!(!crit(&mut p, "s1", "w", "unicode/tag-characters", 25).counts);
    }
}
