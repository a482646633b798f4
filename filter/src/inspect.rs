//! Security inspection on the data path (the rules and their evaluation are the core's,
//! `mcp_warden_core::inspect`; docs/SECURITY.md). List answers are held, bounded, and inspected
//! once complete: forwarded, stripped of the offending items, or replaced by a degraded answer as
//! the policy says. Tool definitions are pinned per server in shared data. Tool results are
//! inspected on a bounded copy and never held. Every finding joins the VM's pending signals for
//! the next trust report.

use crate::host::HostStore;
use crate::shared::Shared;
use crate::shared_json;
use mcp_warden_core::breaker::store::{CREATE_ONLY, MAX_CAS_ATTEMPTS};
use mcp_warden_core::breaker::SharedStore;
use mcp_warden_core::inspect::{
    inspect_list, inspect_tool_result, inspect_tools_list_checked, Action, Finding, Inspector, ListKind, ServerPins,
    Shadowed, ToolPins,
};
use mcp_warden_core::mcp::sse::{frame_messages, message_datas};
use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Most tool names remembered for cross-server shadowing, per sidecar.
const MAX_TOOL_OWNERS: usize = 4096;
const TOOL_OWNERS_KEY: &str = "mcp_warden.tool_owners";

fn pins_key(server: &str) -> String {
    format!("mcp_warden.pins.{server}")
}

pub use mcp_warden_core::flow::Decision;

/// The `result` of a JSON-RPC answer, as the server wrote it (the id left out: each request has
/// its own).
#[derive(serde::Deserialize)]
struct ResultOnly<'a> {
    #[serde(borrow)]
    result: &'a serde_json::value::RawValue,
}

