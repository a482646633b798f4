//! The per-request state machine: routing and admission, holding, attempts, verdicts, retries,
//! hedges, session moves and renewals, inspection and degraded answers.

use super::answer::{self, Refusal, HELD_ANSWER_HEADER, HELD_ERROR_HEADER};
use super::attempt::{Attempt, Opening, Via};
use super::env::Env;
use super::io::{Action, CallAnswer, Call, ClusterStat, Decision, Effect, Event, Level, ResponseHead, ServerStat, Stat};
use super::request::Request;
use crate::breaker::Admission;
use crate::degrade::{ClusterStatus, Reason};
use crate::inspect::protocol::from_failure;
use crate::inspect::ListKind;
use crate::mcp::classify::{HttpMethod, ResponseHead as ObservedHead, ResponseObserver};
use crate::mcp::classify::envoy_flags::*;
use crate::outcome::{FailureKind, Outcome};
use crate::retry;
use crate::session::SessionRecord;
use crate::trust::wire::TrustState;
use std::borrow::Cow;

/// Envoy's router takes this request header as the upstream timeout, in place of the route's.
pub const UPSTREAM_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";
/// An answer's headers are held until its verdict, up to this many body bytes (then they go on).
pub const HOLD_MAX_BYTES: usize = 256 * 1024;
/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"];

/// Where the request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not an MCP server this sidecar guards: untouched.
    PassThrough,
    /// No cluster admits: waiting for the body to answer with the request's id.
    Refused,
    /// The main attempt goes (or went) through the router; a hedge may be racing it.
    Routed,
    /// The main attempt failed; its answer is held while the extra attempt retries the call.
    Retrying,
    /// Answered by the flow itself, or passed on for good.
    Answered,
}

/// What the extra (dispatched) attempt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Racing a slow main attempt: the first good answer wins.
    Hedge,
    /// Replacing the failed main attempt (on `failed`, with `failure`).
    Retry { failed: usize, failure: FailureKind },
    /// The main attempt won: only its verdict is still recorded.
    Abandoned,
}

/// Which session id the agent's request carries to a given cluster.
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

/// A bounded copy or hold of the answer's body, for inspection or learning.
#[derive(Debug)]
enum Watch {
    None,
    /// A list answer held whole and inspected (its kind, SSE or not).
    List(ListKind, bool),
    /// A copy of a `tools/list` answer, to learn tool hints from.
    ToolsList(Vec<u8>, bool),
    /// A copy of a tool result, inspected at its end.
    Result(Vec<u8>, bool),
}

/// An answer whose headers are held until its verdict (see `hold_answer`).
#[derive(Debug, Clone, Copy)]
struct Hold {
    /// Body bytes already given to the observer.
    fed: usize,
    /// Held until the end of the body (JSON), or until the verdict (SSE of a retryable request).
    whole: bool,
}

/// One agent request through the sidecar.
#[derive(Debug)]
pub struct Flow {
    phase: Phase,
    req: Option<Request>,
    refusals: Vec<Refusal>,
    record: Option<SessionRecord>,
    pinned: Option<usize>,
    /// (the other cluster's session id, the agent's): the answer's header is turned back.
    rewrite: Option<(String, String)>,
    main: Option<Attempt>,
    extra: Option<(Attempt, Role)>,
    observer: Option<ResponseObserver>,
    /// The main attempt's answer headers arrived.
    answered_headers: bool,
    /// When the request went on to Envoy's router (which then starts its timer).
    forwarded_ms: u64,
    hold_until_ms: Option<u64>,
    /// The request header the degraded answer was left in for Envoy.
    left_answer: Option<&'static str>,
    hold: Option<Hold>,
    replacement: Option<Vec<u8>>,
    watch: Watch,
    maybe_ran: bool,
    renewed: bool,
    hedge_at: Option<u64>,
    next_call: u32,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            phase: Phase::PassThrough,
            req: None,
            refusals: Vec::new(),
            record: None,
            pinned: None,
            rewrite: None,
            main: None,
            extra: None,
            observer: None,
            answered_headers: false,
            forwarded_ms: 0,
            hold_until_ms: None,
            left_answer: None,
            hold: None,
            replacement: None,
            watch: Watch::None,
            maybe_ran: false,
            renewed: false,
            hedge_at: None,
            next_call: 1,
        }
    }
}

fn stat(cluster: usize, s: ClusterStat) -> Effect {
    Effect::Stat(Stat::Cluster(cluster, s))
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")))
}

fn is_sse(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.starts_with("text/event-stream"))
}

impl Flow {
    pub fn new() -> Self {
        Flow::default()
    }

    /// Whether the flow guards this request (false: the host can skip every later callback).
    pub fn guarding(&self) -> bool {
        self.phase != Phase::PassThrough
    }

    /// Whether the host should read the request body for [`Event::RequestBody`].
    pub fn wants_request_body<E: Env + ?Sized>(&self, env: &E, size: usize, end_of_stream: bool) -> bool {
        matches!(self.phase, Phase::Routed | Phase::Refused)
            && end_of_stream
            && size <= env.config().request_max_bytes
            && self.req.as_ref().is_some_and(|r| r.readable() && r.body.is_empty())
    }

    /// Whether the host should read the response body for [`Event::ResponseBody`].
    pub fn wants_response_body(&self, size: usize, end_of_stream: bool) -> bool {
        if self.phase != Phase::Routed || self.replacement.is_some() || size == 0 {
            return false;
        }
        if let Some(h) = self.hold {
            return !h.whole || end_of_stream || size > HOLD_MAX_BYTES;
        }
        match self.watch {
            Watch::List(..) => end_of_stream,
            Watch::ToolsList(..) | Watch::Result(..) => true,
            Watch::None => self.observer.as_ref().is_some_and(|o| o.verdict().is_none()),
        }
    }

    /// Whether the host should read Envoy's response flags and details (for answers of 400 and up).
    pub fn needs_reply_details(&self, status: u16) -> bool {
        self.phase == Phase::Routed && status >= 400
    }

