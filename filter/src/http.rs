//! One agent request through the sidecar.
//!
//! Request headers: find the logical server, ask each cluster's breaker in order (primary,
//! then fallbacks) and route to the first that admits by setting the route header Envoy's
//! `cluster_header` route follows. If none admits, answer with a degraded MCP response (after
//! reading the body, to echo the request's id).
//!
//! Response: judge the answer as it streams past (headers, then JSON or SSE body, bounded),
//! record the verdict on the serving cluster's breaker once, and turn Envoy's own error pages
//! and upstream 5xx into degraded MCP answers.

use crate::breakers;
use crate::host;
use crate::root::Shared;
use mcp_warden_core::breaker::{Admission, CallRecord};
use mcp_warden_core::degrade::{is_modern_protocol, ClusterStatus, DegradedResponse, Reason, Unavailable};
use mcp_warden_core::mcp::classify::{HttpMethod, ResponseHead, ResponseObserver};
use mcp_warden_core::mcp::jsonrpc::{parse_request, ParsedRequest};
use mcp_warden_core::trust::wire::TrustState;
use mcp_warden_core::{FailureKind, Outcome};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

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
#[derive(Debug)]
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
pub struct WardenHttp {
    shared: Rc<Shared>,
    stage: Stage,
    server: usize,
    method: HttpMethod,
    mcp_method: Option<String>,
    mcp_name: Option<String>,
    modern_protocol: bool,
    refusals: Vec<Refusal>,
    request_body: Vec<u8>,
    request_too_big: bool,
    request: Option<ParsedRequest>,
    started_ms: u64,
    observer: Option<ResponseObserver>,
    recorded: bool,
    /// A degraded body that replaces the upstream's (error page or 5xx).
    replacement: Option<Vec<u8>>,
}

impl WardenHttp {
    pub fn new(shared: Rc<Shared>) -> Self {
        WardenHttp {
            shared,
            stage: Stage::PassThrough,
            server: 0,
            method: HttpMethod::Other,
            mcp_method: None,
            mcp_name: None,
            modern_protocol: false,
            refusals: Vec::new(),
            request_body: Vec::new(),
            request_too_big: false,
            request: None,
            started_ms: 0,
            observer: None,
            recorded: false,
            replacement: None,
        }
    }

    fn routed_cluster(&self) -> Option<(usize, Admission)> {
        match self.stage {
            Stage::Routed { cluster, admission } => Some((cluster, admission)),
            _ => None,
        }
    }

    /// Tries the server's clusters in order; returns the first that admits.
    fn choose_cluster(&mut self, now: u64) -> Option<(usize, usize, Admission)> {
        let shared = Rc::clone(&self.shared);
        let server = shared.config.servers.get(self.server)?;
        for (position, &cluster) in server.clusters.iter().enumerate() {
            if let Some(quarantined) = self.untrusted(cluster) {
                if let Some(m) = shared.metrics.cluster(cluster) {
                    host::increment(m.untrusted, 1);
                }
                let retry_after_ms = shared.config.trust.as_ref().map_or(1_000, |t| t.poll_interval_ms);
                self.refusals.push(Refusal { cluster, half_open: false, retry_after_ms, untrusted: Some(quarantined) });
                continue;
            }
            let admission = breakers::admit(&shared.config, &shared.metrics, cluster, now);
            if admission.admitted() {
                return Some((position, cluster, admission));
            }
            if let Some(m) = shared.metrics.cluster(cluster) {
                host::increment(m.rejected, 1);
            }
            self.refusals.push(Refusal {
                cluster,
                half_open: matches!(admission, Admission::Rejected { half_open: true, .. }),
                retry_after_ms: breakers::retry_after_ms(admission),
                untrusted: None,
            });
        }
        None
    }

