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
