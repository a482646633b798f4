//! Replicas on one PostgreSQL database, in-process: a batch counts once whichever replica gets
//! it, one audit chain with writers on every replica, a version that only grows whichever
//! replica answers, decisions reaching every replica, one leader at a time, replicas that start
//! together migrating once, and one credential's budget and a release's cool-down holding on
//! every replica, and two sidecars' reports reaching two replicas admitting a server. They need a PostgreSQL server (`make test` runs the suite
//! through `testbed/postgres.py`, which sets MCP_WARDEN_TEST_PG).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use mcp_warden_aggregator::{Location, ManualClock, Service, Tokens};
use serde_json::json;
use std::sync::Arc;

/// `n` replicas on one fresh database, sharing one clock; `None` (and a note) without a server.
fn replicas(n: usize) -> Option<Vec<Harness>> {
    replicas_with(n, relaxed())
}

fn replicas_with(n: usize, settings: mcp_warden_aggregator::Settings) -> Option<Vec<Harness>> {
    if postgres_server().is_none() {
        eprintln!("skipped: no PostgreSQL server (MCP_WARDEN_TEST_PG); run through testbed/postgres.py");
        return None;
    }
    let location = Location::Postgres(fresh_pg_database());
    let clock = Arc::new(ManualClock::new(T0));
    Some((0..n).map(|_| Harness::on(TempDir::new("replica"), location.clone(), settings.clone(), clock.clone())).collect())
}

#[tokio::test]
async fn two_sidecars_reaching_two_replicas_make_a_quorum() {
    let mut settings = relaxed();
    settings.sidecar.admission_quorum = None;
    let Some(r) = replicas_with(2, settings) else { return };
    let (a, b) = (&r[0], &r[1]);
    let ack = a.report(SIDECAR, "s1", "weather", 3, 0).await.ok();
    assert_eq!(ack["provisional"], 1, "{ack}");
    let ack = b.report(SIDECAR2, "s2", "weather", 4, 0).await.ok();
    assert_eq!(ack["admitted_servers"], json!(["weather"]), "the first voice, given on the other replica, counted");
    follow(a).await;
    for h in [a, b] {
        assert_eq!(h.detail("weather").await["traffic"]["success"], 7);
        assert_eq!(h.get("/v1/provisional", READER).await.ok()["total"], 0);
    }
}

async fn follow(h: &Harness) {
    h.svc.follow().await.unwrap();
}

#[tokio::test]
async fn a_resent_batch_counts_once_whichever_replica_gets_it() {
    let Some(r) = replicas(2) else { return };
    let (a, b) = (&r[0], &r[1]);
    assert_eq!(a.report(SIDECAR, "b0", "weather", 10, 0).await.ok()["duplicate"], false);
    assert_eq!(b.report(SIDECAR, "b0", "weather", 10, 0).await.ok()["duplicate"], true);
    // The same batch to both replicas at once, 20 times: each counts once.
    for i in 0..20 {
        let id = format!("b{}", i + 1);
        let (x, y) = tokio::join!(a.report(SIDECAR, &id, "weather", 1, 0), b.report(SIDECAR, &id, "weather", 1, 0));
        let fresh = [x.ok(), y.ok()].iter().filter(|ack| ack["duplicate"] == false).count();
        assert_eq!(fresh, 1, "batch {id} counted {fresh} times");
    }
    for h in [a, b] {
        follow(h).await;
        assert_eq!(h.detail("weather").await["traffic"]["success"], 30);
    }
    // Another sidecar's batch with the same id is its own batch.
    assert_eq!(b.report(SIDECAR2, "b0", "weather", 1, 0).await.ok()["duplicate"], false);
}

