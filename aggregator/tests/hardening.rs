//! The service's protections in-process: rate limits, deadlines and the request cap; the audit
//! log's hash chain (tampering, migration of a schema 1 database); backup and restore; and the
//! fail-safe behaviour of the store (a read-only or full database, a damaged file at start).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use common::*;
use mcp_warden_aggregator::config::{Limits, Rate};
use mcp_warden_aggregator::engine::StorageFault;
use mcp_warden_aggregator::{audit, backup, Service, Settings, Tokens};
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn limited(f: impl FnOnce(&mut Limits)) -> Settings {
    let mut s = relaxed();
    f(&mut s.limits);
    s
}

fn retry_after(r: &Resp) -> u64 {
    r.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn each_token_name_has_its_own_bucket_and_429_says_when_to_retry() {
    let h = Harness::with_settings(limited(|l| l.sidecar = Rate::new(0.01, 3)));
    for i in 0..3 {
        h.report(SIDECAR, &format!("b{i}"), "w", 1, 0).await.ok();
    }
    let r = h.report(SIDECAR, "b3", "w", 1, 0).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.error().starts_with("rate limit exceeded for `sidecar-1` (role sidecar: 0.01/s, bursts of 3); retry in"), "{}", r.error());
    // One token every 100 s.
    assert!((99..=100).contains(&retry_after(&r)), "{:?}", r.headers);
    // The refused batch was not applied; other names and roles are not affected.
    assert_eq!(h.detail("w").await["traffic"]["success"], 3);
    h.report(SIDECAR2, "b3", "w", 1, 0).await.ok();
    h.scores().await;
}

#[tokio::test]
async fn requests_without_a_known_token_are_limited_per_address_but_valid_tokens_are_not() {
    let h = Harness::with_settings(limited(|l| l.unauthenticated = Rate::new(0.01, 2)));
    for _ in 0..2 {
        assert_eq!(h.get("/v1/scores", "wrong-token-0000000000").await.status, StatusCode::UNAUTHORIZED);
    }
    let r = h.get("/v1/scores", "wrong-token-0000000000").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.error().contains("rate limit exceeded for requests without a known token"), "{}", r.error());
    assert!(retry_after(&r) >= 1);
    assert_eq!(h.request("GET", "/v1/scores", None, None, &[]).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h.get("/v1/scores", READER).await.status, StatusCode::OK);
    // Probes are never rate limited.
    for _ in 0..5 {
        assert_eq!(h.request("GET", "/healthz", None, None, &[]).await.status, StatusCode::OK);
    }
}

