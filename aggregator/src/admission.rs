//! Which servers the aggregator tracks (docs/TRUST.md, "The mesh's server list"): a server
//! one sidecar credential names is *provisional* until `server_admission_quorum` distinct
//! sidecar credentials named it, an operator admitted it, or a scanner flagged it. A
//! provisional server is kept apart: not counted against `max_servers`, not published, at most
//! `provisional_per_sidecar` per credential, its voices forgotten after
//! `provisional_retention_ms`; what its reports said meanwhile is held (bounded: outcome counts
//! and the most severe findings) and counted when it is admitted. Pure: time is passed in.

use mcp_warden_core::trust::wire::{LatencySummary, Outcomes, SecurityEvent, ServerReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Findings held per provisional server (the most severe are kept).
pub const HELD_EVENTS: usize = 8;
/// Failure kinds held per provisional server (a report may name 64; sidecars use a dozen).
const HELD_FAILURE_KINDS: usize = 16;
/// Bytes of a held finding's evidence kept (what people read of it is an excerpt anyway).
const HELD_EVIDENCE: usize = 256;
/// Credentials remembered per provisional server (the oldest voice goes first).
pub const VOICES: usize = 16;
/// Provisional names listed in a signals ack (the count is always given).
pub const ACK_LISTED: usize = 100;

/// What the reports of a provisional server said, counted on its admission.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Held {
    #[serde(default)]
    pub outcomes: Outcomes,
    #[serde(default)]
    pub latency: LatencySummary,
    /// (credential, finding): at most [`HELD_EVENTS`], the most severe kept.
    #[serde(default)]
    pub events: Vec<(String, SecurityEvent)>,
}

impl Held {
    /// Adds one report of credential `who`, within the bounds.
    pub fn add(&mut self, who: &str, r: &ServerReport) {
        let o = &mut self.outcomes;
        o.success = o.success.saturating_add(r.outcomes.success);
        o.slow = o.slow.saturating_add(r.outcomes.slow);
        for (kind, n) in &r.outcomes.failures {
            if o.failures.len() < HELD_FAILURE_KINDS || o.failures.contains_key(kind) {
                let c = o.failures.entry(kind.clone()).or_insert(0);
                *c = c.saturating_add(*n);
            }
        }
        let l = &mut self.latency;
        l.count = l.count.saturating_add(r.latency.count);
        l.sum_ms = l.sum_ms.saturating_add(r.latency.sum_ms);
        l.max_ms = l.max_ms.max(r.latency.max_ms);
        for e in &r.security {
            let kept = || {
                let evidence = e.evidence.as_deref().map(|v| crate::validate::truncate(v, HELD_EVIDENCE));
                (who.to_string(), SecurityEvent { evidence, ..e.clone() })
            };
            if self.events.len() < HELD_EVENTS {
                self.events.push(kept());
            } else if let Some(least) = self.events.iter_mut().min_by_key(|(_, h)| h.severity) {
                if least.1.severity < e.severity {
                    *least = kept();
                }
            }
        }
    }

    /// The held findings by credential (in the order they arrived), for replay.
    pub fn events_by_credential(&self) -> BTreeMap<&str, Vec<SecurityEvent>> {
        let mut by: BTreeMap<&str, Vec<SecurityEvent>> = BTreeMap::new();
        for (who, e) in &self.events {
            by.entry(who.as_str()).or_default().push(e.clone());
        }
        by
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.total() == 0 && self.latency.count == 0 && self.events.is_empty()
    }
}

/// A server named by fewer sidecar credentials than the quorum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provisional {
    pub first_ms: u64,
    /// Sidecar credential -> when it last named the server (at most [`VOICES`]).
    pub voices: BTreeMap<String, u64>,
    pub held: Held,
}

impl Provisional {
    pub fn new(now: u64) -> Provisional {
        Provisional { first_ms: now, ..Provisional::default() }
    }

    /// Credential `who` names the server at `now`; `true` if it had not before.
    pub fn voice(&mut self, who: &str, now: u64) -> bool {
        let new = self.voices.insert(who.to_string(), now).is_none();
        if self.voices.len() > VOICES {
            if let Some(oldest) = self.voices.iter().min_by_key(|(_, at)| **at).map(|(w, _)| w.clone()) {
                self.voices.remove(&oldest);
            }
        }
        new
    }

    /// Distinct credentials that named it.
    pub fn voices(&self) -> usize {
        self.voices.len()
    }

    /// Forgets voices older than `since`; `true` if any went.
    pub fn expire(&mut self, since: u64) -> bool {
        let before = self.voices.len();
        self.voices.retain(|_, at| *at >= since);
        self.voices.len() != before
    }

