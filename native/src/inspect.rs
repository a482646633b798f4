//! Security inspection glue for the native host (the rules and their evaluation are the core's,
//! `mcp_warden_core::inspect`, and what both hosts do around them `flow::inspection`;
//! docs/SECURITY.md): the per-configuration cache of list verdicts, tool pins and tool owners in
//! process memory, and findings queued for the trust report. Same decisions and bounds as the
//! wasm filter's `inspect.rs`, over locks instead of shared data.

use crate::config::Shared;
use crate::host::Stream;
use crate::state::{self, lock};
use mcp_warden_core::flow::inspection::{self, Inspected};
use mcp_warden_core::flow::Decision;
use mcp_warden_core::inspect::{
    inspect_tools_list_checked, inspect_tools_list_pinned, Action, Finding, Inspector, ListKind, ToolPins, Violation,
};
use std::collections::hash_map::RandomState;
use std::sync::OnceLock;

/// [`inspection::results_hash`], keyed once per process.
pub fn results_hash(body: &[u8], sse: bool, limit: usize) -> Option<u64> {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    inspection::results_hash(KEYS.get_or_init(RandomState::new), body, sse, limit)
}

/// Inspects a complete list answer; an identical one (same results) gets the decision already
/// taken for it (see [`inspection::ListVerdicts`]). `hash` is [`results_hash`] of `body` with
/// the inspector's `max_list_bytes` as the limit.
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
    if let Some(decision) = hash.and_then(|h| lock(&shared.list_verdicts).get(server, kind, h)) {
        return decision;
    }
    let insp = &shared.config.inspector;
    let name = shared.config.cluster(cluster).map_or("", |c| c.name.as_str());
    let inspected = inspection::list_answer(insp, server, kind, body, sse, |msg| {
        let mut v = {
            let mut pins = lock(&state::process().pins);
            // Bounded per server by the policy and by the configuration's server count.
            let pins = pins
                .get_or_insert_with(|| ToolPins::new(insp.limits.max_pins_per_server, shared.config.servers.len().max(1)));
            // Operators' approvals of held changes, as the aggregator published them for the
            // cluster that answered, and the verdicts of its mesh-wide scan, by fingerprint.
            match state::process().trust.read() {
                Ok(table) => {
                    pins.set_approved(server, table.approved(name));
                    inspect_tools_list_checked(insp, server, msg, pins, &table.verdicts)
                }
                Err(_) => inspect_tools_list_pinned(insp, server, msg, pins),
            }
        };
        v.findings.extend(shadowing(insp, server, v.items.iter().map(|i| i.name.as_str())));
        // Definitions this process never sent go to the aggregator's mesh-wide scan.
        if shared.config.trust.is_some() {
            let mut outbox = lock(&state::process().outbox);
            if outbox.wants(v.items.iter().map(|i| i.fingerprint)) {
                outbox.offer(name, msg);
            }
        }
        v
    });
    report(shared, stream, cluster, &inspected);
    lock(&shared.list_verdicts).remember(server, kind, hash, &inspected.decision);
    inspected.decision
}

/// A list answer too large to hold: reported, and blocked if the policy says so.
pub fn oversized(shared: &Shared, stream: Stream, server: &str, cluster: usize, size: usize) -> Decision {
    let inspected = inspection::oversized(&shared.config.inspector, server, size);
    report(shared, stream, cluster, &inspected);
    inspected.decision
}

/// Inspects a complete tool result (never held: findings are recorded only).
pub fn tool_result(shared: &Shared, stream: Stream, server: &str, cluster: usize, tool: Option<&str>, body: &[u8], sse: bool) {
    let findings = inspection::tool_result(&shared.config.inspector, server, tool, body, sse);
    report(shared, stream, cluster, &Inspected { decision: Decision::Forward, findings, action: Action::Record });
}

/// A protocol violation the breaker's classifier saw (malformed answer, wrong id).
pub fn violation(shared: &Shared, stream: Stream, server: &str, cluster: usize, v: Violation) {
    if let Some(f) = shared.config.inspector.violation(server, v, "seen by the response classifier") {
        let inspected = Inspected { decision: Decision::Forward, findings: vec![f], action: Action::Record };
        report(shared, stream, cluster, &inspected);
    }
}

/// Counts the findings and queues them for the trust report.
fn report(shared: &Shared, stream: Stream, cluster: usize, inspected: &Inspected) {
    let findings = &inspected.findings;
    if findings.is_empty() {
        return;
    }
    let insp = &shared.config.inspector;
    let name = shared.config.cluster(cluster).map_or("", |c| c.name.as_str());
    if let Some(m) = shared.metrics.cluster(cluster) {
        stream.increment(m.security_findings, findings.len() as u64);
    }
    let mut pending = lock(&state::process().pending);
    for event in inspection::security_events(insp, findings, inspected.action) {
        pending.record_security(name, event);
    }
    if let Some(line) = inspection::warning(insp, name, findings, inspected.action) {
        log::warn!("{line}");
    }
}

/// Tools this server lists under a name another server listed first (first sightings claim
/// their names).
fn shadowing<'a>(insp: &Inspector, server: &str, names: impl Iterator<Item = &'a str> + Clone) -> Vec<Finding> {
    let mut owners = lock(&state::process().tool_owners);
    let (shadowed, unowned) = inspection::shadowed(&owners, server, names.clone());
    if unowned {
        inspection::claim_tools(&mut owners, server, names);
    }
    drop(owners);
    insp.shadowing_findings(&shadowed)
}
