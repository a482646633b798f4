//! The aggregator's optional JSON configuration: trust-model overrides and service knobs,
//! parsed with `deny_unknown_fields` and validated once; every error names its field.

use crate::policy::SidecarPolicy;
use mcp_warden_core::trust::wire::Severity;
use mcp_warden_core::trust::TrustParams;
use serde::Deserialize;
use std::fmt;

/// A configuration the aggregator refuses, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "invalid aggregator configuration: {}", self.message)
        } else {
            write!(f, "invalid aggregator configuration: field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_string(), message: message.into() }
}

/// Everything the service runs with: the model's parameters and the service's own bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub trust: TrustParams,
    /// How often scores are re-evaluated for decay (and per-minute history samples taken).
    pub evaluate_interval_ms: u64,
    /// Replicas on PostgreSQL: how often each one checks the database for what the others
    /// wrote (decisions, the published document). Unused on SQLite.
    pub follow_interval_ms: u64,
    /// A history sample per server at least this often (and on every state change).
    pub history_sample_interval_ms: u64,
    /// History older than this is deleted.
    pub history_retention_ms: u64,
    /// The same finding (server, rule, severity, tool, fingerprint) reported again within this
    /// window is recorded but does not add to the penalty a second time.
    pub security_dedup_window_ms: u64,
    /// Processed batch ids are remembered this long (the idempotency window for retries).
    pub batch_retention_ms: u64,
    /// The most servers the aggregator tracks; writes naming more are refused (507).
    pub max_servers: usize,
    /// A server no sidecar reported, and no scanner or operator acted on, for this long is
    /// forgotten (with an audit entry); a quarantined one is kept until released. 0: never.
    pub server_retention_ms: u64,
    /// A file the audit chain's head is appended to whenever it moves (for an operator to ship
    /// elsewhere); verifications check the chain against it.
    pub audit_anchor_file: Option<std::path::PathBuf>,
    /// A file holding a secret key (at least 32 bytes) kept apart from the database: each
    /// exported head is signed with it (HMAC-SHA256), and verifications refuse unsigned anchors.
    pub audit_anchor_key_file: Option<std::path::PathBuf>,
    /// What one sidecar credential's findings may do (see [`crate::policy`]).
    pub sidecar: SidecarPolicy,
    /// The most raters one rater may vouch for at once (withdrawn vouches do not count).
    pub max_vouches_per_rater: usize,
    /// `GET /metrics` needs a bearer token (any role); by default Prometheus scrapes without one.
    pub metrics_require_token: bool,
    /// Rate limits, timeouts and concurrency caps of the HTTP service.
    pub limits: Limits,
}

const HOUR_MS: u64 = 3_600_000;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trust: TrustParams::default(),
            evaluate_interval_ms: 5_000,
            follow_interval_ms: 1_000,
            history_sample_interval_ms: 60_000,
            history_retention_ms: 24 * HOUR_MS,
            security_dedup_window_ms: 24 * HOUR_MS,
            batch_retention_ms: 7 * 24 * HOUR_MS,
            max_servers: 10_000,
            server_retention_ms: 30 * 24 * HOUR_MS,
            max_vouches_per_rater: 100,
            sidecar: SidecarPolicy::default(),
            audit_anchor_file: None,
            audit_anchor_key_file: None,
            metrics_require_token: false,
            limits: Limits::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    trust: RawTrust,
    evaluate_interval_ms: Option<u64>,
    follow_interval_ms: Option<u64>,
    history_sample_interval_ms: Option<u64>,
    history_retention_ms: Option<u64>,
    security_dedup_window_ms: Option<u64>,
    batch_retention_ms: Option<u64>,
    max_servers: Option<usize>,
    server_retention_ms: Option<u64>,
    max_vouches_per_rater: Option<usize>,
    #[serde(default)]
    sidecar: RawSidecar,
    audit_anchor_file: Option<std::path::PathBuf>,
    audit_anchor_key_file: Option<std::path::PathBuf>,
    metrics_require_token: Option<bool>,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    quarantine_min_severity: Option<Severity>,
    server_budget: Option<usize>,
    new_servers_per_window: Option<usize>,
    budget_window_ms: Option<u64>,
    release_cooldown_ms: Option<u64>,
    server_admission_quorum: Option<usize>,
    provisional_per_sidecar: Option<usize>,
    provisional_retention_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    performance_half_life_ms: Option<u64>,
    security_half_life_ms: Option<u64>,
    prior_successes: Option<f64>,
    prior_failures: Option<f64>,
    slow_weight: Option<f64>,
    #[serde(default)]
    severity_penalty: RawPenalty,
    performance_weight: Option<f64>,
    reputation_weight: Option<f64>,
    reputation_prior: Option<f64>,
    reputation_prior_weight: Option<f64>,
    unknown_rater_standing: Option<f64>,
    unknown_crowd_cap: Option<f64>,
    eigentrust_alpha: Option<f64>,
    eigentrust_iterations: Option<u32>,
    min_trust: Option<f64>,
    quarantine_below: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPenalty {
    low: Option<f64>,
    medium: Option<f64>,
    high: Option<f64>,
    critical: Option<f64>,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

fn in_range(field: &str, v: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(err(field, format!("must be in [{lo}, {hi}], got {v}")))
    }
}

