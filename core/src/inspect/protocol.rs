//! Protocol violations for the security channel. The breaker's classifier
//! ([`crate::mcp::classify`]) already judges answers malformed for health; this reads the same
//! messages with the same reader ([`crate::mcp::jsonrpc::parse_response`]) and names what was
//! wrong, so the trust aggregator can tell a sloppy server from one answering what was never asked.

use super::{Finding, Inspector};
use crate::mcp::jsonrpc::{parse_response, ResponseBody, ResponseMsg};
use crate::outcome::FailureKind;
use serde_json::Value;

/// What was wrong with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Not JSON, not JSON-RPC 2.0, neither or both of `result` and `error`.
    Malformed,
    /// An answer whose id is none of the request's.
    IdMismatch,
    /// An answer to a request never made (the agent sent only notifications or responses).
    Unsolicited,
    /// Larger than the configured limit.
    Oversized,
}

/// The rule ids of the `protocol` kind.
pub const RULE_IDS: [&str; 4] = ["protocol/malformed", "protocol/id-mismatch", "protocol/unsolicited-response", "protocol/oversized-body"];

impl Violation {
    pub fn rule_id(self) -> &'static str {
        match self {
            Violation::Malformed => RULE_IDS[0],
            Violation::IdMismatch => RULE_IDS[1],
            Violation::Unsolicited => RULE_IDS[2],
            Violation::Oversized => RULE_IDS[3],
        }
    }
}

/// The violation behind a failure the classifier reported, if it is one.
pub fn from_failure(kind: FailureKind) -> Option<Violation> {
    (kind == FailureKind::Malformed).then_some(Violation::Malformed)
}

/// Judges a JSON answer (or one SSE event's data) against the request's ids: `expected` is
/// `None` when the request was not read, `Some(&[])` when it held no request that wants an answer.
pub fn check_response(expected: Option<&[Value]>, body: &[u8], limit: usize) -> Option<Violation> {
    if body.len() > limit {
        return Some(Violation::Oversized);
    }
    let msgs = match parse_response(body) {
        Ok(ResponseBody::One(m)) => vec![m],
        Ok(ResponseBody::Many(ms)) => ms,
        Err(_) => return Some(Violation::Malformed),
    };
    msgs.iter().find_map(|m| check_message(expected, m))
}

fn check_message(expected: Option<&[Value]>, m: &ResponseMsg) -> Option<Violation> {
    if m.jsonrpc.as_deref() != Some("2.0") {
        return Some(Violation::Malformed);
    }
    if m.method.is_some() {
        return None; // a server request or notification
    }
    if m.result.is_some() == m.error.is_some() {
        return Some(Violation::Malformed);
    }
    let id = m.id.as_ref().filter(|v| !v.is_null());
    match (expected, id) {
        (Some([]), Some(_)) => Some(Violation::Unsolicited),
        (Some(ids), Some(id)) if !ids.contains(id) => Some(Violation::IdMismatch),
        (Some(_), None) if m.error.is_none() => Some(Violation::Malformed),
        _ => None,
    }
}

impl Inspector {
    /// The finding for a violation (`None` if its rule is disabled or inspection is off).
    pub fn violation(&self, server: &str, v: Violation, detail: &str) -> Option<Finding> {
        if !self.enabled {
            return None;
        }
        let rule = self.rule_by_id(v.rule_id())?;
        Some(Finding {
            rule: rule.id.clone(),
            severity: rule.severity,
            server: server.to_string(),
            tool: None,
            field: String::new(),
            evidence: super::text::excerpt(detail, 0, 0, self.limits.evidence_max_chars),
            fingerprint: None,
            old_fingerprint: None,
        })
    }
}
