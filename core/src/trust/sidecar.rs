//! The sidecar's side of trust: what it accumulates between reports, the trust table it
//! enforces, and the lease that makes exactly one VM of a sidecar talk to the aggregator.
//!
//! Envoy runs one VM per worker thread plus two on the main thread, and `on_tick` fires in all
//! of them. Each VM counts its own outcomes in memory (no shared-data write per request) and
//! merges them into shared data on its tick; the VM holding the lease drains that, reports it,
//! polls scores and publishes them in shared data; every VM refreshes its own copy of the table
//! when the shared value's version changes.

use super::wire::{
    LatencySummary, Outcomes, ScoresDocument, SecurityEvent, ServerReport, SignalBatch, SubmittedDefinition, TrustState,
    is_server_name, MAX_CONFIGURED,
};
use crate::inspect::{Finding, Fingerprint, MeshVerdict, MeshVerdicts};
use crate::outcome::{FailureKind, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Outcome counts per cluster, mergeable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalAccumulator {
    pub clusters: BTreeMap<String, ServerReport>,
}

impl SignalAccumulator {
    /// Counts one call's verdict.
    pub fn record(&mut self, cluster: &str, outcome: Outcome, slow: bool, latency_ms: u64) {
        let r = match self.clusters.get_mut(cluster) {
            Some(r) => r,
            None => self
                .clusters
                .entry(cluster.to_string())
                .or_insert_with(|| ServerReport { server: cluster.to_string(), ..Default::default() }),
        };
        match outcome {
            Outcome::Success => r.outcomes.success += 1,
            Outcome::Failure(kind) => *r.outcomes.failures.entry(kind_name(kind).to_string()).or_insert(0) += 1,
            Outcome::Unknown => return,
        }
        r.outcomes.slow += u64::from(slow);
        r.latency.count += 1;
        r.latency.sum_ms += latency_ms;
        r.latency.max_ms = r.latency.max_ms.max(latency_ms);
    }

    /// Counts a call this sidecar did not send because the cluster's breaker was open: to the
    /// mesh that is evidence the server is unavailable, reported as the failure kind
    /// `circuit_open` (the breaker itself is not fed by it).
    pub fn record_refused(&mut self, cluster: &str) {
        let r = self
            .clusters
            .entry(cluster.to_string())
            .or_insert_with(|| ServerReport { server: cluster.to_string(), ..Default::default() });
        *r.outcomes.failures.entry("circuit_open".to_string()).or_insert(0) += 1;
    }

    /// Keeps a security event seen on `cluster` for the next report (at most
    /// [`MAX_SECURITY_EVENTS`] per cluster; the oldest go first).
    pub fn record_security(&mut self, cluster: &str, event: SecurityEvent) {
        let r = self
            .clusters
            .entry(cluster.to_string())
            .or_insert_with(|| ServerReport { server: cluster.to_string(), ..Default::default() });
        if r.security.len() >= MAX_SECURITY_EVENTS {
            r.security.remove(0);
        }
        r.security.push(event);
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Adds another accumulator's counts into this one.
    pub fn merge(&mut self, other: &SignalAccumulator) {
        for (name, o) in &other.clusters {
            let r = self
                .clusters
                .entry(name.clone())
                .or_insert_with(|| ServerReport { server: name.clone(), ..Default::default() });
            merge_outcomes(&mut r.outcomes, &o.outcomes);
            merge_latency(&mut r.latency, &o.latency);
            r.security.extend(o.security.iter().cloned());
            // Bound the evidence kept between reports.
            if r.security.len() > MAX_SECURITY_EVENTS {
                let excess = r.security.len() - MAX_SECURITY_EVENTS;
                r.security.drain(..excess);
            }
        }
    }

    /// The reports to send, one per cluster.
    pub fn reports(&self) -> Vec<ServerReport> {
        self.clusters.values().cloned().collect()
    }

    /// Takes out the period's batch for a configuration holding `clusters`: only their reports
    /// (a sidecar reports only servers its own configuration routes to; counts of a cluster
    /// another configuration of the same process, or an earlier one, recorded are left for it),
    /// and the configured names (at most [`MAX_CONFIGURED`]). `None` when none of them has
    /// anything to report.
    pub fn take_batch<'a>(
        &mut self,
        clusters: impl IntoIterator<Item = &'a str>,
        sidecar: &str,
        batch_id: String,
        period_ms: u64,
    ) -> Option<SignalBatch> {
        let configured: BTreeSet<&str> = clusters.into_iter().filter(|c| !c.is_empty()).collect();
        let servers: Vec<ServerReport> = configured.iter().filter_map(|c| self.clusters.remove(*c)).collect();
        if servers.is_empty() {
            return None;
        }
        // A hint: a name the aggregator would refuse is left out rather than have it refuse the batch.
        let configured = configured.into_iter().filter(|c| is_server_name(c)).take(MAX_CONFIGURED).map(str::to_string).collect();
        Some(SignalBatch { sidecar: sidecar.to_string(), batch_id, period_ms, servers, configured })
    }
}

/// Most security events held per cluster between two reports.
pub const MAX_SECURITY_EVENTS: usize = 64;

fn kind_name(kind: FailureKind) -> &'static str {
    kind.as_str()
}