fn positive(field: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(err(field, format!("must be a positive number, got {v}")))
    }
}

fn ms_range(field: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(err(field, format!("must be in {lo}..={hi} ms, got {v}")))
    }
}

const YEAR_MS: u64 = 366 * 24 * HOUR_MS;

impl Settings {
    /// Parses and validates the JSON an operator wrote; absent fields keep their defaults.
    pub fn from_json(bytes: &[u8]) -> Result<Settings, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawSettings =
            serde_path_to_error::deserialize(de).map_err(|e| err(&e.path().to_string(), e.into_inner().to_string()))?;
        let mut s = Settings::default();
        let t = &mut s.trust;
        let r = raw.trust;
        set(&mut t.performance_half_life_ms, r.performance_half_life_ms);
        set(&mut t.security_half_life_ms, r.security_half_life_ms);
        set(&mut t.prior_successes, r.prior_successes);
        set(&mut t.prior_failures, r.prior_failures);
        set(&mut t.slow_weight, r.slow_weight);
        for (slot, v) in t.severity_penalty.iter_mut().zip([
            r.severity_penalty.low,
            r.severity_penalty.medium,
            r.severity_penalty.high,
            r.severity_penalty.critical,
        ]) {
            set(slot, v);
        }
        set(&mut t.performance_weight, r.performance_weight);
        set(&mut t.reputation_weight, r.reputation_weight);
        set(&mut t.reputation_prior, r.reputation_prior);
        set(&mut t.reputation_prior_weight, r.reputation_prior_weight);
        set(&mut t.unknown_rater_standing, r.unknown_rater_standing);
        set(&mut t.unknown_crowd_cap, r.unknown_crowd_cap);
        set(&mut t.eigentrust_alpha, r.eigentrust_alpha);
        set(&mut t.eigentrust_iterations, r.eigentrust_iterations);
        set(&mut t.min_trust, r.min_trust);
        set(&mut t.quarantine_below, r.quarantine_below);
        set(&mut s.evaluate_interval_ms, raw.evaluate_interval_ms);
        set(&mut s.follow_interval_ms, raw.follow_interval_ms);
        set(&mut s.history_sample_interval_ms, raw.history_sample_interval_ms);
        set(&mut s.history_retention_ms, raw.history_retention_ms);
        set(&mut s.security_dedup_window_ms, raw.security_dedup_window_ms);
        set(&mut s.batch_retention_ms, raw.batch_retention_ms);
        set(&mut s.max_servers, raw.max_servers);
        set(&mut s.server_retention_ms, raw.server_retention_ms);
        set(&mut s.max_vouches_per_rater, raw.max_vouches_per_rater);
        s.audit_anchor_file = raw.audit_anchor_file;
        s.audit_anchor_key_file = raw.audit_anchor_key_file;
        let (sc, rs) = (&mut s.sidecar, raw.sidecar);
        set(&mut sc.quarantine_min_severity, rs.quarantine_min_severity);
        set(&mut sc.server_budget, rs.server_budget);
        set(&mut sc.new_servers_per_window, rs.new_servers_per_window);
        set(&mut sc.budget_window_ms, rs.budget_window_ms);
        set(&mut sc.release_cooldown_ms, rs.release_cooldown_ms);
        sc.admission_quorum = rs.server_admission_quorum;
        set(&mut sc.provisional_per_sidecar, rs.provisional_per_sidecar);
        set(&mut sc.provisional_retention_ms, rs.provisional_retention_ms);
        set(&mut s.metrics_require_token, raw.metrics_require_token);
        raw.limits.apply(&mut s.limits);
        s.validate()?;
        Ok(s)
    }

    /// Checks every value (also used for settings built in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.trust;
        ms_range("trust.performance_half_life_ms", t.performance_half_life_ms, 1, YEAR_MS)?;
        ms_range("trust.security_half_life_ms", t.security_half_life_ms, 1, YEAR_MS)?;
        positive("trust.prior_successes", t.prior_successes)?;
        positive("trust.prior_failures", t.prior_failures)?;
        in_range("trust.slow_weight", t.slow_weight, 0.0, 1.0)?;
        for (name, v) in ["low", "medium", "high", "critical"].iter().zip(t.severity_penalty) {
            in_range(&format!("trust.severity_penalty.{name}"), v, 0.0, 100.0)?;
        }
        if t.severity_penalty.windows(2).any(|w| matches!(w, [a, b] if a > b)) {
            return Err(err("trust.severity_penalty", "penalties must not decrease with severity (low <= medium <= high <= critical)"));
        }
        in_range("trust.performance_weight", t.performance_weight, 0.0, 1.0)?;
        in_range("trust.reputation_weight", t.reputation_weight, 0.0, 1.0)?;
        let sum = t.performance_weight + t.reputation_weight;
        if (sum - 1.0).abs() > 1e-9 {
            return Err(err(
                "trust.reputation_weight",
                format!("performance_weight + reputation_weight must be 1, got {sum} (set both)"),
            ));
        }
        in_range("trust.reputation_prior", t.reputation_prior, 0.0, 1.0)?;
        positive("trust.reputation_prior_weight", t.reputation_prior_weight)?;
        in_range("trust.unknown_rater_standing", t.unknown_rater_standing, 0.0, 1.0)?;
        in_range("trust.unknown_crowd_cap", t.unknown_crowd_cap, 0.0, 1000.0)?;
        in_range("trust.eigentrust_alpha", t.eigentrust_alpha, 0.01, 1.0)?;
        if !(1..=1000).contains(&t.eigentrust_iterations) {
            return Err(err("trust.eigentrust_iterations", format!("must be in 1..=1000, got {}", t.eigentrust_iterations)));
        }
        in_range("trust.min_trust", t.min_trust, 0.0, 1.0)?;
        in_range("trust.quarantine_below", t.quarantine_below, 0.0, 1.0)?;
        if t.quarantine_below > t.min_trust {
            return Err(err(
                "trust.quarantine_below",
                format!("must not exceed min_trust ({}), got {}", t.min_trust, t.quarantine_below),
            ));
        }
        ms_range("evaluate_interval_ms", self.evaluate_interval_ms, 100, HOUR_MS)?;
        ms_range("follow_interval_ms", self.follow_interval_ms, 50, 60_000)?;
        ms_range("history_sample_interval_ms", self.history_sample_interval_ms, 1_000, 24 * HOUR_MS)?;
        ms_range("history_retention_ms", self.history_retention_ms, 60_000, 90 * 24 * HOUR_MS)?;
        ms_range("security_dedup_window_ms", self.security_dedup_window_ms, 0, YEAR_MS)?;
        ms_range("batch_retention_ms", self.batch_retention_ms, 60_000, YEAR_MS)?;
        if !(1..=1_000_000).contains(&self.max_servers) {
            return Err(err("max_servers", format!("must be in 1..=1000000, got {}", self.max_servers)));
        }
        if self.server_retention_ms != 0 {
            ms_range("server_retention_ms", self.server_retention_ms, HOUR_MS, 10 * YEAR_MS)
                .map_err(|e| err(&e.field, format!("{} (or 0: never forget)", e.message)))?;
        }
        if self.sidecar.server_budget > 1_000_000 {
            return Err(err("sidecar.server_budget", format!("must be in 0..=1000000, got {}", self.sidecar.server_budget)));
        }
        if !(1..=10_000_000).contains(&self.sidecar.new_servers_per_window) {
            return Err(err(
                "sidecar.new_servers_per_window",
                format!("must be in 1..=10000000, got {}", self.sidecar.new_servers_per_window),
            ));
        }
        ms_range("sidecar.budget_window_ms", self.sidecar.budget_window_ms, 1_000, YEAR_MS)?;
        ms_range("sidecar.release_cooldown_ms", self.sidecar.release_cooldown_ms, 0, YEAR_MS)?;
        if let Some(q) = self.sidecar.admission_quorum {
            let most = crate::admission::VOICES;
            if !(1..=most).contains(&q) {
                return Err(err("sidecar.server_admission_quorum", format!("must be in 1..={most}, got {q}")));
            }
        }
        if !(1..=1_000_000).contains(&self.sidecar.provisional_per_sidecar) {
            return Err(err(
                "sidecar.provisional_per_sidecar",
                format!("must be in 1..=1000000, got {}", self.sidecar.provisional_per_sidecar),
            ));
        }
        ms_range("sidecar.provisional_retention_ms", self.sidecar.provisional_retention_ms, 60_000, YEAR_MS)?;
        if !(1..=10_000).contains(&self.max_vouches_per_rater) {
            return Err(err("max_vouches_per_rater", format!("must be in 1..=10000, got {}", self.max_vouches_per_rater)));
        }
        if let Some(key) = &self.audit_anchor_key_file {
            if self.audit_anchor_file.is_none() {
                return Err(err("audit_anchor_key_file", "signs the lines of audit_anchor_file, which is not set"));
            }
            crate::anchor::load_key(key).map_err(|e| err("audit_anchor_key_file", e))?;
        }
        self.limits.validate()?;
        Ok(())
    }
}

