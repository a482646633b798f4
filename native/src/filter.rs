//! One agent request through the native filter.
//!
//! Request headers: find the logical server, ask each cluster's breaker in order (a session's
//! own cluster first) and route to the first that admits, by setting the route header and
//! clearing Envoy's route cache (a dynamic module's header change does not re-pick the route by
//! itself). If none admits, answer with a degraded MCP response once the body (and its id) is
//! read. Response: judge the answer as it streams past, record the verdict on the serving
//! cluster's breaker once, and turn Envoy's own error pages and upstream 5xx into degraded
//! answers.

use crate::abi::{self, FilterEnvoyPtr};
use crate::config::Shared;
use crate::host::{self, CalloutAnswer, Map, Stream};
use crate::state::{self, lock};
use mcp_warden_core::breaker::{Admission, BreakerStore, CallRecord, Transition};
use mcp_warden_core::degrade::{is_modern_protocol, ClusterStatus, DegradedResponse, Reason, Unavailable};
use mcp_warden_core::mcp::classify::{HttpMethod, ResponseHead, ResponseObserver};
use mcp_warden_core::mcp::jsonrpc::{parse_request, ParsedRequest};
use mcp_warden_core::session::SessionTable;
use mcp_warden_core::trust::wire::TrustState;
use mcp_warden_core::{FailureKind, Outcome};
use std::sync::Arc;

/// Envoy's router takes this request header as the upstream timeout, in place of the route's.
const UPSTREAM_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

/// Request headers only Envoy's local reply mapper may read (the wasm filter leaves degraded
/// answers there): an agent never sets them.
const RESERVED_REQUEST_HEADERS: [&str; 2] = ["x-mcp-warden-held-answer", "x-mcp-warden-held-error"];

/// A cluster that refused the request, as remembered for the degraded answer.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    cluster: usize,
    half_open: bool,
    retry_after_ms: u64,
    /// Refused by trust, not by the breaker: `Some(true)` quarantined, `Some(false)` low trust.
    untrusted: Option<bool>,
}

/// Where the request stands.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Not an MCP server this sidecar guards: untouched.
    PassThrough,
    /// Routed to `cluster`; its answer is being judged.
    Routed { cluster: usize, admission: Admission },
    /// No cluster admits: waiting for the body to answer with the request's id.
    Refused,
    /// Answered by the filter itself.
    Answered,
}

/// The filter's state for one request.
pub struct Filter {
    shared: Arc<Shared>,
    stage: Stage,
    server: usize,
    method: HttpMethod,
    deleting: bool,
    mcp_method: Option<String>,
    mcp_name: Option<String>,
    modern_protocol: bool,
    refusals: Vec<Refusal>,
    request_body: Vec<u8>,
    request_too_big: bool,
    request: Option<ParsedRequest>,
    started_ms: u64,
    session: Option<String>,
    observer: Option<ResponseObserver>,
    recorded: bool,
    /// The response headers reached the filter: a local reply can no longer be sent.
    responding: bool,
    /// A degraded body that replaces the upstream's (error page or 5xx).
    replacement: Option<Vec<u8>>,
    /// Test builds: the agent asked this request to panic (at the end of its body).
    #[cfg(feature = "fault-injection")]
    panic_asked: bool,
}

