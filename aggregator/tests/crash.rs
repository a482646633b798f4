//! Durability with the real binary: a burst of writes, SIGKILL mid-burst, restart on the same
//! database; every write that was acknowledged (2xx) must be there. Three rounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

const ROUNDS: usize = 3;
/// Acknowledged writes to wait for before the kill (the burst goes on meanwhile).
const KILL_AFTER_ACKS: usize = 40;
/// Most writes one round's burst may send (bounds the loop if the kill were late).
const MAX_WRITES: usize = 5_000;

#[derive(Debug)]
enum Write {
    /// A signal batch with one success for server `crash`.
    Batch(String),
    /// A quarantine or release of server `toggle`, with this reason.
    Decision(String),
}

/// Sends writes until the connection fails; reports every acknowledged one on `acks`.
/// Returns how many batches it sent (acknowledged or not).
fn burst(base: String, round: usize, quarantined_at_start: bool, acks: mpsc::Sender<Write>) -> usize {
    let agent = agent();
    let mut quarantined = quarantined_at_start;
    let mut batches_sent = 0;
    for i in 0..MAX_WRITES {
        if i % 4 == 3 {
            let reason = format!("crash-{round}-{i}");
            let action = if quarantined { "release" } else { "quarantine" };
            let url = format!("{base}/v1/servers/toggle/{action}");
            match post(&agent, &url, OPERATOR, &json!({ "reason": reason })) {
                Ok((200, _)) => {
                    quarantined = !quarantined;
                    if acks.send(Write::Decision(reason)).is_err() {
                        return batches_sent;
                    }
                }
                Ok((status, body)) => panic!("{action}: unexpected {status} {body}"),
                Err(_) => return batches_sent,
            }
        } else {
            let id = format!("crash-{round}-{i}");
            let body = json!({"sidecar": "pod", "batch_id": id, "servers": [{"server": "crash", "outcomes": {"success": 1}}]});
            batches_sent += 1;
            match post(&agent, &format!("{base}/v1/signals"), SIDECAR, &body) {
                Ok((200, _)) => {
                    if acks.send(Write::Batch(id)).is_err() {
                        return batches_sent;
                    }
                }
                Ok((status, body)) => panic!("signals: unexpected {status} {body}"),
                Err(_) => return batches_sent,
            }
        }
    }
    batches_sent
}

/// Checks that every acknowledged write is in the restarted aggregator.
fn verify(base: &str, batches: &BTreeSet<String>, decisions: &BTreeSet<String>, batches_sent: usize) {
    let agent = agent();
    let (status, d) = get(&agent, &format!("{base}/v1/servers/crash"), READER);
    assert_eq!(status, 200, "{d}");
    let success = d["traffic"]["success"].as_u64().unwrap() as usize;
    assert!(success >= batches.len(), "{} batches acknowledged, {success} counted", batches.len());
    assert!(success <= batches_sent, "{batches_sent} batches sent, {success} counted");
    let (_, audit) = get(&agent, &format!("{base}/v1/audit?server=toggle&limit=1000"), OPERATOR);
    let logged: BTreeSet<String> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap().to_string()).collect();
    let missing: Vec<&String> = decisions.difference(&logged).collect();
    assert!(missing.is_empty(), "acknowledged decisions missing from the audit log: {missing:?}");
    // Each acknowledged batch is known: sending it again is a duplicate.
    for id in batches {
        let body = json!({"sidecar": "pod", "batch_id": id, "servers": [{"server": "crash", "outcomes": {"success": 1}}]});
        let (status, ack) = post(&agent, &format!("{base}/v1/signals"), SIDECAR, &body).unwrap();
        assert_eq!((status, ack["duplicate"].as_bool()), (200, Some(true)), "batch {id} was acknowledged but is lost");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new("crash");
    let (mut batches, mut decisions) = (BTreeSet::new(), BTreeSet::new());
    let mut batches_sent = 0;
    for round in 0..ROUNDS {
        let mut agg = Process::start(dir.path());
        if round > 0 {
            verify(&agg.base, &batches, &decisions, batches_sent);
        }
        let (_, toggle) = get(&agent(), &format!("{}/v1/servers/toggle", agg.base), READER);
        let quarantined = toggle["state"] == "quarantined";
        let (tx, rx) = mpsc::channel();
        let base = agg.base.clone();
        let writer = std::thread::spawn(move || burst(base, round, quarantined, tx));
        let mut acked = 0;
        while acked < KILL_AFTER_ACKS {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(w) => {
                    acked += 1;
                    match w {
                        Write::Batch(id) => batches.insert(id),
                        Write::Decision(r) => decisions.insert(r),
                    };
                }
                Err(e) => panic!("round {round}: only {acked} writes acknowledged ({e})"),
            }
        }
        agg.kill();
        // Writes acknowledged between our count and the kill count too.
        for w in rx.iter() {
            match w {
                Write::Batch(id) => batches.insert(id),
                Write::Decision(r) => decisions.insert(r),
            };
        }
        batches_sent += writer.join().unwrap();
    }
    let agg = Process::start(dir.path());
    verify(&agg.base, &batches, &decisions, batches_sent);
    eprintln!(
        "{ROUNDS} SIGKILLs: {} acknowledged batches and {} acknowledged decisions all survived ({batches_sent} batches sent)",
        batches.len(),
        decisions.len()
    );
}