/// A token bucket: `per_second` requests on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: f64, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        in_range(&format!("{field}.per_second"), self.per_second, 0.001, 1_000_000.0)?;
        if !(1..=1_000_000).contains(&self.burst) {
            return Err(err(&format!("{field}.burst"), format!("must be in 1..=1000000, got {}", self.burst)));
        }
        Ok(())
    }
}

/// The HTTP service's protections: a token bucket per caller (per token name, by role; per peer
/// address for requests without a known token), a cap on requests in flight and on open
/// connections, and timeouts for headers and for whole requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub sidecar: Rate,
    pub rater: Rate,
    pub scanner: Rate,
    pub operator: Rate,
    pub reader: Rate,
    /// Per peer IP address, for requests without a known token (`/healthz` is not limited).
    pub unauthenticated: Rate,
    /// Peer addresses whose bucket is remembered (the least recently seen are forgotten first).
    pub tracked_addresses: usize,
    /// Requests being handled at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Open connections; past it the listener stops accepting until one closes.
    pub max_connections: usize,
    /// Open connections from one peer address; past it that peer's new connections are closed
    /// at once (others are still accepted).
    pub max_connections_per_peer: usize,
    /// A request's body must have arrived within this (408 otherwise). It is read before the
    /// request takes one of the `max_concurrent_requests` slots, so a client that trickles its
    /// body holds a connection, never a slot. (The request deadline still applies if shorter.)
    pub body_timeout_ms: u64,
    /// A request (its body read and its work done) must finish within this, or gets 408/503.
    pub request_timeout_ms: u64,
    /// A client must send a request's headers within this after the connection opened or the
    /// previous answer (idle keep-alive connections are closed after it too).
    pub header_read_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A sidecar reports and polls every 0.5-5 s (2-4 requests/s at most); several sidecars
            // may share a token, and a sidecar resends its batches after an outage.
            sidecar: Rate::new(50.0, 200),
            rater: Rate::new(5.0, 30),
            // A scan sends a burst of findings.
            scanner: Rate::new(20.0, 200),
            operator: Rate::new(20.0, 100),
            // Dashboards and scripts poll.
            reader: Rate::new(50.0, 200),
            unauthenticated: Rate::new(5.0, 20),
            tracked_addresses: 10_000,
            max_concurrent_requests: 256,
            max_connections: 1024,
            max_connections_per_peer: 64,
            body_timeout_ms: 2_000,
            request_timeout_ms: 15_000,
            header_read_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    /// The bucket of a caller with `role`.
    pub fn rate(&self, role: crate::auth::Role) -> Rate {
        use crate::auth::Role;
        match role {
            Role::Sidecar => self.sidecar,
            Role::Rater => self.rater,
            Role::Scanner => self.scanner,
            Role::Operator => self.operator,
            Role::Reader => self.reader,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, r) in [
            ("sidecar", self.sidecar),
            ("rater", self.rater),
            ("scanner", self.scanner),
            ("operator", self.operator),
            ("reader", self.reader),
            ("unauthenticated", self.unauthenticated),
        ] {
            r.validate(&format!("limits.rates.{name}"))?;
        }
        let count = |field: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(err(field, format!("must be in {lo}..={hi}, got {v}")))
            }
        };
        count("limits.tracked_addresses", self.tracked_addresses, 16, 10_000_000)?;
        count("limits.max_concurrent_requests", self.max_concurrent_requests, 1, 100_000)?;
        count("limits.max_connections", self.max_connections, 1, 1_000_000)?;
        count("limits.max_connections_per_peer", self.max_connections_per_peer, 1, 1_000_000)?;
        ms_range("limits.request_timeout_ms", self.request_timeout_ms, 100, 600_000)?;
        ms_range("limits.body_timeout_ms", self.body_timeout_ms, 100, 600_000)?;
        ms_range("limits.header_read_timeout_ms", self.header_read_timeout_ms, 100, 600_000)?;
        Ok(())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    rates: RawRates,
    tracked_addresses: Option<usize>,
    max_concurrent_requests: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_peer: Option<usize>,
    body_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    header_read_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRates {
    sidecar: Option<Rate>,
    rater: Option<Rate>,
    scanner: Option<Rate>,
    operator: Option<Rate>,
    reader: Option<Rate>,
    unauthenticated: Option<Rate>,
}

