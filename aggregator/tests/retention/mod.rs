//! Part of the API suite (runs on both backends): what the aggregator forgets and what it must
//! not. Servers nobody reported for `server_retention_ms` are forgotten with an audit entry; the
//! ingestion policy's safety memory (release cool-downs and the kinds behind them, per-credential
//! budgets) survives a restart; a verification of the audit log never holds writes up.

use super::common::*;
use serde_json::json;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn a_write_completes_while_a_verification_is_hashing_the_log() {
    let h = Harness::new();
    for server in ["a", "b", "c"] {
        h.post(&format!("/v1/servers/{server}/quarantine"), OPERATOR, json!({"reason": "drill"})).await.ok();
    }
    // The verification stops before hashing its page until the test lets it go on: if it held
    // the engine (or the database) there, the sidecar's write below could not complete.
    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let (paused_tx, resume_rx) = (Mutex::new(paused_tx), Mutex::new(resume_rx));
    h.svc.on_verify_page(Some(Arc::new(move || {
        let _ = paused_tx.lock().unwrap().send(());
        let _ = resume_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
    })));
    let svc = h.svc.clone();
    let verification = tokio::spawn(async move { svc.verify_audit().await });
    tokio::task::spawn_blocking(move || paused_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the verification reached its hashing step");
    let write = tokio::time::timeout(Duration::from_secs(5), h.report(SIDECAR, "during-verify", "weather", 3, 0)).await;
    resume_tx.send(()).unwrap();
    let write = write.expect("a sidecar's write waited for a verification of the audit log");
    write.ok();
    let v = verification.await.unwrap().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 3);
    h.svc.on_verify_page(None);
}

const HOUR: u64 = 3_600_000;