impl Filter {
    pub fn new(shared: Arc<Shared>, _envoy: FilterEnvoyPtr) -> Self {
        Filter {
            shared,
            stage: Stage::PassThrough,
            server: 0,
            method: HttpMethod::Other,
            deleting: false,
            mcp_method: None,
            mcp_name: None,
            modern_protocol: false,
            refusals: Vec::new(),
            request_body: Vec::new(),
            request_too_big: false,
            request: None,
            started_ms: 0,
            session: None,
            observer: None,
            recorded: false,
            responding: false,
            replacement: None,
            #[cfg(feature = "fault-injection")]
            panic_asked: false,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Hooks

    pub fn on_request_headers(&mut self, envoy: FilterEnvoyPtr, end_of_stream: bool) -> u32 {
        let s = Stream(envoy);
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let mut headers = s.headers(Map::Request);
        #[cfg(feature = "fault-injection")]
        if headers.iter().any(|(k, _)| k == "x-mcp-warden-test-panic") {
            self.panic_asked = true;
            self.fault_point(end_of_stream);
        }
        // The agent never picks the cluster itself, nor what Envoy answers in its place.
        for name in std::iter::once(cfg.route_header.as_str()).chain(RESERVED_REQUEST_HEADERS) {
            if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                s.remove_header(Map::Request, name);
            }
        }
        let mut take = |name: &str| headers.iter_mut().find(|(k, _)| k == name).map(|(_, v)| std::mem::take(v));
        let authority = take(":authority").unwrap_or_default();
        let path = take(":path").unwrap_or_default();
        let Some(server) = cfg.route_index(&authority, &path) else {
            return abi::HEADERS_CONTINUE;
        };
        self.server = server;
        let method = take(":method");
        self.method = if method.as_deref() == Some("POST") { HttpMethod::Post } else { HttpMethod::Other };
        self.deleting = method.as_deref() == Some("DELETE");
        // A body known to exceed the bound is never held (Envoy would answer 413 past its own
        // buffer limit); it streams on, judged without ids.
        self.request_too_big = take("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|n| n > cfg.request_max_bytes);
        self.session = take("mcp-session-id");
        self.mcp_method = take("mcp-method");
        self.mcp_name = take("mcp-name");
        self.modern_protocol = is_modern_protocol(take("mcp-protocol-version").as_deref());
        s.increment(shared.metrics.server(server).and_then(|m| m.requests), 1);
        let now = host::now_ms();
        self.started_ms = now;
        match self.choose_cluster(&s, now) {
            Some((position, cluster, admission)) => {
                let name = cfg.cluster(cluster).map_or("", |c| c.name.as_str());
                if s.set_header(Map::Request, &cfg.route_header, name) {
                    s.clear_route_cache();
                } else {
                    log::warn!("mcp-warden: could not set the route header");
                }
                if let (HttpMethod::Post, Some(ms)) = (self.method, &cfg.failover.upstream_timeout_header) {
                    s.set_header(Map::Request, UPSTREAM_TIMEOUT_HEADER, ms);
                }
                if let Some(m) = shared.metrics.cluster(cluster) {
                    s.increment(m.requests, 1);
                    if position > 0 {
                        s.increment(m.fallback, 1);
                    }
                }
                self.stage = Stage::Routed { cluster, admission };
                if let Some(b) = lock(&state::process().retry_budget).as_mut() {
                    b.earn();
                }
                if self.method == HttpMethod::Post && !end_of_stream && !self.request_too_big {
                    // Hold the request until its (bounded) body is read: the id must be known
                    // before Envoy can answer for a refused connection, and MCP bodies are small.
                    return abi::HEADERS_STOP_ITERATION;
                }
                abi::HEADERS_CONTINUE
            }
            None => {
                self.stage = Stage::Refused;
                if end_of_stream || self.method != HttpMethod::Post || self.request_too_big {
                    self.send_refused(&s);
                }
                abi::HEADERS_STOP_ITERATION
            }
        }
    }

    pub fn on_request_body(&mut self, envoy: FilterEnvoyPtr, end_of_stream: bool) -> u32 {
        let s = Stream(envoy);
        #[cfg(feature = "fault-injection")]
        if self.panic_asked {
            self.fault_point(end_of_stream);
        }
        let max = self.shared.config.request_max_bytes;
        match self.stage {
            Stage::Routed { .. } if self.method == HttpMethod::Post && !self.request_too_big => {
                if s.request_body_size() > max {
                    // Past the bound: let it stream on, unjudged by id.
                    self.request_too_big = true;
                    return abi::BODY_CONTINUE;
                }
                if !end_of_stream {
                    return abi::BODY_STOP_AND_BUFFER;
                }
                self.request_body = s.request_body();
                self.parse_kept_request();
                abi::BODY_CONTINUE
            }
            Stage::Refused => {
                if s.request_body_size() > max {
                    self.request_too_big = true;
                } else if !end_of_stream {
                    return abi::BODY_STOP_AND_BUFFER;
                } else {
                    self.request_body = s.request_body();
                    self.parse_kept_request();
                }
                self.send_refused(&s);
                abi::BODY_STOP_NO_BUFFER
            }
            Stage::Answered => abi::BODY_STOP_NO_BUFFER,
            _ => abi::BODY_CONTINUE,
        }
    }

    pub fn on_request_trailers(&mut self, envoy: FilterEnvoyPtr) -> u32 {
        // Trailers end the request: a body held until its end is complete now.
        if let Stage::Routed { .. } = self.stage {
            if self.method == HttpMethod::Post && !self.request_too_big && self.request.is_none() {
                self.request_body = Stream(envoy).request_body();
                self.parse_kept_request();
            }
        }
        abi::TRAILERS_CONTINUE
    }

    pub fn on_response_headers(&mut self, envoy: FilterEnvoyPtr, end_of_stream: bool) -> u32 {
        self.responding = true;
        let Stage::Routed { cluster, .. } = self.stage else { return abi::HEADERS_CONTINUE };
        let s = Stream(envoy);
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        if let Some(c) = cfg.cluster(cluster) {
            s.set_header(Map::Response, &cfg.served_by_header, &c.name);
            if let Some(t) = &cfg.trust {
                let score = state::process().trust.read().ok().and_then(|table| table.get(&c.name)).map(|e| e.score);
                if let Some(score) = score {
                    s.set_header(Map::Response, &t.header, &format!("{score:.3}"));
                }
            }
        }
        let status: u16 = s.header(Map::Response, ":status").and_then(|v| v.parse().ok()).unwrap_or(0);
        if self.session.is_none() && self.is_method("initialize") {
            if let Some(sid) = s.header(Map::Response, "mcp-session-id") {
                self.session_started(&sid, cluster);
            }
        }
        let content_type = s.header(Map::Response, "content-type");
        // Envoy's own replies carry details other than `via_upstream`; only those need a look.
        let local_reply = if status >= 400 {
            let details = s.response_code_details();
            (details != "via_upstream" && !details.is_empty()).then(|| (s.response_flags(), details))
        } else {
            None
        };
        if self.request.is_none() && !self.request_body.is_empty() && !self.request_too_big {
            self.parse_kept_request();
        }
        let expected = match (&self.request, self.method) {
            (Some(r), HttpMethod::Post) => Some(r.expected_ids().cloned().collect()),
            _ => None,
        };
        let mut observer = ResponseObserver::new(expected, cfg.inspect_max_bytes);
        let head = ResponseHead {
            status,
            content_type: content_type.as_deref(),
            local_reply: local_reply.as_ref().map(|(f, d)| (*f, d.as_str())),
        };
        let verdict = observer.on_headers(head, self.method, &cfg.failures);
        self.observer = Some(observer);
        if let Some(outcome) = verdict {
            let open_for = self.record(&s, outcome, host::now_ms());
            if let Outcome::Failure(kind) = outcome {
                if cfg.degraded.rewrite_upstream_errors && !end_of_stream && (local_reply.is_some() || status >= 500) {
                    self.replace_failed_answer(&s, kind, cluster, open_for);
                }
            }
        }
        abi::HEADERS_CONTINUE
    }

    pub fn on_response_body(&mut self, envoy: FilterEnvoyPtr, end_of_stream: bool) -> u32 {
        let s = Stream(envoy);
        if let Some(body) = &self.replacement {
            s.replace_response_body(if end_of_stream { body } else { b"" });
            return abi::BODY_CONTINUE;
        }
        if self.observer.as_ref().is_none_or(|o| o.verdict().is_some()) {
            return abi::BODY_CONTINUE;
        }
        let chunk = s.response_frame();
        let policy = &self.shared.config.failures;
        let verdict = self.observer.as_mut().and_then(|o| o.on_body(&chunk, end_of_stream, policy));
        if let Some(outcome) = verdict {
            self.record(&s, outcome, host::now_ms());
        }
        abi::BODY_CONTINUE
    }

    pub fn on_stream_complete(&mut self, envoy: FilterEnvoyPtr) {
        let s = Stream(envoy);
        if let (true, Some(sid), Some(srv)) = (self.deleting, self.session.as_deref(), self.shared.config.servers.get(self.server)) {
            if let Err(e) = self.sessions().forget(&srv.name, sid) {
                log::debug!("mcp-warden: could not forget a session of `{}`: {e}", srv.name);
            }
        }
        if self.recorded || !matches!(self.stage, Stage::Routed { .. }) {
            return;
        }
        // The exchange ended without a verdict: a reset mid-stream, or the agent went away.
        let flags = s.response_flags();
        use mcp_warden_core::mcp::classify::envoy_flags::*;
        let upstream_fault = UPSTREAM_REMOTE_RESET
            | UPSTREAM_CONNECTION_TERMINATION
            | UPSTREAM_REQUEST_TIMEOUT
            | STREAM_IDLE_TIMEOUT
            | UPSTREAM_PROTOCOL_ERROR
            | UPSTREAM_CONNECTION_FAILURE;
        let outcome = if flags & upstream_fault != 0 {
            Outcome::Failure(mcp_warden_core::mcp::classify::failure_from_envoy(flags, "", 0))
        } else {
            Outcome::Unknown
        };
        self.record(&s, outcome, host::now_ms());
    }

    pub fn on_scheduled(&mut self, _envoy: FilterEnvoyPtr, _event: u64) {}

    pub fn on_callout_done(&mut self, _envoy: FilterEnvoyPtr, _id: u64, _answer: CalloutAnswer) {}

    /// After a panic in a request hook: answer the request with a well-formed JSON-RPC error
    /// (its id when the body was read) unless an answer is already on its way.
    pub fn on_panic(&mut self, envoy: FilterEnvoyPtr, stop: u32) -> u32 {
        if self.responding || matches!(self.stage, Stage::Answered) {
            return stop;
        }
        self.stage = Stage::Answered;
        let s = Stream(envoy);
        let body = s.request_body();
        let (status, answer) = panic_answer(&body);
        s.increment(self.shared.metrics.server(self.server).and_then(|m| m.degraded), 1);
        let headers = [
            ("content-type", "application/json"),
            ("retry-after", "1"),
            (self.shared.config.served_by_header.as_str(), "none"),
            ("x-mcp-warden-degraded", "internal_error"),
        ];
        s.send_response(status, &headers, &answer, "mcp_warden_internal_error");
        stop
    }

    // -----------------------------------------------------------------------------------------
    // Decisions

    #[cfg(feature = "fault-injection")]
    fn fault_point(&self, end_of_stream: bool) {
        if end_of_stream {
            #[allow(clippy::panic)]
            {
                panic!("fault injection: a test asked this request to panic");
            }
        }
    }

    fn sessions(&self) -> SessionTable<'static, state::MemoryStore> {
        SessionTable::new(&state::process().store, self.shared.config.failover.max_sessions)
    }

    /// The cluster that created the agent's session, if the sidecar saw it start.
    fn pinned(&self) -> Option<usize> {
        let cfg = &self.shared.config;
        let (sid, srv) = (self.session.as_deref()?, cfg.servers.get(self.server)?);
        let record = self.sessions().lookup(&srv.name, sid, host::now_ms() / 1_000)?;
        srv.clusters.iter().copied().find(|&c| cfg.cluster(c).is_some_and(|c| c.name == record.origin))
    }

    fn session_started(&self, sid: &str, cluster: usize) {
        let cfg = &self.shared.config;
        let (Some(srv), Some(c)) = (cfg.servers.get(self.server), cfg.cluster(cluster)) else { return };
        if let Err(e) = self.sessions().start(&srv.name, sid, &c.name, &self.request_body, host::now_ms() / 1_000) {
            log::warn!("mcp-warden: could not remember a session of `{}`: {e}", srv.name);
        }
    }

    /// Tries the server's clusters in order (the session's own first); the first that admits.
    fn choose_cluster(&mut self, s: &Stream, now: u64) -> Option<(usize, usize, Admission)> {
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let server = cfg.servers.get(self.server)?;
        let pinned = self.pinned();
        let first = pinned.and_then(|p| server.clusters.iter().position(|&c| c == p));
        let chain = first.into_iter().chain((0..server.clusters.len()).filter(|&i| Some(i) != first));
        for position in chain {
            let Some(&cluster) = server.clusters.get(position) else { continue };
            let metrics = shared.metrics.cluster(cluster);
            if let Some(quarantined) = self.untrusted(cluster) {
                s.increment(metrics.and_then(|m| m.untrusted), 1);
                let retry_after_ms = cfg.trust.as_ref().map_or(1_000, |t| t.poll_interval_ms);
                self.refusals.push(Refusal { cluster, half_open: false, retry_after_ms, untrusted: Some(quarantined) });
                continue;
            }
            let admission = self.admit(s, cluster, now);
            if admission.admitted() {
                return Some((position, cluster, admission));
            }
            s.increment(metrics.and_then(|m| m.rejected), 1);
            let half_open = matches!(admission, Admission::Rejected { half_open: true, .. });
            if !half_open && cfg.trust.is_some() {
                if let Some(c) = cfg.cluster(cluster) {
                    crate::trust::pending().record_refused(&c.name);
                }
            }
            let retry_after_ms = match admission {
                Admission::Rejected { retry_after_ms, .. } => retry_after_ms,
                _ => 0,
            };
            self.refusals.push(Refusal { cluster, half_open, retry_after_ms, untrusted: None });
        }
        None
    }

    /// Whether trust forbids the cluster: `Some(true)` quarantined, `Some(false)` under the
    /// minimum trust (when enforced), `None` allowed or unknown.
    fn untrusted(&self, cluster: usize) -> Option<bool> {
        let t = self.shared.config.trust.as_ref()?;
        let name = &self.shared.config.cluster(cluster)?.name;
        let entry = state::process().trust.read().ok()?.get(name)?;
        match entry.state {
            TrustState::Quarantined => Some(true),
            TrustState::Degraded if t.enforce_min_trust => Some(false),
            _ => None,
        }
    }

    /// May a call go to this cluster now? A breaker that cannot be read admits (the breaker
    /// must never be the reason traffic stops).
    fn admit(&self, s: &Stream, cluster: usize, now: u64) -> Admission {
        let Some(c) = self.shared.config.cluster(cluster) else { return Admission::Allowed { epoch: 0 } };
        let breaker = BreakerStore { store: &state::process().store, key: &c.breaker_key, policy: &c.policy };
        match breaker.admit(now) {
            Ok((admission, transition)) => {
                self.report(s, cluster, transition);
                admission
            }
            Err(e) => {
                log::warn!("mcp-warden: breaker of `{}` unreadable, admitting: {e}", c.name);
                Admission::Allowed { epoch: 0 }
            }
        }
    }

    /// Logs and counts a transition this call performed (exactly once per transition).
    fn report(&self, s: &Stream, cluster: usize, t: Option<Transition>) {
        let (Some(t), Some(c)) = (t, self.shared.config.cluster(cluster)) else { return };
        match t.open_for_ms {
            Some(ms) => log::info!("mcp-warden: breaker `{}` {} -> {}: {}; open for {} ms", c.name, t.from.name(), t.to.name(), t.reason, ms),
            None => log::info!("mcp-warden: breaker `{}` {} -> {}: {}", c.name, t.from.name(), t.to.name(), t.reason),
        }
        if let Some(m) = self.shared.metrics.cluster(cluster) {
            s.set_gauge(m.state, t.to.gauge());
            s.increment(m.transition(t.to), 1);
        }
    }

    fn parse_kept_request(&mut self) {
        if self.request_too_big || self.method != HttpMethod::Post {
            return;
        }
        // An unreadable body is the agent's mistake; the server will say so.
        self.request = parse_request(&self.request_body, self.mcp_method.is_some()).ok();
    }

    /// Whether the (single) request is `method`.
    fn is_method(&self, method: &str) -> bool {
        let m = self.mcp_method.as_deref().or_else(|| self.request.as_ref()?.entries.first()?.method.as_deref());
        m == Some(method)
    }

    /// Records the verdict on the serving cluster's breaker, once. Returns the open interval if
    /// this very call tripped it.
    fn record(&mut self, s: &Stream, outcome: Outcome, now: u64) -> Option<u64> {
        if self.recorded {
            return None;
        }
        self.recorded = true;
        let Stage::Routed { cluster, admission } = self.stage else { return None };
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let (probe, epoch) = match admission {
            Admission::Probe { epoch } => (true, epoch),
            Admission::Allowed { epoch } => (false, epoch),
            Admission::Rejected { .. } => return None,
        };
        let c = cfg.cluster(cluster)?;
        let metrics = shared.metrics.cluster(cluster);
        let breaker = BreakerStore { store: &state::process().store, key: &c.breaker_key, policy: &c.policy };
        let slow = now.saturating_sub(self.started_ms) >= c.policy.slow_call_duration_ms;
        let failed = match outcome {
            Outcome::Unknown => {
                if probe {
                    if let Err(e) = breaker.release_probe(epoch, now) {
                        log::debug!("mcp-warden: could not release a probe on `{}`: {e}", c.name);
                    }
                }
                return None;
            }
            Outcome::Success => {
                s.increment(metrics.and_then(|m| m.success), 1);
                false
            }
            Outcome::Failure(kind) => {
                s.increment(metrics.and_then(|m| m.failure(kind)), 1);
                if kind == FailureKind::UnknownCluster {
                    log::error!("mcp-warden: Envoy has no cluster `{}`: check the plugin configuration against the clusters", c.name);
                }
                true
            }
        };
        if slow {
            s.increment(metrics.and_then(|m| m.slow), 1);
        }
        if cfg.trust.is_some() {
            crate::trust::pending().record(&c.name, outcome, slow, now.saturating_sub(self.started_ms));
        }
        match breaker.record(CallRecord { failed, slow, probe, epoch }, now) {
            Ok((_, transition)) => {
                self.report(s, cluster, transition);
                transition.and_then(|t| t.open_for_ms)
            }
            Err(e) => {
                log::warn!("mcp-warden: could not record a call on `{}`: {e}", c.name);
                None
            }
        }
    }

    fn unavailable<'a>(&'a self, reason: Reason, statuses: Vec<ClusterStatus<'a>>) -> Option<Unavailable<'a>> {
        let cfg = &self.shared.config;
        let server = cfg.servers.get(self.server)?;
        Some(Unavailable {
            server: &server.name,
            reason,
            clusters: statuses,
            fallbacks_configured: server.clusters.len().saturating_sub(1),
            error_code: cfg.degraded.error_code,
            modern_protocol: self.modern_protocol,
            maybe_ran: false,
            detail: None,
        })
    }

    fn degraded_for_request(&self, u: &Unavailable<'_>) -> DegradedResponse {
        match self.method {
            HttpMethod::Post if !self.request_too_big => {
                u.respond(self.request.as_ref(), self.mcp_method.as_deref(), self.mcp_name.as_deref())
            }
            _ => u.respond_without_id(),
        }
    }

    /// Answers a request no cluster admitted.
    fn send_refused(&mut self, s: &Stream) {
        let cfg = &self.shared.config;
        let statuses = self
            .refusals
            .iter()
            .filter_map(|r| {
                let state = match (r.untrusted, r.half_open) {
                    (Some(true), _) => "quarantined",
                    (Some(false), _) => "low_trust",
                    (None, true) => "half_open",
                    (None, false) => "open",
                };
                Some(ClusterStatus { cluster: &cfg.cluster(r.cluster)?.name, state, retry_after_ms: r.retry_after_ms })
            })
            .collect();
        let all_untrusted = self.refusals.iter().all(|r| r.untrusted.is_some());
        let quarantined = self.refusals.iter().any(|r| r.untrusted == Some(true));
        let (reason, why) = match (all_untrusted, quarantined) {
            (true, true) => (Reason::Untrusted { quarantined: true }, "quarantined"),
            (true, false) => (Reason::Untrusted { quarantined: false }, "low_trust"),
            _ => (Reason::CircuitOpen, "circuit_open"),
        };
        let Some(response) = self.unavailable(reason, statuses).map(|u| self.degraded_for_request(&u)) else { return };
        let retry_after = response.retry_after_s.to_string();
        let headers = [
            ("content-type", "application/json"),
            ("retry-after", retry_after.as_str()),
            (cfg.served_by_header.as_str(), "none"),
            ("x-mcp-warden-degraded", why),
        ];
        s.increment(self.shared.metrics.server(self.server).and_then(|m| m.degraded), 1);
        self.stage = Stage::Answered;
        s.send_response(response.status, &headers, &response.body, "mcp_warden_degraded");
    }

    /// Turns a failed upstream answer (Envoy's error page or an upstream 5xx) into a degraded
    /// MCP answer: status and headers now, the body in the body hook.
    fn replace_failed_answer(&mut self, s: &Stream, kind: FailureKind, cluster: usize, open_for_ms: Option<u64>) {
        let Some(name) = self.shared.config.cluster(cluster).map(|c| c.name.clone()) else { return };
        let state = if open_for_ms.is_some() { "open" } else { "failed" };
        let status = ClusterStatus { cluster: &name, state, retry_after_ms: open_for_ms.unwrap_or(1_000) };
        let Some(response) = self.unavailable(Reason::UpstreamFailed(kind), vec![status]).map(|u| self.degraded_for_request(&u))
        else {
            return;
        };
        let ok = s.set_header(Map::Response, ":status", &response.status.to_string())
            && s.set_header(Map::Response, "content-type", "application/json")
            && s.set_header(Map::Response, "retry-after", &response.retry_after_s.to_string())
            && s.set_header(Map::Response, "x-mcp-warden-degraded", "upstream_failed");
        if ok {
            s.remove_header(Map::Response, "content-length");
            s.increment(self.shared.metrics.server(self.server).and_then(|m| m.degraded), 1);
            self.replacement = Some(response.body);
        }
    }
}

/// The answer to a request whose hook panicked: JSON-RPC "internal error" with the request's
/// id (200), or without an id (503) when the body was not read or is not a request.
fn panic_answer(body: &[u8]) -> (u16, Vec<u8>) {
    let id = parse_request(body, false)
        .ok()
        .filter(|r| !r.batch)
        .and_then(|r| r.entries.into_iter().next())
        .and_then(|e| e.id);
    let status = if id.is_some() { 200 } else { 503 };
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": -32603,
            "message": "mcp-warden: internal error in the sidecar; the request was not forwarded. Retry in 1 s.",
            "data": {"reason": "internal_error", "retry_after": 1}
        }
    });
    (status, answer.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::panic_answer;

    #[test]
    fn a_panic_answer_echoes_the_id_or_says_it_has_none() {
        let (status, body) = panic_answer(br#"{"jsonrpc":"2.0","id":"a7","method":"tools/call","params":{"name":"x"}}"#);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, &v["id"], &v["error"]["code"]), (200, &serde_json::json!("a7"), &serde_json::json!(-32603)));
        for unreadable in [&b""[..], b"not json", br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#] {
            let (status, body) = panic_answer(unreadable);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!((status, &v["id"]), (503, &serde_json::Value::Null), "{unreadable:?}");
        }
    }
}