fn merge_outcomes(a: &mut Outcomes, b: &Outcomes) {
    a.success += b.success;
    a.slow += b.slow;
    for (k, v) in &b.failures {
        *a.failures.entry(k.clone()).or_insert(0) += v;
    }
}

fn merge_latency(a: &mut LatencySummary, b: &LatencySummary) {
    a.count += b.count;
    a.sum_ms += b.sum_ms;
    a.max_ms = a.max_ms.max(b.max_ms);
}

/// Tool definitions this sidecar has not sent for the mesh-wide scan yet, deduplicated by
/// fingerprint. Bounded: at most [`MAX_OUTBOX`] definitions and [`MAX_OUTBOX_BYTES`] of them
/// waiting (past that, new ones wait for a later list), none over [`MAX_DEFINITION_BYTES`]; the
/// fingerprints sent are remembered up to [`MAX_SENT`] (then forgotten all at once: a definition
/// may go twice, which the aggregator answers as known).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefinitionOutbox {
    #[serde(default)]
    sent: BTreeSet<Fingerprint>,
    #[serde(default)]
    pending: Vec<SubmittedDefinition>,
    #[serde(default)]
    pending_bytes: usize,
}

pub const MAX_OUTBOX: usize = 256;
pub const MAX_OUTBOX_BYTES: usize = 512 << 10;
pub const MAX_DEFINITION_BYTES: usize = 32 << 10;
pub const MAX_SENT: usize = 16_384;

impl DefinitionOutbox {
    /// Whether any of these fingerprints has not been queued yet (cheap: no parse).
    pub fn wants(&self, fps: impl IntoIterator<Item = Fingerprint>) -> bool {
        self.pending.len() < MAX_OUTBOX && fps.into_iter().any(|f| !self.sent.contains(&f))
    }

