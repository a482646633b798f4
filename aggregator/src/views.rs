//! The aggregator's own response documents (beyond the core's wire types), shared by the service
//! and `mcp-warden-ctl`. Described in `openapi.yaml`.

use mcp_warden_core::trust::wire::{Breakdown, Severity, Subject, TrustState};
use serde::{Deserialize, Serialize};

/// `POST /v1/signals` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalsAck {
    pub batch_id: String,
    /// The batch had been applied before (a retry): nothing was counted again.
    pub duplicate: bool,
    /// Server reports applied.
    pub servers: usize,
    /// Reports neither applied nor held: new servers past `max_servers`, past what one
    /// credential may introduce (`new_servers_per_window`), or past the provisional servers one
    /// credential may name (`provisional_per_sidecar`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_servers: Vec<String>,
    /// Reports held for servers not tracked yet: fewer sidecar credentials than
    /// `server_admission_quorum` named them (counted if they are admitted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub provisional: usize,
    /// The first of them (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisional_servers: Vec<String>,
    /// Servers this batch admitted (the quorum was reached).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admitted_servers: Vec<String>,
    /// The scores document's version after the write.
    pub version: u64,
}

/// `POST /v1/ratings` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingAck {
    pub rater: String,
    /// The rater's standing in the web of trust (1 for operators; about 0 for raters nobody
    /// trusted vouched for: their ratings count only within the capped crowd).
    pub rater_standing: f64,
    pub subject: Subject,
    pub value: f64,
    pub version: u64,
}

/// `POST /v1/flags` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagAck {
    pub id: i64,
    pub server: String,
    /// False when the same finding was already counted within the dedup window.
    pub counted: bool,
    pub score: f64,
    pub state: TrustState,
    pub version: u64,
}

/// `POST /v1/servers/{server}/quarantine` and `/release` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionAck {
    pub server: String,
    pub state: TrustState,
    pub score: f64,
    pub audit_id: i64,
    pub version: u64,
}

/// `POST /v1/servers/{server}/approvals`: clears a held tool change on every sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// The new definition's fingerprint, as the held change reported it (32 hex digits).
    pub fingerprint: String,
    /// The tool (taken from the held change when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub reason: String,
}

/// `POST /v1/servers/{server}/revoke`: takes back an approval (or condemns a definition an
/// operator finds bad): the fingerprint is stripped on every sidecar until approved again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The definition's fingerprint (32 hex digits).
    pub fingerprint: String,
    pub reason: String,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeAck {
    pub server: String,
    pub fingerprint: String,
    /// Whether an approval of it for this server was withdrawn.
    pub approval_withdrawn: bool,
    pub audit_id: i64,
    pub version: u64,
}

/// A changed tool definition sidecars hold out of `tools/list` until it is cleared, as they
/// reported it (`pin/tool-held` events), one per (server, new fingerprint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldChange {
    pub server: String,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_fingerprint: Option<String>,
    /// Why it is held, as the sidecar said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The sidecar that reported it last.
    pub reported_by: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub reports: u64,
}

/// An operator's approval of a tool definition for a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolApprovalRecord {
    pub server: String,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub approved_by: String,
    pub at_ms: u64,
    pub reason: String,
}

/// `GET /v1/approvals`: held changes waiting for an operator, and approvals in force (newest
/// first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalsView {
    pub held: Vec<HeldChange>,
    pub approvals: Vec<ToolApprovalRecord>,
    pub version: u64,
}

/// `POST /v1/servers/{server}/approvals` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalAck {
    pub server: String,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub audit_id: i64,
    /// The scores document's version that carries the approval to sidecars.
    pub version: u64,
}

/// The mesh-wide scan of one definition, kept by fingerprint (each is scanned once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionScan {
    pub fingerprint: String,
    /// The server that submitted it first.
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The worst finding's severity, when the policy acts on it (strip or above): the verdict
    /// sidecars get. Absent: the definition scanned clean enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    pub scanned_ms: u64,
}

/// The rule of an operator's revocation in a definition's verdict.
pub const REVOKED_RULE: &str = "operator/revoked";

impl DefinitionScan {
    /// Whether an operator revoked it (see `Engine::revoke`).
    pub fn revoked(&self) -> bool {
        self.rules.iter().any(|r| r == REVOKED_RULE)
    }
}

