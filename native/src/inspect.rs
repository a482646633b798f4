//! Security inspection glue for the native host (the rules and their evaluation are the core's,
//! `mcp_warden_core::inspect`; docs/SECURITY.md): the per-configuration cache of list verdicts,
//! tool pins and tool owners in process memory, and findings queued for the trust report.
//! Same decisions and bounds as the wasm filter's `inspect.rs`, over locks instead of shared data.

use crate::config::Shared;
use crate::host::Stream;
use crate::state::{self, lock};
use mcp_warden_core::flow::Decision;
use mcp_warden_core::inspect::{
    inspect_list, inspect_tool_result, inspect_tools_list_checked, inspect_tools_list_pinned, Action, Finding, Inspector, ListKind, Shadowed, ToolPins,
    Violation,
};
use mcp_warden_core::mcp::sse::{frame_messages, message_datas};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Most tool names remembered for cross-server shadowing, per process.
const MAX_TOOL_OWNERS: usize = 4096;

/// The `result` of a JSON-RPC answer, as the server wrote it (the id left out).
#[derive(serde::Deserialize)]
struct ResultOnly<'a> {
    #[serde(borrow)]
    result: &'a serde_json::value::RawValue,
}

/// A hash of the results of the answer's messages, or `None` when one is not a plain result.
/// Messages larger than `limit` are left out (pass at least the body's length to cover all).
pub fn results_hash(body: &[u8], sse: bool, limit: usize) -> Option<u64> {
    // Keys drawn once per process: a server cannot craft two lists with the same hash offline
    // (a cached verdict would then pass the second list uninspected).
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let mut h = KEYS.get_or_init(RandomState::new).build_hasher();
    for msg in messages(body, sse, limit) {
        let r: ResultOnly<'_> = serde_json::from_slice(&msg).ok()?;
        h.write(r.result.get().as_bytes());
    }
    Some(h.finish())
}

/// The JSON-RPC messages of a complete body: the body itself, or each SSE message's data.
fn messages(body: &[u8], sse: bool, limit: usize) -> Vec<Vec<u8>> {
    if sse {
        message_datas(body, limit)
    } else {
        vec![body.to_vec()]
    }
}

/// Inspects a complete list answer; an identical one (same results) gets the decision already
/// taken for it without a second inspection (one cache entry per (server, kind)). `hash` is
/// [`results_hash`] of `body` with the inspector's `max_list_bytes` as the limit.
#[allow(clippy::too_many_arguments)]
pub fn list_answer(
    shared: &Shared,
    stream: Stream,
    server: &str,
    cluster: usize,
    kind: ListKind,
    body: &[u8],
    sse: bool,
    hash: Option<u64>,
) -> Decision {
    // Keyed with the trust table's approvals and verdicts too: a decision taken before an
    // approval (or a verdict) arrived is not reused after it.
    let lists = state::process().trust.read().map_or(0, |t| t.lists);
    let hash = hash.map(|h| h ^ lists);
    let key = (server.to_string(), kind.key());
    if let (Some(hash), Some((h, decision))) = (hash, lock(&shared.list_verdicts).get(&key)) {
        if *h == hash {
            return decision.clone();
        }
    }
    let decision = inspect_list_answer(shared, stream, server, cluster, kind, body, sse);
    // A rewritten answer carries its request's id: only decisions that do not are kept.
    match (hash, &decision) {
        (Some(hash), Decision::Forward | Decision::Block { .. }) => {
            lock(&shared.list_verdicts).insert(key, (hash, decision.clone()));
        }
        _ => {
            lock(&shared.list_verdicts).remove(&key);
        }
    }
    decision
}

fn inspect_list_answer(shared: &Shared, stream: Stream, server: &str, cluster: usize, kind: ListKind, body: &[u8], sse: bool) -> Decision {
    let insp = &shared.config.inspector;
    let msgs = messages(body, sse, insp.limits.max_list_bytes);
    let mut worst = Action::Pass;
    let mut findings: Vec<Finding> = Vec::new();
    let mut rewritten: Vec<Option<Vec<u8>>> = Vec::with_capacity(msgs.len());
    for msg in &msgs {
        let verdict = if kind == ListKind::Tools {
            let v = {
                let mut pins = lock(&state::process().pins);
                // Bounded per server by the policy and by the configuration's server count.
                let pins = pins.get_or_insert_with(|| {
                    ToolPins::new(insp.limits.max_pins_per_server, shared.config.servers.len().max(1))
                });
                // Operators' approvals of held changes, as the aggregator published them for the
                // cluster that answered.
                // ... and the verdicts of its mesh-wide scan, by definition fingerprint.
                let name = shared.config.cluster(cluster).map_or("", |c| c.name.as_str());
                match state::process().trust.read() {
                    Ok(table) => {
                        pins.set_approved(server, table.approved(name));
                        inspect_tools_list_checked(insp, server, msg, pins, &table.verdicts)
                    }
                    Err(_) => inspect_tools_list_pinned(insp, server, msg, pins),
                }
            };
            findings.extend(shadowing(insp, server, v.items.iter().map(|i| i.name.as_str())));
            // Definitions this process never sent go to the aggregator's mesh-wide scan.
            if shared.config.trust.is_some() {
                let mut outbox = lock(&state::process().outbox);
                if outbox.wants(v.items.iter().map(|i| i.fingerprint)) {
                    outbox.offer(shared.config.cluster(cluster).map_or("", |c| c.name.as_str()), msg);
                }
            }
            v
        } else {
            inspect_list(insp, server, kind, msg)
        };
        worst = worst.max(verdict.action);
        findings.extend(verdict.findings);
        rewritten.push(verdict.rewritten);
    }
    report(shared, stream, cluster, &findings, worst);
    match worst {
        Action::Pass | Action::Record => Decision::Forward,
        Action::Strip => {
            let parts: Vec<&[u8]> =
                msgs.iter().zip(&rewritten).map(|(m, r)| r.as_deref().unwrap_or(m.as_slice())).collect();
            match (sse, parts.as_slice()) {
                (false, [one]) => Decision::Replace(one.to_vec()),
                _ => Decision::Replace(frame_messages(&parts)),
            }
        }
        Action::Block | Action::Quarantine => {
            Decision::Block { rules: rule_ids(&findings, insp, worst), quarantine: worst == Action::Quarantine }
        }
    }
}