/// A request body that sends `first` and then nothing, ever; `started` fires when it is first read.
struct Stalled {
    first: Option<Bytes>,
    started: Option<tokio::sync::oneshot::Sender<()>>,
}

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(s) = self.started.take() {
            let _ = s.send(());
        }
        match self.first.take() {
            Some(b) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

/// Sends a signals POST whose body stalls; resolves once the handler started reading it.
async fn stalled_post(h: &Harness) -> tokio::task::JoinHandle<(StatusCode, String)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let body = Stalled { first: Some(Bytes::from_static(b"{\"sidecar\": \"p\", ")), started: Some(tx) };
    let req = Request::builder()
        .method("POST")
        .uri("/v1/signals")
        .header("authorization", format!("Bearer {SIDECAR}"))
        .body(Body::new(body))
        .unwrap();
    let app = h.app.clone();
    let task = tokio::spawn(async move {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    rx.await.unwrap();
    task
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_a_stuck_store_503() {
    let h = Harness::with_settings(limited(|l| l.request_timeout_ms = 300));
    let t0 = Instant::now();
    let (status, body) = stalled_post(&h).await.await.unwrap();
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert!(body.contains("the request body was not received within 300 ms"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    // The store is held by another call for longer than the deadline.
    h.report(SIDECAR, "b1", "w", 1, 0).await.ok();
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
    let r = h.get("/v1/servers/w", READER).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.error().contains("not completed within 300 ms"), "{}", r.error());
    assert_eq!(retry_after(&r), 1);
    // Readers of the published document never wait for the store.
    assert_eq!(h.get("/v1/scores", READER).await.status, StatusCode::OK);
    holder.await.unwrap().unwrap();
    h.detail("w").await;
}

#[tokio::test]
async fn past_max_concurrent_requests_the_answer_is_503_at_once() {
    let h = Harness::with_settings(limited(|l| {
        l.max_concurrent_requests = 1;
        l.request_timeout_ms = 1000;
    }));
    h.report(SIDECAR, "b1", "w", 1, 0).await.ok();
    // The one slot is taken by a request whose work waits for a held engine (a slow body no
    // longer takes a slot: it is read before, see tests/hostile.rs).
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
    let slow = tokio::spawn(async move {
        let req = Request::builder().uri("/v1/servers/w").header("authorization", format!("Bearer {READER}")).body(Body::empty()).unwrap();
        app.oneshot(req).await.unwrap().status()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let r = h.get("/v1/scores", READER).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().contains("busy (1 requests in flight"), "{}", r.error());
    assert!(t0.elapsed() < Duration::from_millis(500));
    let slow = slow.await.unwrap();
    assert_eq!(slow, StatusCode::SERVICE_UNAVAILABLE, "past the 1 s request deadline");
    holder.await.unwrap().unwrap();
    assert_eq!(h.get("/v1/scores", READER).await.status, StatusCode::OK);
}

/// Four decisions: quarantine, release, quarantine of `w`, quarantine of `v`.
async fn four_decisions(h: &Harness) {
    for (path, reason) in [
        ("/v1/servers/w/quarantine", "first"),
        ("/v1/servers/w/release", "second"),
        ("/v1/servers/w/quarantine", "third"),
        ("/v1/servers/v/quarantine", "fourth"),
    ] {
        h.clock.advance(1000);
        h.post(path, OPERATOR, json!({ "reason": reason })).await.ok();
    }
}

async fn verify(h: &Harness) -> Value {
    h.get("/v1/audit/verify", READER).await.ok()
}

#[tokio::test]
async fn audit_entries_are_hash_chained() {
    let h = Harness::new();
    assert_eq!(verify(&h).await, json!({"ok": true, "entries": 0}));
    four_decisions(&h).await;
    let v = verify(&h).await;
    assert_eq!((v["ok"].as_bool(), v["entries"].as_u64()), (Some(true), Some(4)), "{v}");
    let page = h.get("/v1/audit", OPERATOR).await.ok();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(v["head"], json!({"id": 4, "hash": entries[0]["hash"]}));
    // Recompute the chain from what the API shows.
    let mut prev = audit::GENESIS;
    for e in entries.iter().rev() {
        let f = audit::Fields {
            id: e["id"].as_i64().unwrap(),
            at_ms: e["at_ms"].as_i64().unwrap(),
            actor: e["actor"].as_str().unwrap(),
            action: e["action"].as_str().unwrap(),
            server: e["server"].as_str().unwrap(),
            reason: e["reason"].as_str().unwrap(),
            score: e["score"].as_f64().unwrap(),
        };
        prev = audit::link(&prev, &f);
        assert_eq!(e["hash"].as_str().unwrap(), audit::to_hex(&prev));
    }
    assert_eq!(h.get("/v1/audit/verify", OPERATOR).await.status, StatusCode::OK);
    assert_eq!(h.get("/v1/audit/verify", SIDECAR).await.status, StatusCode::FORBIDDEN);
    // Still chained after a restart.
    let h = h.reopen();
    h.post("/v1/servers/v/release", OPERATOR, json!({"reason": "fifth"})).await.ok();
    assert_eq!(verify(&h).await["entries"], 5);
}

#[tokio::test]
async fn tampering_with_the_database_file_is_found_at_the_entry() {
    // (what someone with write access to the file does, the entry verification fails at, why)
    let cases: &[(&str, i64, &str)] = &[
        ("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'nothing to see' WHERE id = 2", 2, "entry #2 does not match its hash"),
        ("DROP TRIGGER audit_no_update; UPDATE audit SET score = 0.9 WHERE id = 3", 3, "entry #3 does not match its hash"),
        ("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id = 2", 2, "entries #2..#2 are missing"),
        ("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id >= 3", 3, "entries #3..#4 are missing (removed from the end"),
        (
            "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory', hash = (SELECT hash FROM audit WHERE id = 1) WHERE id = 2",
            2,
            "entry #2 does not match its hash",
        ),
    ];
    for (sql, at, why) in cases {
        let h = Harness::new();
        four_decisions(&h).await;
        let h = h.reopen_after(|db| {
            let conn = rusqlite::Connection::open(db).unwrap();
            // The trigger stops a plain UPDATE.
            let e = conn.execute("UPDATE audit SET reason = 'x' WHERE id = 1", []).unwrap_err();
            assert!(e.to_string().contains("append-only"), "{e}");
            conn.execute_batch(sql).unwrap();
        });
        let v = verify(&h).await;
        assert_eq!(v["ok"], false, "{sql}: {v}");
        assert_eq!(v["broken"]["id"], *at, "{sql}: {v}");
        assert!(v["broken"]["reason"].as_str().unwrap().contains(why), "{sql}: {v}");
        assert_eq!(v["entries"].as_i64().unwrap(), at - 1, "{sql}: {v}");
        // Opening the database put the triggers back.
        let h = h.reopen_after(|db| {
            let conn = rusqlite::Connection::open(db).unwrap();
            assert!(conn.execute("DELETE FROM audit WHERE id = 1", []).is_err());
        });
        assert_eq!(verify(&h).await["ok"], false);
    }
}

/// The schema of a version 1 database (before the hash chain), enough of it to open.
const SCHEMA_V1: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema', 1), ('version', 7);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    server TEXT NOT NULL, reason TEXT NOT NULL, score REAL NOT NULL
);
CREATE INDEX audit_server ON audit (server, id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
INSERT INTO audit (at_ms, actor, action, server, reason, score) VALUES
    (1700000000000, 'ops', 'quarantine', 'w', 'old one', 0.5),
    (1700000001000, 'ops', 'release', 'w', 'old two', 0.5),
    (1700000002000, 'aggregator', 'auto_quarantine', 'v', 'old three', 0.1);
"#;

#[tokio::test]
async fn a_schema_1_database_gets_its_chain_when_migrated() {
    let dir = TempDir::new("v1");
    let db = dir.path().join("v1.db");
    rusqlite::Connection::open(&db).unwrap().execute_batch(SCHEMA_V1).unwrap();
    let h = Harness::on_database(&db, Arc::new(mcp_warden_aggregator::ManualClock::new(T0 + 10_000)));
    let v = verify(&h).await;
    assert_eq!((v["ok"].as_bool(), v["entries"].as_u64()), (Some(true), Some(3)), "{v}");
    let page = h.get("/v1/audit", OPERATOR).await.ok();
    assert_eq!(page["entries"][2]["reason"], "old one");
    assert_eq!(page["entries"][2]["hash"].as_str().unwrap().len(), 64);
    // New entries chain on; the version continues past the stored one.
    assert!(h.scores().await["version"].as_u64().unwrap() > 7);
    h.post("/v1/servers/w/quarantine", OPERATOR, json!({"reason": "new"})).await.ok();
    assert_eq!(verify(&h).await["entries"], 4);
    let h = h.reopen_after(|db| {
        let conn = rusqlite::Connection::open(db).unwrap();
        let schema: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).unwrap();
        assert_eq!(schema, 2);
        assert!(conn.execute("UPDATE audit SET reason = 'x' WHERE id = 1", []).is_err(), "the trigger is back");
    });
    assert_eq!(verify(&h).await["ok"], true);
}

/// Everything a server view holds, without the fields that name the moment or version.
async fn view(h: &Harness, server: &str) -> Value {
    let mut d = h.detail(server).await;
    let o = d.as_object_mut().unwrap();
    o.remove("version");
    d
}

#[tokio::test]
async fn a_backup_restores_to_the_same_scores_ratings_and_audit_log() {
    let h = Harness::new();
    let sec = json!({"sidecar": "p", "batch_id": "s1", "servers": [
        {"server": "w1", "outcomes": {"success": 40, "failures": {"http_5xx": 3}, "slow": 2}, "latency": {"count": 43, "sum_ms": 900, "max_ms": 80}},
        {"server": "w2", "outcomes": {"success": 5}, "security": [{"rule": "tool-changed", "severity": "medium", "tool": "t", "new_fingerprint": "f"}]}]});
    h.post("/v1/signals", SIDECAR, sec).await.ok();
    h.clock.advance(1000);
    h.post("/v1/ratings", RATER, json!({"subject": {"kind": "server", "name": "w1"}, "value": 0.9, "comment": "fine"})).await.ok();
    h.post("/v1/ratings", RATER_BOB, json!({"subject": {"kind": "server", "name": "w2"}, "value": 0.2})).await.ok();
    h.post("/v1/ratings", OPERATOR, json!({"subject": {"kind": "rater", "name": "alice"}, "value": 1})).await.ok();
    h.post("/v1/flags", SCANNER, json!({"server": "w2", "severity": "high", "rule": "exfil", "tool": "t", "description": "d"})).await.ok();
    four_decisions(&h).await;
    h.tick().await;

    assert_eq!(h.request("POST", "/v1/admin/backup", Some(READER), None, &[]).await.status, StatusCode::FORBIDDEN);
    let b = h.request("POST", "/v1/admin/backup", Some(OPERATOR), None, &[]).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.headers["content-type"], "application/vnd.sqlite3");
    assert!(b.body.starts_with(b"SQLite format 3\0"));
    let dir = TempDir::new("backup");
    let file = dir.path().join("backup.db");
    std::fs::write(&file, &b.body).unwrap();
    let report = backup::inspect(&file).unwrap();
    assert_eq!((report.servers, report.ratings), (4, 3));
    assert_eq!(report.audit.as_ref().unwrap().entries, 4);
    // Nothing but the backup itself was left next to the database.
    let leftovers: Vec<_> = std::fs::read_dir(h.dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(leftovers.iter().all(|n| n.to_string_lossy().starts_with("trust.db")), "{leftovers:?}");

    let target = dir.path().join("restored").join("trust.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let (r, kept) = backup::restore(&file, &target, false).unwrap();
    assert!(kept.is_empty());
    assert_eq!(r.audit.as_ref().unwrap().head, report.audit.as_ref().unwrap().head);
    let e = backup::restore(&file, &target, false).unwrap_err();
    assert!(e.contains("exists: stop the aggregator and pass --force"), "{e}");
    let (_, kept) = backup::restore(&file, &target, true).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].to_string_lossy().contains("trust.db.replaced-"));

    let restored = Harness::on_database(&target, h.clock.clone());
    for server in ["w1", "w2", "w", "v"] {
        assert_eq!(view(&h, server).await, view(&restored, server).await, "{server}");
    }
    let names = |doc: Value| -> Vec<(String, String)> {
        doc["servers"].as_array().unwrap().iter().map(|s| (s["server"].to_string(), s["state"].to_string())).collect()
    };
    assert_eq!(names(h.scores().await), names(restored.scores().await));
    assert_eq!(h.get("/v1/audit", OPERATOR).await.ok(), restored.get("/v1/audit", OPERATOR).await.ok());
    assert_eq!(verify(&h).await, verify(&restored).await);
    // The restored service carries on: a new decision chains on the restored head.
    restored.post("/v1/servers/w1/quarantine", OPERATOR, json!({"reason": "after restore"})).await.ok();
    assert_eq!(verify(&restored).await["entries"], 5);
}

#[tokio::test]
async fn a_broken_or_foreign_backup_is_not_restored() {
    let dir = TempDir::new("bad-backup");
    let target = dir.path().join("trust.db");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, just text that is long enough").unwrap();
    let e = backup::restore(&junk, &target, false).unwrap_err();
    assert!(e.contains("junk.db") && e.contains("not a database"), "{e}");
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    let e = backup::restore(&foreign, &target, false).unwrap_err();
    assert!(e.contains("not an mcp-warden database"), "{e}");
    // A backup whose chain was tampered with.
    let h = Harness::new();
    four_decisions(&h).await;
    let b = h.request("POST", "/v1/admin/backup", Some(OPERATOR), None, &[]).await;
    let file = dir.path().join("tampered.db");
    std::fs::write(&file, &b.body).unwrap();
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'x' WHERE id = 1").unwrap();
    drop(conn);
    let e = backup::restore(&file, &target, false).unwrap_err();
    assert!(e.contains("audit chain is broken at entry #1"), "{e}");
    assert!(!target.exists());
}

async fn health(h: &Harness) -> Value {
    h.request("GET", "/healthz", None, None, &[]).await.ok()
}

#[tokio::test]
async fn a_read_only_database_refuses_writes_with_503_and_keeps_serving_reads() {
    let h = Harness::new();
    h.report(SIDECAR, "b1", "w", 3, 0).await.ok();
    h.post("/v1/servers/v/quarantine", OPERATOR, json!({"reason": "drill"})).await.ok();
    h.svc.run(|e, _| e.inject_storage_fault(StorageFault::ReadOnly)).await.unwrap();

    let r = h.report(SIDECAR, "b2", "w", 5, 0).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.error().starts_with("storage error, nothing was written: "), "{}", r.error());
    assert_eq!(retry_after(&r), 1);
    for (path, token, body) in [
        ("/v1/servers/w/quarantine", OPERATOR, json!({"reason": "x"})),
        ("/v1/ratings", RATER, json!({"subject": {"kind": "server", "name": "w"}, "value": 0.1})),
        ("/v1/flags", SCANNER, json!({"server": "w", "severity": "low", "rule": "r"})),
    ] {
        assert_eq!(h.post(path, token, body).await.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    // Reads go on: the published document from memory, the rest from the database.
    let doc = h.scores().await;
    assert_eq!(doc["servers"].as_array().unwrap().len(), 2);
    assert_eq!(h.detail("w").await["traffic"]["success"], 3);
    assert_eq!(h.detail("v").await["state"], "quarantined");
    h.get("/v1/audit", OPERATOR).await.ok();
    assert_eq!(verify(&h).await["ok"], true);
    let hz = health(&h).await;
    assert_eq!(hz["status"], "degraded", "{hz}");
    assert!(hz["reason"].as_str().unwrap().contains("database writes failing since"), "{hz}");

    h.svc.run(|e, _| e.inject_storage_fault(StorageFault::None)).await.unwrap();
    // The refused batch had not been applied: sent again, it counts now, once.
    let again = h.report(SIDECAR, "b2", "w", 5, 0).await.ok();
    assert_eq!(again["duplicate"], false);
    assert_eq!(h.detail("w").await["traffic"]["success"], 8);
    assert_eq!(health(&h).await["status"], "ok");
    assert!(health(&h).await.get("reason").is_none());
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_503_and_applies_nothing_of_them() {
    let h = Harness::new();
    h.report(SIDECAR, "b0", "w", 1, 0).await.ok();
    h.svc.run(|e, _| e.inject_storage_fault(StorageFault::Full)).await.unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let flag = json!({"server": format!("f{i}"), "severity": "low", "rule": format!("rule-{i}"), "description": "x".repeat(1000)});
        let r = h.post("/v1/flags", SCANNER, flag).await;
        match r.status {
            StatusCode::OK => acknowledged.push(i),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.error().contains("full"), "{}", r.error());
                refused = Some(i);
                break;
            }
            s => panic!("{s}: {}", r.error()),
        }
    }
    let refused = refused.expect("the database never filled up");
    assert_eq!(health(&h).await["status"], "degraded");
    assert!(health(&h).await["reason"].as_str().unwrap().contains("full"));
    // Reads go on; everything acknowledged is there, the refused flag is not.
    assert_eq!(h.scores().await["servers"].as_array().unwrap().len(), acknowledged.len() + 1);
    for i in &acknowledged {
        assert_eq!(h.detail(&format!("f{i}")).await["flags"][0]["rule"], format!("rule-{i}"));
    }
    assert_eq!(h.get(&format!("/v1/servers/f{refused}"), READER).await.status, StatusCode::NOT_FOUND);

    h.svc.run(|e, _| e.inject_storage_fault(StorageFault::None)).await.unwrap();
    let flag = json!({"server": format!("f{refused}"), "severity": "low", "rule": format!("rule-{refused}")});
    assert_eq!(h.post("/v1/flags", SCANNER, flag).await.ok()["counted"], true);
    assert_eq!(health(&h).await["status"], "ok");
    eprintln!("disk full after {} acknowledged flags; the next one was refused with 503", acknowledged.len());
}

fn open_service(db: &std::path::Path) -> Result<Service, String> {
    let tokens = Tokens::from_json(tokens_json().as_bytes()).unwrap();
    let clock = Arc::new(mcp_warden_aggregator::ManualClock::new(T0));
    Service::open(db, tokens, relaxed(), clock).map_err(|e| e.to_string())
}

#[test]
fn a_damaged_database_is_refused_at_start_and_left_as_it_was() {
    let dir = TempDir::new("corrupt");
    // Not a database at all.
    let junk = dir.path().join("junk.db");
    let bytes = b"this is not an SQLite database, and the aggregator must not replace it".repeat(100);
    std::fs::write(&junk, &bytes).unwrap();
    let e = open_service(&junk).err().unwrap();
    assert!(e.contains(&format!("database {} is damaged or not an mcp-warden database", junk.display())), "{e}");
    assert!(e.contains("refusing to start"), "{e}");
    assert_eq!(std::fs::read(&junk).unwrap(), bytes);

    // A real database whose pages were overwritten.
    let db = dir.path().join("trust.db");
    {
        let svc = open_service(&db).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for i in 0..50 {
                let who = mcp_warden_aggregator::Principal { name: "ops".into(), role: mcp_warden_aggregator::Role::Operator };
                let name = format!("server-{i}");
                svc.run(move |e, now| e.quarantine(&who, &name, &"a reason ".repeat(50), now)).await.unwrap();
            }
        });
    }
    let mut damaged = std::fs::read(&db).unwrap();
    assert!(damaged.len() > 8192, "{}", damaged.len());
    let half = damaged.len() / 2;
    for b in damaged.iter_mut().skip(half) {
        *b = 0x5a;
    }
    std::fs::write(&db, &damaged).unwrap();
    let e = open_service(&db).err().unwrap();
    assert!(e.contains("is damaged or not an mcp-warden database"), "{e}");
    assert_eq!(std::fs::read(&db).unwrap(), damaged, "the damaged file was changed");
}