/// `POST /v1/definitions` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionsAck {
    /// Definitions in the batch.
    pub received: usize,
    /// Scanned now (their fingerprint had not been seen).
    pub scanned: usize,
    /// Scanned before (by fingerprint): not scanned again.
    pub known: usize,
    /// The scans of this batch's definitions that gave a verdict (new or known).
    pub verdicts: Vec<DefinitionScan>,
    /// The scores document's version after the write.
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// An operator quarantined the server.
    Quarantine,
    /// The aggregator quarantined it (score under `quarantine_below`, or a critical finding).
    AutoQuarantine,
    /// An operator released it.
    Release,
    /// The aggregator forgot it: no sidecar, scanner or operator knew it for
    /// `server_retention_ms`.
    Forget,
    /// An operator approved a held tool definition (by fingerprint).
    ApproveTool,
    /// An operator admitted a server sidecars had not (yet) agreed on.
    Admit,
    /// An operator revoked a tool definition (by fingerprint): stripped on every sidecar.
    RevokeTool,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Quarantine => "quarantine",
            AuditAction::AutoQuarantine => "auto_quarantine",
            AuditAction::Release => "release",
            AuditAction::Forget => "forget",
            AuditAction::ApproveTool => "approve_tool",
            AuditAction::Admit => "admit",
            AuditAction::RevokeTool => "revoke_tool",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "quarantine" => Some(AuditAction::Quarantine),
            "auto_quarantine" => Some(AuditAction::AutoQuarantine),
            "release" => Some(AuditAction::Release),
            "forget" => Some(AuditAction::Forget),
            "approve_tool" => Some(AuditAction::ApproveTool),
            "admit" => Some(AuditAction::Admit),
            "revoke_tool" => Some(AuditAction::RevokeTool),
            _ => None,
        }
    }
}

/// One entry of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: u64,
    /// The operator's token name, or `aggregator` for automatic decisions.
    pub actor: String,
    pub action: AuditAction,
    pub server: String,
    pub reason: String,
    /// The server's score when the decision was taken.
    pub score: f64,
    /// Hex sha256 of the previous entry's hash and this entry (see `GET /v1/audit/verify`).
    pub hash: String,
}

/// The newest entry of the audit log's hash chain: keep it outside the aggregator's host to
/// detect a rewritten or truncated log later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub id: i64,
    pub hash: String,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    /// The first entry whose link does not hold (or the first missing id).
    pub id: i64,
    pub reason: String,
}

/// `GET /v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Every link holds and no entry is missing.
    pub ok: bool,
    /// Entries verified (before the break, if any).
    pub entries: u64,
    /// The last verified entry (absent when the log is empty or breaks at its first entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<ChainHead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<BrokenLink>,
}

/// `GET /v1/audit`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Present when the page is full: pass it as `before_id` for the next (older) page (which may
    /// be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before_id: Option<i64>,
}

/// Why and since when a server is quarantined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineInfo {
    pub reason: String,
    pub by: String,
    pub since_ms: u64,
    pub automatic: bool,
}

/// Lifetime traffic the sidecars reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub success: u64,
    pub failures: u64,
    pub slow: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_mean_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistorySample {
    pub at_ms: u64,
    pub score: f64,
    pub state: TrustState,
}

/// A security event sidecars reported (repeats of the same finding are folded into one record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityEventRecord {
    pub id: i64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub reports: u64,
    /// Token name of the sidecar that reported it first.
    pub reported_by: String,
    pub rule: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_fingerprint: Option<String>,
}

/// A scanner's (or operator's) flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagRecord {
    pub id: i64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub reports: u64,
    pub flagged_by: String,
    pub rule: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaterRating {
    pub rater: String,
    pub value: f64,
    pub standing: f64,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingSummary {
    pub count: usize,
    /// Plain mean of the values (for comparison with the weighted reputation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    pub reputation: f64,
    pub rating_weight: f64,
    /// Raters whose standing is that of an unknown rater (they count only as the capped crowd).
    pub unknown_raters: usize,
    /// Up to 50 raters, highest standing first.
    pub raters: Vec<RaterRating>,
}

/// `GET /v1/servers/{server}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerDetail {
    pub server: String,
    /// Computed now (the scores document may lag by up to ~0.005).
    pub score: f64,
    pub state: TrustState,
    pub breakdown: Breakdown,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineInfo>,
    /// False after an operator's release, until new adverse evidence arrives.
    pub auto_quarantine_armed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_ms: Option<u64>,
    pub first_seen_ms: u64,
    pub traffic: Traffic,
    /// Oldest first: a sample per `history_sample_interval_ms` and one on every state change.
    pub history: Vec<HistorySample>,
    /// Newest first, up to 50.
    pub security_events: Vec<SecurityEventRecord>,
    /// Newest first, up to 50.
    pub flags: Vec<FlagRecord>,
    pub ratings: RatingSummary,
    pub version: u64,
    pub generated_at_ms: u64,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`; `degraded` while database writes fail (reads are still served); `unavailable: ...`
    /// (with 503) when the database cannot be read.
    pub status: String,
    pub version: u64,
    pub servers: usize,
    /// Why the status is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `GET /v1/provisional`: servers fewer sidecar credentials than the quorum named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionalView {
    /// Distinct sidecar credentials that must name a server (`server_admission_quorum`).
    pub quorum: usize,
    /// Provisional servers in all (the list may be cut).
    pub total: usize,
    /// Most recently named first.
    pub servers: Vec<ProvisionalServer>,
}

/// One provisional server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionalServer {
    pub server: String,
    pub first_ms: u64,
    pub last_ms: u64,
    /// The sidecar credentials that named it.
    pub named_by: Vec<String>,
    /// Calls and findings its reports held (counted on admission).
    pub held_calls: u64,
    pub held_findings: usize,
}
