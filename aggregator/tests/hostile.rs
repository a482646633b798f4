//! One low-privilege credential against the aggregator: each attack of a hostile rater, sidecar
//! or reader, bounded in count, asserting what the aggregator does about it (timings live in
//! `bench/hostile.py`, not here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

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
