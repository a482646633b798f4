//! One low-privilege credential against the aggregator: each attack of a hostile rater, sidecar
//! or reader, bounded in count, asserting what the aggregator does about it (timings live in
//! `bench/hostile.py`, not here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;
use std::io::Read;
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
    let config = json!({"limits": {"max_connections_per_peer": 3}});
    let agg = Process::start_with(dir.path(), Some(&config));
    let addr = agg.base.trim_start_matches("http://").to_string();
    // Let the start-up probe's pooled connection close (it would count as one).
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = TcpStream::connect(&addr).unwrap();
    fourth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let closed = match fourth.read(&mut buf) {
        Ok(0) => true,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Ok(_) => false,
        Err(e) => panic!("the fourth connection from one address was kept open ({e})"),
    };
    assert!(closed && t0.elapsed() < Duration::from_secs(3), "closed: {closed} after {:?}", t0.elapsed());
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    let (status, _) = get(&agent(), &format!("{}/v1/scores", agg.base), READER);
    assert_eq!(status, 200);
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