impl RawLimits {
    fn apply(self, l: &mut Limits) {
        let r = self.rates;
        set(&mut l.sidecar, r.sidecar);
        set(&mut l.rater, r.rater);
        set(&mut l.scanner, r.scanner);
        set(&mut l.operator, r.operator);
        set(&mut l.reader, r.reader);
        set(&mut l.unauthenticated, r.unauthenticated);
        set(&mut l.tracked_addresses, self.tracked_addresses);
        set(&mut l.max_concurrent_requests, self.max_concurrent_requests);
        set(&mut l.max_connections, self.max_connections);
        set(&mut l.max_connections_per_peer, self.max_connections_per_peer);
        set(&mut l.body_timeout_ms, self.body_timeout_ms);
        set(&mut l.request_timeout_ms, self.request_timeout_ms);
        set(&mut l.header_read_timeout_ms, self.header_read_timeout_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_default() {
        assert_eq!(Settings::from_json(b"{}").unwrap(), Settings::default());
        Settings::default().validate().unwrap();
    }

    #[test]
    fn overrides_apply() {
        let s = Settings::from_json(
            br#"{"trust":{"performance_half_life_ms":5000,"severity_penalty":{"critical":3},"min_trust":0.4},"evaluate_interval_ms":500,"metrics_require_token":true}"#,
        )
        .unwrap();
        assert!(s.metrics_require_token);
        assert_eq!(s.trust.performance_half_life_ms, 5000);
        assert_eq!(s.trust.severity_penalty, [0.02, 0.1, 0.5, 3.0]);
        assert_eq!(s.trust.min_trust, 0.4);
        assert_eq!(s.evaluate_interval_ms, 500);
        let s = Settings::from_json(br#"{"server_retention_ms":0}"#).unwrap();
        assert_eq!(s.server_retention_ms, 0, "0 never forgets");
    }

    #[test]
    fn limits_override_per_role() {
        let s = Settings::from_json(
            br#"{"limits":{"rates":{"sidecar":{"per_second":500,"burst":1000}},"max_connections":10,"header_read_timeout_ms":2000}}"#,
        )
        .unwrap();
        assert_eq!(s.limits.rate(crate::auth::Role::Sidecar), Rate::new(500.0, 1000));
        assert_eq!(s.limits.rate(crate::auth::Role::Reader), Limits::default().reader);
        assert_eq!((s.limits.max_connections, s.limits.header_read_timeout_ms), (10, 2000));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"trust":{"min_trust":2}}"#, "field `trust.min_trust`: must be in [0, 1], got 2"),
            (r#"{"trust":{"bogus":1}}"#, "field `trust.bogus`: unknown field"),
            (r#"{"nope":1}"#, "field `nope`: unknown field"),
            (r#"{"trust":{"performance_half_life_ms":"x"}}"#, "field `trust.performance_half_life_ms`: invalid type"),
            (r#"{"trust":{"performance_half_life_ms":0}}"#, "field `trust.performance_half_life_ms`: must be in 1..="),
            (r#"{"trust":{"performance_weight":0.8}}"#, "field `trust.reputation_weight`: performance_weight + reputation_weight must be 1"),
            (r#"{"trust":{"quarantine_below":0.5}}"#, "field `trust.quarantine_below`: must not exceed min_trust"),
            (r#"{"trust":{"severity_penalty":{"low":5}}}"#, "field `trust.severity_penalty`: penalties must not decrease"),
            (r#"{"trust":{"prior_successes":0}}"#, "field `trust.prior_successes`: must be a positive number"),
            (r#"{"max_servers":0}"#, "field `max_servers`: must be in 1..=1000000"),
            (r#"{"server_retention_ms":60000}"#, "field `server_retention_ms`: must be in 3600000..="),
            (r#"{"audit_anchor_key_file":"k"}"#, "field `audit_anchor_key_file`: signs the lines of audit_anchor_file, which is not set"),
            (r#"{"audit_anchor_file":"a","audit_anchor_key_file":"/nonexistent/anchor.key"}"#, "field `audit_anchor_key_file`: cannot read /nonexistent/anchor.key"),
            (r#"{"limits":{"rates":{"sidecar":{"per_second":0,"burst":5}}}}"#, "field `limits.rates.sidecar.per_second`: must be in"),
            (r#"{"limits":{"rates":{"reader":{"per_second":1,"burst":0}}}}"#, "field `limits.rates.reader.burst`: must be in 1..="),
            (r#"{"limits":{"rates":{"reader":{"per_second":1}}}}"#, "field `limits.rates.reader`: missing field `burst`"),
            (r#"{"limits":{"rates":{"admin":{"per_second":1,"burst":1}}}}"#, "field `limits.rates.admin`: unknown field"),
            (r#"{"limits":{"request_timeout_ms":5}}"#, "field `limits.request_timeout_ms`: must be in 100..="),
            (r#"{"limits":{"max_concurrent_requests":0}}"#, "field `limits.max_concurrent_requests`: must be in 1..="),
            (r#""x""#, "invalid type"),
        ];
        for (json, want) in cases {
            let e = Settings::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
            assert!(e.starts_with("invalid aggregator configuration: "), "{e}");
        }
    }
}