    /// Whether trust forbids the cluster: `Some(true)` quarantined, `Some(false)` under the
    /// minimum trust (when enforced), `None` allowed or unknown.
    fn untrusted(&self, cluster: usize) -> Option<bool> {
        let t = self.shared.config.trust.as_ref()?;
        let name = &self.shared.config.cluster(cluster)?.name;
        match self.shared.trust.borrow().get(name)?.state {
            TrustState::Quarantined => Some(true),
            TrustState::Degraded if t.enforce_min_trust => Some(false),
            _ => None,
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
        })
    }

    /// The degraded answer for a request no cluster admitted.
    fn refused_response(&self) -> Option<DegradedResponse> {
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
        let reason = if self.refusals.iter().all(|r| r.untrusted.is_some()) {
            Reason::Untrusted { quarantined: self.refusals.iter().any(|r| r.untrusted == Some(true)) }
        } else {
            Reason::CircuitOpen
        };
        let u = self.unavailable(reason, statuses)?;
        Some(self.degraded_for_request(&u))
    }

    fn degraded_for_request(&self, u: &Unavailable<'_>) -> DegradedResponse {
        match self.method {
            HttpMethod::Post if !self.request_too_big => {
                u.respond(self.request.as_ref(), self.mcp_method.as_deref(), self.mcp_name.as_deref())
            }
            _ => u.respond_without_id(),
        }
    }

    fn send_degraded(&mut self, response: DegradedResponse) {
        let retry_after = response.retry_after_s.to_string();
        let served_by = self.shared.config.served_by_header.as_str();
        let why = if self.refusals.iter().all(|r| r.untrusted.is_some()) {
            if self.refusals.iter().any(|r| r.untrusted == Some(true)) { "quarantined" } else { "low_trust" }
        } else {
            "circuit_open"
        };
        let headers = [
            ("content-type", "application/json"),
            ("retry-after", retry_after.as_str()),
            (served_by, "none"),
            ("x-mcp-warden-degraded", why),
        ];
        if let Some(m) = self.shared.metrics.server(self.server) {
            host::increment(m.degraded, 1);
        }
        self.stage = Stage::Answered;
        if let Err(e) = host::send_response(u32::from(response.status), &headers, &response.body) {
            log::warn!("mcp-warden: could not send a degraded answer: {e}");
        }
    }

    fn parse_kept_request(&mut self) {
        if self.request_too_big || self.method != HttpMethod::Post {
            return;
        }
        let body = std::mem::take(&mut self.request_body);
        // An unreadable body is the agent's mistake; the server will say so, and its ids stay unknown.
        self.request = parse_request(&body, self.mcp_method.is_some()).ok();
    }

    /// Records the verdict on the serving cluster's breaker, once. Returns the open interval if
    /// this very call tripped it.
    fn record(&mut self, outcome: Outcome, now: u64) -> Option<u64> {
        if self.recorded {
            return None;
        }
        self.recorded = true;
        let (cluster, admission) = self.routed_cluster()?;
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.config;
        let (probe, epoch) = match admission {
            Admission::Probe { epoch } => (true, epoch),
            Admission::Allowed { epoch } => (false, epoch),
            Admission::Rejected { .. } => return None,
        };
        let metrics = shared.metrics.cluster(cluster);
        let policy = &cfg.cluster(cluster)?.policy;
        let slow = now.saturating_sub(self.started_ms) >= policy.slow_call_duration_ms;
        let failed = match outcome {
            Outcome::Unknown => {
                if probe {
                    breakers::release_probe(cfg, cluster, epoch, now);
                }
                return None;
            }
            Outcome::Success => {
                if let Some(m) = metrics {
                    host::increment(m.success, 1);
                }
                false
            }
            Outcome::Failure(kind) => {
                if let Some(m) = metrics {
                    m.failure(kind);
                }
                if kind == FailureKind::UnknownCluster {
                    log::error!(
                        "mcp-warden: Envoy has no cluster `{}`: check the plugin configuration against the clusters",
                        cfg.cluster(cluster).map_or("", |c| c.name.as_str())
                    );
                }
                true
            }
        };
        if slow {
            if let Some(m) = metrics {
                host::increment(m.slow, 1);
            }
        }
        if cfg.trust.is_some() {
            if let Some(c) = cfg.cluster(cluster) {
                let latency = now.saturating_sub(self.started_ms);
                shared.pending.borrow_mut().record(&c.name, outcome, slow, latency);
            }
        }
        let t = breakers::record(cfg, &shared.metrics, cluster, CallRecord { failed, slow, probe, epoch }, now);
        t.and_then(|t| t.open_for_ms)
    }

    /// Turns a failed upstream answer (Envoy's error page or an upstream 5xx) into a degraded
    /// MCP answer: status, headers now, body in the body callback.
    fn replace_failed_answer(&mut self, kind: FailureKind, cluster: usize, open_for_ms: Option<u64>) {
        let name = match self.shared.config.cluster(cluster) {
            Some(c) => c.name.clone(),
            None => return,
        };
        let retry_after_ms = open_for_ms.unwrap_or(1_000);
        let status = ClusterStatus { cluster: &name, state: if open_for_ms.is_some() { "open" } else { "failed" }, retry_after_ms };
        let Some(u) = self.unavailable(Reason::UpstreamFailed(kind), vec![status]) else { return };
        let response = self.degraded_for_request(&u);
        let retry_after = response.retry_after_s.to_string();
        let status = response.status.to_string();
        let ok = host::set_header(host::RESPONSE, ":status", &status).is_ok()
            && host::set_header(host::RESPONSE, "content-type", "application/json").is_ok()
            && host::set_header(host::RESPONSE, "retry-after", &retry_after).is_ok()
            && host::set_header(host::RESPONSE, "x-mcp-warden-degraded", "upstream_failed").is_ok()
            && host::remove_header(host::RESPONSE, "content-length").is_ok();
        if ok {
            if let Some(m) = self.shared.metrics.server(self.server) {
                host::increment(m.degraded, 1);
            }
            self.replacement = Some(response.body);
        }
    }
}