/// A hash of the results of the answer's messages, or `None` when one is not a plain result.
/// Messages larger than `limit` are left out (pass at least the body's length to cover all).
/// Keyed per VM (drawn once from WASI's `random_get`, as every `HashMap` here is): with fixed
/// keys a server could prepare a poisoned list hashing like a clean one it listed before, and
/// the poisoned one would get the clean one's cached decision uninspected.
pub(crate) fn results_hash(body: &[u8], sse: bool, limit: usize) -> Option<u64> {
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

/// Frames JSON-RPC messages as the SSE answer the agent expects.
pub fn sse_frame(messages: &[&[u8]]) -> Vec<u8> {
    frame_messages(messages)
}

/// Inspects a complete list answer of `server` (served by `cluster`), queues the findings and
/// decides what the agent gets. Agents list tools at every session start and servers answer the
/// same list: an identical one (by the hash of its results) is forwarded (or blocked) again
/// without a second inspection, its findings having been reported the first time. Stripped
/// answers are inspected each time (the rewrite carries the request's id). One cache entry per
/// (server, kind): bounded by the configuration.
/// `results` is [`results_hash`] of `body` with the inspector's `max_list_bytes` as the limit.
pub fn list_answer(shared: &Shared, server: &str, cluster: &str, kind: ListKind, body: &[u8], sse: bool, results: Option<u64>) -> Decision {
    // A tools list is judged against the server's pins, which other VMs change, and the
    // approvals and verdicts of the trust table: the cached decision holds only while the pins
    // are those it left (their shared-data version) and the table's lists are those it saw.
    let pins_version = || {
        let cas = if kind == ListKind::Tools { HostStore.get(&pins_key(server)).ok().and_then(|(_, cas)| cas) } else { None };
        u64::from(cas.unwrap_or(0)).rotate_left(32) ^ shared.trust.borrow().lists
    };
    let key = (server.to_string(), kind.key());
    if let (Some(r), Some((h, decision))) = (results, shared.list_verdicts.borrow().get(&key)) {
        if *h == r ^ pins_version() {
            return decision.clone();
        }
    }
    let decision = inspect_list_answer(shared, server, cluster, kind, body, sse);
    let hash = results.map(|r| r ^ pins_version());
    // A rewritten answer carries its request's id: only decisions that do not are kept.
    match (hash, &decision) {
        (Some(hash), Decision::Forward | Decision::Block { .. }) => {
            shared.list_verdicts.borrow_mut().insert(key, (hash, decision.clone()));
        }
        _ => {
            shared.list_verdicts.borrow_mut().remove(&key);
        }
    }
    decision
}

fn inspect_list_answer(shared: &Shared, server: &str, cluster: &str, kind: ListKind, body: &[u8], sse: bool) -> Decision {
    let insp = &shared.config.inspector;
    let msgs = messages(body, sse, insp.limits.max_list_bytes);
    let mut worst = Action::Pass;
    let mut findings: Vec<Finding> = Vec::new();
    let mut rewritten: Vec<Option<Vec<u8>>> = Vec::with_capacity(msgs.len());
    for msg in &msgs {
        let verdict = if kind == ListKind::Tools {
            let mut pins = load_pins(insp, server);
            // Operators' approvals of held changes, as the aggregator published them for the
            // cluster that answered.
            // ... and the verdicts of its mesh-wide scan, by definition fingerprint.
            let table = shared.trust.borrow();
            pins.set_approved(server, table.approved(cluster));
            let v = inspect_tools_list_checked(insp, server, msg, &mut pins, &table.verdicts);
            drop(table);
            // Definitions this VM never sent go to the aggregator's mesh-wide scan.
            if shared.config.trust.is_some() && shared.outbox.borrow().wants(v.items.iter().map(|i| i.fingerprint)) {
                shared.outbox.borrow_mut().offer(cluster, msg);
            }
            // A held change keeps its old pin (so the next list holds it too) until cleared.
            store_pins(insp, server, v.items.iter().filter(|i| !i.held).map(|i| (i.name.as_str(), i.fingerprint, i.capability)));
            findings.extend(shadowing(insp, server, v.items.iter().map(|i| i.name.as_str())));
            v
        } else {
            inspect_list(insp, server, kind, msg)
        };
        worst = worst.max(verdict.action);
        findings.extend(verdict.findings);
        rewritten.push(verdict.rewritten);
    }
    report(shared, cluster, &findings, worst);
    match worst {
        Action::Pass | Action::Record => Decision::Forward,
        Action::Strip => {
            let parts: Vec<&[u8]> =
                msgs.iter().zip(&rewritten).map(|(m, r)| r.as_deref().unwrap_or(m.as_slice())).collect();
            match (sse, parts.as_slice()) {
                (false, [one]) => Decision::Replace(one.to_vec()),
                _ => Decision::Replace(sse_frame(&parts)),
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
pub fn oversized(shared: &Shared, server: &str, cluster: &str, size: usize) -> Decision {
    let insp = &shared.config.inspector;
    let detail = format!("answer of {size} bytes, past max_list_bytes {}", insp.limits.max_list_bytes);
    let Some(f) = insp.violation(server, mcp_warden_core::inspect::Violation::Oversized, &detail) else {
        return Decision::Forward;
    };
    let action = insp.action_for(f.severity);
    let rules = f.rule.clone();
    report(shared, cluster, std::slice::from_ref(&f), action);
    match action {
        Action::Block | Action::Quarantine => Decision::Block { rules, quarantine: action == Action::Quarantine },
        _ => Decision::Forward,
    }
}

/// Inspects a complete tool result (never held: findings are recorded only).
pub fn tool_result(shared: &Shared, server: &str, cluster: &str, tool: Option<&str>, body: &[u8], sse: bool) {
    let insp = &shared.config.inspector;
    let mut findings = Vec::new();
    for msg in messages(body, sse, insp.limits.max_result_bytes) {
        findings.extend(inspect_tool_result(insp, server, tool, &msg).findings);
    }
    report(shared, cluster, &findings, Action::Record);
}

/// A protocol violation the breaker's classifier saw (malformed answer, wrong id).
pub fn violation(shared: &Shared, server: &str, cluster: &str, v: mcp_warden_core::inspect::Violation) {
    if let Some(f) = shared.config.inspector.violation(server, v, "seen by the response classifier") {
        report(shared, cluster, std::slice::from_ref(&f), Action::Record);
    }
}

/// Queues findings for the trust report; `quarantine` asks the aggregator to quarantine.
fn report(shared: &Shared, cluster: &str, findings: &[Finding], action: Action) {
    if findings.is_empty() {
        return;
    }
    let insp = &shared.config.inspector;
    if let Some(i) = shared.config.clusters.iter().position(|c| c.name == cluster) {
        if let Some(m) = shared.metrics.cluster(i) {
            crate::host::increment(m.security_findings, findings.len() as i64);
        }
    }
    let mut pending = shared.pending.borrow_mut();
    for f in findings {
        let mut event = f.to_event();
        event.quarantine = action == Action::Quarantine && insp.action_for(f.severity) == Action::Quarantine;
        pending.record_security(cluster, event);
    }
    if findings.iter().any(|f| insp.action_for(f.severity) >= Action::Strip) {
        log::warn!(
            "mcp-warden: security findings on `{}` ({}): {}",
            cluster,
            action.as_str(),
            findings.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
}

fn load_pins(insp: &Inspector, server: &str) -> ToolPins {
    let mut pins = ToolPins::new(insp.limits.max_pins_per_server, 1);
    if let Ok((Some(bytes), _)) = HostStore.get(&pins_key(server)) {
        if !bytes.is_empty() {
            if let Err(e) = pins.load_server(server, &bytes) {
                log::warn!("mcp-warden: unreadable tool pins of `{server}` ({}); pinning afresh", e.0);
            }
        }
    }
    pins
}

/// Stores the fingerprints just listed as the server's pins: new tools get pinned, a changed
/// definition (reported once as `pin/tool-changed`) becomes the new pin. One write, only when
/// something changed.
fn store_pins<'a>(
    insp: &Inspector,
    server: &str,
    items: impl Iterator<Item = (&'a str, mcp_warden_core::inspect::Fingerprint, mcp_warden_core::inspect::Fingerprint)> + Clone,
) {
    let key = pins_key(server);
    let cap = insp.limits.max_pins_per_server;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Ok((bytes, cas)) = HostStore.get(&key) else { return };
        let mut pins = match bytes.as_deref().filter(|b| !b.is_empty()).map(|b| ServerPins::decode(b, cap)) {
            Some(Ok(p)) => p,
            _ => ServerPins::new(cap),
        };
        let mut changed = false;
        for (name, fp, cap) in items.clone() {
            if pins.get(name) != Some(fp) || pins.capability(name) != Some(cap) {
                pins.observe(name, fp);
                pins.observe_capability(name, cap);
                changed = true;
            }
        }
        if !changed {
            return;
        }
        match HostStore.set(&key, &pins.encode(), cas.or(Some(CREATE_ONLY))) {
            Ok(()) => return,
            Err(mcp_warden_core::breaker::StoreError::CasMismatch) => continue,
            Err(e) => {
                log::debug!("mcp-warden: tool pins of `{server}` not stored: {e}");
                return;
            }
        }
    }
}

/// Tools this server lists under a name another server of this sidecar listed first.
fn shadowing<'a>(insp: &Inspector, server: &str, names: impl Iterator<Item = &'a str> + Clone) -> Vec<Finding> {
    let owners: BTreeMap<String, String> = shared_json::load(TOOL_OWNERS_KEY);
    let mut shadowed: Vec<Shadowed> = Vec::new();
    let mut unowned = false;
    for name in names.clone() {
        match owners.get(name) {
            Some(owner) if owner != server => {
                shadowed.push(Shadowed { tool: name.to_string(), servers: vec![owner.clone(), server.to_string()] })
            }
            Some(_) => {}
            None => unowned = owners.len() < MAX_TOOL_OWNERS,
        }
    }
    if unowned {
        // First sightings claim their names (one write, only when something is new).
        let result = shared_json::update::<BTreeMap<String, String>>(TOOL_OWNERS_KEY, |owners| {
            for name in names.clone() {
                if owners.len() >= MAX_TOOL_OWNERS {
                    break;
                }
                owners.entry(name.to_string()).or_insert_with(|| server.to_string());
            }
        });
        if let Err(e) = result {
            log::debug!("mcp-warden: tool owners not updated: {e}");
        }
    }
    insp.shadowing_findings(&shadowed)
}
