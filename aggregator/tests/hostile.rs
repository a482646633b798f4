//! One low-privilege credential against the aggregator: each attack of a hostile rater, sidecar
//! or reader, bounded in count, asserting what the aggregator does about it (timings live in
//! `bench/hostile.py`, not here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn vouch(name: &str, value: f64) -> serde_json::Value {
    json!({"subject": {"kind": "rater", "name": name}, "value": value})
}

#[tokio::test]
async fn a_rater_cannot_vouch_for_unbounded_names_and_a_withdrawn_vouch_leaves_no_name() {
    let mut settings = relaxed();
    settings.max_vouches_per_rater = 20;
    let h = Harness::with_settings(settings);
    h.report(SIDECAR, "b1", "w", 10, 0).await.ok();
    for i in 0..20 {
        h.post("/v1/ratings", RATER, vouch(&format!("invented-{i}"), 1.0)).await.ok();
    }
    // The 21st name is refused, and says how to make room.
    let r = h.post("/v1/ratings", RATER, vouch("invented-20", 1.0)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.error());
    assert!(r.error().contains("max_vouches_per_rater"), "{}", r.error());
    // Changing an existing vouch is not a new one.
    h.post("/v1/ratings", RATER, vouch("invented-3", 0.5)).await.ok();
    // Withdrawn vouches are gone (not kept as zero edges): room for new ones.
    for i in 0..5 {
        h.post("/v1/ratings", RATER, vouch(&format!("invented-{i}"), 0.0)).await.ok();
    }
    for i in 20..25 {
        h.post("/v1/ratings", RATER, vouch(&format!("invented-{i}"), 1.0)).await.ok();
    }
    assert_eq!(h.post("/v1/ratings", RATER, vouch("invented-99", 1.0)).await.status, StatusCode::CONFLICT);
    // After a restart (the state rebuilt from the database), the withdrawn names are not there.
    let h = h.reopen();
    assert_eq!(h.post("/v1/ratings", RATER, vouch("invented-99", 1.0)).await.status, StatusCode::CONFLICT);
    let Harness { dir, svc, app, .. } = h;
    drop((svc, app));
    let db = rusqlite::Connection::open(dir.path().join("trust.db")).unwrap();
    let names: Vec<String> = db
        .prepare("SELECT subject FROM ratings WHERE subject_kind = 'rater'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names.len(), 20, "{names:?}");
    assert!(!names.iter().any(|n| n == "invented-0"), "{names:?}");
}

#[tokio::test]
async fn a_vouch_flood_is_acknowledged_without_recomputing_standing_on_each_write() {
    // Standing follows at the periodic evaluation: a vouch's write does not wait for it.
    let h = Harness::new();
    h.report(SIDECAR, "b1", "w", 10, 0).await.ok();
    h.post("/v1/ratings", OPERATOR, vouch("alice", 1.0)).await.ok();
    let before = h.post("/v1/ratings", RATER, json!({"subject": {"kind": "server", "name": "w"}, "value": 0.0})).await.ok();
    assert!(before["rater_standing"].as_f64().unwrap() < 0.01);
    h.tick().await;
    let after = h.post("/v1/ratings", RATER, json!({"subject": {"kind": "server", "name": "w"}, "value": 0.0})).await.ok();
    assert!(after["rater_standing"].as_f64().unwrap() > 0.5, "{after}");
}

/// A request body that sends its first bytes and then nothing, ever.
struct Trickle(Option<Bytes>);

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

fn trickling_signals(h: &Harness) -> tokio::task::JoinHandle<(StatusCode, String)> {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/signals")
        .header("authorization", format!("Bearer {SIDECAR}"))
        .body(Body::new(Trickle(Some(Bytes::from_static(b"{\"sidecar\": \"p\", ")))))
        .unwrap();
    let app = h.app.clone();
    tokio::spawn(async move {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

#[tokio::test]
async fn slow_bodies_hold_no_request_slot_and_get_408_at_the_body_deadline() {
    let mut settings = relaxed();
    settings.limits.max_concurrent_requests = 2;
    settings.limits.body_timeout_ms = 500;
    settings.limits.request_timeout_ms = 10_000;
    let h = Harness::with_settings(settings);
    let slow: Vec<_> = (0..6).map(|_| trickling_signals(&h)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Six bodies trickle; both slots are still free for whole requests.
    for i in 0..4 {
        h.report(SIDECAR2, &format!("b{i}"), "w", 1, 0).await.ok();
        assert_eq!(h.get("/v1/servers/w", READER).await.status, StatusCode::OK);
    }
    let t0 = Instant::now();
    for task in slow {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
        assert!(body.contains("not received within 500 ms"), "{body}");
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "the body deadline, not the request deadline");
}

#[tokio::test]
async fn healthz_answers_while_every_slot_and_the_engine_are_busy() {
    let mut settings = relaxed();
    settings.limits.max_concurrent_requests = 1;
    let h = Harness::with_settings(settings);
    h.report(SIDECAR, "b1", "w", 1, 0).await.ok();
    // The engine is held (a slow write), and the one request slot waits for it.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let svc = h.svc.clone();
    let holder = tokio::spawn(async move {
        svc.run(move |_, _| {
            let _ = held_tx.send(());
            std::thread::sleep(Duration::from_millis(1500));
            Ok(())
        })
        .await
    });
    held_rx.await.unwrap();
    let app = h.app.clone();
    let waiting = tokio::spawn(async move {
        let req = Request::builder().uri("/v1/servers/w").header("authorization", format!("Bearer {READER}")).body(Body::empty()).unwrap();
        app.oneshot(req).await.unwrap().status()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.get("/v1/servers/w", READER).await.status, StatusCode::SERVICE_UNAVAILABLE, "the slot is taken");
    assert!(!holder.is_finished());
    let hz = h.request("GET", "/healthz", None, None, &[]).await;
    assert_eq!(hz.status, StatusCode::OK);
    assert_eq!(hz.json()["status"], "ok");
    assert!(!holder.is_finished(), "/healthz was answered while the engine was still held");
    holder.await.unwrap().unwrap();
    assert_eq!(waiting.await.unwrap(), StatusCode::OK);
}

#[test]
fn one_address_cannot_take_every_connection() {
    let dir = TempDir::new("bin-per-peer");
    // A header timeout far past the reads below: a connection kept open stays open.
    let config = json!({"limits": {"max_connections_per_peer": 3, "header_read_timeout_ms": 60_000}});
    let agg = Process::start_with(dir.path(), Some(&config));
    let addr = agg.base.trim_start_matches("http://").to_string();
    // Three keep-alive connections, each shown to be accepted by an answer on it.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
        idle.push(s);
    }
    // A fourth from the same address is closed at once (kept open, the read would time out).
    let mut fourth = TcpStream::connect(&addr).unwrap();
    fourth.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    match fourth.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("the fourth connection was answered: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => panic!("the fourth connection from one address was kept open ({e})"),
    }
    // Once one closes, the address may connect again.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = agent().get(&format!("{}/v1/scores", agg.base)).header("Authorization", &format!("Bearer {READER}")).call();
        if res.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {:?}", res.map(|r| r.status()));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_verification_read_in_pages_finds_a_rewritten_entry_past_the_first_page() {
    // The chain is read 500 entries per engine call and hashed away from the engine: every
    // page boundary must still chain, and a rewrite in a later page is found.
    let h = Harness::new();
    for i in 0..260 {
        let server = format!("s{i}");
        h.post(&format!("/v1/servers/{server}/quarantine"), OPERATOR, json!({"reason": "drill"})).await.ok();
        h.post(&format!("/v1/servers/{server}/release"), OPERATOR, json!({"reason": "done"})).await.ok();
    }
    let v = h.get("/v1/audit/verify", READER).await.ok();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 520);
    let h = h.reopen_after(|db| {
        let c = rusqlite::Connection::open(db).unwrap();
        c.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'nothing happened' WHERE id = 510").unwrap();
    });
    let v = h.get("/v1/audit/verify", READER).await.ok();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["broken"]["id"], 510, "{v}");
    assert_eq!(v["entries"], 509);
}

fn findings_batch(id: &str, servers: &[String], rule: &str, severity: &str, quarantine: bool) -> serde_json::Value {
    let reports: Vec<_> = servers
        .iter()
        .map(|s| json!({"server": s, "security": [{"rule": rule, "severity": severity, "tool": "t", "quarantine": quarantine}]}))
        .collect();
    json!({"sidecar": "pod", "batch_id": id, "servers": reports})
}

async fn quarantined(h: &Harness) -> usize {
    h.scores().await["servers"].as_array().unwrap().iter().filter(|s| s["state"] == "quarantined").count()
}

#[tokio::test]
async fn one_sidecar_token_quarantines_at_most_its_budget_and_an_invented_kind_nothing() {
    let mut settings = relaxed();
    settings.sidecar.new_servers_per_window = 1_000;
    let h = Harness::with_settings(settings);
    // The mesh's servers, as another sidecar knows them.
    let names: Vec<String> = (0..600).map(|i| format!("srv-{i}")).collect();
    let traffic: Vec<_> = names.iter().map(|s| json!({"server": s, "outcomes": {"success": 5}})).collect();
    h.post("/v1/signals", SIDECAR2, json!({"sidecar": "pod-2", "batch_id": "t", "servers": traffic})).await.ok();
    // One token reports a critical finding of a verified kind on 300 of them.
    let ack = h.post("/v1/signals", SIDECAR, findings_batch("a", &names[..300], "unicode/tag-characters", "critical", true)).await.ok();
    assert_eq!(ack["servers"], 300);
    let budget = h.settings.sidecar.server_budget;
    assert_eq!(quarantined(&h).await, budget, "one credential alone quarantines at most its budget");
    // An invented kind, on the other 300: nothing quarantined, no score pushed under the line.
    h.post("/v1/signals", SIDECAR, findings_batch("b", &names[300..], "my-own-critical-rule", "critical", true)).await.ok();
    h.tick().await;
    assert_eq!(quarantined(&h).await, budget);
    let doc = h.scores().await;
    let degraded = doc["servers"].as_array().unwrap().iter().filter(|s| s["state"] == "degraded").count();
    assert_eq!(degraded, 0, "{doc}");
    // A second sidecar seeing the same on one more server corroborates it: quarantined.
    h.post("/v1/signals", SIDECAR2, findings_batch("c", &names[299..300], "unicode/tag-characters", "critical", true)).await.ok();
    h.post("/v1/signals", SIDECAR, findings_batch("d", &names[299..300], "unicode/tag-characters", "critical", true)).await.ok();
    assert_eq!(h.detail(&names[299]).await["state"], "quarantined");
}

#[tokio::test]
async fn quarantine_true_at_low_severity_is_not_honoured() {
    let h = Harness::new();
    h.post("/v1/signals", SIDECAR, findings_batch("a", &["w".to_string()], "poison/long-description", "low", true)).await.ok();
    let d = h.detail("w").await;
    assert_ne!(d["state"], "quarantined", "{d}");
    assert_eq!(d["security_events"].as_array().unwrap().len(), 1, "recorded all the same");
}

#[tokio::test]
async fn an_operators_release_sticks_against_renamed_rules_of_the_same_kind() {
    let h = Harness::new();
    let w = ["w".to_string()];
    h.post("/v1/signals", SIDECAR, findings_batch("a", &w, "unicode/tag-characters", "critical", false)).await.ok();
    assert_eq!(h.detail("w").await["state"], "quarantined");
    h.post("/v1/servers/w/release", OPERATOR, json!({"reason": "reviewed"})).await.ok();
    for round in 0..3 {
        let renamed = format!("unicode/tag-characters-v{round}");
        h.clock.advance(60_000);
        h.post("/v1/signals", SIDECAR, findings_batch(&format!("r{round}"), &w, &renamed, "critical", true)).await.ok();
        assert_ne!(h.detail("w").await["state"], "quarantined", "re-quarantined by renamed rule {round}");
    }
    // New evidence of a different kind still quarantines at once.
    h.post("/v1/signals", SIDECAR, findings_batch("n", &w, "poison/secret-file", "critical", false)).await.ok();
    assert_eq!(h.detail("w").await["state"], "quarantined");
}

#[tokio::test]
async fn one_token_cannot_fill_max_servers_with_invented_names() {
    let h = Harness::new();
    let per_window = h.settings.sidecar.new_servers_per_window;
    let mut dropped = 0;
    for b in 0..10 {
        let names: Vec<String> = (0..1000).map(|i| format!("invented-{b}-{i}")).collect();
        let traffic: Vec<_> = names.iter().map(|s| json!({"server": s, "outcomes": {"success": 1}})).collect();
        let ack = h.post("/v1/signals", SIDECAR, json!({"sidecar": "p", "batch_id": format!("b{b}"), "servers": traffic})).await.ok();
        dropped += ack["dropped_servers"].as_array().unwrap().len();
    }
    assert_eq!(dropped, 10_000 - per_window);
    assert_eq!(h.scores().await["servers"].as_array().unwrap().len(), per_window);
    // Another sidecar's real servers still get in.
    h.report(SIDECAR2, "real", "weather", 5, 0).await.ok();
    assert_eq!(h.published("weather").await.1, "trusted");
}

/// Rewrites entry `id`'s reason and re-hashes it and every later entry, as someone who can write
/// the database would (the chain alone then verifies).
fn rewrite_and_rehash(db: &std::path::Path, id: i64, reason: &str) {
    use mcp_warden_aggregator::audit;
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    c.execute("UPDATE audit SET reason = ?1 WHERE id = ?2", rusqlite::params![reason, id]).unwrap();
    let mut stmt = c.prepare("SELECT id, at_ms, actor, action, server, reason, score FROM audit ORDER BY id").unwrap();
    let rows: Vec<(i64, i64, String, String, String, String, f64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = audit::GENESIS;
    for (id, at_ms, actor, action, server, reason, score) in rows {
        let f = audit::Fields { id, at_ms, actor: &actor, action: &action, server: &server, reason: &reason, score };
        prev = audit::link(&prev, &f);
        c.execute("UPDATE audit SET hash = ?1 WHERE id = ?2", rusqlite::params![audit::to_hex(&prev), id]).unwrap();
    }
}

#[tokio::test]
async fn a_rewritten_and_rehashed_or_truncated_log_is_caught_by_the_anchored_head() {
    let anchors = TempDir::new("anchor");
    let anchor_file = anchors.path().join("audit-anchor.jsonl");
    let mut settings = relaxed();
    settings.audit_anchor_file = Some(anchor_file.clone());
    let h = Harness::with_settings(settings);
    for (action, server) in [("quarantine", "w"), ("release", "w"), ("quarantine", "v"), ("release", "v")] {
        h.post(&format!("/v1/servers/{server}/{action}"), OPERATOR, json!({"reason": "drill"})).await.ok();
    }
    assert!(h.svc.export_audit_head().await.unwrap());
    assert!(!h.svc.export_audit_head().await.unwrap(), "exported once per head");
    assert!(std::fs::read_to_string(&anchor_file).unwrap().contains("\"id\":4"));
    assert_eq!(h.get("/v1/audit/verify", READER).await.ok()["ok"], true);

    // Rewritten and re-hashed: the chain alone holds, the anchor does not.
    let h = h.reopen_after(|db| rewrite_and_rehash(db, 2, "never released"));
    let v = h.get("/v1/audit/verify", READER).await.ok();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["broken"]["id"], 4, "{v}");
    assert!(v["broken"]["reason"].as_str().unwrap().contains("anchored"), "{v}");

    // Truncated (the last entries and the id sequence): the anchored entries are missing.
    let h = h.reopen_after(|db| {
        rewrite_and_rehash(db, 2, "drill");
        let c = rusqlite::Connection::open(db).unwrap();
        c.execute_batch("DROP TRIGGER IF EXISTS audit_no_delete; DELETE FROM audit WHERE id > 2; UPDATE sqlite_sequence SET seq = 2 WHERE name = 'audit'").unwrap();
    });
    let v = h.get("/v1/audit/verify", READER).await.ok();
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["broken"]["reason"].as_str().unwrap().contains("truncated"), "{v}");
}

#[tokio::test]
async fn with_an_anchor_key_a_log_and_anchor_file_rewritten_together_are_caught() {
    let dir = TempDir::new("anchor-key");
    let (anchor_file, key_file) = (dir.path().join("audit-anchor.jsonl"), dir.path().join("anchor.key"));
    std::fs::write(&key_file, "Zm9yIHRlc3RzIG9ubHk6IGEga2V5IG9mIGZvcnR5LWVpZ2h0IGJ5dGVz\n").unwrap();
    let mut settings = relaxed();
    settings.audit_anchor_file = Some(anchor_file.clone());
    settings.audit_anchor_key_file = Some(key_file);
    let h = Harness::with_settings(settings);
    for (action, server) in [("quarantine", "w"), ("release", "w"), ("quarantine", "v"), ("release", "v")] {
        h.post(&format!("/v1/servers/{server}/{action}"), OPERATOR, json!({"reason": "drill"})).await.ok();
        assert!(h.svc.export_audit_head().await.unwrap());
    }
    assert!(std::fs::read_to_string(&anchor_file).unwrap().lines().all(|l| l.contains("\"mac\":")));
    assert_eq!(h.get("/v1/audit/verify", READER).await.ok()["ok"], true);

    // Someone who can write the database and the anchor file, but not read the key: entry 2
    // rewritten, the chain re-hashed, and the anchor file's hashes replaced to match.
    let anchored = anchor_file.clone();
    let h = h.reopen_after(move |db| {
        rewrite_and_rehash(db, 2, "never released");
        let c = rusqlite::Connection::open(db).unwrap();
        let mut text = std::fs::read_to_string(&anchored).unwrap();
        for line in text.clone().lines() {
            let mut l: serde_json::Value = serde_json::from_str(line).unwrap();
            let hash: String = c.query_row("SELECT hash FROM audit WHERE id = ?1", [l["id"].as_i64().unwrap()], |r| r.get(0)).unwrap();
            l["hash"] = json!(hash);
            text = text.replace(line, &l.to_string());
        }
        std::fs::write(&anchored, text).unwrap();
    });
    let v = h.get("/v1/audit/verify", READER).await.ok();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["broken"]["id"], 2, "the first line whose head was replaced: {v}");
    assert!(v["broken"]["reason"].as_str().unwrap().contains("anchor file was edited"), "{v}");
}