impl Context for WardenHttp {}

impl HttpContext for WardenHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let cfg = &self.shared.config;
        // The agent never picks the cluster itself.
        let _ = host::remove_header(host::REQUEST, &cfg.route_header);
        let authority = host::header(host::REQUEST, ":authority").unwrap_or_default();
        let path = host::header(host::REQUEST, ":path").unwrap_or_default();
        let Some(server) = cfg.route(&authority, &path) else {
            return Action::Continue;
        };
        self.server = cfg.servers.iter().position(|s| std::ptr::eq(s, server)).unwrap_or(0);
        self.method = match host::header(host::REQUEST, ":method").as_deref() {
            Some("POST") => HttpMethod::Post,
            _ => HttpMethod::Other,
        };
        // A body known to exceed the bound is never held (Envoy would answer 413 past its own
        // buffer limit); it streams on, judged without ids.
        self.request_too_big = host::header(host::REQUEST, "content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|n| n > cfg.request_max_bytes);
        self.mcp_method = host::header(host::REQUEST, "mcp-method");
        self.mcp_name = host::header(host::REQUEST, "mcp-name");
        self.modern_protocol = is_modern_protocol(host::header(host::REQUEST, "mcp-protocol-version").as_deref());
        if let Some(m) = self.shared.metrics.server(self.server) {
            host::increment(m.requests, 1);
        }
        let now = host::now_ms();
        self.started_ms = now;
        match self.choose_cluster(now) {
            Some((position, cluster, admission)) => {
                let shared = Rc::clone(&self.shared);
                let name = shared.config.cluster(cluster).map_or("", |c| c.name.as_str());
                if let Err(e) = host::set_header(host::REQUEST, &shared.config.route_header, name) {
                    log::warn!("mcp-warden: could not set the route header: {e}");
                }
                if let Some(m) = shared.metrics.cluster(cluster) {
                    host::increment(m.requests, 1);
                    if position > 0 {
                        host::increment(m.fallback, 1);
                    }
                }
                self.stage = Stage::Routed { cluster, admission };
                if self.method == HttpMethod::Post && !end_of_stream && !self.request_too_big {
                    // Hold the request until its (bounded) body is read: the id must be known
                    // before Envoy can answer for a refused connection, and MCP bodies are small.
                    return Action::Pause;
                }
                Action::Continue
            }
            None => {
                self.stage = Stage::Refused;
                if end_of_stream || self.method != HttpMethod::Post || self.request_too_big {
                    if let Some(r) = self.refused_response() {
                        self.send_degraded(r);
                    }
                }
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.stage {
            Stage::Routed { .. } if self.method == HttpMethod::Post && !self.request_too_big => {
                // Paused since the headers: the host buffers, and body_size is everything so far.
                if body_size > self.shared.config.request_max_bytes {
                    // Past the bound: let it stream on, unjudged by id.
                    self.request_too_big = true;
                    return Action::Continue;
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                match host::get_buffer(host::REQUEST_BODY, 0, body_size) {
                    Ok(b) => self.request_body = b,
                    Err(e) => {
                        log::debug!("mcp-warden: request body unreadable: {e}");
                        self.request_too_big = true;
                    }
                }
                self.parse_kept_request();
                Action::Continue
            }
            Stage::Refused => {
                // Paused: the host buffers, and body_size is everything so far.
                if body_size > self.shared.config.request_max_bytes {
                    self.request_too_big = true;
                } else if !end_of_stream {
                    return Action::Pause;
                } else {
                    match host::get_buffer(host::REQUEST_BODY, 0, body_size) {
                        Ok(b) => self.request_body = b,
                        Err(_) => self.request_too_big = true,
                    }
                    self.parse_kept_request();
                }
                if let Some(r) = self.refused_response() {
                    self.send_degraded(r);
                }
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some((cluster, _)) = self.routed_cluster() else {
            return Action::Continue;
        };
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.config;
        if let Some(c) = cfg.cluster(cluster) {
            let _ = host::set_header(host::RESPONSE, &cfg.served_by_header, &c.name);
            if let (Some(t), Some(entry)) = (&cfg.trust, shared.trust.borrow().get(&c.name)) {
                let _ = host::set_header(host::RESPONSE, &t.header, &format!("{:.3}", entry.score));
            }
        }
        let status: u16 = host::header(host::RESPONSE, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let content_type = host::header(host::RESPONSE, "content-type");
        // Envoy's own replies carry details other than `via_upstream`; only those need a look.
        let local_reply = if status >= 400 {
            let details = host::property_string(&["response", "code_details"]);
            (details != "via_upstream" && !details.is_empty())
                .then(|| (host::property_u64(&["response", "flags"]), details))
        } else {
            None
        };
        if self.request.is_none() && !self.request_body.is_empty() {
            // The upstream answered before the request's end reached the filter.
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
            let now = host::now_ms();
            let open_for = self.record(outcome, now);
            if let Outcome::Failure(kind) = outcome {
                let rewrite = cfg.degraded.rewrite_upstream_errors
                    && !end_of_stream
                    && (local_reply.is_some() || status >= 500);
                if rewrite {
                    self.replace_failed_answer(kind, cluster, open_for);
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(body) = &self.replacement {
            let new = if end_of_stream { body.as_slice() } else { &[][..] };
            if let Err(e) = host::set_buffer(host::RESPONSE_BODY, 0, body_size, new) {
                log::debug!("mcp-warden: could not replace a response body: {e}");
            }
            return Action::Continue;
        }
        let judging = self.observer.as_ref().is_some_and(|o| o.verdict().is_none());
        if !judging {
            return Action::Continue;
        }
        let chunk = if body_size > 0 {
            host::get_buffer(host::RESPONSE_BODY, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let policy = &self.shared.config.failures;
        let verdict = self.observer.as_mut().and_then(|o| o.on_body(&chunk, end_of_stream, policy));
        if let Some(outcome) = verdict {
            self.record(outcome, host::now_ms());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.recorded || self.routed_cluster().is_none() {
            return;
        }
        // The exchange ended without a verdict: a reset mid-stream, or the agent went away.
        let flags = host::property_u64(&["response", "flags"]);
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
        self.record(outcome, host::now_ms());
    }
}