    /// Queues the tools of a `tools/list` message (served by `cluster`) whose fingerprints were
    /// never queued, redacted. A message that is not a tools list adds nothing.
    pub fn offer(&mut self, cluster: &str, message: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(message) else { return };
        let Some(tools) = msg.pointer("/result/tools").and_then(serde_json::Value::as_array) else { return };
        for tool in tools {
            if self.pending.len() >= MAX_OUTBOX || self.pending_bytes >= MAX_OUTBOX_BYTES {
                return;
            }
            if tool.get("name").and_then(serde_json::Value::as_str).is_none() {
                continue;
            }
            let fp = Fingerprint::of(tool);
            if self.sent.contains(&fp) {
                continue;
            }
            let (definition, redacted) = crate::inspect::verdict::redact_definition(tool);
            let size = serde_json::to_vec(&definition).map_or(usize::MAX, |b| b.len());
            if self.sent.len() >= MAX_SENT {
                self.sent.clear();
            }
            self.sent.insert(fp);
            if size > MAX_DEFINITION_BYTES {
                continue;
            }
            self.pending_bytes += size;
            self.pending.push(SubmittedDefinition {
                server: cluster.to_string(),
                definition,
                fingerprint: redacted.then(|| fp.to_string()),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The definitions waiting, taken (the fingerprints stay remembered).
    pub fn take(&mut self) -> Vec<SubmittedDefinition> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Puts definitions back (a send failed, or another VM's queue merges in), within the bounds.
    pub fn requeue(&mut self, defs: Vec<SubmittedDefinition>) {
        for d in defs {
            let size = serde_json::to_vec(&d.definition).map_or(usize::MAX, |b| b.len());
            if self.pending.len() >= MAX_OUTBOX || self.pending_bytes.saturating_add(size) > MAX_OUTBOX_BYTES {
                return;
            }
            self.pending_bytes += size;
            self.pending.push(d);
        }
    }
}

/// What the sidecar knows of one server's trust.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrustEntry {
    pub score: f64,
    pub state: TrustState,
}

/// Most approved fingerprints a sidecar keeps per server, and in all.
pub const MAX_APPROVALS_PER_SERVER: usize = 256;
pub const MAX_APPROVALS: usize = 4096;
/// Most verdicts of the mesh-wide scan a sidecar keeps, and the longest rule list of one.
pub const MAX_VERDICTS: usize = 4096;
pub const MAX_VERDICT_RULES_CHARS: usize = 256;

/// The table every VM enforces, as published in shared data by the lease holder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrustTable {
    /// The aggregator's version (sent back as `If-None-Match`).
    pub version: u64,
    pub servers: BTreeMap<String, TrustEntry>,
    /// Held tool changes operators approved: server (cluster) → fingerprints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approved: BTreeMap<String, BTreeSet<Fingerprint>>,
    /// The mesh-wide scan's verdicts by definition fingerprint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verdicts: MeshVerdicts,
    /// A hash of `approved` and `verdicts`: what a cached list decision depends on (score
    /// changes, which move `version`, do not).
    #[serde(default)]
    pub lists: u64,
}

impl TrustTable {
    /// The table a scores document describes. Approvals are bounded (at most
    /// [`MAX_APPROVALS_PER_SERVER`] per server and [`MAX_APPROVALS`] in all, the document's first
    /// kept: the aggregator lists the newest first); one that is not a fingerprint is skipped.
    pub fn from_document(doc: &ScoresDocument) -> Self {
        let mut approved: BTreeMap<String, BTreeSet<Fingerprint>> = BTreeMap::new();
        let mut total = 0usize;
        for a in &doc.approvals {
            if total >= MAX_APPROVALS {
                break;
            }
            let Some(fp) = Fingerprint::from_hex(&a.fingerprint) else { continue };
            let set = approved.entry(a.server.clone()).or_default();
            if set.len() < MAX_APPROVALS_PER_SERVER && set.insert(fp) {
                total += 1;
            }
        }
        let mut verdicts = MeshVerdicts::new();
        for v in &doc.verdicts {
            if verdicts.len() >= MAX_VERDICTS {
                break;
            }
            let Some(fp) = Fingerprint::from_hex(&v.fingerprint) else { continue };
            let mut rules = v.rules.join(", ");
            if rules.len() > MAX_VERDICT_RULES_CHARS {
                let mut end = MAX_VERDICT_RULES_CHARS;
                while !rules.is_char_boundary(end) {
                    end -= 1;
                }
                rules.truncate(end);
            }
            verdicts.entry(fp).or_insert(MeshVerdict { severity: v.severity, rules });
        }
        // 0 with neither, as in the table a sidecar starts with: its first poll keeps its caches.
        let lists = if approved.is_empty() && verdicts.is_empty() {
            0
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            approved.hash(&mut h);
            for (fp, v) in &verdicts {
                (fp, v.severity, &v.rules).hash(&mut h);
            }
            h.finish()
        };
        TrustTable {
            lists,
            verdicts,
            version: doc.version,
            servers: doc
                .servers
                .iter()
                .map(|s| (s.server.clone(), TrustEntry { score: s.score, state: s.state }))
                .collect(),
            approved,
        }
    }

    pub fn get(&self, cluster: &str) -> Option<TrustEntry> {
        self.servers.get(cluster).copied()
    }

    /// The definitions operators approved on `cluster`.
    pub fn approved(&self, cluster: &str) -> impl Iterator<Item = Fingerprint> + '_ {
        self.approved.get(cluster).into_iter().flatten().copied()
    }
}

/// The lease on talking to the aggregator: owner id and expiry, 16 bytes in shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub owner: u64,
    pub expires_ms: u64,
}

impl Lease {
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.owner.to_le_bytes());
        b[8..].copy_from_slice(&self.expires_ms.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let owner = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let expires_ms = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Lease { owner, expires_ms })
    }

    /// The lease `me` should write to hold it until `now + ttl`, or `None` when another live
    /// owner holds it. The holder renews; anyone takes an expired or unreadable lease.
    pub fn claim(current: Option<&[u8]>, me: u64, now_ms: u64, ttl_ms: u64) -> Option<Lease> {
        match current.and_then(Lease::decode) {
            Some(l) if l.owner != me && l.expires_ms > now_ms => None,
            _ => Some(Lease { owner: me, expires_ms: now_ms + ttl_ms }),
        }
    }
}

