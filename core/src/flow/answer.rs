//! The answers the flow gives itself: degraded answers for a refused or failed request, the
//! answer left for Envoy's local reply mapper while an answer is held, and the effects that send
//! or substitute them.

use super::env::{Env, TemplateKey};
use super::io::{Effect, ServerStat, Stat};
use super::request::Request;
use crate::degrade::{ClusterStatus, DegradedResponse, Reason, Unavailable};
use crate::mcp::classify::HttpMethod;
use crate::mcp::sse::frame_messages;
use crate::outcome::FailureKind;
use std::borrow::Cow;

/// Request header holding the answer (503, no id) Envoy's local reply mapper gives for a request
/// without an id (a notification) if Envoy answers by itself during a hold.
pub const HELD_ERROR_HEADER: &str = "x-mcp-warden-held-error";
/// Request header holding the answer Envoy's local reply mapper gives if Envoy answers by itself
/// during a hold (see [`left_for_envoy`]).
pub const HELD_ANSWER_HEADER: &str = "x-mcp-warden-held-answer";
/// Response header naming why the sidecar answered itself.
pub const DEGRADED_HEADER: &str = "x-mcp-warden-degraded";

/// A cluster that refused the request, as remembered for the degraded answer.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    pub cluster: usize,
    pub half_open: bool,
    pub retry_after_ms: u64,
    /// Refused by trust, not by the breaker: `Some(true)` quarantined, `Some(false)` low trust.
    pub untrusted: Option<bool>,
}

/// What a degraded answer says, for `req`.
pub fn unavailable<'a, E: Env + ?Sized>(
    env: &'a E,
    req: &Request,
    reason: Reason,
    clusters: Vec<ClusterStatus<'a>>,
    maybe_ran: bool,
) -> Option<Unavailable<'a>> {
    let cfg = env.config();
    let server = cfg.servers.get(req.server)?;
    Some(Unavailable {
        server: &server.name,
        reason,
        clusters,
        fallbacks_configured: server.clusters.len().saturating_sub(1),
        error_code: cfg.degraded.error_code,
        modern_protocol: req.modern_protocol,
        maybe_ran,
        detail: None,
    })
}

/// The answer for this request: one per id of a read body, else 503 without an id.
pub fn for_request(req: &Request, u: &Unavailable<'_>) -> DegradedResponse {
    match req.method {
        HttpMethod::Post if !req.too_big => u.respond(req.parsed.as_ref(), req.mcp_method.as_deref(), req.mcp_name.as_deref()),
        _ => u.respond_without_id(),
    }
}

/// The status of one cluster that failed this request (`open_for` if it tripped).
pub fn failed_status<E: Env + ?Sized>(env: &E, cluster: usize, open_for: Option<u64>) -> Option<ClusterStatus<'_>> {
    Some(ClusterStatus {
        cluster: &env.config().cluster(cluster)?.name,
        state: if open_for.is_some() { "open" } else { "failed" },
        retry_after_ms: open_for.unwrap_or(1_000),
    })
}

/// The degraded answer for a request a cluster failed.
pub fn upstream_failed<E: Env + ?Sized>(
    env: &E,
    req: &Request,
    kind: FailureKind,
    statuses: Vec<ClusterStatus<'_>>,
    maybe_ran: bool,
) -> Option<DegradedResponse> {
    let u = unavailable(env, req, Reason::UpstreamFailed(kind), statuses, maybe_ran)?;
    Some(for_request(req, &u))
}

/// The degraded answer replacing a blocked list answer, framed like it.
pub fn blocked_body<E: Env + ?Sized>(env: &E, req: &Request, cluster: usize, rules: &str, sse: bool) -> Vec<u8> {
    let Some(name) = env.config().cluster(cluster).map(|c| c.name.as_str()) else { return Vec::new() };
    let status = ClusterStatus { cluster: name, state: "blocked", retry_after_ms: 60_000 };
    let Some(mut u) = unavailable(env, req, Reason::Blocked, vec![status], false) else { return Vec::new() };
    u.detail = Some(rules);
    let r = u.respond(req.parsed.as_ref(), req.mcp_method.as_deref(), req.mcp_name.as_deref());
    if sse {
        frame_messages(&[&r.body])
    } else {
        r.body
    }
}

/// Sends a degraded answer as the sidecar's own reply.
pub fn send<E: Env + ?Sized>(env: &E, server: usize, response: DegradedResponse, why: &str, out: &mut Vec<Effect>) {
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("retry-after".to_string(), response.retry_after_s.to_string()),
        (env.config().served_by_header.clone(), "none".to_string()),
        (DEGRADED_HEADER.to_string(), why.to_string()),
    ];
    out.push(Effect::Stat(Stat::Server(server, ServerStat::Degraded)));
    out.push(Effect::SendResponse { status: response.status, headers, body: response.body });
}

/// Turns the answer whose headers are in the filter into `response`: status and headers now,
/// the body with `body` (the host's buffer, `replace` bytes) or later.
pub fn substitute_headers(response: &DegradedResponse, out: &mut Vec<Effect>) {
    let set = |k: &'static str, v: String| Effect::SetResponseHeader(Cow::Borrowed(k), v);
    out.push(set(":status", response.status.to_string()));
    out.push(set("content-type", "application/json".into()));
    out.push(set("retry-after", response.retry_after_s.to_string()));
    out.push(set(DEGRADED_HEADER, "upstream_failed".into()));
    out.push(Effect::RemoveResponseHeader(Cow::Borrowed("content-length")));
}

/// The degraded answer ("the call may have run") left in a request header for Envoy's local
/// reply mapper while an answer is held: built once per (cluster, protocol, tool) and given
/// this request's id. `None` for requests that are not one call with an id.
pub fn left_for_envoy<E: Env + ?Sized>(env: &E, req: &Request, cluster: usize) -> Option<String> {
    let r = req.parsed.as_ref().filter(|r| !r.batch)?;
    let id = r.entries.first()?.id.as_ref()?;
    let method = req.method_name();
    let call = method == Some("tools/call");
    let tool = if call { req.tool().map(str::to_string) } else { None };
    let key = TemplateKey { cluster, modern_protocol: req.modern_protocol, tools_call: call, tool: tool.clone() };
    let build = || {
        let status = ClusterStatus { cluster: &env.config().cluster(cluster)?.name, state: "failed", retry_after_ms: 1_000 };
        let u = unavailable(env, req, Reason::UpstreamFailed(FailureKind::Reset), vec![status], true)?;
        u.answer_template(method, tool.as_deref())
    };
    let (prefix, suffix) = env.answer_template(key, &build)?;
    Some(format!("{prefix}{id}{suffix}"))
}