    /// When it was last named.
    pub fn last_ms(&self) -> u64 {
        self.voices.values().copied().max().unwrap_or(self.first_ms)
    }
}

/// How many provisional servers `who` has named (what its bound counts).
pub fn named_by(provisional: &BTreeMap<String, Provisional>, who: &str) -> usize {
    provisional.values().filter(|p| p.voices.contains_key(who)).count()
}

/// The quorum in force: the configured one, or by default `min(2, sidecar credentials)` (at
/// least 1), so a mesh of one sidecar admits what it reports at once and any larger mesh needs
/// two credentials to agree.
pub fn quorum(configured: Option<usize>, sidecar_credentials: usize) -> usize {
    configured.unwrap_or_else(|| sidecar_credentials.min(2)).max(1)
}

/// Why a named server was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The aggregator tracks `max_servers` already.
    MaxServers,
    /// The credential whose voice completed the quorum introduced `new_servers_per_window`.
    NewServersPerWindow,
    /// The credential names `provisional_per_sidecar` provisional servers already.
    ProvisionalPerSidecar,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxServers => "max_servers",
            Refusal::NewServersPerWindow => "new_servers_per_window",
            Refusal::ProvisionalPerSidecar => "provisional_per_sidecar",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use mcp_warden_core::trust::wire::Severity;

    fn event(rule: &str, severity: Severity) -> SecurityEvent {
        SecurityEvent {
            rule: rule.into(),
            severity,
            tool: Some("t".into()),
            evidence: None,
            old_fingerprint: None,
            new_fingerprint: None,
            quarantine: false,
        }
    }

    #[test]
    fn the_default_quorum_is_two_unless_one_sidecar_is_configured() {
        assert_eq!(quorum(None, 0), 1);
        assert_eq!(quorum(None, 1), 1);
        assert_eq!(quorum(None, 2), 2);
        assert_eq!(quorum(None, 50), 2);
        assert_eq!(quorum(Some(3), 1), 3);
        assert_eq!(quorum(Some(0), 5), 1);
    }

    #[test]
    fn held_reports_are_bounded_and_keep_the_most_severe_findings() {
        let mut h = Held::default();
        let mut r = ServerReport { server: "x".into(), ..ServerReport::default() };
        r.outcomes.success = 3;
        r.outcomes.failures.insert("http_5xx".into(), 2);
        r.latency = LatencySummary { count: 5, sum_ms: 50, max_ms: 20 };
        r.security = (0..20).map(|i| event(&format!("poison/{i}"), Severity::Low)).collect();
        h.add("s1", &r);
        r.security = vec![SecurityEvent { evidence: Some("x".repeat(5000)), ..event("unicode/tag-characters", Severity::Critical) }];
        r.outcomes.failures = (0..40).map(|i| (format!("kind-{i:02}"), 1)).collect();
        h.add("s2", &r);
        assert_eq!(h.outcomes.failures.len(), HELD_FAILURE_KINDS, "the kinds held are bounded");
        assert!(h.events.iter().all(|(_, e)| e.evidence.as_ref().is_none_or(|v| v.len() <= HELD_EVIDENCE)));
        assert_eq!((h.outcomes.success, h.outcomes.failures["http_5xx"], h.latency.count, h.latency.max_ms), (6, 2, 10, 20));
        assert_eq!(h.events.len(), HELD_EVENTS);
        assert!(h.events.iter().any(|(who, e)| who == "s2" && e.severity == Severity::Critical));
        let by = h.events_by_credential();
        assert_eq!((by["s1"].len(), by["s2"].len()), (HELD_EVENTS - 1, 1));
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Held>(&json).unwrap(), h);
    }

    #[test]
    fn voices_are_distinct_credentials_bounded_and_expire() {
        let mut p = Provisional::new(1);
        assert!(p.voice("s1", 1));
        assert!(!p.voice("s1", 5), "the same credential twice is one voice");
        assert_eq!(p.voices(), 1);
        assert!(p.voice("s2", 10));
        assert_eq!((p.voices(), p.last_ms()), (2, 10));
        for i in 0..2 * VOICES {
            p.voice(&format!("x{i}"), 20 + i as u64);
        }
        assert_eq!(p.voices(), VOICES);
        assert!(!p.voices.contains_key("s1"), "the oldest voice went first");
        assert!(p.expire(20 + VOICES as u64 + 1));
        assert!(p.voices() < VOICES);
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), p.clone());
        let mut q = Provisional::new(1);
        q.voice("s9", 1);
        m.insert("b".to_string(), q);
        assert_eq!(named_by(&m, "s9"), 1);
        assert_eq!(named_by(&m, "nobody"), 0);
    }
}