/// A finding in the aggregator's form (the server goes in the enclosing `ServerReport`).
impl From<&Finding> for SecurityEvent {
    fn from(f: &Finding) -> Self {
        let evidence = if f.field.is_empty() { f.evidence.clone() } else { format!("{}: {}", f.field, f.evidence) };
        SecurityEvent {
            rule: f.rule.clone(),
            severity: f.severity,
            tool: f.tool.clone(),
            evidence: Some(evidence),
            old_fingerprint: f.old_fingerprint.map(|fp| fp.to_string()),
            new_fingerprint: f.fingerprint.map(|fp| fp.to_string()),
            quarantine: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::wire::{Breakdown, ServerScore, Severity};
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_finding_reports_its_field_with_the_evidence_and_both_fingerprints() {
        let f = Finding {
            rule: "pin/tool-changed".into(),
            severity: Severity::Medium,
            server: "s".into(),
            tool: Some("t".into()),
            field: "description".into(),
            evidence: "now says more".into(),
            fingerprint: Some(Fingerprint::of(&serde_json::json!({"name": "t", "description": "new"}))),
            old_fingerprint: Some(Fingerprint::of(&serde_json::json!({"name": "t"}))),
        };
        let e = SecurityEvent::from(&f);
        assert_eq!((e.rule.as_str(), e.severity, e.tool.as_deref()), ("pin/tool-changed", Severity::Medium, Some("t")));
        assert_eq!(e.evidence.as_deref(), Some("description: now says more"));
        assert_eq!(e.new_fingerprint, f.fingerprint.map(|x| x.to_string()));
        assert_eq!(e.old_fingerprint, f.old_fingerprint.map(|x| x.to_string()));
        assert!(!e.quarantine);
        let bare = SecurityEvent::from(&Finding { field: String::new(), ..f });
        assert_eq!(bare.evidence.as_deref(), Some("now says more"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn accumulates_and_merges_exactly() {
        let mut a = SignalAccumulator::default();
        a.record("p", Outcome::Success, false, 10);
        a.record("p", Outcome::Failure(FailureKind::Http5xx), true, 30);
        a.record("p", Outcome::Unknown, false, 99);
        let mut b = SignalAccumulator::default();
        b.record("p", Outcome::Success, false, 5);
        b.record("f", Outcome::Failure(FailureKind::ConnectFailure), false, 1);
        a.merge(&b);
        a.record_refused("f");
        assert_eq!(a.clusters["f"].outcomes.failures["circuit_open"], 1);
        let p = &a.clusters["p"];
        assert_eq!(p.outcomes.success, 2);
        assert_eq!(p.outcomes.failures["http_5xx"], 1);
        assert_eq!(p.outcomes.slow, 1);
        assert_eq!((p.latency.count, p.latency.sum_ms, p.latency.max_ms), (3, 45, 30));
        assert_eq!(a.clusters["f"].outcomes.failures["connect_failure"], 1);
        let json = serde_json::to_vec(&a).unwrap();
        assert_eq!(serde_json::from_slice::<SignalAccumulator>(&json).unwrap(), a);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_batch_names_only_configured_clusters_and_leaves_the_rest() {
        let mut a = SignalAccumulator::default();
        a.record("mine", Outcome::Success, false, 10);
        a.record("", Outcome::Success, false, 10);
        a.record_refused("theirs");
        a.record_security("gone", SecurityEvent {
            rule: "poison/x".into(),
            severity: crate::trust::wire::Severity::High,
            tool: None,
            evidence: None,
            old_fingerprint: None,
            new_fingerprint: None,
            quarantine: false,
        });
        let b = a.take_batch(["mine", "idle", "", "has space"], "s1", "s1-1".into(), 500).unwrap();
        assert_eq!(b.servers.iter().map(|r| r.server.as_str()).collect::<Vec<_>>(), ["mine"]);
        assert_eq!(b.configured, ["idle", "mine"]);
        assert_eq!((b.sidecar.as_str(), b.batch_id.as_str(), b.period_ms), ("s1", "s1-1", 500));
        // The other clusters' counts stay for the configuration that routes to them.
        assert!(a.clusters.contains_key("theirs") && a.clusters.contains_key("gone") && !a.clusters.contains_key("mine"));
        assert!(a.take_batch(["mine"], "s1", "s1-2".into(), 500).is_none(), "nothing left of `mine`");
        let b = a.take_batch(["theirs"], "s2", "s2-1".into(), 500).unwrap();
        assert_eq!(b.servers[0].outcomes.failures["circuit_open"], 1);
        // The configured list is bounded.
        let names: Vec<String> = (0..MAX_CONFIGURED + 5).map(|i| format!("c{i:05}")).collect();
        a.record("c00000", Outcome::Success, false, 1);
        let b = a.take_batch(names.iter().map(String::as_str), "s1", "s1-3".into(), 500).unwrap();
        assert_eq!(b.configured.len(), MAX_CONFIGURED);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<SignalBatch>(&json).unwrap(), b);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn one_lease_holder_at_a_time() {
        let first = Lease::claim(None, 1, 1000, 3000).unwrap();
        let held = first.encode();
        assert_eq!(Lease::claim(Some(&held), 2, 2000, 3000), None);
        assert_eq!(Lease::claim(Some(&held), 1, 2000, 3000), Some(Lease { owner: 1, expires_ms: 5000 }));
        assert_eq!(Lease::claim(Some(&held), 2, 4000, 3000), Some(Lease { owner: 2, expires_ms: 7000 }));
        assert_eq!(Lease::claim(Some(b"junk"), 2, 0, 10), Some(Lease { owner: 2, expires_ms: 10 }));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn table_from_scores() {
        let doc = ScoresDocument {
            version: 7,
            generated_at_ms: 0,
            servers: vec![ServerScore {
                server: "p".into(),
                score: 0.2,
                state: TrustState::Quarantined,
                quarantine_reason: Some("ops".into()),
                breakdown: Breakdown {
                    performance: 0.0,
                    security: 0.0,
                    reputation: 0.0,
                    successes: 0.0,
                    failures: 0.0,
                    security_penalty: 0.0,
                    rating_weight: 0.0,
                    explanation: String::new(),
                },
            }],
            approvals: vec![],
            verdicts: vec![],
        };
        let t = TrustTable::from_document(&doc);
        assert_eq!(t.version, 7);
        assert_eq!(t.get("p").unwrap().state, TrustState::Quarantined);
        assert!(t.get("q").is_none());
        assert_eq!(t.approved("p").count(), 0);
        assert_eq!(t.lists, TrustTable::default().lists, "no approvals nor verdicts: the lists of an empty table");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unseen_definitions_are_queued_once_redacted_and_bounded() {
        let list = |tools: serde_json::Value| serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})).unwrap();
        let a = serde_json::json!({"name": "a", "description": "Adds."});
        let keyed = serde_json::json!({"name": "k", "description": "Uses key sk_live_0123456789abcdefABCDEF99 for auth."});
        let mut o = DefinitionOutbox::default();
        assert!(o.wants([Fingerprint::of(&a)]));
        o.offer("c1", &list(serde_json::json!([a, keyed, {"description": "no name"}])));
        o.offer("c1", &list(serde_json::json!([a])));
        assert!(!o.wants([Fingerprint::of(&a), Fingerprint::of(&keyed)]));
        let sent = o.take();
        assert_eq!(sent.len(), 2, "each definition once: {sent:?}");
        assert_eq!((sent[0].server.as_str(), &sent[0].definition, sent[0].fingerprint.as_ref()), ("c1", &a, None));
        let d = sent[1].definition["description"].as_str().unwrap();
        assert!(d.contains("[redacted]") && !d.contains("sk_live"), "{d}");
        assert_eq!(sent[1].fingerprint.as_deref(), Some(Fingerprint::of(&keyed).to_string().as_str()));
        assert!(o.is_empty());
        // Not a tools list, or not JSON: nothing.
        o.offer("c1", b"{\"result\":{\"prompts\":[]}}");
        o.offer("c1", b"garbage");
        assert!(o.is_empty());
        // Bounded in count and per definition; requeue within the bounds.
        let many: Vec<_> = (0..MAX_OUTBOX + 10).map(|i| serde_json::json!({"name": format!("t{i}")})).collect();
        o.offer("c2", &list(serde_json::json!(many)));
        assert_eq!(o.pending.len(), MAX_OUTBOX);
        let big = serde_json::json!({"name": "big", "description": "x ".repeat(MAX_DEFINITION_BYTES)});
        let mut p = DefinitionOutbox::default();
        p.offer("c", &list(serde_json::json!([big])));
        assert!(p.is_empty());
        let back = o.take();
        p.requeue(back.clone());
        p.requeue(back);
        assert_eq!(p.pending.len(), MAX_OUTBOX);
        let again: DefinitionOutbox = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(again, p);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn verdicts_are_read_by_fingerprint_and_bounded() {
        use crate::trust::wire::{DefinitionVerdict, Severity};
        let v = |i: usize, rules: Vec<String>| DefinitionVerdict { fingerprint: format!("{i:032x}"), severity: Severity::High, rules, tool: None };
        let mut verdicts = vec![v(1, vec!["detect/tool-poisoning".into(), "poison/secret-file".into()]), v(2, vec!["x".repeat(1000)])];
        verdicts.push(DefinitionVerdict { fingerprint: "junk".into(), severity: Severity::Critical, rules: vec![], tool: None });
        verdicts.extend((10..MAX_VERDICTS + 20).map(|i| v(i, vec![])));
        let t = TrustTable::from_document(&ScoresDocument { version: 2, generated_at_ms: 0, servers: vec![], approvals: vec![], verdicts });
        assert_eq!(t.verdicts.len(), MAX_VERDICTS);
        let one = &t.verdicts[&Fingerprint::from_hex(&format!("{:032x}", 1)).unwrap()];
        assert_eq!((one.severity, one.rules.as_str()), (Severity::High, "detect/tool-poisoning, poison/secret-file"));
        assert_eq!(t.verdicts[&Fingerprint::from_hex(&format!("{:032x}", 2)).unwrap()].rules.len(), MAX_VERDICT_RULES_CHARS);
        let again: TrustTable = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
        assert_eq!(again, t);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn approvals_are_per_server_bounded_and_survive_shared_data() {
        use crate::trust::wire::ToolApproval;
        let fp = |i: usize| format!("{i:032x}");
        let mut approvals = vec![
            ToolApproval { server: "p".into(), fingerprint: fp(1), tool: Some("t".into()) },
            ToolApproval { server: "p".into(), fingerprint: "not hex".into(), tool: None },
            ToolApproval { server: "q".into(), fingerprint: fp(2), tool: None },
        ];
        approvals.extend((0..MAX_APPROVALS_PER_SERVER + 10).map(|i| ToolApproval { server: "big".into(), fingerprint: fp(100 + i), tool: None }));
        let doc = ScoresDocument { version: 3, generated_at_ms: 0, servers: vec![], approvals, verdicts: vec![] };
        let t = TrustTable::from_document(&doc);
        assert_eq!(t.approved("p").collect::<Vec<_>>(), [Fingerprint::from_hex(&fp(1)).unwrap()]);
        assert_eq!(t.approved("q").count(), 1);
        assert_eq!(t.approved("big").count(), MAX_APPROVALS_PER_SERVER);
        assert_eq!(t.approved("nobody").count(), 0);
        let other_version = TrustTable::from_document(&ScoresDocument { version: 4, ..doc.clone() });
        assert_eq!(other_version.lists, t.lists, "a new version with the same approvals: same lists hash");
        let fewer = TrustTable::from_document(&ScoresDocument { approvals: doc.approvals[..1].to_vec(), ..doc.clone() });
        assert_ne!(fewer.lists, t.lists);
        // The shared-data form keeps them; a table written by an older sidecar reads as none.
        let again: TrustTable = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
        assert_eq!(again, t);
        let old: TrustTable = serde_json::from_str(r#"{"version":1,"servers":{}}"#).unwrap();
        assert!(old.approved.is_empty());
        // A document from an older aggregator (no approvals member) reads as none.
        let old_doc: ScoresDocument = serde_json::from_str(r#"{"version":1,"generated_at_ms":0,"servers":[]}"#).unwrap();
        assert!(old_doc.approvals.is_empty());
        // Total bound.
        let many = (0..MAX_APPROVALS + 5).map(|i| ToolApproval { server: format!("s{}", i % 100), fingerprint: fp(i), tool: None }).collect();
        let t = TrustTable::from_document(&ScoresDocument { version: 1, generated_at_ms: 0, servers: vec![], approvals: many, verdicts: vec![] });
        assert_eq!(t.approved.values().map(BTreeSet::len).sum::<usize>(), MAX_APPROVALS);
    }
}