async fn metrics(h: &Harness) -> String {
    let r = h.request("GET", "/metrics", None, None, &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// The servers a signals ack says were dropped (the field is left out when none were).
fn dropped(ack: &serde_json::Value) -> Vec<String> {
    ack["dropped_servers"].as_array().map_or_else(Vec::new, |a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
}

fn servers_in(doc: &serde_json::Value) -> Vec<String> {
    doc["servers"].as_array().unwrap().iter().map(|s| s["server"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_server_nobody_knows_for_the_retention_period_is_forgotten_with_an_audit_entry() {
    let mut settings = relaxed();
    settings.server_retention_ms = 2 * HOUR;
    let h = Harness::with_settings(settings);
    h.report(SIDECAR, "b1", "stale", 5, 0).await.ok();
    h.report(SIDECAR, "b2", "live", 5, 0).await.ok();
    // A change a sidecar holds on each server (waiting for an operator).
    for (batch, server) in [("h1", "stale"), ("h2", "live")] {
        h.post("/v1/signals", SIDECAR, json!({"sidecar": "pod-1", "batch_id": batch, "servers": [{"server": server, "security": [{
            "rule": "pin/tool-held", "severity": "medium", "tool": "t", "evidence": "held",
            "old_fingerprint": "ffffffffffffffffffffffffffffffff", "new_fingerprint": "0123456789abcdef0123456789abcdef"}]}]}))
            .await
            .ok();
    }
    h.post("/v1/ratings", RATER, json!({"subject": {"kind": "server", "name": "stale"}, "value": 0.9})).await.ok();
    h.post("/v1/servers/held/quarantine", OPERATOR, json!({"reason": "under review"})).await.ok();
    h.clock.advance(HOUR + HOUR / 2);
    h.report(SIDECAR, "b3", "live", 5, 0).await.ok();
    // A rating does not keep a server nobody reports.
    h.post("/v1/ratings", RATER_BOB, json!({"subject": {"kind": "server", "name": "stale"}, "value": 0.8})).await.ok();
    h.tick().await;
    assert_eq!(servers_in(&h.scores().await), ["held", "live", "stale"], "nothing is forgotten before its time");
    h.clock.advance(HOUR);
    h.tick().await;
    assert_eq!(servers_in(&h.scores().await), ["held", "live"], "the quarantined server is kept");
    assert_eq!(h.get("/v1/servers/stale", READER).await.status, 404);
    let audit = h.get("/v1/audit?server=stale", OPERATOR).await.ok();
    let entry = &audit["entries"][0];
    assert_eq!((entry["action"].as_str(), entry["actor"].as_str()), (Some("forget"), Some("aggregator")), "{audit}");
    assert!(entry["reason"].as_str().unwrap().contains("server_retention_ms"), "{entry}");
    assert_eq!(h.get("/v1/audit/verify", READER).await.ok()["ok"], true);
    assert!(metrics(&h).await.contains("mcp_warden_aggregator_decisions_total{action=\"forget\"} 1"));
    assert!(!metrics(&h).await.contains("server=\"stale\""), "its series went with it");
    let held_on = |v: serde_json::Value| -> Vec<String> {
        v["held"].as_array().unwrap().iter().map(|c| c["server"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(held_on(h.get("/v1/approvals", READER).await.ok()), ["live"], "its held change went with it");
    // Forgotten on disk too; reported again, it is a new server with nothing of its past.
    let h = h.reopen();
    assert_eq!(h.get("/v1/servers/stale", READER).await.status, 404);
    assert_eq!(held_on(h.get("/v1/approvals", READER).await.ok()), ["live"]);
    h.report(SIDECAR2, "b4", "stale", 1, 0).await.ok();
    let d = h.detail("stale").await;
    assert_eq!(d["ratings"]["count"], 0, "{d}");
    assert_eq!(d["first_seen_ms"], T0 + 2 * HOUR + HOUR / 2);
}

#[tokio::test]
async fn max_servers_pressure_is_counted_logged_and_explained_and_retention_makes_room() {
    let mut settings = relaxed();
    settings.max_servers = 10;
    settings.server_retention_ms = HOUR;
    let h = Harness::with_settings(settings);
    let names: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    let traffic: Vec<_> = names.iter().map(|s| json!({"server": s, "outcomes": {"success": 1}})).collect();
    let ack = h.post("/v1/signals", SIDECAR, json!({"sidecar": "p", "batch_id": "a", "servers": traffic})).await.ok();
    assert_eq!(dropped(&ack), ["s10", "s11"]);
    // Scanners and operators have a reserve past max_servers (10 here); then 507, explained.
    for i in 0..10 {
        h.post("/v1/flags", SCANNER, json!({"server": format!("f{i}"), "severity": "low", "rule": "r"})).await.ok();
    }
    let refused = h.post("/v1/flags", SCANNER, json!({"server": "f10", "severity": "low", "rule": "r"})).await;
    assert_eq!(refused.status, 507);
    let why = refused.error();
    assert!(why.contains("max_servers") && why.contains("tracks 20") && why.contains("server_retention_ms"), "{why}");
    let m = metrics(&h).await;
    assert!(m.contains("mcp_warden_aggregator_servers_refused_total{reason=\"max_servers\"} 3"), "{m}");
    // Nobody reports them for the retention period: forgotten, and there is room again.
    h.clock.advance(HOUR + 1);
    h.tick().await;
    assert_eq!(h.scores().await["servers"].as_array().unwrap().len(), 0);
    let traffic: Vec<_> = names.iter().map(|s| json!({"server": s, "outcomes": {"success": 1}})).collect();
    let ack = h.post("/v1/signals", SIDECAR2, json!({"sidecar": "q", "batch_id": "b", "servers": traffic})).await.ok();
    assert_eq!(dropped(&ack), ["s10", "s11"], "max_servers still holds");
    h.post("/v1/flags", SCANNER, json!({"server": "f10", "severity": "low", "rule": "r"})).await.ok();
}

fn finding(id: &str, servers: &[&str], rule: &str) -> serde_json::Value {
    let reports: Vec<_> = servers
        .iter()
        .map(|s| json!({"server": s, "security": [{"rule": rule, "severity": "critical", "tool": "t", "quarantine": true}]}))
        .collect();
    json!({"sidecar": "pod", "batch_id": id, "servers": reports})
}

#[tokio::test]
async fn a_release_and_the_kinds_behind_it_survive_a_restart() {
    let h = Harness::new();
    h.post("/v1/signals", SIDECAR, finding("a", &["w"], "unicode/tag-characters")).await.ok();
    assert_eq!(h.detail("w").await["state"], "quarantined");
    h.post("/v1/servers/w/release", OPERATOR, json!({"reason": "reviewed"})).await.ok();
    let h = h.reopen();
    h.clock.advance(60_000);
    // The same kind, renamed, within the cool-down: the release sticks across the restart.
    h.post("/v1/signals", SIDECAR, finding("b", &["w"], "unicode/tag-characters-v2")).await.ok();
    let d = h.detail("w").await;
    assert_ne!(d["state"], "quarantined", "{}", d["quarantine"]);
    // A different kind is new evidence: the restart did not widen the cool-down to every kind.
    h.post("/v1/signals", SIDECAR, finding("c", &["w"], "poison/secret-file")).await.ok();
    assert_eq!(h.detail("w").await["state"], "quarantined");
    // Released again after another restart: the kinds behind this quarantine (poison) were kept.
    let h = h.reopen();
    h.post("/v1/servers/w/release", OPERATOR, json!({"reason": "reviewed again"})).await.ok();
    h.clock.advance(60_000);
    h.post("/v1/signals", SIDECAR, finding("d", &["w"], "poison/renamed")).await.ok();
    assert_ne!(h.detail("w").await["state"], "quarantined");
}

#[tokio::test]
async fn a_credentials_budgets_survive_a_restart() {
    let mut settings = relaxed();
    settings.sidecar.new_servers_per_window = 3;
    let h = Harness::with_settings(settings);
    let budget = h.settings.sidecar.server_budget;
    let names: Vec<String> = (0..2 * budget).map(|i| format!("srv-{i}")).collect();
    // The mesh's servers, as another sidecar knows them (it may introduce 3 an hour).
    for (i, chunk) in names.chunks(3).enumerate() {
        let traffic: Vec<_> = chunk.iter().map(|s| json!({"server": s, "outcomes": {"success": 5}})).collect();
        let ack = h.post("/v1/signals", SIDECAR2, json!({"sidecar": "p2", "batch_id": format!("t{i}"), "servers": traffic})).await.ok();
        assert!(dropped(&ack).is_empty(), "{ack}");
        h.clock.advance(HOUR + 1);
    }
    let first: Vec<&str> = names[..budget].iter().map(String::as_str).collect();
    h.post("/v1/signals", SIDECAR, finding("a", &first, "unicode/tag-characters")).await.ok();
    let ack = h.post("/v1/signals", SIDECAR, json!({"sidecar": "p", "batch_id": "n1", "servers": [
        {"server": "new-1"}, {"server": "new-2"}, {"server": "new-3"}]})).await.ok();
    assert!(dropped(&ack).is_empty(), "{ack}");
    let h = h.reopen();
    h.clock.advance(60_000);
    // The budget spent before the restart still counts: no more servers penalised...
    let rest: Vec<&str> = names[budget..].iter().map(String::as_str).collect();
    h.post("/v1/signals", SIDECAR, finding("b", &rest, "unicode/tag-characters")).await.ok();
    let quarantined: Vec<String> = h.scores().await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "quarantined")
        .map(|s| s["server"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(quarantined, names[..budget].to_vec());
    // ...and no more servers introduced.
    let ack = h.post("/v1/signals", SIDECAR, json!({"sidecar": "p", "batch_id": "n2", "servers": [{"server": "new-4"}]})).await.ok();
    assert_eq!(dropped(&ack), ["new-4"]);
    // The window passes: the budgets are back.
    h.clock.advance(HOUR + 1);
    let ack = h.post("/v1/signals", SIDECAR, json!({"sidecar": "p", "batch_id": "n3", "servers": [{"server": "new-4"}]})).await.ok();
    assert!(dropped(&ack).is_empty(), "{ack}");
}