/// Quarantines and releases `s{k}` 8 times on `h`; the writes acknowledged.
async fn toggles(h: &Harness, k: usize) -> u64 {
    let server = format!("s{k}");
    let mut acked = 0;
    for i in 0..8 {
        let action = if i % 2 == 0 { "quarantine" } else { "release" };
        let res = h.post(&format!("/v1/servers/{server}/{action}"), OPERATOR, json!({"reason": format!("{k}-{i}")})).await;
        assert!(res.status.is_success(), "{}: {}", res.status, String::from_utf8_lossy(&res.body));
        acked += 1;
    }
    acked
}

#[tokio::test]
async fn one_audit_chain_with_writers_on_every_replica() {
    let Some(r) = replicas(3) else { return };
    let (x, y, z) = tokio::join!(toggles(&r[0], 0), toggles(&r[1], 1), toggles(&r[2], 2));
    for h in &r {
        let v = h.get("/v1/audit/verify", READER).await.ok();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["entries"], x + y + z);
    }
    // Every entry is there once, ids 1..=n with no gap.
    let page = r[1].get("/v1/audit?limit=1000", OPERATOR).await.ok();
    let mut ids: Vec<u64> = page["entries"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=24).collect::<Vec<u64>>());
}

#[tokio::test]
async fn the_version_only_grows_and_decisions_reach_every_replica() {
    let Some(r) = replicas(2) else { return };
    let (a, b) = (&r[0], &r[1]);
    let mut last = 0u64;
    for i in 0..10 {
        let h = if i % 2 == 0 { a } else { b };
        let ack = h.report(SIDECAR, &format!("v{i}"), &format!("srv-{i}"), 5, 0).await.ok();
        let v = ack["version"].as_u64().unwrap();
        assert!(v > last, "write {i}: version {v} after {last}");
        last = v;
        for h in [a, b] {
            follow(h).await;
            let doc = h.scores().await;
            assert_eq!(doc["version"].as_u64().unwrap(), v, "every replica serves the newest version");
        }
    }
    // A poller that got a newer version from one replica never gets an older document from
    // another that has not followed yet: that one catches up first.
    let newer = a.report(SIDECAR, "ahead", "srv-ahead", 5, 0).await.ok()["version"].as_u64().unwrap();
    assert_eq!(b.scores().await["version"].as_u64().unwrap(), last, "b has not followed yet");
    let etag = format!("\"{newer}\"");
    let polled = b.request("GET", "/v1/scores", Some(READER), None, &[("if-none-match", etag.as_str())]).await;
    assert_eq!(polled.status, 304, "{}", String::from_utf8_lossy(&polled.body));
    assert_eq!(b.scores().await["version"].as_u64().unwrap(), newer);
    last = newer;
    // An operator's quarantine on one replica is served by the other after it follows, as the
    // same document (same version, same bytes).
    a.post("/v1/servers/srv-3/quarantine", OPERATOR, json!({"reason": "incident"})).await.ok();
    follow(b).await;
    let (da, db) = (a.get("/v1/scores", READER).await, b.get("/v1/scores", READER).await);
    assert_eq!(da.body, db.body);
    assert_eq!(b.published("srv-3").await.1, "quarantined");
    // A write on the replica that followed conflicts with the decision it now knows of.
    let again = b.post("/v1/servers/srv-3/quarantine", OPERATOR, json!({"reason": "twice"})).await;
    assert_eq!(again.status, 409, "{}", String::from_utf8_lossy(&again.body));
    // The leader's evaluation (time moved on) also reaches the follower.
    a.clock.advance(60_000);
    assert!(a.svc.round().await.unwrap(), "the first replica leads");
    assert!(!b.svc.round().await.unwrap(), "one leader at a time");
    let (va, vb) = (a.scores().await["version"].as_u64().unwrap(), b.scores().await["version"].as_u64().unwrap());
    assert!(va >= vb && vb > last);
}