/// The rules whose findings decided `action`, for the agent's message.
fn rule_ids(findings: &[Finding], insp: &Inspector, action: Action) -> String {
    let mut ids: Vec<&str> =
        findings.iter().filter(|f| insp.action_for(f.severity) >= action).map(|f| f.rule.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.join(", ")
}

/// A list answer too large to hold: reported, and blocked if the policy says so.
pub fn oversized(shared: &Shared, stream: Stream, server: &str, cluster: usize, size: usize) -> Decision {
    let insp = &shared.config.inspector;
    let detail = format!("answer of {size} bytes, past max_list_bytes {}", insp.limits.max_list_bytes);
    let Some(f) = insp.violation(server, Violation::Oversized, &detail) else {
        return Decision::Forward;
    };
    let action = insp.action_for(f.severity);
    let rules = f.rule.clone();
    report(shared, stream, cluster, std::slice::from_ref(&f), action);
    match action {
        Action::Block | Action::Quarantine => Decision::Block { rules, quarantine: action == Action::Quarantine },
        _ => Decision::Forward,
    }
}

/// Inspects a complete tool result (never held: findings are recorded only).
pub fn tool_result(shared: &Shared, stream: Stream, server: &str, cluster: usize, tool: Option<&str>, body: &[u8], sse: bool) {
    let insp = &shared.config.inspector;
    let mut findings = Vec::new();
    for msg in messages(body, sse, insp.limits.max_result_bytes) {
        findings.extend(inspect_tool_result(insp, server, tool, &msg).findings);
    }
    report(shared, stream, cluster, &findings, Action::Record);
}

/// A protocol violation the breaker's classifier saw (malformed answer, wrong id).
pub fn violation(shared: &Shared, stream: Stream, server: &str, cluster: usize, v: Violation) {
    if let Some(f) = shared.config.inspector.violation(server, v, "seen by the response classifier") {
        report(shared, stream, cluster, std::slice::from_ref(&f), Action::Record);
    }
}

/// Counts findings and queues them for the trust report; `quarantine` asks the aggregator to
/// quarantine.
fn report(shared: &Shared, stream: Stream, cluster: usize, findings: &[Finding], action: Action) {
    if findings.is_empty() {
        return;
    }
    let insp = &shared.config.inspector;
    let name = shared.config.cluster(cluster).map_or("", |c| c.name.as_str());
    if let Some(m) = shared.metrics.cluster(cluster) {
        stream.increment(m.security_findings, findings.len() as u64);
    }
    let mut pending = lock(&state::process().pending);
    for f in findings {
        let mut event = f.to_event();
        event.quarantine = action == Action::Quarantine && insp.action_for(f.severity) == Action::Quarantine;
        pending.record_security(name, event);
    }
    if findings.iter().any(|f| insp.action_for(f.severity) >= Action::Strip) {
        log::warn!(
            "mcp-warden: security findings on `{}` ({}): {}",
            name,
            action.as_str(),
            findings.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
}

/// Tools this server lists under a name another server listed first.
fn shadowing<'a>(insp: &Inspector, server: &str, names: impl Iterator<Item = &'a str> + Clone) -> Vec<Finding> {
    let mut owners = lock(&state::process().tool_owners);
    let mut shadowed: Vec<Shadowed> = Vec::new();
    for name in names {
        match owners.get(name) {
            Some(owner) if owner != server => {
                shadowed.push(Shadowed { tool: name.to_string(), servers: vec![owner.clone(), server.to_string()] })
            }
            Some(_) => {}
            // First sightings claim their names.
            None if owners.len() < MAX_TOOL_OWNERS => {
                owners.insert(name.to_string(), server.to_string());
            }
            None => {}
        }
    }
    drop(owners);
    insp.shadowing_findings(&shadowed)
}
