//! The JSON documents exchanged with the aggregator (see `aggregator/openapi.yaml`).
//!
//! A "server", for trust, is one upstream MCP server: the Envoy cluster name the sidecars route
//! to (the same name on every sidecar, as in a mesh).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::severity::Severity;

/// Outcome counts of one server over one reporting period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcomes {
    #[serde(default)]
    pub success: u64,
    /// Failures by kind (`connect_failure`, `http_5xx`, `malformed`, ...).
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
    /// Calls slower than the sidecar's slow-call threshold (also counted above).
    #[serde(default)]
    pub slow: u64,
}

impl Outcomes {
    pub fn failure_total(&self) -> u64 {
        self.failures.values().sum()
    }
    pub fn total(&self) -> u64 {
        self.success + self.failure_total()
    }
}

/// Latency of the period's calls, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySummary {
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub sum_ms: u64,
    #[serde(default)]
    pub max_ms: u64,
}

/// A security event a sidecar saw, with bounded, redacted evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityEvent {
    /// Rule id, e.g. `tool-poisoning/ignore-instructions`, `tool-changed`, `oversized-body`.
    pub rule: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// A short excerpt (bounded by the sender) showing what matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_fingerprint: Option<String>,
    /// The sidecar's policy asks for the server's quarantine (as a critical event does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantine: bool,
}

/// What one sidecar saw of one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerReport {
    pub server: String,
    #[serde(default)]
    pub outcomes: Outcomes,
    #[serde(default)]
    pub latency: LatencySummary,
    #[serde(default)]
    pub security: Vec<SecurityEvent>,
}

/// `POST /v1/signals`: a sidecar's batch for one period. `batch_id` makes retries idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalBatch {
    pub sidecar: String,
    pub batch_id: String,
    #[serde(default)]
    pub period_ms: u64,
    pub servers: Vec<ServerReport>,
    /// The clusters this sidecar's configuration holds (at most [`MAX_CONFIGURED`]): a hint that
    /// helps the aggregator admit a server other sidecars report, never proof (a credential can
    /// claim anything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configured: Vec<String>,
}

/// Most cluster names a batch's `configured` list carries.
pub const MAX_CONFIGURED: usize = 1_024;

/// Is `name` a server name the aggregator accepts (1 to 253 printable ASCII characters, no
/// spaces: a DNS name's length; Envoy cluster names such as Istio's qualify)?
pub fn is_server_name(name: &str) -> bool {
    (1..=253).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

/// What a rating is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Subject {
    /// A server (cluster name).
    Server(String),
    /// Another rater: a vouch, which is how standing spreads in the web of trust.
    Rater(String),
}

/// `POST /v1/ratings`: a rater's opinion (the rater is the token's identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatingRequest {
    pub subject: Subject,
    /// 0 (do not trust) .. 1 (trust fully).
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `POST /v1/flags`: a scanner's finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagRequest {
    pub server: String,
    pub severity: Severity,
    /// The scanner's rule or finding id.
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `POST /v1/servers/{server}/quarantine` and `/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    pub reason: String,
}

/// Trusted, degraded (under the minimum trust: treated like an open breaker) or quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustState {
    Trusted,
    Degraded,
    Quarantined,
}

/// The components of a score, for people and dashboards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub performance: f64,
    pub security: f64,
    pub reputation: f64,
    /// Decayed evidence behind the performance component.
    pub successes: f64,
    pub failures: f64,
    /// Decayed security penalty.
    pub security_penalty: f64,
    /// Total standing of the raters behind the reputation component.
    pub rating_weight: f64,
    pub explanation: String,
}

/// One server's score as the aggregator publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerScore {
    pub server: String,
    pub score: f64,
    pub state: TrustState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_reason: Option<String>,
    pub breakdown: Breakdown,
}

/// A changed tool definition an operator cleared for a server: sidecars holding a change to
/// this fingerprint let it through and pin it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolApproval {
    pub server: String,
    /// The approved definition's fingerprint (32 hex digits).
    pub fingerprint: String,
    /// The tool it was held on, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// The aggregator's scan of one tool definition that found something a policy acts on,
/// published by fingerprint: sidecars judge a listed tool with this fingerprint at `severity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionVerdict {
    pub fingerprint: String,
    pub severity: Severity,
    /// The rules behind it.
    #[serde(default)]
    pub rules: Vec<String>,
    /// The tool's name, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// One tool definition submitted for the mesh-wide scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmittedDefinition {
    /// The server (cluster) that listed it.
    pub server: String,
    /// The definition as listed (one `tools/list` entry), key-like runs redacted.
    pub definition: serde_json::Value,
    /// The sidecar's fingerprint of the definition as listed, sent when redaction changed it
    /// (the aggregator cannot recompute it then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// `POST /v1/definitions`: tool definitions to scan once for the whole mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionBatch {
    pub definitions: Vec<SubmittedDefinition>,
}

/// `GET /v1/scores`: every server, what sidecars pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoresDocument {
    /// Monotonic version of the aggregator's state (also the ETag).
    pub version: u64,
    pub generated_at_ms: u64,
    pub servers: Vec<ServerScore>,
    /// Operators' approvals of held tool changes (absent from older aggregators' documents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ToolApproval>,
    /// The mesh-wide scan's verdicts on definitions, newest first (absent from older
    /// aggregators' documents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<DefinitionVerdict>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn signal_batches_round_trip_and_refuse_unknown_fields() {
        let json = r#"{"sidecar":"s1","batch_id":"s1-42","period_ms":5000,"servers":[
            {"server":"weather_primary","outcomes":{"success":10,"failures":{"http_5xx":2},"slow":1},
             "latency":{"count":12,"sum_ms":340,"max_ms":90},
             "security":[{"rule":"tool-changed","severity":"high","tool":"forecast","old_fingerprint":"a","new_fingerprint":"b"}]}]}"#;
        let b: SignalBatch = serde_json::from_str(json).unwrap();
        assert_eq!(b.servers[0].outcomes.total(), 12);
        assert_eq!(b.servers[0].security[0].severity, Severity::High);
        let again: SignalBatch = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(again, b);
        assert!(serde_json::from_str::<SignalBatch>(r#"{"sidecar":"s","batch_id":"b","servers":[],"extra":1}"#).is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rating_subjects() {
        let r: RatingRequest = serde_json::from_str(r#"{"subject":{"kind":"rater","name":"ops-bob"},"value":0.9}"#).unwrap();
        assert_eq!(r.subject, Subject::Rater("ops-bob".into()));
        let r: RatingRequest = serde_json::from_str(r#"{"subject":{"kind":"server","name":"w"},"value":0.1}"#).unwrap();
        assert_eq!(r.subject, Subject::Server("w".into()));
    }
}