#[tokio::test]
async fn another_replica_takes_the_lead_when_the_leader_is_gone() {
    let Some(mut r) = replicas(3) else { return };
    let leaders: Vec<bool> = futures_round(&r).await;
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
    let gone = leaders.iter().position(|l| *l).unwrap();
    let old = r.remove(gone);
    drop(old);
    // The lock goes with the leader's session; one of the others takes it within a few rounds
    // (PostgreSQL ends the session as the connection closes).
    let mut took = None;
    for _ in 0..100 {
        let leaders = futures_round(&r).await;
        assert!(leaders.iter().filter(|l| **l).count() <= 1, "{leaders:?}");
        if let Some(i) = leaders.iter().position(|l| *l) {
            took = Some(i);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let took = took.expect("no replica took the lead");
    // It keeps it.
    assert_eq!(futures_round(&r).await.iter().position(|l| *l), Some(took));
}

async fn futures_round(r: &[Harness]) -> Vec<bool> {
    let mut out = Vec::new();
    for h in r {
        out.push(h.svc.round().await.unwrap());
    }
    out
}

#[test]
fn replicas_starting_together_migrate_once() {
    if postgres_server().is_none() {
        eprintln!("skipped: no PostgreSQL server (MCP_WARDEN_TEST_PG); run through testbed/postgres.py");
        return;
    }
    let url = fresh_pg_database();
    let clock = Arc::new(ManualClock::new(T0));
    let started: Vec<_> = (0..4)
        .map(|_| {
            let (url, clock) = (url.clone(), clock.clone());
            std::thread::spawn(move || {
                let tokens = Tokens::from_json(tokens_json().as_bytes()).unwrap();
                Service::open(Location::Postgres(url), tokens, relaxed(), clock).map(|_| ()).map_err(|e| e.to_string())
            })
        })
        .collect();
    for s in started {
        s.join().unwrap().unwrap();
    }
    // One schema, one first publication.
    let current = mcp_warden_aggregator::pg::SCHEMA_VERSION;
    assert_eq!(pg_execute(&url, &format!("SELECT 1 FROM meta WHERE key = 'schema' AND value = {current}")).unwrap(), 1);
    assert_eq!(pg_execute(&url, "SELECT 1 FROM publication").unwrap(), 1);
}

fn critical(id: &str, servers: &[String], rule: &str) -> serde_json::Value {
    let reports: Vec<_> =
        servers.iter().map(|s| json!({"server": s, "security": [{"rule": rule, "severity": "critical", "tool": "t"}]})).collect();
    json!({"sidecar": "pod", "batch_id": id, "servers": reports})
}

#[tokio::test]
async fn a_credentials_budget_and_a_release_hold_on_every_replica() {
    let Some(r) = replicas(2) else { return };
    let (a, b) = (&r[0], &r[1]);
    let budget = a.settings.sidecar.server_budget;
    let names: Vec<String> = (0..2 * budget).map(|i| format!("srv-{i}")).collect();
    let traffic: Vec<_> = names.iter().map(|s| json!({"server": s, "outcomes": {"success": 5}})).collect();
    a.post("/v1/signals", SIDECAR2, json!({"sidecar": "p2", "batch_id": "t", "servers": traffic})).await.ok();
    // One credential spends its budget on replica a; replica b does not give it another.
    a.post("/v1/signals", SIDECAR, critical("x", &names[..budget], "unicode/tag-characters")).await.ok();
    b.post("/v1/signals", SIDECAR, critical("y", &names[budget..], "unicode/tag-characters")).await.ok();
    let doc = b.scores().await;
    let quarantined = doc["servers"].as_array().unwrap().iter().filter(|s| s["state"] == "quarantined").count();
    assert_eq!(quarantined, budget, "{doc}");
    // Released on a: the same kind reported to b stays in the cool-down.
    a.post(&format!("/v1/servers/{}/release", names[0]), OPERATOR, json!({"reason": "reviewed"})).await.ok();
    a.clock.advance(60_000);
    b.post("/v1/signals", SIDECAR, critical("z", &names[..1], "unicode/renamed")).await.ok();
    assert_ne!(b.detail(&names[0]).await["state"], "quarantined");
}
