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
use mcp_warden_core::flow::inspection::{self, Inspected};
use mcp_warden_core::inspect::{inspect_tools_list_checked, Action, Finding, Inspector, ListKind, ServerPins, ToolPins};
use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const TOOL_OWNERS_KEY: &str = "mcp_warden.tool_owners";

fn pins_key(server: &str) -> String {
    format!("mcp_warden.pins.{server}")
}

pub use mcp_warden_core::flow::Decision;

/// [`inspection::results_hash`], keyed per VM (drawn once from WASI's `random_get`, as every
/// `HashMap` here is).
pub(crate) fn results_hash(body: &[u8], sse: bool, limit: usize) -> Option<u64> {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    inspection::results_hash(KEYS.get_or_init(RandomState::new), body, sse, limit)
}

/// Inspects a complete list answer of `server` (served by `cluster`), queues the findings and
/// decides what the agent gets; an identical list (same results) gets the decision already
/// taken for it (see [`inspection::ListVerdicts`]). Stripped answers are inspected each time.
/// `results` is [`results_hash`] of `body` with the inspector's `max_list_bytes` as the limit.
pub fn list_answer(shared: &Shared, server: &str, cluster: &str, kind: ListKind, body: &[u8], sse: bool, results: Option<u64>) -> Decision {
    // A tools list is judged against the server's pins, which other VMs change, and the
    // approvals and verdicts of the trust table: the cached decision holds only while the pins
    // are those it left (their shared-data version) and the table's lists are those it saw.
    let pins_version = || {
        let cas = if kind == ListKind::Tools { HostStore.get(&pins_key(server)).ok().and_then(|(_, cas)| cas) } else { None };
        u64::from(cas.unwrap_or(0)).rotate_left(32) ^ shared.trust.borrow().lists
    };
    if let Some(r) = results {
        if let Some(decision) = shared.list_verdicts.borrow().get(server, kind, r ^ pins_version()) {
            return decision;
        }
    }
    let insp = &shared.config.inspector;
    let inspected = inspection::list_answer(insp, server, kind, body, sse, |msg| {
        let mut pins = load_pins(insp, server);
        // Operators' approvals of held changes, as the aggregator published them for the
        // cluster that answered, and the verdicts of its mesh-wide scan, by fingerprint.
        let table = shared.trust.borrow();
        pins.set_approved(server, table.approved(cluster));
        let mut v = inspect_tools_list_checked(insp, server, msg, &mut pins, &table.verdicts);
        drop(table);
        // Definitions this VM never sent go to the aggregator's mesh-wide scan.
        if shared.config.trust.is_some() && shared.outbox.borrow().wants(v.items.iter().map(|i| i.fingerprint)) {
            shared.outbox.borrow_mut().offer(cluster, msg);
        }
        // A held change keeps its old pin (so the next list holds it too) until cleared.
        store_pins(insp, server, v.items.iter().filter(|i| !i.held).map(|i| (i.name.as_str(), i.fingerprint, i.capability)));
        v.findings.extend(shadowing(insp, server, v.items.iter().map(|i| i.name.as_str())));
        v
    });
    report(shared, cluster, &inspected);
    let hash = results.map(|r| r ^ pins_version());
    shared.list_verdicts.borrow_mut().remember(server, kind, hash, &inspected.decision);
    inspected.decision
}

/// A list answer too large to hold: reported, and blocked if the policy says so.
pub fn oversized(shared: &Shared, server: &str, cluster: &str, size: usize) -> Decision {
    let inspected = inspection::oversized(&shared.config.inspector, server, size);
    report(shared, cluster, &inspected);
    inspected.decision
}

/// Inspects a complete tool result (never held: findings are recorded only).
pub fn tool_result(shared: &Shared, server: &str, cluster: &str, tool: Option<&str>, body: &[u8], sse: bool) {
    let findings = inspection::tool_result(&shared.config.inspector, server, tool, body, sse);
    report(shared, cluster, &Inspected { decision: Decision::Forward, findings, action: Action::Record });
}

/// A protocol violation the breaker's classifier saw (malformed answer, wrong id).
pub fn violation(shared: &Shared, server: &str, cluster: &str, v: mcp_warden_core::inspect::Violation) {
    if let Some(f) = shared.config.inspector.violation(server, v, "seen by the response classifier") {
        report(shared, cluster, &Inspected { decision: Decision::Forward, findings: vec![f], action: Action::Record });
    }
}

/// Counts the findings and queues them for the trust report.
fn report(shared: &Shared, cluster: &str, inspected: &Inspected) {
    let findings = &inspected.findings;
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
    for event in inspection::security_events(insp, findings, inspected.action) {
        pending.record_security(cluster, event);
    }
    if let Some(line) = inspection::warning(insp, cluster, findings, inspected.action) {
        log::warn!("{line}");
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

/// Tools this server lists under a name another server of this sidecar listed first (the
/// owners of names in shared data, claimed by first sightings: one write, only when a name is new).
fn shadowing<'a>(insp: &Inspector, server: &str, names: impl Iterator<Item = &'a str> + Clone) -> Vec<Finding> {
    let owners: BTreeMap<String, String> = shared_json::load(TOOL_OWNERS_KEY);
    let (shadowed, unowned) = inspection::shadowed(&owners, server, names.clone());
    if unowned {
        let result = shared_json::update::<BTreeMap<String, String>>(TOOL_OWNERS_KEY, |owners| {
            inspection::claim_tools(owners, server, names.clone())
        });
        if let Err(e) = result {
            log::debug!("mcp-warden: tool owners not updated: {e}");
        }
    }
    insp.shadowing_findings(&shadowed)
}
