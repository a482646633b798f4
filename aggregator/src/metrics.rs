//! The Prometheus registry (served by [`crate::scrape`]): HTTP requests by route and status, what the writes did,
//! store commit latency, and each server's score and state, read from the current publication
//! at scrape time (so they are never older than what sidecars poll).
//!
//! Rendered by `prometheus-client` in the OpenMetrics text format (counters end in `_total`,
//! the body ends with `# EOF`), which Prometheus reads. Scraping needs no token unless the
//! configuration says `metrics_require_token` (then any role's token).

use axum::http::{Method, StatusCode};
use mcp_warden_core::trust::wire::{ServerScore, TrustState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Request duration buckets, seconds: signal commits wait for fsync (milliseconds to tens of ms),
/// polls answer in microseconds.
const HTTP_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
const STORE_BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
const STATES: [TrustState; 3] = [TrustState::Trusted, TrustState::Degraded, TrustState::Quarantined];

fn state_name(s: TrustState) -> &'static str {
    match s {
        TrustState::Trusted => "trusted",
        TrustState::Degraded => "degraded",
        TrustState::Quarantined => "quarantined",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubjectLabels {
    subject: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlagLabels {
    severity: &'static str,
    counted: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByLabels {
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerStateLabels {
    server: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    server: String,
    component: &'static str,
}

type F64Gauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// Every metric of the aggregator, in one registry (no global state: each service has its own).
pub struct Metrics {
    registry: Registry,
    require_token: bool,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    signal_batches: Family<ResultLabels, Counter>,
    signal_reports: Family<ResultLabels, Counter>,
    ratings: Family<SubjectLabels, Counter>,
    flags: Family<FlagLabels, Counter>,
    decisions: Family<ActionLabels, Counter>,
    store_writes: Family<ResultLabels, Counter>,
    store_write_duration: Histogram,
    version: Gauge,
    audit_head: Gauge,
    findings_withheld: Counter,
    servers_refused: Family<ReasonLabels, Counter>,
    servers_admitted: Family<ByLabels, Counter>,
    servers_provisional: Gauge,
    definitions_scanned: Counter,
    servers: Family<StateLabels, Gauge>,
    server_score: Family<ServerLabels, F64Gauge>,
    server_state: Family<ServerStateLabels, Gauge>,
    server_component: Family<ComponentLabels, F64Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("require_token", &self.require_token).finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(require_token: bool) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("mcp_warden_aggregator"),
            require_token,
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            signal_batches: Family::default(),
            signal_reports: Family::default(),
            ratings: Family::default(),
            flags: Family::default(),
            decisions: Family::default(),
            store_writes: Family::default(),
            store_write_duration: Histogram::new(STORE_BUCKETS),
            version: Gauge::default(),
            audit_head: Gauge::default(),
            findings_withheld: Counter::default(),
            servers_refused: Family::default(),
            servers_admitted: Family::default(),
            servers_provisional: Gauge::default(),
            definitions_scanned: Counter::default(),
            servers: Family::default(),
            server_score: Family::default(),
            server_state: Family::default(),
            server_component: Family::default(),
        };
        let r = &mut m.registry;
        r.register("http_requests", "HTTP requests answered, by method, route and status", m.http_requests.clone());
        r.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (to the response head), by method and route",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register(
            "signal_batches",
            "Signal batches from sidecars: applied, or duplicate (a retry of an applied batch)",
            m.signal_batches.clone(),
        );
        r.register(
            "signal_reports",
            "Per-server reports in applied batches: applied, held (the server is provisional), or dropped (a new server \
             past max_servers, new_servers_per_window or provisional_per_sidecar)",
            m.signal_reports.clone(),
        );
        r.register("ratings", "Ratings accepted, by subject (server, or rater: a vouch)", m.ratings.clone());
        r.register("flags", "Scanner flags accepted, by severity and whether they counted (not a repeat)", m.flags.clone());
        r.register(
            "decisions",
            "Audit decisions: quarantine, release and admit by operators, auto_quarantine and forget by the aggregator",
            m.decisions.clone(),
        );
        r.register("store_writes", "Database write transactions, by result (committed, failed)", m.store_writes.clone());
        r.register_with_unit(
            "store_write_duration",
            "Time of one database write transaction, from its start to its commit (fsync included)",
            Unit::Seconds,
            m.store_write_duration.clone(),
        );
        r.register(
            "sidecar_findings_withheld",
            "Sidecar findings recorded but not counted: their credential's uncorroborated findings reached sidecar.server_budget",
            m.findings_withheld.clone(),
        );
        r.register(
            "definitions_scanned",
            "Tool definitions scanned for the mesh (each fingerprint once)",
            m.definitions_scanned.clone(),
        );
        r.register(
            "servers_refused",
            "New servers not tracked: reports dropped or writes refused (507), because the aggregator tracks max_servers, \
             or because a sidecar credential introduced new_servers_per_window already",
            m.servers_refused.clone(),
        );
        r.register(
            "servers_admitted",
            "Servers the aggregator started tracking, by who admitted them: sidecars (server_admission_quorum \
             credentials named it), operator, scanner (a flag), rater (a rating)",
            m.servers_admitted.clone(),
        );
        r.register(
            "servers_provisional",
            "Servers named by fewer sidecar credentials than server_admission_quorum: not tracked, not published, \
             their reports held",
            m.servers_provisional.clone(),
        );
        r.register(
            "audit_head_id",
            "Id of the newest audit entry, as last exported (its hash is in the log and the anchor file)",
            m.audit_head.clone(),
        );
        r.register("scores_version", "Version of the published scores document (its ETag)", m.version.clone());
        r.register("servers", "Servers tracked, by published state", m.servers.clone());
        r.register("server_score", "Published trust score of each server, in [0, 1]", m.server_score.clone());
        r.register(
            "server_state",
            "Published state of each server: 1 for its current state (trusted, degraded, quarantined), 0 for the others",
            m.server_state.clone(),
        );
        r.register(
            "server_component",
            "Components of each server's published score (performance, security, reputation), in [0, 1]",
            m.server_component.clone(),
        );
        // Every series of a bounded label set exists from the start at 0, so that `rate()` and
        // `increase()` see the first event.
        for result in ["applied", "duplicate"] {
            m.signal_batches.get_or_create_owned(&ResultLabels { result });
        }
        for result in ["applied", "held", "dropped"] {
            m.signal_reports.get_or_create_owned(&ResultLabels { result });
        }
        for subject in ["server", "rater"] {
            m.ratings.get_or_create_owned(&SubjectLabels { subject });
        }
        for severity in ["low", "medium", "high", "critical"] {
            for counted in ["true", "false"] {
                m.flags.get_or_create_owned(&FlagLabels { severity, counted });
            }
        }
        for by in ["sidecars", "operator", "scanner", "rater"] {
            m.servers_admitted.get_or_create_owned(&ByLabels { by });
        }
        for reason in ["max_servers", "new_servers_per_window", "provisional_per_sidecar"] {
            m.servers_refused.get_or_create_owned(&ReasonLabels { reason });
        }
        for action in ["quarantine", "release", "auto_quarantine", "forget", "admit"] {
            m.decisions.get_or_create_owned(&ActionLabels { action });
        }
        for result in ["committed", "failed"] {
            m.store_writes.get_or_create_owned(&ResultLabels { result });
        }
        m
    }

    /// Does scraping need a bearer token?
    pub fn require_token(&self) -> bool {
        self.require_token
    }

    /// One answered HTTP request. `route` is the route's pattern (bounded), never the raw path.
    pub fn observe_http(&self, method: &Method, route: &str, status: StatusCode, elapsed: Duration) {
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::HEAD => "HEAD",
            _ => "other",
        };
        let route = route.to_string();
        self.http_requests.get_or_create(&HttpLabels { method, route: route.clone(), status: status.as_u16() }).inc();
        self.http_duration.get_or_create(&RouteLabels { method, route }).observe(elapsed.as_secs_f64());
    }

    pub fn signal_batch(&self, duplicate: bool, applied: usize, dropped: usize) {
        let result = if duplicate { "duplicate" } else { "applied" };
        self.signal_batches.get_or_create(&ResultLabels { result }).inc();
        self.signal_reports.get_or_create(&ResultLabels { result: "applied" }).inc_by(applied as u64);
        if dropped > 0 {
            self.signal_reports.get_or_create(&ResultLabels { result: "dropped" }).inc_by(dropped as u64);
        }
    }

    /// `subject` is `server` or `rater`.
    pub fn rating(&self, subject: &'static str) {
        self.ratings.get_or_create(&SubjectLabels { subject }).inc();
    }

    pub fn flag(&self, severity: &'static str, counted: bool) {
        self.flags.get_or_create(&FlagLabels { severity, counted: if counted { "true" } else { "false" } }).inc();
    }

    /// `action` is `quarantine`, `release`, `auto_quarantine` or `forget` (the audit log's actions).
    pub fn decision(&self, action: &'static str, n: u64) {
        if n > 0 {
            self.decisions.get_or_create(&ActionLabels { action }).inc_by(n);
        }
    }

    pub fn definitions_scanned(&self, n: u64) {
        self.definitions_scanned.inc_by(n);
    }

    /// Reports held for provisional servers.
    pub fn signal_reports_held(&self, n: usize) {
        if n > 0 {
            self.signal_reports.get_or_create(&ResultLabels { result: "held" }).inc_by(n as u64);
        }
    }

    /// A server started being tracked; `by`: `sidecars`, `operator`, `scanner` or `rater`.
    pub fn server_admitted(&self, by: &'static str) {
        self.servers_admitted.get_or_create(&ByLabels { by }).inc();
    }

    /// How many servers are provisional now.
    pub fn servers_provisional(&self, n: usize) {
        self.servers_provisional.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `n` new servers not tracked, for `reason` (`max_servers`, `new_servers_per_window` or
    /// `provisional_per_sidecar`).
    pub fn servers_refused(&self, reason: &'static str, n: u64) {
        self.servers_refused.get_or_create(&ReasonLabels { reason }).inc_by(n);
    }

    pub fn findings_withheld(&self, n: u64) {
        self.findings_withheld.inc_by(n);
    }

    /// The audit chain's head as exported.
    pub fn audit_head(&self, id: i64) {
        self.audit_head.set(id);
    }

    /// One write transaction, committed or not, and how long it took.
    pub fn store_write(&self, committed: bool, elapsed: Duration) {
        let result = if committed { "committed" } else { "failed" };
        self.store_writes.get_or_create(&ResultLabels { result }).inc();
        self.store_write_duration.observe(elapsed.as_secs_f64());
    }

    /// The exposition: first the per-server gauges are set from the published `servers` of
    /// document `version`.
    pub fn render<'a>(&self, version: u64, servers: impl Iterator<Item = &'a ServerScore>) -> Result<String, std::fmt::Error> {
        self.version.set(i64::try_from(version).unwrap_or(i64::MAX));
        let mut counts = [0i64; 3];
        // Only the servers of this document: a forgotten server's series go with it.
        self.server_score.clear();
        self.server_state.clear();
        self.server_component.clear();
        for s in servers {
            let server = s.server.clone();
            self.server_score.get_or_create(&ServerLabels { server: server.clone() }).set(s.score);
            for (i, st) in STATES.iter().enumerate() {
                let current = *st == s.state;
                if let Some(n) = counts.get_mut(i).filter(|_| current) {
                    *n += 1;
                }
                self.server_state
                    .get_or_create(&ServerStateLabels { server: server.clone(), state: state_name(*st) })
                    .set(i64::from(current));
            }
            let b = &s.breakdown;
            for (component, v) in [("performance", b.performance), ("security", b.security), ("reputation", b.reputation)] {
                self.server_component.get_or_create(&ComponentLabels { server: server.clone(), component }).set(v);
            }
        }
        for (st, n) in STATES.iter().zip(counts) {
            self.servers.get_or_create(&StateLabels { state: state_name(*st) }).set(n);
        }
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_escapes_labels() {
        let m = Metrics::new(false);
        m.observe_http(&Method::GET, "/v1/scores", StatusCode::NOT_MODIFIED, Duration::from_millis(2));
        m.observe_http(&Method::DELETE, "unmatched", StatusCode::NOT_FOUND, Duration::from_micros(10));
        m.signal_batch(false, 3, 1);
        m.signal_batch(true, 0, 0);
        m.flag("critical", true);
        m.decision("auto_quarantine", 1);
        m.decision("release", 0);
        m.store_write(true, Duration::from_millis(4));
        m.server_score.get_or_create(&ServerLabels { server: "a\"b\\c".into() }).set(0.5);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        for want in [
            "mcp_warden_aggregator_http_requests_total{method=\"GET\",route=\"/v1/scores\",status=\"304\"} 1",
            "mcp_warden_aggregator_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1",
            "mcp_warden_aggregator_http_request_duration_seconds_bucket{le=\"0.0025\",method=\"GET\",route=\"/v1/scores\"} 1",
            "mcp_warden_aggregator_signal_batches_total{result=\"applied\"} 1",
            "mcp_warden_aggregator_signal_batches_total{result=\"duplicate\"} 1",
            "mcp_warden_aggregator_signal_reports_total{result=\"applied\"} 3",
            "mcp_warden_aggregator_signal_reports_total{result=\"dropped\"} 1",
            "mcp_warden_aggregator_flags_total{severity=\"critical\",counted=\"true\"} 1",
            "mcp_warden_aggregator_decisions_total{action=\"auto_quarantine\"} 1",
            "mcp_warden_aggregator_store_writes_total{result=\"committed\"} 1",
            "mcp_warden_aggregator_store_write_duration_seconds_count 1",
            "mcp_warden_aggregator_server_score{server=\"a\\\"b\\\\c\"} 0.5",
        ] {
            assert!(out.contains(want), "missing `{want}` in:\n{out}");
        }
        for zero in [
            "mcp_warden_aggregator_decisions_total{action=\"release\"} 0",
            "mcp_warden_aggregator_ratings_total{subject=\"rater\"} 0",
            "mcp_warden_aggregator_store_writes_total{result=\"failed\"} 0",
        ] {
            assert!(out.contains(zero), "missing `{zero}` in:\n{out}");
        }
    }
}
