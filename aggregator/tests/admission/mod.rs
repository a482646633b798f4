//! Part of the API suite (runs on both backends): which servers the aggregator tracks. A server
//! one sidecar credential names is provisional (not tracked, not published, not counted against
//! `max_servers`) until a second credential names it, an operator admits it or a scanner flags
//! it; what its reports said meanwhile counts on admission; a mesh of one sidecar admits at
//! once; admissions and provisional voices survive a restart.

use super::common::*;
use axum::http::StatusCode;
use mcp_warden_aggregator::Settings;
use serde_json::{json, Value};
use std::time::Instant;

const HOUR: u64 = 3_600_000;

/// The harness's settings with the default quorum (two sidecar credentials: 2).
fn two_sidecars() -> Settings {
    let mut s = relaxed();
    s.sidecar.admission_quorum = None;
    s
}

async fn metrics(h: &Harness) -> String {
    let r = h.request("GET", "/metrics", None, None, &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().map_or_else(Vec::new, |a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
}

fn published(doc: &Value) -> Vec<String> {
    doc["servers"].as_array().unwrap().iter().map(|s| s["server"].as_str().unwrap().to_string()).collect()
}

fn batch(id: &str, servers: &[&str], success: u64) -> Value {
    let reports: Vec<Value> = servers.iter().map(|s| json!({"server": s, "outcomes": {"success": success}})).collect();
    json!({"sidecar": "pod", "batch_id": id, "servers": reports})
}

#[tokio::test]
async fn one_sidecar_token_of_two_inventing_ten_thousand_names_admits_none() {
    let h = Harness::with_settings(two_sidecars());
    let invented: Vec<String> = (0..10_000).map(|i| format!("invented-{i:05}")).collect();
    let traffic: Vec<Value> = invented.iter().map(|s| json!({"server": s, "outcomes": {"success": 1}})).collect();
    let started = Instant::now();
    let ack = h.post("/v1/signals", SIDECAR, json!({"sidecar": "p", "batch_id": "flood", "servers": traffic})).await.ok();
    eprintln!("10,000 invented names in one batch: {:?}", started.elapsed());
    let per_credential = h.settings.sidecar.provisional_per_sidecar;
    assert_eq!(ack["servers"], 0, "no report applied");
    assert!(ack.get("admitted_servers").is_none(), "{ack}");
    assert_eq!(ack["provisional"], per_credential);
    assert_eq!(names(&ack["provisional_servers"]).len(), 100, "the ack lists the first 100");
    assert_eq!(names(&ack["dropped_servers"]).len(), 10_000 - per_credential);
    // Nothing published, nothing tracked: max_servers untouched.
    assert!(published(&h.scores().await).is_empty());
    assert_eq!(h.get("/healthz", READER).await.ok()["servers"], 0);
    let m = metrics(&h).await;
    assert!(m.contains(&format!("mcp_warden_aggregator_servers_provisional {per_credential}")), "{m}");
    let refused = format!("mcp_warden_aggregator_servers_refused_total{{reason=\"provisional_per_sidecar\"}} {}", 10_000 - per_credential);
    assert!(m.contains(&refused), "{m}");
    assert!(m.contains("mcp_warden_aggregator_servers_admitted_total{by=\"sidecars\"} 0"), "{m}");
    // More invented names from the same token: its bound is spent, nothing more is kept.
    let ack = h.post("/v1/signals", SIDECAR, batch("flood-2", &["more-1", "more-2"], 1)).await.ok();
    assert_eq!(names(&ack["dropped_servers"]), ["more-1", "more-2"]);
    // The other sidecar's real servers still get in (a second voice), within max_servers.
    h.report(SIDECAR2, "real", "weather", 5, 0).await.ok();
    h.report(SIDECAR, "real", "weather", 5, 0).await.ok();
    assert_eq!(h.published("weather").await.1, "trusted");
    assert_eq!(published(&h.scores().await), ["weather"]);
}

#[tokio::test]
async fn a_second_credentials_report_admits_and_what_was_held_counts() {
    let h = Harness::with_settings(two_sidecars());
    let first = json!({"sidecar": "pod-1", "batch_id": "a", "servers": [{"server": "weather",
        "outcomes": {"success": 10, "failures": {"http_5xx": 2}},
        "security": [{"rule": "unicode/tag-characters", "severity": "critical", "tool": "forecast"}]}]});
    let ack = h.post("/v1/signals", SIDECAR, first).await.ok();
    assert_eq!((ack["servers"].as_u64(), names(&ack["provisional_servers"])), (Some(0), vec!["weather".to_string()]));
    assert!(published(&h.scores().await).is_empty(), "provisional: not published");
    let r = h.get("/v1/servers/weather", READER).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("provisional") && r.error().contains("sidecar-1") && r.error().contains("admit"), "{}", r.error());
    let view = h.get("/v1/provisional", READER).await.ok();
    assert_eq!((view["quorum"].as_u64(), view["total"].as_u64()), (Some(2), Some(1)));
    let p = &view["servers"][0];
    assert_eq!((p["server"].as_str(), names(&p["named_by"]), p["held_calls"].as_u64(), p["held_findings"].as_u64()),
        (Some("weather"), vec!["sidecar-1".to_string()], Some(12), Some(1)));
    // The same credential again is still one voice.
    assert_eq!(h.report(SIDECAR, "b", "weather", 1, 0).await.ok()["provisional"], 1);
    // A second credential: admitted, and the held report counts (calls and the finding).
    let ack = h.report(SIDECAR2, "c", "weather", 4, 0).await.ok();
    assert_eq!(names(&ack["admitted_servers"]), ["weather"]);
    assert_eq!(ack["servers"], 1);
    let d = h.detail("weather").await;
    assert_eq!((d["traffic"]["success"].as_u64(), d["traffic"]["failures"].as_u64()), (Some(15), Some(2)), "{d}");
    assert_eq!(d["state"], "quarantined", "the held critical finding counted on admission");
    assert!(d["quarantine"]["reason"].as_str().unwrap().contains("sidecar-1"), "{d}");
    assert_eq!(published(&h.scores().await), ["weather"]);
    assert_eq!(h.get("/v1/provisional", READER).await.ok()["total"], 0);
    let m = metrics(&h).await;
    assert!(m.contains("mcp_warden_aggregator_servers_admitted_total{by=\"sidecars\"} 1"), "{m}");
    assert!(m.contains("mcp_warden_aggregator_servers_provisional 0"), "{m}");
}

#[tokio::test]
async fn a_configuration_list_names_only_servers_already_provisional() {
    let h = Harness::with_settings(two_sidecars());
    h.report(SIDECAR, "a", "search", 3, 0).await.ok();
    // The second sidecar's clusters include `search` (no traffic to it yet) and a name nobody
    // reported: the first is admitted, the second never becomes provisional.
    let body = json!({"sidecar": "pod-2", "batch_id": "b", "servers": [{"server": "weather", "outcomes": {"success": 1}}],
        "configured": ["search", "weather", "never-reported"]});
    let ack = h.post("/v1/signals", SIDECAR2, body).await.ok();
    assert_eq!(names(&ack["admitted_servers"]), ["search"]);
    assert_eq!(names(&ack["provisional_servers"]), ["weather"]);
    assert_eq!(h.detail("search").await["traffic"]["success"], 3);
    let view = h.get("/v1/provisional", READER).await.ok();
    assert_eq!(view["total"], 1, "{view}");
    let bad = json!({"sidecar": "pod-2", "batch_id": "c", "servers": [], "configured": ["has space"]});
    let r = h.post("/v1/signals", SIDECAR2, bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("configured[0]"), "{}", r.error());
}

#[tokio::test]
async fn an_operator_admits_with_an_audit_entry_and_scanners_and_quarantines_admit_too() {
    let h = Harness::with_settings(two_sidecars());
    h.report(SIDECAR, "a", "weather", 7, 0).await.ok();
    let r = h.post("/v1/servers/weather/admit", RATER, json!({"reason": "mine"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let ack = h.post("/v1/servers/weather/admit", OPERATOR, json!({"reason": "part of the mesh"})).await.ok();
    assert_eq!(ack["state"], "trusted");
    assert_eq!(h.detail("weather").await["traffic"]["success"], 7, "what was held counts");
    let again = h.post("/v1/servers/weather/admit", OPERATOR, json!({"reason": "again"})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    // A name no sidecar reported may be admitted as well.
    h.post("/v1/servers/planned/admit", OPERATOR, json!({"reason": "deployed tomorrow"})).await.ok();
    let audit = h.get("/v1/audit?server=weather", OPERATOR).await.ok();
    let e = &audit["entries"][0];
    assert_eq!((e["action"].as_str(), e["actor"].as_str()), (Some("admit"), Some("ops")), "{audit}");
    assert!(e["reason"].as_str().unwrap().contains("sidecar-1") && e["reason"].as_str().unwrap().contains("part of the mesh"), "{e}");
    assert_eq!(h.get("/v1/audit/verify", READER).await.ok()["ok"], true);
    // A scanner's flag admits a provisional server; an operator's quarantine one nobody named.
    h.report(SIDECAR, "b", "flagged", 1, 0).await.ok();
    h.post("/v1/flags", SCANNER, json!({"server": "flagged", "severity": "low", "rule": "r"})).await.ok();
    h.post("/v1/servers/unknown/quarantine", OPERATOR, json!({"reason": "blocked"})).await.ok();
    assert_eq!(published(&h.scores().await), ["flagged", "planned", "unknown", "weather"]);
    assert_eq!(h.detail("flagged").await["traffic"]["success"], 1);
    assert_eq!(h.get("/v1/provisional", READER).await.ok()["total"], 0);
    let m = metrics(&h).await;
    for line in [
        "mcp_warden_aggregator_servers_admitted_total{by=\"operator\"} 3",
        "mcp_warden_aggregator_servers_admitted_total{by=\"scanner\"} 1",
        "mcp_warden_aggregator_decisions_total{action=\"admit\"} 2",
    ] {
        assert!(m.contains(line), "{line} in {m}");
    }
}

#[tokio::test]
async fn a_mesh_of_one_sidecar_admits_what_it_reports_at_once() {
    let tokens = json!({"tokens": [
        {"token": SIDECAR, "name": "sidecar-1", "role": "sidecar"},
        {"token": SIDECAR2, "name": "sidecar-1", "role": "sidecar"},
        {"token": OPERATOR, "name": "ops", "role": "operator"},
        {"token": READER, "name": "dashboard", "role": "reader"}]});
    let h = Harness::with_tokens(two_sidecars(), &tokens.to_string());
    let ack = h.report(SIDECAR, "a", "weather", 5, 0).await.ok();
    assert_eq!(names(&ack["admitted_servers"]), ["weather"], "one sidecar name (with a rotated token): quorum 1");
    assert_eq!(h.published("weather").await.1, "trusted");
    // new_servers_per_window still bounds what it introduces.
    let many: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let ack = h.post("/v1/signals", SIDECAR2, batch("b", &refs, 1)).await.ok();
    let per_window = h.settings.sidecar.new_servers_per_window;
    assert_eq!(names(&ack["admitted_servers"]).len(), per_window - 1);
    assert_eq!(names(&ack["dropped_servers"]).len(), 300 - (per_window - 1));
}

#[tokio::test]
async fn servers_admitted_at_once_do_not_count_against_the_provisional_bound() {
    let mut settings = relaxed();
    (settings.sidecar.new_servers_per_window, settings.sidecar.provisional_per_sidecar) = (1_000, 10);
    let h = Harness::with_settings(settings);
    let many: Vec<String> = (0..500).map(|i| format!("s{i:03}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let ack = h.post("/v1/signals", SIDECAR, batch("big", &refs, 1)).await.ok();
    assert_eq!((ack["servers"].as_u64(), names(&ack["admitted_servers"]).len()), (Some(500), 500), "{ack}");
    assert!(ack.get("dropped_servers").is_none(), "{ack}");
}

#[tokio::test]
async fn admissions_and_provisional_voices_survive_a_restart_and_voices_expire() {
    let h = Harness::with_settings(two_sidecars());
    h.report(SIDECAR, "a", "waiting", 2, 0).await.ok();
    h.report(SIDECAR, "b", "both", 2, 0).await.ok();
    h.report(SIDECAR2, "c", "both", 2, 0).await.ok();
    h.post("/v1/servers/by-hand/admit", OPERATOR, json!({"reason": "known"})).await.ok();
    h.report(SIDECAR2, "d", "stale", 1, 0).await.ok();
    let h = h.reopen();
    assert_eq!(published(&h.scores().await), ["both", "by-hand"]);
    let view = h.get("/v1/provisional", READER).await.ok();
    assert_eq!(view["total"], 2, "{view}");
    // The voice given before the restart still counts: a second credential admits.
    let ack = h.report(SIDECAR2, "e", "waiting", 1, 0).await.ok();
    assert_eq!(names(&ack["admitted_servers"]), ["waiting"]);
    assert_eq!(h.detail("waiting").await["traffic"]["success"], 3);
    // A voice older than provisional_retention_ms is forgotten: `stale` needs two voices again.
    h.clock.advance(h.settings.sidecar.provisional_retention_ms + HOUR);
    h.tick().await;
    assert_eq!(h.get("/v1/provisional", READER).await.ok()["total"], 0);
    let ack = h.report(SIDECAR, "f", "stale", 1, 0).await.ok();
    assert_eq!(names(&ack["provisional_servers"]), ["stale"]);
    let h = h.reopen();
    assert_eq!(h.get("/v1/provisional", READER).await.ok()["total"], 1, "the expiry was stored");
    assert_eq!(published(&h.scores().await), ["both", "by-hand", "waiting"]);
}
