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
use crate::inspect;
use crate::root::Shared;
use crate::sessions;
use mcp_warden_core::breaker::{Admission, CallRecord};
use mcp_warden_core::degrade::{is_modern_protocol, ClusterStatus, DegradedResponse, Reason, Unavailable};
use mcp_warden_core::inspect::ListKind;
use mcp_warden_core::mcp::classify::{HttpMethod, ResponseHead, ResponseObserver};
use mcp_warden_core::mcp::jsonrpc::{parse_request, ParsedRequest};
use mcp_warden_core::trust::wire::TrustState;
use mcp_warden_core::{FailureKind, Outcome};
use proxy_wasm::traits::{Context, HttpContext};
use mcp_warden_core::retry;
use mcp_warden_core::session::SessionRecord;
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;

/// Envoy's router takes this request header as the upstream timeout, in place of the route's.
const UPSTREAM_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

/// A JSON answer's headers are held until its body is complete up to this size (then they go on).
const JSON_HOLD_MAX_BYTES: usize = 256 * 1024;

/// Most answer templates a VM keeps (then it starts over).
const MAX_ANSWER_TEMPLATES: usize = 256;

/// Degraded answers cut around their id (see `Unavailable::answer_template`), per (cluster,
/// modern protocol, whether it is a `tools/call`, the tool's name).
pub type AnswerTemplates = std::collections::HashMap<(usize, bool, bool, Option<String>), (String, String)>;

/// Request header holding the answer (503, no id) Envoy's local reply mapper gives for a request
/// without an id (a notification) if Envoy answers by itself during a hold.
const HELD_ERROR_HEADER: &str = "x-mcp-warden-held-error";

/// Request header holding the answer Envoy's local reply mapper gives if Envoy answers by itself
/// during a hold (see `WardenHttp::leave_answer_for_envoy`).
const HELD_ANSWER_HEADER: &str = "x-mcp-warden-held-answer";

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"];

/// A cluster that refused the request, as remembered for the degraded answer.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    cluster: usize,
    half_open: bool,
    retry_after_ms: u64,
    /// Refused by trust, not by the breaker: `Some(true)` quarantined, `Some(false)` low trust.
    untrusted: Option<bool>,
}

/// The steps of opening a session on `cluster` for an agent session created elsewhere (or
/// expired there). Then the paused request goes on, or, while retrying, is sent again.
#[derive(Debug, Clone)]
enum Establish {
    /// Waiting for the request body before starting.
    Pending,
    /// `initialize` replayed on the cluster.
    Initialize { token: u32, cluster: usize },
    /// `notifications/initialized` sent with the cluster's new session id.
    Initialized { token: u32, cluster: usize, session: String },
}

/// Which session id a request of the agent's session carries to a given cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SessionOn {
    /// No session: nothing to carry.
    None,
    /// The cluster created the agent's session: its own id.
    Agent,
    /// The sidecar opened this session there for the agent.
    Mapped(String),
    /// None yet: the sidecar can open one (it kept the agent's `initialize`).
    Open,
    /// A session the sidecar never saw start: it cannot be moved.
    Unknown,
}