    /// Handles one event; effects are appended to `out` for the host to carry out in order.
    pub fn on<E: Env + ?Sized>(&mut self, env: &E, event: Event<'_>, now: u64, out: &mut Vec<Effect>) -> Action {
        match event {
            Event::RequestHeaders { headers, end_of_stream } => self.on_request_headers(env, headers, end_of_stream, now, out),
            Event::RequestBody { size, body, end_of_stream } => self.on_request_body(env, size, body, end_of_stream, now, out),
            Event::ResponseHeaders { head, end_of_stream } => self.on_response_headers(env, head, end_of_stream, now, out),
            Event::ResponseBody { size, body, end_of_stream } => self.on_response_body(env, size, body, end_of_stream, now, out),
            Event::CallDone { call, answer } => {
                self.on_call_done(env, call, answer, now, out);
                Action::Continue
            }
            Event::Timer => {
                self.on_timer(env, now, out);
                Action::Continue
            }
            Event::Done { flags } => {
                self.on_done(env, flags, now, out);
                Action::Continue
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Request.

    fn on_request_headers<E: Env + ?Sized>(
        &mut self,
        env: &E,
        mut headers: Vec<(String, String)>,
        end_of_stream: bool,
        now: u64,
        out: &mut Vec<Effect>,
    ) -> Action {
        let cfg = env.config();
        // The agent never picks the cluster itself, nor what Envoy answers in its place.
        for name in [cfg.route_header.as_str(), HELD_ANSWER_HEADER, HELD_ERROR_HEADER] {
            if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
                out.push(Effect::RemoveRequestHeader(Cow::Owned(name.to_string())));
            }
        }
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str());
        let Some(server) = cfg.route_index(get(":authority"), get(":path")) else {
            return Action::Continue;
        };
        env.begin(now);
        let req = Request::new(server, headers, cfg.request_max_bytes);
        out.push(Effect::Stat(Stat::Server(server, ServerStat::Requests)));
        self.forwarded_ms = now;
        self.record = req.session.as_deref().and_then(|sid| env.session(server, sid, now));
        self.pinned = self.record.as_ref().and_then(|r| cluster_index(env, server, &r.origin));
        let (post, too_big, deleting) = (req.method == HttpMethod::Post, req.too_big, req.deleting);
        self.req = Some(req);
        match self.choose_cluster(env, now, out) {
            Some((position, cluster, admission)) => {
                if deleting {
                    self.end_mapped_sessions(env, Some(cluster), out);
                }
                let name = cfg.cluster(cluster).map_or("", |c| c.name.as_str());
                out.push(Effect::SetRequestHeader(Cow::Owned(cfg.route_header.clone()), name.to_string()));
                if let (true, Some(ms)) = (post, &cfg.failover.upstream_timeout_header) {
                    // The flow must know when Envoy gives up on the upstream (see `start_hold`).
                    out.push(Effect::SetRequestHeader(Cow::Borrowed(UPSTREAM_TIMEOUT_HEADER), ms.clone()));
                }
                out.push(stat(cluster, ClusterStat::Requests));
                if position > 0 {
                    out.push(stat(cluster, ClusterStat::Fallback));
                }
                self.main = Some(Attempt::new(cluster, position, admission, Via::Router, now));
                self.phase = Phase::Routed;
                env.retry_earn();
                if self.needs_session_on(env, cluster, out) {
                    // The agent's session lives elsewhere: open one here first (after the body).
                    if let Some(m) = self.main.as_mut() {
                        m.opening = Some(Opening::Pending);
                    }
                    if end_of_stream || !post {
                        self.start_opening(env, false, now, out);
                    }
                    return Action::Pause;
                }
                if post && !end_of_stream && !too_big {
                    // Hold the request until its (bounded) body is read: the id must be known
                    // before Envoy can answer for a refused connection, and MCP bodies are small.
                    return Action::Pause;
                }
                Action::Continue
            }
            None => {
                if deleting {
                    self.end_mapped_sessions(env, None, out);
                }
                self.phase = Phase::Refused;
                if end_of_stream || !post || too_big {
                    self.send_refused(env, out);
                }
                Action::Pause
            }
        }
    }

    fn on_request_body<E: Env + ?Sized>(
        &mut self,
        env: &E,
        size: usize,
        body: Option<&[u8]>,
        end_of_stream: bool,
        now: u64,
        out: &mut Vec<Effect>,
    ) -> Action {
        let max = env.config().request_max_bytes;
        let Some(req) = self.req.as_mut() else { return Action::Continue };
        match self.phase {
            Phase::Routed if req.readable() => {
                // Paused since the headers: the host buffers, and size is everything so far.
                if size > max {
                    // Past the bound: let it stream on, unjudged by id.
                    req.too_big = true;
                    return Action::Continue;
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                match body {
                    Some(b) => req.keep_body(b),
                    None => req.too_big = true,
                }
                if self.main.as_ref().is_some_and(|m| m.opening == Some(Opening::Pending)) {
                    self.start_opening(env, false, now, out);
                    return Action::Pause;
                }
                self.forwarded(env, now, out);
                Action::Continue
            }
            Phase::Refused => {
                if req.readable() {
                    if size > max {
                        req.too_big = true;
                    } else if !end_of_stream {
                        return Action::Pause;
                    } else {
                        match body {
                            Some(b) => req.keep_body(b),
                            None => req.too_big = true,
                        }
                    }
                }
                self.send_refused(env, out);
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    /// The request (its end) went on to the router: its timer starts, and a safe request gets
    /// a hedge deadline.
    fn forwarded<E: Env + ?Sized>(&mut self, env: &E, now: u64, out: &mut Vec<Effect>) {
        self.forwarded_ms = now;
        let Some(main) = self.main.as_ref() else { return };
        let cfg = env.config();
        let Some(delay) = cfg.cluster(main.cluster).and_then(|c| c.hedge_after_ms) else { return };
        if !cfg.failover.retry || !self.safe_to_repeat(env, FailureKind::Timeout) || !self.has_later_cluster(env, main.position) {
            return;
        }
        let at = now + delay;
        self.hedge_at = Some(at);
        out.push(Effect::WakeAt(at));
    }

    /// Whether repeating the whole request after `failure` can do no harm.
    fn safe_to_repeat<E: Env + ?Sized>(&self, env: &E, failure: FailureKind) -> bool {
        let Some(req) = self.req.as_ref() else { return false };
        let Some(parsed) = req.parsed.as_ref().filter(|_| req.readable()) else { return false };
        retry::is_safe_to_retry(parsed, req.mcp_method.as_deref(), req.mcp_name.as_deref(), |tool| env.tool_hints(req.server, tool), failure)
    }

    fn has_later_cluster<E: Env + ?Sized>(&self, env: &E, position: usize) -> bool {
        let server = self.req.as_ref().and_then(|r| env.config().servers.get(r.server));
        server.is_some_and(|s| s.clusters.len() > position + 1)
    }

    /// Tries the server's clusters in order (the one that created the agent's session first);
    /// returns the first that admits.
    fn choose_cluster<E: Env + ?Sized>(&mut self, env: &E, now: u64, out: &mut Vec<Effect>) -> Option<(usize, usize, Admission)> {
        let cfg = env.config();
        let server = cfg.servers.get(self.req.as_ref()?.server)?;
        let first = self.pinned.and_then(|p| server.clusters.iter().position(|&c| c == p));
        let chain = first.into_iter().chain((0..server.clusters.len()).filter(|&i| Some(i) != first));
        for position in chain {
            let Some(&cluster) = server.clusters.get(position) else { continue };
            if let Some(quarantined) = untrusted(env, cluster) {
                out.push(stat(cluster, ClusterStat::Untrusted));
                let retry_after_ms = cfg.trust.as_ref().map_or(1_000, |t| t.poll_interval_ms);
                self.refusals.push(Refusal { cluster, half_open: false, retry_after_ms, untrusted: Some(quarantined) });
                continue;
            }
            let admission = env.admit(cluster, now);
            if admission.admitted() {
                return Some((position, cluster, admission));
            }
            out.push(stat(cluster, ClusterStat::Rejected));
            let half_open = matches!(admission, Admission::Rejected { half_open: true, .. });
            if !half_open && cfg.trust.is_some() {
                env.refused(cluster);
            }
            let retry_after_ms = match admission {
                Admission::Rejected { retry_after_ms, .. } => retry_after_ms,
                _ => 0,
            };
            self.refusals.push(Refusal { cluster, half_open, retry_after_ms, untrusted: None });
        }
        None
    }

    /// The next admitted cluster after `position` in the chain, skipping untrusted ones.
    fn next_admitted<E: Env + ?Sized>(&self, env: &E, position: usize, now: u64) -> Option<(usize, usize, Admission)> {
        let server = env.config().servers.get(self.req.as_ref()?.server)?;
        for (p, &cluster) in server.clusters.iter().enumerate().skip(position + 1) {
            if untrusted(env, cluster).is_some() {
                continue;
            }
            let admission = env.admit(cluster, now);
            if admission.admitted() {
                return Some((p, cluster, admission));
            }
        }
        None
    }

    fn send_refused<E: Env + ?Sized>(&mut self, env: &E, out: &mut Vec<Effect>) {
        let Some(req) = self.req.as_ref() else { return };
        let cfg = env.config();
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
        let Some(u) = answer::unavailable(env, req, reason, statuses, false) else { return };
        let response = answer::for_request(req, &u);
        self.answer(env, response, why, out);
    }

    /// Answers with a degraded answer from the sidecar; the flow is done.
    fn answer<E: Env + ?Sized>(&mut self, env: &E, response: crate::degrade::DegradedResponse, why: &str, out: &mut Vec<Effect>) {
        self.take_back_answer(out);
        self.phase = Phase::Answered;
        let server = self.req.as_ref().map_or(0, |r| r.server);
        answer::send(env, server, response, why, out);
    }

    // -----------------------------------------------------------------------------------------
    // Sessions.

    /// The session id the agent's request carries to `cluster`.
    fn session_on<E: Env + ?Sized>(&self, env: &E, cluster: usize) -> SessionOn {
        let Some(req) = self.req.as_ref() else { return SessionOn::None };
        if req.session.is_none() {
            return SessionOn::None;
        }
        let (Some(record), Some(c)) = (self.record.as_ref(), env.config().cluster(cluster)) else {
            return SessionOn::Unknown;
        };
        if let Some(theirs) = record.mapped.get(&c.name) {
            return SessionOn::Mapped(theirs.clone());
        }
        if record.origin == c.name {
            return SessionOn::Agent;
        }
        if env.init_body(record).is_some() {
            SessionOn::Open
        } else {
            SessionOn::Unknown
        }
    }

    /// True when the agent's session lives elsewhere and the sidecar must first open one on
    /// `cluster`; sets up the header rewrite when it opened one before.
    fn needs_session_on<E: Env + ?Sized>(&mut self, env: &E, cluster: usize, out: &mut Vec<Effect>) -> bool {
        if !env.config().failover.move_sessions {
            return false;
        }
        match self.session_on(env, cluster) {
            SessionOn::Mapped(theirs) => {
                out.push(Effect::SetRequestHeader(Cow::Borrowed("mcp-session-id"), theirs.clone()));
                self.rewrite = self.req.as_ref().and_then(|r| r.session.clone()).map(|agent| (theirs, agent));
                false
            }
            SessionOn::Open => true,
            _ => false,
        }
    }

    fn call_id(&mut self) -> u32 {
        let id = self.next_call;
        self.next_call = self.next_call.wrapping_add(1).max(1);
        id
    }

    /// The time limit of a call the flow makes: the retry time, or what is left of a hold.
    fn call_timeout<E: Env + ?Sized>(&self, env: &E, now: u64) -> u64 {
        let full = env.config().failover.retry_timeout_ms;
        match self.hold_until_ms {
            Some(until) => until.saturating_sub(now).clamp(1, full),
            None => full,
        }
    }

    /// A call the sidecar makes itself on the agent's behalf (an `initialize` replayed, its
    /// `notifications/initialized`).
    fn session_call<E: Env + ?Sized>(&mut self, env: &E, cluster: usize, session: Option<&str>, body: Vec<u8>, now: u64) -> Option<Call> {
        let req = self.req.as_ref()?;
        let target = env.config().cluster(cluster)?.name.clone();
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/json, text/event-stream".to_string()),
            (":path".to_string(), req.header(":path").unwrap_or("/").to_string()),
            (":authority".to_string(), req.header(":authority").unwrap_or_default().to_string()),
        ];
        if let Some(s) = session {
            headers.push(("mcp-session-id".to_string(), s.to_string()));
        }
        if let Some(v) = req.header("mcp-protocol-version") {
            headers.push(("mcp-protocol-version".to_string(), v.to_string()));
        }
        let timeout_ms = self.call_timeout(env, now);
        Some(Call { id: self.call_id(), cluster: target, headers, body: Some(body), timeout_ms })
    }

    /// Replays the agent's `initialize` on the main attempt's cluster (`extra` false) or the
    /// extra attempt's.
    fn start_opening<E: Env + ?Sized>(&mut self, env: &E, extra: bool, now: u64, out: &mut Vec<Effect>) {
        let cluster = match (extra, &self.main, &self.extra) {
            (false, Some(m), _) => m.cluster,
            (true, _, Some((a, _))) => a.cluster,
            _ => return,
        };
        let body = self.record.as_ref().and_then(|r| env.init_body(r)).unwrap_or_default();
        let Some(call) = self.session_call(env, cluster, None, body, now) else { return };
        let id = call.id;
        out.push(Effect::Dispatch(call));
        if let Some(a) = self.attempt_mut(extra) {
            a.opening = Some(Opening::Initialize(id));
        }
    }

    fn attempt_mut(&mut self, extra: bool) -> Option<&mut Attempt> {
        if extra {
            self.extra.as_mut().map(|(a, _)| a)
        } else {
            self.main.as_mut()
        }
    }

    /// Next step of opening a session, on each of its calls' answers.
    fn continue_opening<E: Env + ?Sized>(&mut self, env: &E, extra: bool, answer: Option<CallAnswer<'_>>, now: u64, out: &mut Vec<Effect>) {
        let Some(attempt) = self.attempt_mut(extra) else { return };
        let cluster = attempt.cluster;
        let status = answer.map_or(0, |a| a.status);
        match attempt.opening.clone() {
            Some(Opening::Initialize(_)) => {
                let sid = answer.and_then(|a| a.header("mcp-session-id")).map(str::to_string);
                match (status, sid) {
                    (200, Some(sid)) => {
                        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec();
                        match self.session_call(env, cluster, Some(&sid), note, now) {
                            Some(call) => {
                                let id = call.id;
                                out.push(Effect::Dispatch(call));
                                if let Some(a) = self.attempt_mut(extra) {
                                    a.opening = Some(Opening::Initialized(id, sid));
                                }
                            }
                            None => self.fail_opening(env, extra, now, out),
                        }
                    }
                    _ => self.fail_opening(env, extra, now, out),
                }
            }
            Some(Opening::Initialized(_, session)) => {
                if !(200..300).contains(&status) {
                    self.fail_opening(env, extra, now, out);
                    return;
                }
                if let Some(a) = self.attempt_mut(extra) {
                    a.opening = None;
                }
                let Some(req) = self.req.as_ref() else { return };
                if let Some(agent) = req.session.clone() {
                    env.session_mapped(req.server, &agent, cluster, &session);
                    self.rewrite = Some((session.clone(), agent));
                }
                out.push(stat(cluster, ClusterStat::SessionMoved));
                if extra {
                    self.send_extra(env, Some(&session), now, out);
                    return;
                }
                out.push(Effect::SetRequestHeader(Cow::Borrowed("mcp-session-id"), session));
                // Event ids of another session's stream mean nothing to this one.
                if req.header("last-event-id").is_some() {
                    out.push(Effect::RemoveRequestHeader(Cow::Borrowed("last-event-id")));
                }
                out.push(Effect::ResumeRequest);
                self.forwarded(env, now, out);
            }
            _ => {}
        }
    }

    /// The cluster would not open a session.
    fn fail_opening<E: Env + ?Sized>(&mut self, env: &E, extra: bool, now: u64, out: &mut Vec<Effect>) {
        if let Some(a) = self.attempt_mut(extra) {
            a.opening = None;
        }
        if extra {
            // Answered like a call that failed to connect.
            self.extra_done(env, None, now, out);
            return;
        }
        let Some(cluster) = self.main.as_ref().map(|m| m.cluster) else { return };
        let Some(req) = self.req.as_ref() else { return };
        let statuses = answer::failed_status(env, cluster, None).into_iter().collect();
        if let Some(r) = answer::upstream_failed(env, req, FailureKind::ConnectFailure, statuses, self.maybe_ran) {
            self.answer(env, r, "session_failover_failed", out);
        }
    }

    /// DELETE of an agent session also ends the sessions the sidecar opened for it elsewhere
    /// (the one on `routed`, where the agent's DELETE itself goes, is ended by it).
    fn end_mapped_sessions<E: Env + ?Sized>(&mut self, env: &E, routed: Option<usize>, out: &mut Vec<Effect>) {
        let (Some(record), Some(req)) = (self.record.clone(), self.req.as_ref()) else { return };
        let server = req.server;
        let path = req.header(":path").unwrap_or("/").to_string();
        let authority = req.header(":authority").unwrap_or_default().to_string();
        let timeout_ms = env.config().failover.retry_timeout_ms;
        for (name, session) in &record.mapped {
            let Some(target) = cluster_index(env, server, name) else { continue };
            if Some(target) == routed {
                continue;
            }
            let headers = vec![
                (":method".to_string(), "DELETE".to_string()),
                (":path".to_string(), path.clone()),
                (":authority".to_string(), authority.clone()),
                ("mcp-session-id".to_string(), session.clone()),
            ];
            let id = self.call_id();
            out.push(Effect::Dispatch(Call { id, cluster: name.clone(), headers, body: None, timeout_ms }));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Retries and hedges.

    /// Starts an extra attempt (a retry of the failed main attempt, or a hedge racing it) on the
    /// next admitted cluster after `position`, when repeating the call is safe. `failure` is
    /// what went wrong (a timeout for a hedge). Returns whether it is under way.
    #[allow(clippy::too_many_arguments)]
    fn start_extra<E: Env + ?Sized>(&mut self, env: &E, role: Role, failure: FailureKind, position: usize, now: u64, router_done: bool, out: &mut Vec<Effect>) -> bool {
        let cfg = env.config();
        if !cfg.failover.retry || !self.req.as_ref().is_some_and(Request::readable) {
            return false;
        }
        if !self.safe_to_repeat(env, failure) {
            self.maybe_ran |= matches!(role, Role::Retry { .. })
                && matches!(failure, FailureKind::Reset | FailureKind::Timeout | FailureKind::Http5xx);
            return false;
        }
        let Some((p, cluster, admission)) = self.next_admitted(env, position, now) else { return false };
        let mut attempt = Attempt::new(cluster, p, admission, Via::Call(None), now);
        // A session goes along: the cluster's own id for it, or one opened there first.
        let plan = self.session_on(env, cluster);
        let movable = match plan {
            SessionOn::Unknown => false,
            SessionOn::Open => cfg.failover.move_sessions,
            _ => true,
        };
        let failed = self.main.as_ref().map_or(cluster, |m| m.cluster);
        let held = match role {
            Role::Retry { .. } => self.start_hold(env, now, router_done, failed, failure, out),
            _ => true,
        };
        if !movable || !held || !env.retry_spend() {
            out.push(Effect::Log(Level::Debug, "not sending the call again (session unknown, no time left or retry budget spent)".into()));
            attempt.release(env, now);
            return false;
        }
        out.push(stat(cluster, ClusterStat::Requests));
        out.push(stat(cluster, if role == Role::Hedge { ClusterStat::Hedged } else { ClusterStat::Retried }));
        if let Some((mut old, _)) = self.extra.take() {
            old.release(env, now);
        }
        self.extra = Some((attempt, role));
        if matches!(role, Role::Retry { .. }) {
            self.phase = Phase::Retrying;
        }
        match plan {
            SessionOn::Open => self.start_opening(env, true, now, out),
            SessionOn::Mapped(theirs) => {
                self.rewrite = self.req.as_ref().and_then(|r| r.session.clone()).map(|agent| (theirs.clone(), agent));
                self.send_extra(env, Some(&theirs), now, out);
            }
            SessionOn::Agent => {
                self.rewrite = None;
                let agent = self.req.as_ref().and_then(|r| r.session.clone());
                self.send_extra(env, agent.as_deref(), now, out);
            }
            SessionOn::None | SessionOn::Unknown => self.send_extra(env, None, now, out),
        }
        true
    }

    /// Sends the agent's request as the extra attempt, with `session` (or none) as its id.
    fn send_extra<E: Env + ?Sized>(&mut self, env: &E, session: Option<&str>, now: u64, out: &mut Vec<Effect>) {
        let cfg = env.config();
        let Some((attempt, _)) = self.extra.as_ref() else { return };
        let Some(target) = cfg.cluster(attempt.cluster) else { return };
        let Some(req) = self.req.as_ref() else { return };
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .filter(|(k, _)| {
                !HOP_BY_HOP.contains(&k.as_str())
                    && *k != cfg.route_header
                    && k != "mcp-session-id"
                    && k != HELD_ANSWER_HEADER
                    && k != HELD_ERROR_HEADER
                    && k != UPSTREAM_TIMEOUT_HEADER
            })
            .cloned()
            .collect();
        if let Some(s) = session {
            headers.push(("mcp-session-id".to_string(), s.to_string()));
        }
        let call = Call {
            id: 0,
            cluster: target.name.clone(),
            headers,
            body: Some(req.body.clone()),
            timeout_ms: self.call_timeout(env, now),
        };
        let id = self.call_id();
        if let Some((a, _)) = self.extra.as_mut() {
            a.via = Via::Call(Some(id));
        }
        out.push(Effect::Dispatch(Call { id, ..call }));
    }

    /// A server answered 404 to a request of a session the sidecar saw start: the session
    /// expired there (or the server restarted). Opens a new one on the same cluster and sends the
    /// request again, once; the agent keeps its id. Nothing ran, so any request may be resent.
    fn try_renew_session<E: Env + ?Sized>(&mut self, env: &E, now: u64, out: &mut Vec<Effect>) -> bool {
        let Some(main) = self.main.clone() else { return false };
        let renewable = env.config().failover.move_sessions
            && !self.renewed
            && self.req.as_ref().is_some_and(|r| r.readable() && r.parsed.is_some())
            && self.record.as_ref().is_some_and(|r| env.init_body(r).is_some());
        // The 404's body may still be on its way: Envoy's route timer is running.
        if !renewable || !self.start_hold(env, now, false, main.cluster, FailureKind::ConnectFailure, out) {
            return false;
        }
        self.renewed = true;
        if let Some((mut old, _)) = self.extra.take() {
            old.release(env, now);
        }
        let attempt = Attempt::new(main.cluster, main.position, main.admission, Via::Call(None), now);
        self.extra = Some((attempt, Role::Retry { failed: main.cluster, failure: FailureKind::ConnectFailure }));
        // The main attempt's verdict is the renewed call's.
        if let Some(m) = self.main.as_mut() {
            m.recorded = true;
        }
        self.phase = Phase::Retrying;
        self.start_opening(env, true, now, out);
        true
    }

    /// Starts holding a failed answer of `cluster` back, if there is time before Envoy would
    /// answer itself.
    fn start_hold<E: Env + ?Sized>(&mut self, env: &E, now: u64, router_done: bool, cluster: usize, kind: FailureKind, out: &mut Vec<Effect>) -> bool {
        let f = &env.config().failover;
        match retry::hold_budget_ms(now, self.forwarded_ms, f.upstream_timeout_ms, f.retry_timeout_ms, router_done) {
            Some(ms) => {
                self.hold_until_ms = Some(now + ms);
                if !router_done {
                    self.leave_failed_answer(env, cluster, kind, out);
                }
                true
            }
            None => {
                out.push(Effect::Log(Level::Debug, "no time left before the route timeout to fail over".into()));
                false
            }
        }
    }

    /// While the upstream's answer is held back and still open, Envoy answers by itself if it
    /// ends badly first (a reset, the route timeout): the response headers are inside the filter
    /// chain, so Envoy sends its reply straight to the agent, past the filter. For that case the
    /// degraded answer is left in a request header, which Envoy's local reply mapper (shipped
    /// configs, docs/DECISIONS.md) sends instead of its error page. Only held requests pay.
    fn leave_failed_answer<E: Env + ?Sized>(&mut self, env: &E, cluster: usize, kind: FailureKind, out: &mut Vec<Effect>) {
        let Some(req) = self.req.as_ref() else { return };
        let statuses = answer::failed_status(env, cluster, None).into_iter().collect();
        let Some(response) = answer::upstream_failed(env, req, kind, statuses, self.maybe_ran) else { return };
        // With ids: 200 and the answers; without (a notification): 503 and an error, no id.
        let header = if response.status == 200 { HELD_ANSWER_HEADER } else { HELD_ERROR_HEADER };
        let Ok(text) = String::from_utf8(response.body) else { return };
        self.take_back_answer(out);
        out.push(Effect::SetRequestHeader(Cow::Borrowed(header), text));
        self.left_answer = Some(header);
    }

    /// The flow answers itself: Envoy's mapper must not replace that answer.
    fn take_back_answer(&mut self, out: &mut Vec<Effect>) {
        if let Some(header) = self.left_answer.take() {
            out.push(Effect::RemoveRequestHeader(Cow::Borrowed(header)));
        }
    }

    fn on_timer<E: Env + ?Sized>(&mut self, env: &E, now: u64, out: &mut Vec<Effect>) {
        let due = self.hedge_at.is_some_and(|at| at <= now);
        if !due || !self.main_open() || self.extra.is_some() {
            return;
        }
        self.hedge_at = None;
        let Some(position) = self.main.as_ref().map(|m| m.position) else { return };
        self.start_extra(env, Role::Hedge, FailureKind::Timeout, position, now, false, out);
    }

    fn on_call_done<E: Env + ?Sized>(&mut self, env: &E, call: u32, answer: Option<CallAnswer<'_>>, now: u64, out: &mut Vec<Effect>) {
        if let Some((a, _)) = self.extra.as_ref().filter(|(a, _)| a.owns(call)) {
            if a.opening.is_some() {
                self.continue_opening(env, true, answer, now, out);
            } else {
                self.extra_done(env, answer, now, out);
            }
        } else if self.main.as_ref().is_some_and(|m| m.owns(call)) {
            self.continue_opening(env, false, answer, now, out);
        }
    }

    /// The extra attempt's answer (`None`: it failed or never started).
    fn extra_done<E: Env + ?Sized>(&mut self, env: &E, answer: Option<CallAnswer<'_>>, now: u64, out: &mut Vec<Effect>) {
        let Some((mut attempt, role)) = self.extra.take() else { return };
        let outcome = self.judge_call(env, &attempt, answer, now);
        let open_for = attempt.record(env, outcome, now, out);
        let good = answer.is_some_and(|a| a.status > 0 && a.status < 500) && !matches!(outcome, Outcome::Failure(_));
        match role {
            Role::Abandoned => {}
            Role::Hedge => {
                if good && self.main_open() {
                    // The hedge won: the slow main attempt is cut off (Envoy resets it) and counted.
                    if let Some(mut main) = self.main.take() {
                        main.record(env, Outcome::Failure(FailureKind::Timeout), now, out);
                        let from = main.cluster;
                        self.main = Some(main);
                        if let Some(a) = answer {
                            self.pass_on(env, &attempt, a, Some(("x-mcp-warden-hedged-from", from)), out);
                        }
                    }
                }
                // A failed hedge: the main attempt is still on its way.
            }
            Role::Retry { failed, failure } => {
                self.take_back_answer(out);
                match answer.filter(|a| a.status > 0 && a.status < 500) {
                    Some(a) => {
                        let from = (failed != attempt.cluster).then_some(("x-mcp-warden-retried-from", failed));
                        self.pass_on(env, &attempt, a, from, out);
                    }
                    None => {
                        let Some(req) = self.req.as_ref() else { return };
                        let mut statuses: Vec<ClusterStatus<'_>> =
                            answer::failed_status(env, attempt.cluster, open_for).into_iter().collect();
                        if failed != attempt.cluster {
                            statuses.splice(0..0, answer::failed_status(env, failed, None));
                        }
                        if let Some(r) = answer::upstream_failed(env, req, failure, statuses, self.maybe_ran) {
                            self.answer(env, r, "upstream_failed", out);
                        }
                    }
                }
            }
        }
    }

    /// The verdict on a dispatched call's answer.
    fn judge_call<E: Env + ?Sized>(&self, env: &E, attempt: &Attempt, answer: Option<CallAnswer<'_>>, now: u64) -> Outcome {
        let cfg = env.config();
        let Some(a) = answer.filter(|a| a.status > 0) else {
            let limit = self.hold_until_ms.unwrap_or(attempt.started_ms + cfg.failover.retry_timeout_ms);
            let timed_out = now + 5 >= limit;
            return Outcome::Failure(if timed_out { FailureKind::Timeout } else { FailureKind::ConnectFailure });
        };
        let method = self.req.as_ref().map_or(HttpMethod::Post, |r| r.method);
        let expected = self.req.as_ref().and_then(|r| r.parsed.as_ref()).map(|r| r.expected_ids().cloned().collect());
        let mut observer = ResponseObserver::new(expected, cfg.inspect_max_bytes);
        let head = ObservedHead { status: a.status, content_type: a.header("content-type"), local_reply: None };
        observer
            .on_headers(head, method, &cfg.failures)
            .or_else(|| observer.on_body(a.body, true, &cfg.failures))
            .unwrap_or(Outcome::Unknown)
    }

    /// Gives the agent a dispatched call's answer (inspected like a held one), as the sidecar's
    /// own reply; `from` names the cluster it replaces.
    fn pass_on<E: Env + ?Sized>(&mut self, env: &E, attempt: &Attempt, a: CallAnswer<'_>, from: Option<(&'static str, usize)>, out: &mut Vec<Effect>) {
        let cfg = env.config();
        self.take_back_answer(out);
        self.phase = Phase::Answered;
        let Some(req) = self.req.as_ref() else { return };
        let Some(second) = cfg.cluster(attempt.cluster) else { return };
        if req.session.is_none() && req.is_method("initialize") {
            if let Some(sid) = a.header("mcp-session-id") {
                env.session_started(req.server, sid, attempt.cluster, &req.body, attempt.started_ms);
            }
        }
        let mut body = a.body.to_vec();
        if let (200, Some(kind)) = (a.status, held_list_kind(env, req)) {
            let sse = is_sse(a.header("content-type"));
            if kind == ListKind::Tools && cfg.failover.retry {
                env.learn_tools(req.server, &body, sse);
            }
            let decision = if body.len() > cfg.inspector.limits.max_list_bytes {
                env.inspect_oversized(req.server, attempt.cluster, body.len())
            } else {
                env.inspect_list(req.server, attempt.cluster, kind, &body, sse)
            };
            match decision {
                Decision::Forward => {}
                Decision::Replace(new) => body = new,
                Decision::Block { rules, .. } => body = answer::blocked_body(env, req, attempt.cluster, &rules, sse),
            }
        } else if a.status == 200 && req.is_method("tools/list") && req.single() {
            env.learn_tools(req.server, &body, is_sse(a.header("content-type")));
        }
        let served_by = cfg.served_by_header.as_str();
        let mut headers: Vec<(String, String)> = a
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':') && !HOP_BY_HOP.contains(&k.as_str()) && k != served_by)
            .map(|(k, v)| match &self.rewrite {
                // The agent keeps its own session id.
                Some((theirs, agents)) if k == "mcp-session-id" && v == theirs => (k.clone(), agents.clone()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        headers.push((served_by.to_string(), second.name.clone()));
        if let Some((name, cluster)) = from {
            if let Some(c) = cfg.cluster(cluster) {
                headers.push((name.to_string(), c.name.clone()));
            }
        }
        out.push(Effect::SendResponse { status: a.status, headers, body });
    }

    // -----------------------------------------------------------------------------------------
    // Response.

    fn on_response_headers<E: Env + ?Sized>(&mut self, env: &E, head: ResponseHead<'_>, end_of_stream: bool, now: u64, out: &mut Vec<Effect>) -> Action {
        if self.phase != Phase::Routed {
            return Action::Continue;
        }
        let Some(main) = self.main.clone() else { return Action::Continue };
        let cfg = env.config();
        self.answered_headers = true;
        let cluster = main.cluster;
        if let Some(c) = cfg.cluster(cluster) {
            out.push(Effect::SetResponseHeader(Cow::Owned(cfg.served_by_header.clone()), c.name.clone()));
            if let (Some(t), Some(entry)) = (&cfg.trust, env.trust(cluster)) {
                out.push(Effect::SetResponseHeader(Cow::Owned(t.header.clone()), format!("{:.3}", entry.score)));
            }
        }
        let status = head.status;
        let Some(req) = self.req.as_mut() else { return Action::Continue };
        if req.session.is_none() && req.is_method("initialize") {
            if let Some(sid) = head.session_id {
                env.session_started(req.server, sid, cluster, &req.body, now);
            }
        }
        if let (Some((theirs, agents)), Some(sid)) = (&self.rewrite, head.session_id) {
            if sid == theirs {
                out.push(Effect::SetResponseHeader(Cow::Borrowed("mcp-session-id"), agents.clone()));
            }
        }
        if req.parsed.is_none() && !req.body.is_empty() && !req.too_big {
            // The upstream answered before the request's end reached the flow.
            req.parse();
        }
        if status == 404 && !end_of_stream && req.session.is_some() && self.try_renew_session(env, now, out) {
            // Hold the 404 back; the answer in the renewed session replaces it.
            return Action::Pause;
        }
        let Some(req) = self.req.as_ref() else { return Action::Continue };
        let expected = match (&req.parsed, req.method) {
            (Some(r), HttpMethod::Post) => Some(r.expected_ids().cloned().collect()),
            _ => None,
        };
        let mut observer = ResponseObserver::new(expected, cfg.inspect_max_bytes);
        let observed = ObservedHead { status, content_type: head.content_type, local_reply: head.local_reply };
        let verdict = observer.on_headers(observed, req.method, &cfg.failures);
        self.observer = Some(observer);
        if status == 200 && !end_of_stream {
            let sse = is_sse(head.content_type);
            let insp = &cfg.inspector;
            if let Some(kind) = held_list_kind(env, req) {
                // Held until complete (bounded) and inspected: its length may change.
                out.push(Effect::RemoveResponseHeader(Cow::Borrowed("content-length")));
                self.watch = Watch::List(kind, sse);
            } else if req.is_method("tools/list") && req.single() {
                self.watch = Watch::ToolsList(Vec::new(), sse);
            } else if insp.enabled && insp.limits.inspect_results && req.is_method("tools/call") && req.single() {
                self.watch = Watch::Result(Vec::new(), sse);
            }
        }
        if let Some(outcome) = verdict {
            let open_for = self.record_main(env, outcome, now, out);
            if let Outcome::Failure(kind) = outcome {
                let router_done = head.local_reply.is_some();
                if !end_of_stream && self.retry_main(env, kind, now, router_done, out) {
                    // Hold the failed answer back; the other cluster's answer replaces it.
                    return Action::Pause;
                }
                let rewrite = cfg.degraded.rewrite_upstream_errors && !end_of_stream && (router_done || status >= 500);
                if rewrite {
                    self.replace_failed_answer(env, kind, cluster, open_for, out);
                }
            }
        } else if status == 200 && !end_of_stream && self.hold_answer(env, head.content_type, out) {
            // A hedge may still race the held answer until its verdict.
            return Action::Pause;
        }
        self.main_settled();
        Action::Continue
    }

    /// The main attempt's answer goes on to the agent: nothing races it any more.
    fn main_settled(&mut self) {
        self.hedge_at = None;
        if let Some((_, role)) = self.extra.as_mut() {
            if *role == Role::Hedge {
                // The main attempt answered first: it wins; the hedge is only recorded.
                *role = Role::Abandoned;
            }
        }
    }

    /// The main attempt's answer is not on its way to the agent yet (no headers, or held).
    fn main_open(&self) -> bool {
        self.phase == Phase::Routed && (!self.answered_headers || self.hold.is_some())
    }

    /// The main attempt failed with `kind`: the hedge already racing it becomes the retry, or
    /// a retry starts. Returns whether the failed answer is to be held.
    fn retry_main<E: Env + ?Sized>(&mut self, env: &E, kind: FailureKind, now: u64, router_done: bool, out: &mut Vec<Effect>) -> bool {
        let Some(main) = self.main.clone() else { return false };
        let racing = self.extra.as_ref().is_some_and(|(_, r)| *r == Role::Hedge);
        if racing && self.start_hold(env, now, router_done, main.cluster, kind, out) {
            if let Some((_, role)) = self.extra.as_mut() {
                *role = Role::Retry { failed: main.cluster, failure: kind };
            }
            self.phase = Phase::Retrying;
            return true;
        }
        self.start_extra(env, Role::Retry { failed: main.cluster, failure: kind }, kind, main.position, now, router_done, out)
    }

    /// Records the main attempt's verdict (once), with malformed answers also reported as a
    /// security signal (bad data).
    fn record_main<E: Env + ?Sized>(&mut self, env: &E, outcome: Outcome, now: u64, out: &mut Vec<Effect>) -> Option<u64> {
        let main = self.main.as_mut()?;
        if main.recorded {
            return None;
        }
        if let (Outcome::Failure(kind), Some(req)) = (outcome, self.req.as_ref()) {
            if let Some(v) = from_failure(kind) {
                env.violation(req.server, main.cluster, v);
            }
        }
        main.record(env, outcome, now, out)
    }

    /// An answer is sent on whole, or (for a call that may be repeated) only once it is judged:
    /// its headers wait, so that an upstream that resets or stalls mid-answer makes Envoy answer
    /// by itself (the mapper then sends the degraded answer left here instead of a truncated
    /// body), and a bad answer to a safe call can still go to another cluster. SSE answers of
    /// other calls stream on: holding them would hold back their progress.
    fn hold_answer<E: Env + ?Sized>(&mut self, env: &E, content_type: Option<&str>, out: &mut Vec<Effect>) -> bool {
        let cfg = env.config();
        let Some(req) = self.req.as_ref() else { return false };
        if !cfg.failover.hold_json_answers || !req.readable() || req.parsed.is_none() {
            return false;
        }
        let whole = if is_json(content_type) {
            true
        } else if is_sse(content_type) && cfg.failover.retry && self.safe_to_repeat(env, FailureKind::Malformed) && self.has_later_cluster(env, self.main.as_ref().map_or(0, |m| m.position)) {
            false
        } else {
            return false;
        };
        let Some(cluster) = self.main.as_ref().map(|m| m.cluster) else { return false };
        let Some(answer) = answer::left_for_envoy(env, req, cluster) else { return false };
        self.take_back_answer(out);
        out.push(Effect::SetRequestHeader(Cow::Borrowed(HELD_ANSWER_HEADER), answer));
        self.left_answer = Some(HELD_ANSWER_HEADER);
        self.hold = Some(Hold { fed: 0, whole });
        true
    }

    /// Turns a failed upstream answer (Envoy's error page or an upstream 5xx) into a degraded
    /// MCP answer: status and headers now, the body in the body callback.
    fn replace_failed_answer<E: Env + ?Sized>(&mut self, env: &E, kind: FailureKind, cluster: usize, open_for: Option<u64>, out: &mut Vec<Effect>) {
        let Some(req) = self.req.as_ref() else { return };
        let statuses = answer::failed_status(env, cluster, open_for).into_iter().collect();
        let Some(response) = answer::upstream_failed(env, req, kind, statuses, self.maybe_ran) else { return };
        answer::substitute_headers(&response, out);
        out.push(Effect::Stat(Stat::Server(req.server, ServerStat::Degraded)));
        self.replacement = Some(response.body);
    }

    fn on_response_body<E: Env + ?Sized>(&mut self, env: &E, size: usize, body: Option<&[u8]>, end_of_stream: bool, now: u64, out: &mut Vec<Effect>) -> Action {
        match self.phase {
            Phase::Retrying => {
                // The failed answer's body is dropped as it comes; the retry's answer replaces it.
                out.push(Effect::ReplaceResponseBody { replace: size, with: Vec::new() });
                return Action::Pause;
            }
            Phase::Routed => {}
            _ => return Action::Continue,
        }
        if let Some(replacement) = &self.replacement {
            let with = if end_of_stream { replacement.clone() } else { Vec::new() };
            out.push(Effect::ReplaceResponseBody { replace: size, with });
            return Action::Continue;
        }
        let body = body.unwrap_or_default();
        // An answer held until judged: its headers are still in the filter, so a bad answer can
        // yet go elsewhere or be replaced. Envoy buffers while paused: `body` is all so far.
        let mut whole = false;
        let mut chunk = body;
        if let Some(hold) = self.hold {
            if hold.whole {
                if !end_of_stream && size <= HOLD_MAX_BYTES {
                    return Action::Pause;
                }
                whole = end_of_stream;
            } else {
                chunk = body.get(hold.fed..).unwrap_or_default();
                if let Some(h) = self.hold.as_mut() {
                    h.fed = body.len();
                }
                whole = true;
            }
        }
        if let Watch::List(kind, sse) = self.watch {
            self.end_hold_if(whole, out);
            return self.on_held_list(env, kind, sse, size, body, end_of_stream, now, out);
        }
        let judging = self.observer.as_ref().is_some_and(|o| o.verdict().is_none());
        let policy = &env.config().failures;
        let verdict = if judging { self.observer.as_mut().and_then(|o| o.on_body(chunk, end_of_stream, policy)) } else { None };
        // A result is complete once its answer arrived: inspected then, not at the stream's end
        // only (an agent may close the stream as soon as it has read the answer).
        self.keep_copies(env, chunk, end_of_stream || verdict.is_some());
        if !judging {
            self.end_hold_if(true, out);
            return Action::Continue;
        }
        let held_sse = self.hold.is_some_and(|h| !h.whole);
        match verdict {
            None if held_sse && size <= HOLD_MAX_BYTES && !end_of_stream => return Action::Pause,
            None => {
                self.end_hold_if(true, out);
                return Action::Continue;
            }
            Some(_) => {}
        }
        let Some(outcome) = verdict else { return Action::Continue };
        let open_for = self.record_main(env, outcome, now, out);
        if let (true, Outcome::Failure(kind)) = (whole, outcome) {
            // The hold ends without settling: a racing hedge becomes the retry.
            if self.hold.take().is_some() {
                self.take_back_answer(out);
            }
            if self.retry_main(env, kind, now, end_of_stream, out) {
                return Action::Pause;
            }
            self.main_settled();
            if kind == FailureKind::Malformed && env.config().degraded.rewrite_upstream_errors {
                // Not JSON-RPC, or not the answer to this request (wrong id): the agent could
                // not use it, and an SDK waiting for its id would wait until its own timeout.
                self.replace_held_answer(env, size, open_for, out);
            }
            return Action::Continue;
        }
        self.end_hold_if(true, out);
        Action::Continue
    }

    /// Ends a hold (when `ending`): Envoy's mapper must no longer answer in the flow's place.
    fn end_hold_if(&mut self, ending: bool, out: &mut Vec<Effect>) {
        if ending && self.hold.take().is_some() {
            self.take_back_answer(out);
            if self.phase == Phase::Routed {
                self.main_settled();
            }
        }
    }

    /// Replaces a malformed answer held whole (headers and body still in the filter).
    fn replace_held_answer<E: Env + ?Sized>(&mut self, env: &E, size: usize, open_for: Option<u64>, out: &mut Vec<Effect>) {
        let (Some(req), Some(cluster)) = (self.req.as_ref(), self.main.as_ref().map(|m| m.cluster)) else { return };
        let statuses = answer::failed_status(env, cluster, open_for).into_iter().collect();
        let Some(response) = answer::upstream_failed(env, req, FailureKind::Malformed, statuses, self.maybe_ran) else { return };
        answer::substitute_headers(&response, out);
        out.push(Effect::ReplaceResponseBody { replace: size, with: response.body });
        out.push(Effect::Stat(Stat::Server(req.server, ServerStat::Degraded)));
    }

    /// A held list answer: accumulated (the host buffers while paused), then inspected whole.
    #[allow(clippy::too_many_arguments)]
    fn on_held_list<E: Env + ?Sized>(&mut self, env: &E, kind: ListKind, sse: bool, size: usize, body: &[u8], end_of_stream: bool, now: u64, out: &mut Vec<Effect>) -> Action {
        let cfg = env.config();
        let (Some(req), Some(cluster)) = (self.req.as_ref(), self.main.as_ref().map(|m| m.cluster)) else {
            self.watch = Watch::None;
            return Action::Continue;
        };
        let server = req.server;
        if size > cfg.inspector.limits.max_list_bytes {
            // Too large to hold: passed on uninspected, or blocked, as the policy says.
            self.watch = Watch::None;
            self.observer = None;
            if let Decision::Block { rules, .. } = env.inspect_oversized(server, cluster, size) {
                let blocked = answer::blocked_body(env, req, cluster, &rules, sse);
                let with = if end_of_stream { blocked.clone() } else { Vec::new() };
                out.push(Effect::ReplaceResponseBody { replace: size, with });
                out.push(stat(cluster, ClusterStat::SecurityBlocked));
                self.replacement = Some(blocked);
            }
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.watch = Watch::None;
        // The breaker's verdict on the whole answer.
        let policy = &cfg.failures;
        if let Some(outcome) = self.observer.as_mut().and_then(|o| o.on_body(body, true, policy)) {
            self.record_main(env, outcome, now, out);
        }
        let Some(req) = self.req.as_ref() else { return Action::Continue };
        if kind == ListKind::Tools {
            // What the tools declare about retries, for the retry rules (same bytes, same hints).
            env.learn_tools(server, body, sse);
        }
        match env.inspect_list(server, cluster, kind, body, sse) {
            Decision::Forward => {}
            Decision::Replace(new) => {
                out.push(Effect::ReplaceResponseBody { replace: size, with: new });
                out.push(stat(cluster, ClusterStat::SecurityStripped));
            }
            Decision::Block { rules, .. } => {
                let new = answer::blocked_body(env, req, cluster, &rules, sse);
                out.push(Effect::ReplaceResponseBody { replace: size, with: new });
                out.push(stat(cluster, ClusterStat::SecurityBlocked));
                out.push(Effect::Stat(Stat::Server(server, ServerStat::Degraded)));
            }
        }
        Action::Continue
    }

    /// Keeps bounded copies of a `tools/list` answer (to learn tool hints) and of a tool result
    /// (inspected at its end).
    fn keep_copies<E: Env + ?Sized>(&mut self, env: &E, chunk: &[u8], end_of_stream: bool) {
        let cfg = env.config();
        let (Some(req), Some(cluster)) = (self.req.as_ref(), self.main.as_ref().map(|m| m.cluster)) else { return };
        let limit = match self.watch {
            Watch::ToolsList(..) => cfg.inspect_max_bytes,
            Watch::Result(..) => cfg.inspector.limits.max_result_bytes,
            _ => return,
        };
        let (Watch::ToolsList(buf, _) | Watch::Result(buf, _)) = &mut self.watch else { return };
        if buf.len() + chunk.len() > limit {
            self.watch = Watch::None;
            return;
        }
        buf.extend_from_slice(chunk);
        if end_of_stream {
            match std::mem::replace(&mut self.watch, Watch::None) {
                Watch::ToolsList(buf, sse) => env.learn_tools(req.server, &buf, sse),
                Watch::Result(buf, sse) => env.inspect_result(req.server, cluster, req.tool(), &buf, sse),
                _ => {}
            }
        }
    }

    /// The exchange is over: a DELETE forgets its session; a call without a verdict (reset
    /// mid-stream, or the agent went away) is judged by Envoy's flags.
    fn on_done<E: Env + ?Sized>(&mut self, env: &E, flags: u64, now: u64, out: &mut Vec<Effect>) {
        // A copy the stream's end never completed (cut, or the agent left): what arrived counts.
        self.keep_copies(env, &[], true);
        if let (Some(req), Some(_)) = (self.req.as_ref(), self.record.as_ref()) {
            if let (true, Some(sid)) = (req.deleting, req.session.as_deref()) {
                env.session_ended(req.server, sid);
            }
        }
        if let Some((mut extra, _)) = self.extra.take() {
            extra.release(env, now);
        }
        if self.main.as_ref().is_none_or(|m| m.recorded) {
            return;
        }
        let upstream_fault = UPSTREAM_REMOTE_RESET
            | UPSTREAM_CONNECTION_TERMINATION
            | UPSTREAM_REQUEST_TIMEOUT
            | STREAM_IDLE_TIMEOUT
            | UPSTREAM_PROTOCOL_ERROR
            | UPSTREAM_CONNECTION_FAILURE;
        let outcome = if flags & upstream_fault != 0 {
            Outcome::Failure(crate::mcp::classify::failure_from_envoy(flags, "", 0))
        } else {
            Outcome::Unknown
        };
        self.record_main(env, outcome, now, out);
    }
}

/// Whether trust forbids the cluster: `Some(true)` quarantined, `Some(false)` under the
/// minimum trust (when enforced), `None` allowed or unknown.
fn untrusted<E: Env + ?Sized>(env: &E, cluster: usize) -> Option<bool> {
    let t = env.config().trust.as_ref()?;
    match env.trust(cluster)?.state {
        TrustState::Quarantined => Some(true),
        TrustState::Degraded if t.enforce_min_trust => Some(false),
        _ => None,
    }
}

/// The cluster index named `name` in `server`'s chain.
fn cluster_index<E: Env + ?Sized>(env: &E, server: usize, name: &str) -> Option<usize> {
    let cfg = env.config();
    cfg.servers.get(server)?.clusters.iter().copied().find(|&c| cfg.cluster(c).is_some_and(|c| c.name == name))
}

/// The list kind of a single list request whose answer is held for inspection.
fn held_list_kind<E: Env + ?Sized>(env: &E, req: &Request) -> Option<ListKind> {
    if !env.config().inspector.enabled || req.parsed.as_ref().is_none_or(|r| r.batch) {
        return None;
    }
    ListKind::from_method(req.method_name()?)
}