/// Where the request stands.
#[derive(Debug)]
enum Stage {
    /// Not an MCP server this sidecar guards: untouched.
    PassThrough,
    /// Routed to `cluster` (at `position` in the server's chain); its answer is being judged.
    Routed { cluster: usize, position: usize, admission: Admission },
    /// The routed call failed and is being sent again to `cluster` (a fallback, or the same
    /// cluster after it expired the session) by the filter; `token` is `None` while a session
    /// is being opened there first.
    Retrying {
        cluster: usize,
        admission: Admission,
        token: Option<u32>,
        failed: usize,
        failure: FailureKind,
        since_ms: u64,
    },
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
    /// When the request (its end) went on to Envoy's router, which then starts its timer.
    forwarded_ms: u64,
    /// While a failed answer is held back: when the calls the filter makes must have ended.
    hold_until_ms: Option<u64>,
    /// The request header the degraded answer was left in for Envoy (`HELD_ANSWER_HEADER` or
    /// `HELD_ERROR_HEADER`; taken back before the filter answers itself).
    left_answer: Option<&'static str>,
    /// A 200 JSON answer whose headers are held until its body is complete (see
    /// `hold_json_answer`).
    json_hold: bool,
    observer: Option<ResponseObserver>,
    recorded: bool,
    /// A degraded body that replaces the upstream's (error page or 5xx).
    replacement: Option<Vec<u8>>,
    /// The agent's `Mcp-Session-Id`, if any.
    session: Option<String>,
    /// What the sidecar knows of the agent's session (which cluster created it, mapped sessions).
    record: Option<SessionRecord>,
    /// The cluster that created the agent's session: its requests go there first.
    pinned: Option<usize>,
    /// (the fallback's session id, the agent's): the response header is turned back.
    session_rewrite: Option<(String, String)>,
    /// Opening a session on a fallback for the agent's session before forwarding.
    establishing: Option<Establish>,
    /// The failed call could not be retried because repeating it might do harm.
    maybe_ran: bool,
    /// A copy of a `tools/list` answer, to learn tool hints from (bounded).
    tools_list: Option<(Vec<u8>, bool)>,
    /// The session was renewed once already in this request (a server answered 404).
    renewed: bool,
    /// A list answer held for inspection (its kind, and whether it is SSE).
    held: Option<(ListKind, bool)>,
    /// A bounded copy of a tool result, inspected at its end (and whether it is SSE).
    result_copy: Option<(Vec<u8>, bool)>,
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
            forwarded_ms: 0,
            hold_until_ms: None,
            left_answer: None,
            json_hold: false,
            observer: None,
            recorded: false,
            replacement: None,
            session: None,
            record: None,
            pinned: None,
            session_rewrite: None,
            establishing: None,
            maybe_ran: false,
            tools_list: None,
            renewed: false,
            held: None,
            result_copy: None,
        }
    }

    fn routed_cluster(&self) -> Option<(usize, Admission)> {
        match self.stage {
            Stage::Routed { cluster, admission, .. } => Some((cluster, admission)),
            _ => None,
        }
    }

    /// Tries the server's clusters in order; returns the first that admits.
    fn choose_cluster(&mut self, now: u64) -> Option<(usize, usize, Admission)> {
        let shared = Rc::clone(&self.shared);
        let server = shared.config.servers.get(self.server)?;
        // A session created on a fallback goes back to that fallback first.
        let order = self.pinned.and_then(|p| server.clusters.iter().position(|&c| c == p));
        let chain = order.into_iter().chain((0..server.clusters.len()).filter(|&i| Some(i) != order));
        for position in chain {
            let Some(&cluster) = server.clusters.get(position) else { continue };
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
            if !matches!(admission, Admission::Rejected { half_open: true, .. }) && shared.config.trust.is_some() {
                if let Some(c) = shared.config.cluster(cluster) {
                    shared.pending.borrow_mut().record_refused(&c.name);
                }
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
            maybe_ran: self.maybe_ran,
            detail: None,
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
        let why = if self.refusals.iter().all(|r| r.untrusted.is_some()) {
            if self.refusals.iter().any(|r| r.untrusted == Some(true)) { "quarantined" } else { "low_trust" }
        } else {
            "circuit_open"
        };
        self.send_degraded_as(response, why);
    }

    fn send_degraded_as(&mut self, response: DegradedResponse, why: &str) {
        let retry_after = response.retry_after_s.to_string();
        let served_by = self.shared.config.served_by_header.as_str();
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
        if let Some(header) = self.left_answer.take() {
            let _ = host::remove_header(host::REQUEST, header);
        }
        if let Err(e) = host::send_response(u32::from(response.status), &headers, &response.body) {
            log::warn!("mcp-warden: could not send a degraded answer: {e}");
        }
    }

    fn parse_kept_request(&mut self) {
        if self.request_too_big || self.method != HttpMethod::Post {
            return;
        }
        // An unreadable body is the agent's mistake; the server will say so, and its ids stay unknown.
        // The body is kept: a failed call may be sent again to a fallback.
        self.request = parse_request(&self.request_body, self.mcp_method.is_some()).ok();
    }

    /// Records the verdict on the serving cluster's breaker, once. Returns the open interval if
    /// this very call tripped it.
    fn record(&mut self, outcome: Outcome, now: u64) -> Option<u64> {
        if self.recorded {
            return None;
        }
        self.recorded = true;
        let (cluster, admission) = self.routed_cluster()?;
        if let Outcome::Failure(kind) = outcome {
            // Malformed answers are also a security signal (bad data), not only a failure.
            if let (Some(v), Some((server, name, _))) = (mcp_warden_core::inspect::protocol::from_failure(kind), self.names()) {
                inspect::violation(&self.shared, &server, &name, v);
            }
        }
        self.record_call(cluster, admission, outcome, self.started_ms, now)
    }

    /// Records one call's verdict on a cluster's breaker, stats and trust counts.
    fn record_call(&self, cluster: usize, admission: Admission, outcome: Outcome, started_ms: u64, now: u64) -> Option<u64> {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.config;
        let (probe, epoch) = match admission {
            Admission::Probe { epoch } => (true, epoch),
            Admission::Allowed { epoch } => (false, epoch),
            Admission::Rejected { .. } => return None,
        };
        let metrics = shared.metrics.cluster(cluster);
        let policy = &cfg.cluster(cluster)?.policy;
        let slow = now.saturating_sub(started_ms) >= policy.slow_call_duration_ms;
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
                let latency = now.saturating_sub(started_ms);
                shared.pending.borrow_mut().record(&c.name, outcome, slow, latency);
            }
        }
        let t = breakers::record(cfg, &shared.metrics, cluster, CallRecord { failed, slow, probe, epoch }, now);
        t.and_then(|t| t.open_for_ms)
    }

    /// Whether the (single) request is `method`.
    fn is_method(&self, method: &str) -> bool {
        let m = self.mcp_method.as_deref().or_else(|| self.request.as_ref()?.entries.first()?.method.as_deref());
        m == Some(method)
    }

    /// The session id the agent's request carries to `cluster`.
    fn session_on(&self, cluster: usize) -> SessionOn {
        if self.session.is_none() {
            return SessionOn::None;
        }
        let (Some(record), Some(c)) = (self.record.as_ref(), self.shared.config.cluster(cluster)) else {
            return SessionOn::Unknown;
        };
        if let Some(theirs) = record.mapped.get(&c.name) {
            return SessionOn::Mapped(theirs.clone());
        }
        if record.origin == c.name {
            return SessionOn::Agent;
        }
        if sessions::init_body(&self.shared.config, record).is_some() {
            SessionOn::Open
        } else {
            SessionOn::Unknown
        }
    }

    /// True when the agent's session lives elsewhere and the sidecar must first open one on
    /// `cluster`; sets up the header rewrite when it opened one before.
    fn needs_session_on(&mut self, cluster: usize) -> bool {
        if !self.shared.config.failover.move_sessions {
            return false;
        }
        match self.session_on(cluster) {
            SessionOn::Mapped(theirs) => {
                let _ = host::set_header(host::REQUEST, "mcp-session-id", &theirs);
                self.session_rewrite = self.session.clone().map(|agent| (theirs, agent));
                false
            }
            SessionOn::Open => true,
            _ => false,
        }
    }

    /// Headers of a call the sidecar makes itself on the agent's behalf.
    fn call_headers<'a>(session: Option<&'a str>, version: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![
            (":method", "POST"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        if let Some(s) = session {
            h.push(("mcp-session-id", s));
        }
        if let Some(v) = version {
            h.push(("mcp-protocol-version", v));
        }
        h
    }

    /// Replays the agent's `initialize` on the cluster the request was routed to.
    fn start_establishing(&mut self) {
        let Some((cluster, _)) = self.routed_cluster() else { return };
        self.establish_on(cluster);
    }

    /// Replays the agent's `initialize` on `cluster`.
    fn establish_on(&mut self, cluster: usize) {
        let body = self.record.as_ref().and_then(|r| sessions::init_body(&self.shared.config, r)).unwrap_or_default();
        let token = self.dispatch_to(cluster, None, &body);
        self.establishing = token.map(|token| Establish::Initialize { token, cluster });
        if self.establishing.is_none() {
            self.fail_establishing();
        }
    }

    /// While the upstream's answer is held back and still open, Envoy answers by itself if it
    /// ends badly first (a reset, the route timeout): the response headers are inside the filter
    /// chain, so Envoy sends its reply straight to the agent, past the filter. For that case the
    /// degraded answer is left in a request header, which Envoy's local reply mapper (shipped
    /// configs, docs/DECISIONS.md) sends instead of its error page. Only held requests pay.
    fn leave_answer_for_envoy(&mut self, cluster: usize, kind: FailureKind) {
        let Some(name) = self.shared.config.cluster(cluster).map(|c| c.name.clone()) else { return };
        let status = ClusterStatus { cluster: &name, state: "failed", retry_after_ms: 1_000 };
        let Some(u) = self.unavailable(Reason::UpstreamFailed(kind), vec![status]) else { return };
        let response = self.degraded_for_request(&u);
        // With ids: 200 and the answers; without (a notification): 503 and an error, no id.
        let header = if response.status == 200 { HELD_ANSWER_HEADER } else { HELD_ERROR_HEADER };
        let Ok(text) = std::str::from_utf8(&response.body) else { return };
        self.left_answer = host::set_header(host::REQUEST, header, text).is_ok().then_some(header);
    }

    /// A 200 JSON answer is sent on whole: its headers wait for the end of its body, so that an
    /// upstream that resets or stalls mid-answer makes Envoy answer by itself, and the mapper
    /// then sends the degraded answer left here ("the call may have run") instead of a
    /// truncated body. SSE answers stream on: holding them would hold back their progress.
    fn hold_json_answer(&mut self, cluster: usize) -> bool {
        if !self.shared.config.failover.hold_json_answers
            || self.method != HttpMethod::Post
            || self.request_too_big
            || self.request.is_none()
        {
            return false;
        }
        // Built once per (cluster, protocol, tool) and reused: only the id changes per request.
        let Some(r) = self.request.as_ref().filter(|r| !r.batch) else { return false };
        let Some(id) = r.entries.first().and_then(|e| e.id.as_ref()) else { return false };
        let method = self.mcp_method.as_deref().or(r.entries.first().and_then(|e| e.method.as_deref()));
        let call = method == Some("tools/call");
        let name = if call { self.mcp_name.clone().or_else(|| r.entries.first()?.name.clone()) } else { None };
        let key = (cluster, self.modern_protocol, call, name);
        let shared = Rc::clone(&self.shared);
        let mut templates = shared.answer_templates.borrow_mut();
        if !templates.contains_key(&key) {
            let Some(c) = self.shared.config.cluster(cluster) else { return false };
            let status = ClusterStatus { cluster: &c.name, state: "failed", retry_after_ms: 1_000 };
            let Some(mut u) = self.unavailable(Reason::UpstreamFailed(FailureKind::Reset), vec![status]) else { return false };
            u.maybe_ran = true;
            let Some(t) = u.answer_template(method, key.3.as_deref()) else { return false };
            if templates.len() >= MAX_ANSWER_TEMPLATES {
                templates.clear();
            }
            templates.insert(key.clone(), t);
        }
        let Some((prefix, suffix)) = templates.get(&key) else { return false };
        let answer = format!("{prefix}{id}{suffix}");
        self.left_answer = host::set_header(host::REQUEST, HELD_ANSWER_HEADER, &answer).is_ok().then_some(HELD_ANSWER_HEADER);
        self.json_hold = self.left_answer.is_some();
        self.json_hold
    }

    /// The filter answers itself: Envoy's mapper must not replace that answer.
    fn take_back_answer(&mut self) {
        if let Some(header) = self.left_answer.take() {
            let _ = host::remove_header(host::REQUEST, header);
        }
    }

    /// The time limit of a call the filter makes: the retry time, or what is left of a hold.
    fn call_timeout(&self) -> std::time::Duration {
        let full = self.shared.config.failover.retry_timeout_ms;
        let ms = match self.hold_until_ms {
            Some(until) => until.saturating_sub(host::now_ms()).clamp(1, full),
            None => full,
        };
        std::time::Duration::from_millis(ms)
    }

    /// Starts holding a failed answer of `cluster` back, if there is time before Envoy would
    /// answer itself.
    fn start_hold(&mut self, now: u64, router_done: bool, cluster: usize, kind: FailureKind) -> bool {
        let f = &self.shared.config.failover;
        match retry::hold_budget_ms(now, self.forwarded_ms, f.upstream_timeout_ms, f.retry_timeout_ms, router_done) {
            Some(ms) => {
                self.hold_until_ms = Some(now + ms);
                if !router_done {
                    self.leave_answer_for_envoy(cluster, kind);
                }
                true
            }
            None => {
                log::debug!("mcp-warden: no time left before the route timeout to fail over");
                false
            }
        }
    }

    fn dispatch_to(&self, cluster: usize, session: Option<&str>, body: &[u8]) -> Option<u32> {
        let target = self.shared.config.cluster(cluster)?;
        let path = host::header(host::REQUEST, ":path").unwrap_or_else(|| "/".into());
        let authority = host::header(host::REQUEST, ":authority").unwrap_or_default();
        let version = host::header(host::REQUEST, "mcp-protocol-version");
        let mut headers = Self::call_headers(session, version.as_deref());
        headers.push((":path", path.as_str()));
        headers.push((":authority", authority.as_str()));
        proxy_wasm::hostcalls::dispatch_http_call(&target.name, headers, Some(body), vec![], self.call_timeout()).ok()
    }

    /// Next step of opening a session on a fallback, on each call's answer.
    fn continue_establishing(&mut self, token: u32, has_headers: bool) {
        let status: u16 = if has_headers {
            host::header(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse().ok()).unwrap_or(0)
        } else {
            0
        };
        match self.establishing.clone() {
            Some(Establish::Initialize { token: t, cluster }) if t == token => {
                let sid = host::header(MapType::HttpCallResponseHeaders, "mcp-session-id");
                match (status, sid) {
                    (200, Some(sid)) => {
                        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
                        match self.dispatch_to(cluster, Some(&sid), note) {
                            Some(token) => {
                                self.establishing = Some(Establish::Initialized { token, cluster, session: sid })
                            }
                            None => self.fail_establishing(),
                        }
                    }
                    _ => self.fail_establishing(),
                }
            }
            Some(Establish::Initialized { token: t, cluster, session }) if t == token => {
                if !(200..300).contains(&status) {
                    self.fail_establishing();
                    return;
                }
                self.establishing = None;
                if let Some(agent) = self.session.clone() {
                    sessions::mapped(&self.shared.config, self.server, &agent, cluster, &session);
                    self.session_rewrite = Some((session.clone(), agent));
                }
                if let Some(m) = self.shared.metrics.cluster(cluster) {
                    host::increment(m.session_moved, 1);
                }
                if matches!(self.stage, Stage::Retrying { .. }) {
                    self.send_retry(cluster, Some(&session));
                    return;
                }
                let _ = host::set_header(host::REQUEST, "mcp-session-id", &session);
                // Event ids of another session's stream mean nothing to this one.
                let _ = host::remove_header(host::REQUEST, "last-event-id");
                self.forwarded_ms = host::now_ms();
                if let Err(e) = proxy_wasm::hostcalls::resume_http_request() {
                    log::warn!("mcp-warden: could not resume a request after moving its session: {e:?}");
                }
            }
            _ => {}
        }
    }

    /// The cluster would not open a session: the agent gets a degraded answer.
    fn fail_establishing(&mut self) {
        self.establishing = None;
        if matches!(self.stage, Stage::Retrying { .. }) {
            // Answered like a retry that failed to connect.
            self.finish_retry(0, false);
            return;
        }
        let Some((cluster, _)) = self.routed_cluster() else { return };
        let Some(name) = self.shared.config.cluster(cluster).map(|c| c.name.clone()) else { return };
        let status = ClusterStatus { cluster: &name, state: "failed", retry_after_ms: 1_000 };
        if let Some(u) = self.unavailable(Reason::UpstreamFailed(FailureKind::ConnectFailure), vec![status]) {
            let response = self.degraded_for_request(&u);
            self.send_degraded_as(response, "session_failover_failed");
        }
    }

    /// DELETE of an agent session also ends the sessions the sidecar opened for it elsewhere
    /// (the one on `routed`, the cluster the agent's DELETE itself goes to, is ended by it).
    fn end_mapped_sessions(&self, routed: Option<usize>) {
        let Some(record) = self.record.as_ref() else { return };
        for (cluster, session) in &record.mapped {
            let Some(target) = sessions::cluster_index(&self.shared.config, self.server, cluster) else { continue };
            if Some(target) == routed {
                continue;
            }
            let Some(c) = self.shared.config.cluster(target) else { continue };
            let path = host::header(host::REQUEST, ":path").unwrap_or_else(|| "/".into());
            let authority = host::header(host::REQUEST, ":authority").unwrap_or_default();
            let headers = vec![
                (":method", "DELETE"),
                (":path", path.as_str()),
                (":authority", authority.as_str()),
                ("mcp-session-id", session.as_str()),
            ];
            if let Err(e) = proxy_wasm::hostcalls::dispatch_http_call(&c.name, headers, None, vec![], self.call_timeout()) {
                log::debug!("mcp-warden: could not end a mapped session on `{}`: {e:?}", c.name);
            }
        }
    }

    /// Whether the request is a single `tools/list` (whose answer teaches tool hints).
    fn is_tools_list(&self) -> bool {
        self.is_method("tools/list") && self.request.as_ref().is_none_or(|r| !r.batch)
    }

    /// The list kind of a single list request whose answer is held for inspection.
    fn held_list_kind(&self) -> Option<ListKind> {
        if !self.shared.config.inspector.enabled || self.request.as_ref().is_none_or(|r| r.batch) {
            return None;
        }
        let m = self.mcp_method.as_deref().or_else(|| self.request.as_ref()?.entries.first()?.method.as_deref())?;
        ListKind::from_method(m)
    }

    /// Names for reports: (server, serving cluster).
    fn names(&self) -> Option<(String, String, usize)> {
        let (cluster, _) = self.routed_cluster()?;
        let cfg = &self.shared.config;
        Some((cfg.servers.get(self.server)?.name.clone(), cfg.cluster(cluster)?.name.clone(), cluster))
    }

    /// The degraded answer replacing a blocked one, framed like it.
    fn blocked_body(&self, cluster: &str, rules: &str, sse: bool) -> Vec<u8> {
        let status = ClusterStatus { cluster, state: "blocked", retry_after_ms: 60_000 };
        let Some(mut u) = self.unavailable(Reason::Blocked, vec![status]) else { return Vec::new() };
        u.detail = Some(rules);
        let r = u.respond(self.request.as_ref(), self.mcp_method.as_deref(), self.mcp_name.as_deref());
        if sse {
            inspect::sse_frame(&[&r.body])
        } else {
            r.body
        }
    }

    /// A held list answer: accumulated (Envoy buffers while paused), then inspected whole.
    fn on_held_body(&mut self, kind: ListKind, sse: bool, body_size: usize, end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let limit = shared.config.inspector.limits.max_list_bytes;
        let Some((server, cluster_name, cluster)) = self.names() else {
            self.held = None;
            return Action::Continue;
        };
        if body_size > limit {
            // Too large to hold: passed on uninspected, or blocked, as the policy says.
            self.held = None;
            if let inspect::Decision::Block { rules, .. } = inspect::oversized(&shared, &server, &cluster_name, body_size) {
                let body = self.blocked_body(&cluster_name, &rules, sse);
                let now = if end_of_stream { body.as_slice() } else { &[][..] };
                let _ = host::set_buffer(host::RESPONSE_BODY, 0, body_size, now);
                self.replacement = Some(body);
                if let Some(m) = shared.metrics.cluster(cluster) {
                    host::increment(m.security_blocked, 1);
                }
            }
            self.observer = None;
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.held = None;
        let body = host::get_buffer(host::RESPONSE_BODY, 0, body_size).unwrap_or_default();
        // The breaker's verdict on the whole answer.
        let policy = &shared.config.failures;
        if let Some(outcome) = self.observer.as_mut().and_then(|o| o.on_body(&body, true, policy)) {
            self.record(outcome, host::now_ms());
        }
        let decision = inspect::list_answer(&shared, &server, &cluster_name, kind, &body, sse);
        let m = shared.metrics.cluster(cluster);
        match decision {
            inspect::Decision::Forward => {}
            inspect::Decision::Replace(new) => {
                let _ = host::set_buffer(host::RESPONSE_BODY, 0, body_size, &new);
                if let Some(m) = m {
                    host::increment(m.security_stripped, 1);
                }
            }
            inspect::Decision::Block { rules, .. } => {
                let new = self.blocked_body(&cluster_name, &rules, sse);
                let _ = host::set_buffer(host::RESPONSE_BODY, 0, body_size, &new);
                if let Some(m) = m {
                    host::increment(m.security_blocked, 1);
                }
                if let Some(m) = shared.metrics.server(self.server) {
                    host::increment(m.degraded, 1);
                }
            }
        }
        Action::Continue
    }

    /// Keeps a bounded copy of a tool result and inspects it at its end.
    fn keep_result(&mut self, chunk: &[u8], end_of_stream: bool) {
        let limit = self.shared.config.inspector.limits.max_result_bytes;
        let Some((buf, _)) = self.result_copy.as_mut() else { return };
        if buf.len() + chunk.len() > limit {
            self.result_copy = None;
            return;
        }
        buf.extend_from_slice(chunk);
        if end_of_stream {
            if let (Some((buf, sse)), Some((server, cluster, _))) = (self.result_copy.take(), self.names()) {
                let tool = self.mcp_name.clone().or_else(|| self.request.as_ref()?.entries.first()?.name.clone());
                inspect::tool_result(&self.shared, &server, &cluster, tool.as_deref(), &buf, sse);
            }
        }
    }

    fn keep_tools_list(&mut self, chunk: &[u8], end_of_stream: bool) {
        let limit = self.shared.config.inspect_max_bytes;
        let Some((buf, sse)) = self.tools_list.as_mut() else { return };
        if buf.len() + chunk.len() > limit {
            self.tools_list = None;
            return;
        }
        buf.extend_from_slice(chunk);
        if end_of_stream {
            let sse = *sse;
            if let (Some((buf, _)), Some(server)) = (self.tools_list.take(), self.shared.config.servers.get(self.server)) {
                crate::tools::learn(&server.name, &buf, sse, limit);
            }
        }
    }

    /// Sends a failed call again to the next fallback that admits it, when that is safe.
    /// Returns true when a retry is under way (the upstream's answer is then held back).
    fn try_retry(&mut self, failure: FailureKind, failed: usize, position: usize, now: u64, router_done: bool) -> bool {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.config;
        if !cfg.failover.retry || self.method != HttpMethod::Post || self.request_too_big {
            return false;
        }
        let (Some(request), Some(server)) = (self.request.as_ref(), cfg.servers.get(self.server)) else { return false };
        let catalog = crate::tools::catalog(&server.name);
        let safe = retry::is_safe_to_retry(request, self.mcp_method.as_deref(), self.mcp_name.as_deref(), &catalog, failure);
        if !safe {
            self.maybe_ran = matches!(failure, FailureKind::Reset | FailureKind::Timeout | FailureKind::Http5xx);
            return false;
        }
        let mut next = None;
        for &cluster in server.clusters.iter().skip(position + 1) {
            if self.untrusted(cluster).is_some() {
                continue;
            }
            let admission = breakers::admit(cfg, &shared.metrics, cluster, now);
            if admission.admitted() {
                next = Some((cluster, admission));
                break;
            }
        }
        let Some((cluster, admission)) = next else { return false };
        // A session goes along: the fallback's own id for it, or one opened there first.
        let plan = self.session_on(cluster);
        let movable = match plan {
            SessionOn::Unknown => false,
            SessionOn::Open => cfg.failover.move_sessions,
            _ => true,
        };
        if !movable || !self.start_hold(now, router_done, failed, failure) || !shared.retry_budget.borrow_mut().try_spend() {
            log::debug!("mcp-warden: not retrying on a fallback (session unknown, no time left or retry budget spent)");
            if let Admission::Probe { epoch } = admission {
                breakers::release_probe(cfg, cluster, epoch, now);
            }
            return false;
        }
        if let Some(m) = shared.metrics.cluster(cluster) {
            host::increment(m.requests, 1);
            host::increment(m.retried, 1);
        }
        self.stage = Stage::Retrying { cluster, admission, token: None, failed, failure, since_ms: now };
        match plan {
            SessionOn::Open => self.establish_on(cluster),
            SessionOn::Mapped(theirs) => {
                self.session_rewrite = self.session.clone().map(|agent| (theirs.clone(), agent));
                self.send_retry(cluster, Some(&theirs));
            }
            SessionOn::Agent => {
                self.session_rewrite = None;
                let agent = self.session.clone();
                self.send_retry(cluster, agent.as_deref());
            }
            SessionOn::None | SessionOn::Unknown => self.send_retry(cluster, None),
        }
        true
    }

    /// A server answered 404 to a request of a session the sidecar saw start: the session
    /// expired there (or the server restarted). Opens a new one on the same cluster and sends the
    /// request again, once; the agent keeps its id. Nothing ran, so any request may be resent.
    fn try_renew_session(&mut self, cluster: usize, admission: Admission, now: u64) -> bool {
        let renewable = self.shared.config.failover.move_sessions
            && !self.renewed
            && self.method == HttpMethod::Post
            && !self.request_too_big
            && self.request.is_some()
            && self.record.as_ref().is_some_and(|r| sessions::init_body(&self.shared.config, r).is_some());
        // The 404's body may still be on its way: Envoy's route timer is running.
        if !renewable || !self.start_hold(now, false, cluster, FailureKind::ConnectFailure) {
            return false;
        }
        self.renewed = true;
        self.stage = Stage::Retrying {
            cluster,
            admission,
            token: None,
            failed: cluster,
            failure: FailureKind::ConnectFailure,
            since_ms: now,
        };
        self.establish_on(cluster);
        true
    }

    /// Sends the agent's request to `cluster` with `session` (or none) as its session id; the
    /// answer arrives in [`Self::finish_retry`]. A call that cannot even start is answered as a
    /// failed retry.
    fn send_retry(&mut self, cluster: usize, session: Option<&str>) {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.config;
        let Some(target) = cfg.cluster(cluster) else { return };
        let headers = host::headers(host::REQUEST);
        let mut forward: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| {
                !HOP_BY_HOP.contains(&k.as_str())
                    && *k != cfg.route_header
                    && k != "mcp-session-id"
                    && k != HELD_ANSWER_HEADER
                    && k != HELD_ERROR_HEADER
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(s) = session {
            forward.push(("mcp-session-id", s));
        }
        let sent = proxy_wasm::hostcalls::dispatch_http_call(
            &target.name,
            forward,
            Some(&self.request_body),
            vec![],
            self.call_timeout(),
        );
        match sent {
            Ok(token) => {
                if let Stage::Retrying { token: t, .. } = &mut self.stage {
                    *t = Some(token);
                }
            }
            Err(e) => {
                log::warn!("mcp-warden: cannot send a request again on `{}`: {e:?}", target.name);
                self.finish_retry(0, false);
            }
        }
    }

    /// The fallback's answer to a retried call: passed to the agent, or a degraded answer if it
    /// failed too.
    fn finish_retry(&mut self, body_size: usize, has_headers: bool) {
        let Stage::Retrying { cluster, admission, failed, failure, since_ms, .. } = self.stage else { return };
        self.stage = Stage::Answered;
        self.take_back_answer();
        let now = host::now_ms();
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.config;
        let status: u16 = if has_headers {
            host::header(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse().ok()).unwrap_or(0)
        } else {
            0
        };
        let headers = if status > 0 { host::headers(MapType::HttpCallResponseHeaders) } else { Vec::new() };
        let body = if status > 0 {
            host::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let outcome = if status == 0 {
            let limit = self.hold_until_ms.unwrap_or(since_ms + cfg.failover.retry_timeout_ms);
            let timed_out = now + 5 >= limit;
            Outcome::Failure(if timed_out { FailureKind::Timeout } else { FailureKind::ConnectFailure })
        } else {
            let content_type = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str());
            let expected = self.request.as_ref().map(|r| r.expected_ids().cloned().collect());
            let mut observer = ResponseObserver::new(expected, cfg.inspect_max_bytes);
            let head = ResponseHead { status, content_type, local_reply: None };
            observer
                .on_headers(head, self.method, &cfg.failures)
                .or_else(|| observer.on_body(&body, true, &cfg.failures))
                .unwrap_or(Outcome::Unknown)
        };
        let open_for = self.record_call(cluster, admission, outcome, since_ms, now);
        let http_failed = status == 0 || status >= 500;
        let (Some(first), Some(second)) = (cfg.cluster(failed), cfg.cluster(cluster)) else { return };
        if http_failed {
            let mut statuses = vec![ClusterStatus {
                cluster: &second.name,
                state: if open_for.is_some() { "open" } else { "failed" },
                retry_after_ms: open_for.unwrap_or(1_000),
            }];
            if failed != cluster {
                statuses.insert(0, ClusterStatus { cluster: &first.name, state: "failed", retry_after_ms: 1_000 });
            }
            if let Some(u) = self.unavailable(Reason::UpstreamFailed(failure), statuses) {
                let response = self.degraded_for_request(&u);
                self.send_degraded_as(response, "upstream_failed");
            }
            return;
        }
        if self.session.is_none() && self.is_method("initialize") {
            if let Some((_, sid)) = headers.iter().find(|(k, _)| k == "mcp-session-id") {
                sessions::started(cfg, self.server, sid, cluster, &self.request_body);
            }
        }
        // A retried list answer is inspected like a held one.
        let mut body = body;
        if let (200, Some(kind), Some(server)) = (status, self.held_list_kind(), cfg.servers.get(self.server)) {
            let sse = headers
                .iter()
                .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"));
            let decision = if body.len() > cfg.inspector.limits.max_list_bytes {
                inspect::oversized(&shared, &server.name, &second.name, body.len())
            } else {
                inspect::list_answer(&shared, &server.name, &second.name, kind, &body, sse)
            };
            match decision {
                inspect::Decision::Forward => {}
                inspect::Decision::Replace(new) => body = new,
                inspect::Decision::Block { rules, .. } => body = self.blocked_body(&second.name, &rules, sse),
            }
        }
        let served_by = cfg.served_by_header.as_str();
        let rewrite = self.session_rewrite.as_ref();
        let mut out: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| {
                !k.starts_with(':') && !HOP_BY_HOP.contains(&k.as_str()) && k != "content-length" && k != served_by
            })
            .map(|(k, v)| match rewrite {
                // The agent keeps its own session id.
                Some((theirs, agents)) if k == "mcp-session-id" && v == theirs => (k.as_str(), agents.as_str()),
                _ => (k.as_str(), v.as_str()),
            })
            .collect();
        out.push((served_by, second.name.as_str()));
        if failed != cluster {
            out.push(("x-mcp-warden-retried-from", first.name.as_str()));
        }
        if let Err(e) = host::send_response(u32::from(status), &out, &body) {
            log::warn!("mcp-warden: could not pass on a retried answer: {e}");
        }
    }

    /// Replaces a malformed JSON answer held whole (headers and body still in the filter).
    fn replace_held_answer(&mut self, body_size: usize, open_for_ms: Option<u64>) {
        let Some((cluster, _)) = self.routed_cluster() else { return };
        let Some(name) = self.shared.config.cluster(cluster).map(|c| c.name.clone()) else { return };
        let state = if open_for_ms.is_some() { "open" } else { "failed" };
        let status = ClusterStatus { cluster: &name, state, retry_after_ms: open_for_ms.unwrap_or(1_000) };
        let Some(u) = self.unavailable(Reason::UpstreamFailed(FailureKind::Malformed), vec![status]) else { return };
        let response = self.degraded_for_request(&u);
        let ok = host::set_header(host::RESPONSE, ":status", &response.status.to_string()).is_ok()
            && host::set_header(host::RESPONSE, "content-type", "application/json").is_ok()
            && host::set_header(host::RESPONSE, "retry-after", &response.retry_after_s.to_string()).is_ok()
            && host::set_header(host::RESPONSE, "x-mcp-warden-degraded", "upstream_failed").is_ok()
            && host::remove_header(host::RESPONSE, "content-length").is_ok()
            && host::set_buffer(host::RESPONSE_BODY, 0, body_size, &response.body).is_ok();
        if ok {
            if let Some(m) = self.shared.metrics.server(self.server) {
                host::increment(m.degraded, 1);
            }
        }
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

impl Context for WardenHttp {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        if matches!(self.stage, Stage::Retrying { token: Some(t), .. } if t == token) {
            self.finish_retry(body_size, num_headers > 0);
        } else if self.establishing.is_some() {
            self.continue_establishing(token, num_headers > 0);
        }
    }
}

impl HttpContext for WardenHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        if host::header(host::REQUEST, "x-mcp-warden-test-panic").is_some() {
            panic!("fault injection: a test asked this VM to panic");
        }
        let cfg = &self.shared.config;
        // One host call for all of them (Envoy's header names are lower case).
        let mut headers = host::headers(host::REQUEST);
        // The agent never picks the cluster itself, nor what Envoy answers in its place.
        for name in [cfg.route_header.as_str(), HELD_ANSWER_HEADER, HELD_ERROR_HEADER] {
            if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                let _ = host::remove_header(host::REQUEST, name);
            }
        }
        let mut take = |name: &str| headers.iter_mut().find(|(k, _)| k == name).map(|(_, v)| std::mem::take(v));
        let authority = take(":authority").unwrap_or_default();
        let path = take(":path").unwrap_or_default();
        // The router's index: no scan of the server list per request.
        let Some(server) = cfg.route_index(&authority, &path) else {
            return Action::Continue;
        };
        self.server = server;
        self.method = match take(":method").as_deref() {
            Some("POST") => HttpMethod::Post,
            _ => HttpMethod::Other,
        };
        // A body known to exceed the bound is never held (Envoy would answer 413 past its own
        // buffer limit); it streams on, judged without ids.
        self.request_too_big = take("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|n| n > cfg.request_max_bytes);
        self.session = take("mcp-session-id");
        self.mcp_method = take("mcp-method");
        self.mcp_name = take("mcp-name");
        self.modern_protocol = is_modern_protocol(take("mcp-protocol-version").as_deref());
        if let Some(m) = self.shared.metrics.server(self.server) {
            host::increment(m.requests, 1);
        }
        let now = host::now_ms();
        self.started_ms = now;
        self.forwarded_ms = now;
        self.record = self.session.as_deref().and_then(|sid| sessions::record(&self.shared.config, self.server, sid));
        self.pinned = self.record.as_ref().and_then(|r| sessions::cluster_index(&self.shared.config, self.server, &r.origin));
        let deleting =
            self.method == HttpMethod::Other && host::header(host::REQUEST, ":method").as_deref() == Some("DELETE");
        match self.choose_cluster(now) {
            Some((position, cluster, admission)) => {
                if deleting {
                    self.end_mapped_sessions(Some(cluster));
                }
                let shared = Rc::clone(&self.shared);
                let name = shared.config.cluster(cluster).map_or("", |c| c.name.as_str());
                if let Err(e) = host::set_header(host::REQUEST, &shared.config.route_header, name) {
                    log::warn!("mcp-warden: could not set the route header: {e}");
                }
                if let (HttpMethod::Post, Some(ms)) = (self.method, &shared.config.failover.upstream_timeout_header) {
                    // The filter must know when Envoy gives up on the upstream (see `start_hold`).
                    let _ = host::set_header(host::REQUEST, UPSTREAM_TIMEOUT_HEADER, ms);
                }
                if let Some(m) = shared.metrics.cluster(cluster) {
                    host::increment(m.requests, 1);
                    if position > 0 {
                        host::increment(m.fallback, 1);
                    }
                }
                self.stage = Stage::Routed { cluster, position, admission };
                self.shared.retry_budget.borrow_mut().earn();
                if self.needs_session_on(cluster) {
                    // The agent's session lives elsewhere: open one here first (after the body).
                    self.establishing = Some(Establish::Pending);
                    if end_of_stream || self.method != HttpMethod::Post {
                        self.start_establishing();
                    }
                    return Action::Pause;
                }
                if self.method == HttpMethod::Post && !end_of_stream && !self.request_too_big {
                    // Hold the request until its (bounded) body is read: the id must be known
                    // before Envoy can answer for a refused connection, and MCP bodies are small.
                    return Action::Pause;
                }
                Action::Continue
            }
            None => {
                if deleting {
                    self.end_mapped_sessions(None);
                }
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
                if matches!(self.establishing, Some(Establish::Pending)) {
                    self.start_establishing();
                    return Action::Pause;
                }
                self.forwarded_ms = host::now_ms();
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
        if self.session.is_none() && self.is_method("initialize") {
            if let Some(sid) = host::header(host::RESPONSE, "mcp-session-id") {
                sessions::started(cfg, self.server, &sid, cluster, &self.request_body);
            }
        }
        if let Some((theirs, agents)) = &self.session_rewrite {
            if host::header(host::RESPONSE, "mcp-session-id").as_deref() == Some(theirs.as_str()) {
                let _ = host::set_header(host::RESPONSE, "mcp-session-id", agents);
            }
        }
        if status == 404 && !end_of_stream && self.session.is_some() {
            if let Some((_, admission)) = self.routed_cluster() {
                if self.try_renew_session(cluster, admission, host::now_ms()) {
                    // Hold the 404 back; the answer in the renewed session replaces it.
                    return Action::Pause;
                }
            }
        }
        let content_type = host::header(host::RESPONSE, "content-type");
        // Envoy's own replies carry details other than `via_upstream`; only those need a look.
        let local_reply = if status >= 400 {
            let details = host::property_string(&["response", "code_details"]);
            (details != "via_upstream" && !details.is_empty())
                .then(|| (host::property_u64(&["response", "flags"]), details))
        } else {
            None
        };
        if self.request.is_none() && !self.request_body.is_empty() && !self.request_too_big {
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
        if status == 200 && !end_of_stream {
            let sse = content_type.as_deref().is_some_and(|c| c.starts_with("text/event-stream"));
            let insp = &cfg.inspector;
            if let Some(kind) = self.held_list_kind() {
                // Held until complete (bounded) and inspected: its length may change.
                if host::remove_header(host::RESPONSE, "content-length").is_ok() {
                    self.held = Some((kind, sse));
                }
            } else if self.is_tools_list() {
                self.tools_list = Some((Vec::new(), sse));
            } else if insp.enabled
                && insp.limits.inspect_results
                && self.is_method("tools/call")
                && self.request.as_ref().is_none_or(|r| !r.batch)
            {
                self.result_copy = Some((Vec::new(), sse));
            }
        }
        if let Some(outcome) = verdict {
            let now = host::now_ms();
            let open_for = self.record(outcome, now);
            if let Outcome::Failure(kind) = outcome {
                let position = match self.stage {
                    Stage::Routed { position, .. } => position,
                    _ => 0,
                };
                let router_done = local_reply.is_some();
                if !end_of_stream && self.try_retry(kind, cluster, position, now, router_done) {
                    // Hold the failed answer back; the fallback's answer replaces it.
                    return Action::Pause;
                }
                let rewrite = cfg.degraded.rewrite_upstream_errors
                    && !end_of_stream
                    && (local_reply.is_some() || status >= 500);
                if rewrite {
                    self.replace_failed_answer(kind, cluster, open_for);
                }
            }
        } else if status == 200 && !end_of_stream {
            let json = content_type
                .as_deref()
                .is_some_and(|c| c.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
            if json && self.hold_json_answer(cluster) {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if matches!(self.stage, Stage::Retrying { .. }) {
            // The failed answer's body is dropped as it comes; the retry's answer replaces it.
            let _ = host::set_buffer(host::RESPONSE_BODY, 0, body_size, b"");
            return Action::Pause;
        }
        if let Some(body) = &self.replacement {
            let new = if end_of_stream { body.as_slice() } else { &[][..] };
            if let Err(e) = host::set_buffer(host::RESPONSE_BODY, 0, body_size, new) {
                log::debug!("mcp-warden: could not replace a response body: {e}");
            }
            return Action::Continue;
        }
        // A JSON answer held whole: its headers are still in the filter, so a malformed answer
        // can yet be replaced by the degraded one.
        let mut whole = false;
        if self.json_hold {
            // Envoy buffers while paused: body_size is everything so far, handled once below.
            if !end_of_stream && body_size <= JSON_HOLD_MAX_BYTES {
                return Action::Pause;
            }
            self.json_hold = false;
            self.take_back_answer();
            whole = end_of_stream;
        }
        if let Some((kind, sse)) = self.held {
            return self.on_held_body(kind, sse, body_size, end_of_stream);
        }
        let judging = self.observer.as_ref().is_some_and(|o| o.verdict().is_none());
        if !judging && self.tools_list.is_none() && self.result_copy.is_none() {
            return Action::Continue;
        }
        let chunk = if body_size > 0 {
            host::get_buffer(host::RESPONSE_BODY, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.keep_tools_list(&chunk, end_of_stream);
        self.keep_result(&chunk, end_of_stream);
        if !judging {
            return Action::Continue;
        }
        let policy = &self.shared.config.failures;
        let verdict = self.observer.as_mut().and_then(|o| o.on_body(&chunk, end_of_stream, policy));
        if let Some(outcome) = verdict {
            let open_for = self.record(outcome, host::now_ms());
            let malformed = outcome == Outcome::Failure(FailureKind::Malformed);
            if whole && malformed && self.shared.config.degraded.rewrite_upstream_errors {
                // Not JSON-RPC, or not the answer to this request (wrong id): the agent could
                // not use it, and an SDK waiting for its id would wait until its own timeout.
                self.replace_held_answer(body_size, open_for);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let (Some(sid), Some(_)) = (self.session.as_deref(), self.record.as_ref()) {
            if host::header(host::REQUEST, ":method").as_deref() == Some("DELETE") {
                sessions::forget(&self.shared.config, self.server, sid);
            }
        }
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
